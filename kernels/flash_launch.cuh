// The launches of a register-tile flash family (flash_mma.cu's mma.sync kernels, flash_wgmma.cu's
// wgmma ones): the same arguments, grids and block orders, whichever kernels run them.
#pragma once

#include <cstdint>

#include "attention.cuh"
#include "flash_mma.h"
#include "flash_mma_backward.h"
#include "flash_mma_ds.h"

namespace tessera::cuda::attn {

// The kernels of a family: flash_mma.h's and flash_mma_backward.h's bodies on the warp instructions
// of context Ctx (mma_device.cuh's DeviceCtx, flash_wgmma.cu's WgmmaCtx) over tile policy Tiles
// (RowTiles, CoreTiles), 128 threads a block.
//
// kDocs: a documents launch (FlashParams::docs, doc_tiles.h): block (head, rank) takes entry rank
// of its batch row's table, and runs on its document's rows as a launch on that document's view
// would: T and Tk the document's length, every pointer at its first row (lse and drow too: their
// rows stay the batch's, p.T apart: the bodies' lse_t). An empty entry's block returns at once.
// kBias: the bodies with ALiBi's or the forget gate's bias compiled in (flash_mma.h's ScoreBias),
// for a launch whose FlashParams asks for it (with_bias, with_alibi); the kernels without one hold
// none of its code. A documents launch takes no forget gate (flash_attention.cu refuses one).
__device__ __forceinline__ FlashParams within_document(const FlashParams& p, const DocTile& e) {
  FlashParams d = p;
  d.T = d.Tk = e.length;
  return d;
}

template <int D, int MT, class Ctx, class Tiles, int kStages = 1, bool kDocs = false,
          ScoreBias kBias = ScoreBias::None>
__device__ __forceinline__ void flash_forward_body(uint16_t* out, float* lse, const uint16_t* q,
                                                   const uint16_t* k, const uint16_t* v,
                                                   const FlashParams& p, const BlockOrder& order) {
  static_assert(!kDocs || MT == 1, "a documents launch's table has 64-row tiles");
  static_assert(!kDocs || kBias != ScoreBias::Forget, "a documents launch takes no forget gate");
  extern __shared__ __align__(128) unsigned char smem[];
  Ctx w{smem};
  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);
  if constexpr (kDocs) {
    const DocTile e = doc_tile(p.docs, at.head / p.H, order.tiles - 1 - at.tile);
    if (e.length == 0) return;
    const int64_t s = e.start;
    mma::forward_block<D, MT, Tiles, kStages, kBias>(w, out + s * p.o.t, lse + s, q + s * p.q.t,
                                                     k + s * p.k.t, v + s * p.v.t,
                                                     within_document(p, e), e.tile, at.head, p.T);
  } else {
    mma::forward_block<D, MT, Tiles, kStages, kBias>(w, out, lse, q, k, v, p, at.tile, at.head);
  }
}

template <int D, int MT, class Ctx, class Tiles, int kStages = 1, ScoreBias kBias = ScoreBias::None>
__global__ void __launch_bounds__(kMmaThreads)
    flash_forward_kernel(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                         const uint16_t* v, FlashParams p, BlockOrder order) {
  flash_forward_body<D, MT, Ctx, Tiles, kStages, false, kBias>(out, lse, q, k, v, p, order);
}

// kStoreDs: dS^T also written to ds (mma::ds_tile) for flash_dq_stored_kernel. kDocs: as the
// forward's, the entry's key tile counted from its document's end (doc_key_tile).
template <int D, class Ctx, class Tiles, bool kHoldKV = false, bool kStoreDs = false,
          bool kDocs = false, ScoreBias kBias = ScoreBias::None>
__device__ __forceinline__ void flash_dkdv_body(uint16_t* dk, uint16_t* dv, const uint16_t* q,
                                                const uint16_t* k, const uint16_t* v,
                                                const uint16_t* dout, const float* lse,
                                                const float* drow, const FlashParams& p,
                                                const BlockOrder& order, uint16_t* ds = nullptr) {
  static_assert(!kDocs || !kStoreDs, "stored dS tiles are laid out by the batch's T");
  static_assert(!kDocs || kBias != ScoreBias::Forget, "a documents launch takes no forget gate");
  extern __shared__ __align__(128) unsigned char smem[];
  Ctx w{smem};
  const HeadTile at = key_tile_block(int64_t(blockIdx.x), order);
  if constexpr (kDocs) {
    const DocTile e = doc_tile(p.docs, at.head / p.Hkv, at.tile);
    if (e.length == 0) return;
    const int64_t s = e.start;
    mma::backward_dkdv_block<D, Tiles, kHoldKV, kStoreDs, kBias>(
        w, dk + s * p.dk.t, dv + s * p.dv.t, q + s * p.q.t, k + s * p.k.t, v + s * p.v.t,
        dout + s * p.dout.t, lse + s, drow + s, within_document(p, e), doc_key_tile(e, kMmaTile),
        at.head, ds, p.T);
  } else {
    mma::backward_dkdv_block<D, Tiles, kHoldKV, kStoreDs, kBias>(w, dk, dv, q, k, v, dout, lse,
                                                                 drow, p, at.tile, at.head, ds);
  }
}

template <int D, class Ctx, class Tiles, bool kHoldKV = false, ScoreBias kBias = ScoreBias::None>
__global__ void __launch_bounds__(kMmaThreads)
    flash_dkdv_kernel(uint16_t* dk, uint16_t* dv, const uint16_t* q, const uint16_t* k,
                      const uint16_t* v, const uint16_t* dout, const float* lse, const float* drow,
                      FlashParams p, BlockOrder order) {
  flash_dkdv_body<D, Ctx, Tiles, kHoldKV, false, false, kBias>(dk, dv, q, k, v, dout, lse, drow, p,
                                                               order);
}

template <int D, class Ctx, class Tiles, bool kDocs = false, ScoreBias kBias = ScoreBias::None>
__device__ __forceinline__ void flash_dq_body(uint16_t* dq, const uint16_t* q, const uint16_t* k,
                                              const uint16_t* v, const uint16_t* dout,
                                              const float* lse, const float* drow,
                                              const FlashParams& p, const BlockOrder& order) {
  static_assert(!kDocs || kBias != ScoreBias::Forget, "a documents launch takes no forget gate");
  extern __shared__ __align__(128) unsigned char smem[];
  Ctx w{smem};
  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);
  if constexpr (kDocs) {
    const DocTile e = doc_tile(p.docs, at.head / p.H, order.tiles - 1 - at.tile);
    if (e.length == 0) return;
    const int64_t s = e.start;
    mma::backward_dq_block<D, Tiles, kBias>(w, dq + s * p.dq.t, q + s * p.q.t, k + s * p.k.t,
                                            v + s * p.v.t, dout + s * p.dout.t, lse + s, drow + s,
                                            within_document(p, e), e.tile, at.head, p.T);
  } else {
    mma::backward_dq_block<D, Tiles, kBias>(w, dq, q, k, v, dout, lse, drow, p, at.tile, at.head);
  }
}

template <int D, class Ctx, class Tiles, ScoreBias kBias = ScoreBias::None>
__global__ void __launch_bounds__(kMmaThreads)
    flash_dq_kernel(uint16_t* dq, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                    const uint16_t* dout, const float* lse, const float* drow, FlashParams p,
                    BlockOrder order) {
  flash_dq_body<D, Ctx, Tiles, false, kBias>(dq, q, k, v, dout, lse, drow, p, order);
}

// dQ from the dS the dK dV kernel stored (flash_mma_ds.h's backward_dq_stored_block); kBias None
// or Forget (stored_dq_bias).
template <int D, class Ctx, ScoreBias kBias = ScoreBias::None>
__global__ void __launch_bounds__(kMmaThreads)
    flash_dq_stored_kernel(uint16_t* dq, const uint16_t* k, const uint16_t* ds, FlashParams p,
                           BlockOrder order) {
  extern __shared__ __align__(128) unsigned char smem[];
  Ctx w{smem};
  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);
  mma::backward_dq_stored_block<D, kBias>(w, dq, k, ds, p, at.tile, at.head);
}
// The stored-dS dQ instance for a dK dV kernel of bias b: the forget gate's adds its rows' share
// of the gate's gradient; ALiBi's bias is in dS and leaves dQ the plain one.
constexpr ScoreBias stored_dq_bias(ScoreBias b) {
  return b == ScoreBias::Forget ? b : ScoreBias::None;
}

inline const uint16_t* flash_bits(const Tensor& t) {
  return static_cast<const uint16_t*>(t.data_ptr());
}
inline uint16_t* flash_mut_bits(const Tensor& t) { return static_cast<uint16_t*>(t.data_ptr()); }

// One launch of a flash kernel over the blocks of `order` (128 threads each, `bytes` of shared
// memory); args are the kernel's, order included where it takes it.
template <class Kernel, class... Args>
void launch_blocks(Kernel kernel, size_t bytes, const BlockOrder& order, Args... args) {
  allow_smem(kernel, bytes);
  kernel<<<grid_of(order), kMmaThreads, bytes>>>(args...);
  CUDA_CHECK_LAUNCH();
}

// The forward over blocks of `rows` queries.
template <class Kernel>
void launch_flash_forward(Kernel kernel, size_t bytes, int64_t rows, const Tensor& out,
                          const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                          const FlashParams& p, int64_t B, int64_t D) {
  const BlockOrder order = query_head_order(B, p.H, p.Hkv, (p.T + rows - 1) / rows, p.Tk, D);
  launch_blocks(kernel, bytes, order, flash_mut_bits(out), static_cast<float*>(lse.data_ptr()),
                flash_bits(q), flash_bits(k), flash_bits(v), p, order);
}

// The backward's two passes over 64-row blocks: dK dV by key tile, then dQ by query tile.
struct BackwardOrders {
  BlockOrder kv, q;
};
inline BackwardOrders backward_orders(const FlashParams& p, int64_t B, int64_t D) {
  const int64_t tiles = (p.T + kMmaTile - 1) / kMmaTile;
  return {kv_head_order(B, p.H, p.Hkv, tiles, p.T, D),
          query_head_order(B, p.H, p.Hkv, tiles, p.T, D)};
}

// The backward; drow = rowsum(dO * O). dK dV first, then dQ, on the one stream: with a forget
// gate, dQ adds its rows' share of the gate's gradient to what dK dV wrote (flash_mma_backward.h).
template <class DkDv, class Dq>
void launch_flash_backward(DkDv dkdv_kernel, Dq dq_kernel, size_t bytes, const Tensor& dq,
                           const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                           const Tensor& k, const Tensor& v, const Tensor& lse, const Tensor& drow,
                           const FlashParams& p, int64_t B, int64_t D) {
  const float* lp = static_cast<const float*>(lse.data_ptr());
  const float* dr = static_cast<const float*>(drow.data_ptr());
  const BackwardOrders o = backward_orders(p, B, D);
  launch_blocks(dkdv_kernel, bytes, o.kv, flash_mut_bits(dk), flash_mut_bits(dv), flash_bits(q),
                flash_bits(k), flash_bits(v), flash_bits(dout), lp, dr, p, o.kv);
  launch_blocks(dq_kernel, bytes, o.q, flash_mut_bits(dq), flash_bits(q), flash_bits(k),
                flash_bits(v), flash_bits(dout), lp, dr, p, o.q);
}

// The backward with dS stored: the dK dV kernel also writes dS^T into ds (bf16, B H
// mma::ds_tiles_per_row(T) tiles of 64 x 64), then dQ comes from it and K (and adds to the forget
// gate's gradient, as launch_flash_backward's).
template <class DkDv, class Dq>
void launch_flash_backward_stored(DkDv dkdv_kernel, Dq dq_kernel, size_t dkdv_bytes,
                                  size_t dq_bytes, const Tensor& ds, const Tensor& dq,
                                  const Tensor& dk, const Tensor& dv, const Tensor& dout,
                                  const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& lse, const Tensor& drow, const FlashParams& p,
                                  int64_t B, int64_t D) {
  const BackwardOrders o = backward_orders(p, B, D);
  launch_blocks(dkdv_kernel, dkdv_bytes, o.kv, flash_mut_bits(dk), flash_mut_bits(dv),
                flash_bits(q), flash_bits(k), flash_bits(v), flash_bits(dout),
                static_cast<const float*>(lse.data_ptr()),
                static_cast<const float*>(drow.data_ptr()), p, o.kv, flash_mut_bits(ds));
  launch_blocks(dq_kernel, dq_bytes, o.q, flash_mut_bits(dq), flash_bits(k), flash_bits(ds), p,
                o.q);
}

}  // namespace tessera::cuda::attn
