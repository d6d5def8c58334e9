// The GPU side of kernels/flash_mma.h and flash_mma_backward.h (their warp instructions:
// mma_device.cuh's DeviceCtx): the three kernels (forward; backward dK dV, then dQ) and their
// launches.
// flash_attention_forward/backward (flash_attention.cu) call these for bf16 at head dims 64 and 128
// unless the wmma kernels are chosen (set_flash_kernels, TESSERA_FLASH_KERNELS=wmma). The forward
// runs 64-row blocks (16 rows per warp) at D 64 and 128-row ones (32 rows per warp) at D 128;
// FlashKernels::MmaNarrow takes 64-row blocks at D 128 too, Mma3Blocks 128-row ones at D 64,
// Mma5Blocks the 64-row ones compiled for five blocks an SM, Mma2Stage both with their K and V
// tiles in two stages;
// MmaStoredDs has the backward's dK dV kernel store dS for a dQ kernel that reads it.
// Every kernel has an instance for each bias, kBias (flash_mma.h's ScoreBias: ALiBi's, the forget
// gate's, picked by with_bias where FlashParams asks for one; the documents kernels take ALiBi
// alone, with_alibi); the figures below are of the instances without one, which hold none of
// their code. The forget gate's (ptxas, nvcc 13.0, sm_90), each lane reading 16 keys' (or
// queries') sums a tile, spill more where registers are bounded: the D 64 dK dV kernels 96 bytes
// (8 without the gate, 44 storing dS), dQ 236 (16; 188 before it summed the rows of dS for the
// gate's gradient: two more spill loads and stores a key tile), the 128-row forwards 136 at D 128
// (40) and 336 at D 64 (88), the two-stage one at D 128 108 (24), the five-block one 180 (56);
// none in the default 64-row forward at D 64, the 64-row ones at D 128 or the D 128 backward,
// whose dQ takes 249 registers (174), but for 12 bytes in its dK dV storing dS (none before it
// summed the stored bf16 dS); the stored-dS dQ takes 63 registers at D 64 (56) and 128 at D 128
// (94). Not yet run on a GPU.
#include <cuda_bf16.h>

#include <cstdlib>
#include <cstring>

#include "attention.cuh"
#include "backend/cuda.h"
#include "flash_launch.cuh"
#include "flash_mma.h"
#include "mma_device.cuh"

namespace tessera::cuda {
namespace {

using namespace attn;

template <int D, int MT, ScoreBias kBias>
constexpr auto flash_forward_mma = flash_forward_kernel<D, MT, DeviceCtx, mma::RowTiles, 1, kBias>;
template <int D, ScoreBias kBias>
constexpr auto flash_backward_dkdv_mma =
    flash_dkdv_kernel<D, DeviceCtx, mma::RowTiles, false, kBias>;
template <int D, ScoreBias kBias>
constexpr auto flash_backward_dq_mma = flash_dq_kernel<D, DeviceCtx, mma::RowTiles, kBias>;

// The same forward compiled for three blocks an SM (FlashKernels::Mma3Blocks, D 64 with 128-row
// blocks): ptxas (nvcc 13.0, sm_90) fits it in 168 registers with 36 bytes of spill stores (108
// since the softmax's mask became a pass of its own, docs/gpu-notes.md), where
// flash_forward_mma<64, 2> takes 181 and two blocks. On the H200 (2026-12-04) it ran in 0.77x
// the two-block kernel's time (which no choice runs any more) and about the 64-row default's
// (0.493 against 0.470 ms at T 1024, 6.240 against 6.297 at T 16384). Only this kernel: the
// others' figures moved when given an explicit minimum.
template <int D, int MT, ScoreBias kBias>
__global__ void __launch_bounds__(kMmaThreads, 3)
    flash_forward_mma_3blocks(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                              const uint16_t* v, FlashParams p, BlockOrder order) {
  flash_forward_body<D, MT, DeviceCtx, mma::RowTiles, 1, false, kBias>(out, lse, q, k, v, p, order);
}

// The 64-query forward at D 64 compiled for five blocks an SM (FlashKernels::Mma5Blocks): ptxas
// (nvcc 13.0, sm_90) fits it in 96 registers with 44 bytes of spill stores, where the default
// takes 126 and four blocks (its smem, 27 KB a block, allows eight). Not yet run on a GPU.
template <int D, int MT, ScoreBias kBias>
__global__ void __launch_bounds__(kMmaThreads, 5)
    flash_forward_mma_5blocks(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                              const uint16_t* v, FlashParams p, BlockOrder order) {
  flash_forward_body<D, MT, DeviceCtx, mma::RowTiles, 1, false, kBias>(out, lse, q, k, v, p, order);
}

// The forward with K and V in two stages (FlashKernels::Mma2Stage), at D 64 held to four blocks
// an SM, as the one-stage kernel's 127 registers allow: unbounded ptxas (nvcc 13.0, sm_90) took
// 137, three blocks. Not yet run on a GPU.
template <int D, int MT, int kMinBlocks, ScoreBias kBias>
__global__ void __launch_bounds__(kMmaThreads, kMinBlocks)
    flash_forward_mma_2stage(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                             const uint16_t* v, FlashParams p, BlockOrder order) {
  flash_forward_body<D, MT, DeviceCtx, mma::RowTiles, 2, false, kBias>(out, lse, q, k, v, p, order);
}

// dK dV at D 64 compiled for three blocks an SM, every family's at D 64: ptxas (nvcc 13.0, sm_90)
// gave flash_backward_dkdv_mma<64> 190 registers, two blocks an SM (8 warps); capped at 168 it
// spilled 168 bytes a thread, and on the H200 (2026-12-04, docs/gpu-notes.md) the backward took
// 0.86-0.88x the two-block kernel's time (T 1024 to 16384). Since the mask became a pass of its
// own and exp2 one MUFU, 52 bytes (11 spill accesses in the loop, from 53); since the items are
// stepped to rather than divided out of an index, 8 bytes (2 reloads an item).
template <int D, ScoreBias kBias>
__global__ void __launch_bounds__(kMmaThreads, 3)
    flash_backward_dkdv_mma_3blocks(uint16_t* dk, uint16_t* dv, const uint16_t* q,
                                    const uint16_t* k, const uint16_t* v, const uint16_t* dout,
                                    const float* lse, const float* drow, FlashParams p,
                                    BlockOrder order) {
  flash_dkdv_body<D, DeviceCtx, mma::RowTiles, false, false, false, kBias>(dk, dv, q, k, v, dout,
                                                                           lse, drow, p, order);
}

// dQ at D 64 compiled for four blocks an SM, every mma family's: unbounded, ptxas (nvcc 13.0,
// sm_90) takes 168 registers, three blocks (12 warps an SM; call 4's ncu: 18% occupancy, neither
// pipe busy); bounded, 128 and 16 bytes of spill (2 reloads a key tile). Its 54 KB of shared
// memory allow four. As the dK dV kernel's third block paid on the H200; not yet run on a GPU.
template <int D, ScoreBias kBias>
__global__ void __launch_bounds__(kMmaThreads, 4)
    flash_backward_dq_mma_4blocks(uint16_t* dq, const uint16_t* q, const uint16_t* k,
                                  const uint16_t* v, const uint16_t* dout, const float* lse,
                                  const float* drow, FlashParams p, BlockOrder order) {
  flash_dq_body<D, DeviceCtx, mma::RowTiles, false, kBias>(dq, q, k, v, dout, lse, drow, p, order);
}

// The same dK dV kernels writing dS^T for the dQ kernel that reads it (FlashKernels::MmaStoredDs).
template <int D, ScoreBias kBias>
__global__ void __launch_bounds__(kMmaThreads, 3)
    flash_backward_dkdv_mma_3blocks_store(uint16_t* dk, uint16_t* dv, const uint16_t* q,
                                          const uint16_t* k, const uint16_t* v,
                                          const uint16_t* dout, const float* lse, const float* drow,
                                          FlashParams p, BlockOrder order, uint16_t* ds) {
  flash_dkdv_body<D, DeviceCtx, mma::RowTiles, false, true, false, kBias>(dk, dv, q, k, v, dout,
                                                                          lse, drow, p, order, ds);
}
template <int D, ScoreBias kBias>
__global__ void __launch_bounds__(kMmaThreads)
    flash_backward_dkdv_mma_store(uint16_t* dk, uint16_t* dv, const uint16_t* q, const uint16_t* k,
                                  const uint16_t* v, const uint16_t* dout, const float* lse,
                                  const float* drow, FlashParams p, BlockOrder order,
                                  uint16_t* ds) {
  flash_dkdv_body<D, DeviceCtx, mma::RowTiles, false, true, false, kBias>(dk, dv, q, k, v, dout,
                                                                          lse, drow, p, order, ds);
}

// A documents launch (doc_tiles.h): the 64-query forward (its K and V in two stages where the
// family's forward has them: two_stage_forward), and the backward with dS recomputed, whichever
// family TESSERA_FLASH_KERNELS chose (a stored dS is laid out by the batch's T; the wgmma kernels
// would double the instances for no measured gain). At D 64 held to the blocks an SM of the
// defaults, whose registers they would otherwise pass (ptxas, nvcc 13.0, sm_90: the forward 129
// unbounded, one past four blocks' 128; in two stages 128 and no spill, 190 at D 128).
template <int D, int kMinBlocks, int kStages, bool kAlibi>
__global__ void __launch_bounds__(kMmaThreads, kMinBlocks)
    flash_forward_mma_documents(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                                const uint16_t* v, FlashParams p, BlockOrder order) {
  flash_forward_body<D, 1, DeviceCtx, mma::RowTiles, kStages, true, bias_of(kAlibi)>(out, lse, q, k,
                                                                                     v, p, order);
}
template <int D, int kMinBlocks, bool kAlibi>
__global__ void __launch_bounds__(kMmaThreads, kMinBlocks)
    flash_backward_dkdv_mma_documents(uint16_t* dk, uint16_t* dv, const uint16_t* q,
                                      const uint16_t* k, const uint16_t* v, const uint16_t* dout,
                                      const float* lse, const float* drow, FlashParams p,
                                      BlockOrder order) {
  flash_dkdv_body<D, DeviceCtx, mma::RowTiles, false, false, true, bias_of(kAlibi)>(
      dk, dv, q, k, v, dout, lse, drow, p, order);
}
template <int D, int kMinBlocks, bool kAlibi>
__global__ void __launch_bounds__(kMmaThreads, kMinBlocks)
    flash_backward_dq_mma_documents(uint16_t* dq, const uint16_t* q, const uint16_t* k,
                                    const uint16_t* v, const uint16_t* dout, const float* lse,
                                    const float* drow, FlashParams p, BlockOrder order) {
  flash_dq_body<D, DeviceCtx, mma::RowTiles, true, bias_of(kAlibi)>(dq, q, k, v, dout, lse, drow, p,
                                                                    order);
}

FlashKernels& choice() {
  static FlashKernels k = flash_kernels_named(std::getenv("TESSERA_FLASH_KERNELS"));
  return k;
}

}  // namespace

FlashKernels flash_kernels_named(const char* env) {
  if (!env || !*env || std::strcmp(env, "mma") == 0) return FlashKernels::Mma;
  if (std::strcmp(env, "mma-narrow") == 0) return FlashKernels::MmaNarrow;
  if (std::strcmp(env, "mma-3blocks") == 0) return FlashKernels::Mma3Blocks;
  if (std::strcmp(env, "mma-5blocks") == 0) return FlashKernels::Mma5Blocks;
  if (std::strcmp(env, "mma-2stage") == 0) return FlashKernels::Mma2Stage;
  if (std::strcmp(env, "mma-ds") == 0) return FlashKernels::MmaStoredDs;
  if (std::strcmp(env, "mma-2stage-ds") == 0) return FlashKernels::Mma2StageDs;
  if (std::strcmp(env, "wmma") == 0) return FlashKernels::Wmma;
  if (std::strcmp(env, "wgmma") == 0) return FlashKernels::Wgmma;
  if (std::strcmp(env, "wgmma-narrow") == 0) return FlashKernels::WgmmaNarrow;
  TESSERA_FAIL(
      "TESSERA_FLASH_KERNELS must be mma, mma-narrow, mma-3blocks, mma-5blocks, mma-2stage, "
      "mma-ds, mma-2stage-ds, wmma, wgmma or wgmma-narrow, got '",
      env, "'");
}

FlashKernels flash_kernels() { return choice(); }
void set_flash_kernels(FlashKernels k) { choice() = k; }
FlashStats flash_stats() { return attn::flash_counts(); }

namespace attn {

FlashStats& flash_counts() {
  static FlashStats counts;
  return counts;
}

void flash_mma_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                       const Tensor& v, const FlashParams& p, int64_t B, int64_t D) {
  if (choice() == FlashKernels::Wgmma || choice() == FlashKernels::WgmmaNarrow)
    return flash_wgmma_forward(out, lse, q, k, v, p, B, D,
                               choice() == FlashKernels::WgmmaNarrow);
  // Blocks of 64 queries at D 64 unless Mma3Blocks is chosen: on the H200 (2026-12-04,
  // docs/gpu-notes.md) that forward took 0.470 ms where 128-query blocks took 0.638 (B 16, H 32,
  // T 1024; 1.621 against 2.107 at T 4096). At D 128, 128-query blocks unless MmaNarrow.
  const bool narrow =
      choice() == FlashKernels::MmaNarrow || (D == 64 && choice() != FlashKernels::Mma3Blocks);
  auto launch = [&](auto kernel, size_t bytes) {
    launch_flash_forward(kernel, bytes, kMmaTile * (narrow ? 1 : 2), out, lse, q, k, v, p, B, D);
  };
  with_bias(p, [&](auto bias) {
    constexpr ScoreBias A = decltype(bias)::value;
    if (two_stage_forward(choice())) {  // counted with its launch (cuda::flash_stats)
      ++flash_counts().two_stage_forwards;
      if (D == 64)
        launch(flash_forward_mma_2stage<64, 1, 4, A>,
               mma::ForwardSmem<64, 1, mma::RowTiles, 2>::bytes);
      else
        launch(flash_forward_mma_2stage<128, 2, 1, A>,
               mma::ForwardSmem<128, 2, mma::RowTiles, 2>::bytes);
    } else if (D == 64 && choice() == FlashKernels::Mma5Blocks)
      launch(flash_forward_mma_5blocks<64, 1, A>, mma::ForwardSmem<64, 1>::bytes);
    else if (D == 64 && narrow)
      launch(flash_forward_mma<64, 1, A>, mma::ForwardSmem<64, 1>::bytes);
    else if (D == 64)
      launch(flash_forward_mma_3blocks<64, 2, A>, mma::ForwardSmem<64, 2>::bytes);
    else if (narrow)
      launch(flash_forward_mma<128, 1, A>, mma::ForwardSmem<128, 1>::bytes);
    else
      launch(flash_forward_mma<128, 2, A>, mma::ForwardSmem<128, 2>::bytes);
  });
}

void flash_mma_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                        const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lse,
                        const Tensor& drow, const FlashParams& p, int64_t B, int64_t D) {
  if (choice() == FlashKernels::Wgmma || choice() == FlashKernels::WgmmaNarrow)
    return flash_wgmma_backward(dq, dk, dv, dout, q, k, v, lse, drow, p, B, D,
                                choice() == FlashKernels::WgmmaNarrow);
  // FlashKernels::MmaStoredDs stores dS^T (bf16, a 64 x 64 tile a causal tile pair, mma::ds_tile:
  // about T^2 bytes a query head; GPT-2's B 8, T 1024: 96 x 136 x 8 KB = 107 MB) in passes of at
  // most TESSERA_FLASH_DS_BYTES (read at every call; else 1 GiB) over slices of the batch or of
  // one batch element's kv-head groups (head_slices.h; the same bits as one pass). Where a single
  // group's dS would pass that (a query head's 1 GiB at T 32768), the dQ kernel recomputes it.
  const int64_t G = p.H / p.Hkv, ds_head = mma::ds_tiles_per_row(p.T) * kMmaTile * kMmaTile;
  const int64_t budget =
      stored_ds_backward(choice()) ? scratch_budget("TESSERA_FLASH_DS_BYTES") : 0;
  if (budget > 0 && group_fits(p.H, p.Hkv, 2 * ds_head, budget)) {
    ++flash_counts().stored_ds_backwards;
    for (const HeadSlice& s : head_slices(B, p.H, p.Hkv, 2 * ds_head, budget)) {
      ++flash_counts().stored_ds_passes;
      FlashParams ps = p;
      ps.H = int(s.ng * G), ps.Hkv = int(s.ng);
      ps.alibi_h0 = p.alibi_h0 + int(s.g0 * G);  // the slice's query heads keep their slopes
      // ... and their forget gates' sums: c and dL/dc from the slice's first row, as lse (a
      // kernel's row b ps.H + h: ps.H is p.H wherever a slice holds several batch elements), for
      // both kernels: the pass's dQ adds its rows' share to what its dK dV wrote.
      const int64_t first_row = (s.b0 * p.H + s.g0 * G) * p.T;
      if (p.forget) ps.forget = p.forget + first_row, ps.forget_grad = p.forget_grad + first_row;
      auto qs = [&](const Tensor& t) { return slice_rows(t, s, G); };
      auto ks = [&](const Tensor& t) { return slice_rows(t, s, 1); };
      const Tensor ds = Tensor::empty({s.nb * ps.H * ds_head}, {DType::BF16, dq.device()});
      auto launch = [&](auto dkdv_kernel, auto dq_kernel, size_t dkdv_bytes, size_t dq_bytes) {
        launch_flash_backward_stored(dkdv_kernel, dq_kernel, dkdv_bytes, dq_bytes, ds, qs(dq),
                                     ks(dk), ks(dv), qs(dout), qs(q), ks(k), ks(v), qs(lse),
                                     qs(drow), ps, s.nb, D);
      };
      // The stored dS has the bias in; its dQ reads only it (and sums its rows for the forget
      // gate's gradient: stored_dq_bias).
      with_bias(p, [&](auto bias) {
        constexpr ScoreBias A = decltype(bias)::value, Q = stored_dq_bias(A);
        if (D == 64)
          launch(flash_backward_dkdv_mma_3blocks_store<64, A>,
                 flash_dq_stored_kernel<64, DeviceCtx, Q>, mma::BackwardSmem<64>::bytes,
                 mma::DqStoredSmem<64>::bytes);
        else
          launch(flash_backward_dkdv_mma_store<128, A>, flash_dq_stored_kernel<128, DeviceCtx, Q>,
                 mma::BackwardSmem<128>::bytes, mma::DqStoredSmem<128>::bytes);
      });
    }
    return;
  }
  ++flash_counts().recomputed_ds_backwards;
  with_bias(p, [&](auto bias) {
    constexpr ScoreBias A = decltype(bias)::value;
    if (D == 64)
      launch_flash_backward(flash_backward_dkdv_mma_3blocks<64, A>,
                            flash_backward_dq_mma_4blocks<64, A>, mma::BackwardSmem<64>::bytes, dq,
                            dk, dv, dout, q, k, v, lse, drow, p, B, D);
    else
      launch_flash_backward(flash_backward_dkdv_mma<128, A>, flash_backward_dq_mma<128, A>,
                            mma::BackwardSmem<128>::bytes, dq, dk, dv, dout, q, k, v, lse, drow, p,
                            B, D);
  });
}

void flash_mma_documents_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                 const Tensor& k, const Tensor& v, const FlashParams& p, int64_t B,
                                 int64_t D) {
  ++flash_counts().document_forwards;
  const BlockOrder order = query_head_order(B, p.H, p.Hkv, p.docs.per_row, p.T, D);
  auto launch = [&](auto kernel, size_t bytes) {
    launch_blocks(kernel, bytes, order, flash_mut_bits(out), static_cast<float*>(lse.data_ptr()),
                  flash_bits(q), flash_bits(k), flash_bits(v), p, order);
  };
  with_alibi(p, [&](auto alibi) {
    constexpr bool A = decltype(alibi)::value;
    if (two_stage_forward(choice())) {  // as flash_mma_forward's: the same bits, K and V sooner
      ++flash_counts().two_stage_forwards;
      if (D == 64)
        launch(flash_forward_mma_documents<64, 4, 2, A>,
               mma::ForwardSmem<64, 1, mma::RowTiles, 2>::bytes);
      else
        launch(flash_forward_mma_documents<128, 1, 2, A>,
               mma::ForwardSmem<128, 1, mma::RowTiles, 2>::bytes);
    } else if (D == 64)
      launch(flash_forward_mma_documents<64, 4, 1, A>, mma::ForwardSmem<64, 1>::bytes);
    else
      launch(flash_forward_mma_documents<128, 1, 1, A>, mma::ForwardSmem<128, 1>::bytes);
  });
}

void flash_mma_documents_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                  const Tensor& dout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& lse, const Tensor& drow,
                                  const FlashParams& p, int64_t B, int64_t D) {
  ++flash_counts().document_backwards;
  const BlockOrder kv = kv_head_order(B, p.H, p.Hkv, p.docs.per_row, p.T, D);
  const BlockOrder qo = query_head_order(B, p.H, p.Hkv, p.docs.per_row, p.T, D);
  const float* lp = static_cast<const float*>(lse.data_ptr());
  const float* dr = static_cast<const float*>(drow.data_ptr());
  auto launch = [&](auto dkdv_kernel, auto dq_kernel, size_t bytes) {
    launch_blocks(dkdv_kernel, bytes, kv, flash_mut_bits(dk), flash_mut_bits(dv), flash_bits(q),
                  flash_bits(k), flash_bits(v), flash_bits(dout), lp, dr, p, kv);
    launch_blocks(dq_kernel, bytes, qo, flash_mut_bits(dq), flash_bits(q), flash_bits(k),
                  flash_bits(v), flash_bits(dout), lp, dr, p, qo);
  };
  with_alibi(p, [&](auto alibi) {
    constexpr bool A = decltype(alibi)::value;
    if (D == 64)
      launch(flash_backward_dkdv_mma_documents<64, 3, A>, flash_backward_dq_mma_documents<64, 4, A>,
             mma::BackwardSmem<64>::bytes);
    else
      launch(flash_backward_dkdv_mma_documents<128, 1, A>,
             flash_backward_dq_mma_documents<128, 1, A>, mma::BackwardSmem<128>::bytes);
  });
}

}  // namespace attn
}  // namespace tessera::cuda
