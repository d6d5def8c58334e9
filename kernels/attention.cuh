// Shared by the fused attention kernels (flash_attention.cu, stick_breaking.cu): host-side checks,
// bf16 helpers, tile loads into shared memory, warp reductions and scans, and the tensor-core tile
// layout. Shapes as in src/backend/kernels.h:
//   q, out, dq, dout (B, H, T, D); k, v, dk, dv (B, Hkv, T, D); per-row statistics (B, H, T) f32.
// Layouts as in src/backend/attention_shapes.h: the flash and stick-breaking kernels keep the
// strided contract (any views with contiguous rows, HeadStrides), the materialised ones the dense
// one.
//
// Two paths per kernel family:
//  - bf16, D in {64, 128}: tiles of 64 queries x 64 keys, 4 warps per block, on tensor cores (needs
//    sm_80 or newer), fp32 accumulation and softmax / stick-breaking arithmetic: the register-tile
//    bodies of flash_mma.h and stick_mma.h (mma.sync), and for flash also flash_attention.cu's
//    kernels, which stage tiles through shared memory with nvcuda::wmma (the helpers below).
//  - f32, any D <= 128: plain warp-per-row kernels (lane = key or lane = query), no tensor cores; a
//    correctness path for f32 tensors and a second implementation for the parity tests. The plain
//    forwards also run bf16 with a query offset (Tq < Tk queries at positions Tk - Tq + i: the
//    new tokens of KV-cached decoding, a handful of rows for which 64-row tiles would idle).
// Backward passes are deterministic: each output row is written by exactly one warp, and dk/dv come
// from a pass over key blocks (no float atomics).
#pragma once

#include <cuda_bf16.h>
#include <mma.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "backend/attention_shapes.h"
#include "backend/cuda.h"
#include "backend/kernels.h"
#include "block_order.h"
#include "common.cuh"
#include "core/env.h"
#include "flash_mma.h"
#include "head_slices.h"

namespace tessera::cuda::attn {

using bf16_t = __nv_bfloat16;

constexpr int kTile = 64;  // queries and keys per tile on the tensor-core path
constexpr int kWarps = 4;  // warps per block on the tensor-core path; warp w owns rows 16w..16w+15
constexpr int kThreads = kWarps * 32;
constexpr int kPlainMaxD = int(kCudaPlainMaxHeadDim);
// The plain kernels: query rows (a warp each) per block, a row's dimensions per lane, and the most
// query rows their grids take (see plain_row_grid).
constexpr int kPlainWarps = 4;
constexpr int kPerLane = kPlainMaxD / 32;
constexpr int64_t kPlainMaxT = int64_t(kPlainWarps) * 65535;
constexpr unsigned kFull = 0xffffffffu;

// ---- host side --------------------------------------------------------------------------------

using Dims = AttentionDims;

// DeviceGuard: common.cuh.

// allow_offset: the forward takes Tq < Tk queries (KV-cached decoding), which it runs on the plain
// warp-per-row path in bf16 as in f32 (any D <= 128). strided: the kernel keeps the strided
// contract.
inline Dims check_qkv(const char* kernel, const Tensor& q, const Tensor& k, const Tensor& v,
                      bool allow_offset = false, bool strided = false) {
  const Dims d = check_attention_qkv((std::string("cuda ") + kernel).c_str(), q, k, v, allow_offset,
                                     strided);
  const int64_t D = d.D;
  if (q.dtype() == DType::BF16 && d.offset() > 0) {
    TESSERA_CHECK(D >= 1 && D <= kPlainMaxD, "cuda ", kernel,
                  ": head dim with a query offset must be 1..", kPlainMaxD, ", got q ",
                  shape_str(q.shape()));
  } else if (q.dtype() == DType::BF16) {
    TESSERA_CHECK(D == 64 || D == 128, "cuda ", kernel, ": bf16 head dim must be 64 or 128, got q ",
                  shape_str(q.shape()));
  } else {
    TESSERA_CHECK(q.dtype() == DType::F32, "cuda ", kernel, ": dtype ", dtype_name(q.dtype()),
                  " is not supported (bf16 or f32), q ", shape_str(q.shape()));
    TESSERA_CHECK(D >= 1 && D <= kPlainMaxD, "cuda ", kernel, ": f32 head dim must be 1..",
                  kPlainMaxD, ", got q ", shape_str(q.shape()));
  }
  const bool plain = q.dtype() != DType::BF16 || d.offset() > 0;
  TESSERA_CHECK(!plain || (d.T <= kPlainMaxT && d.B * d.H <= 0x7fffffff), "cuda ", kernel,
                ": the warp-per-row kernels take at most ", kPlainMaxT,
                " query rows and 2^31 - 1 heads (B * H), got q ", shape_str(q.shape()));
  // check_attention_qkv checked the layouts: under the dense contract k and v are contiguous or
  // (with a query offset) the filled prefixes of cache buffers, and q must be contiguous.
  for (const Tensor* t : {&q, &k, &v})
    TESSERA_CHECK((strided || t != &q || t->is_contiguous()) && t->device().is_cuda(), "cuda ",
                  kernel, ": inputs must be CUDA tensors", strided ? "" : ", q contiguous",
                  ", got ", t->str());
  return d;
}

// An output or input under the strided contract: shape, dtype, contiguous rows (disjoint for an
// output), on q's device.
inline void check_view(const char* kernel, const char* name, const Tensor& t, const Shape& shape,
                       DType dtype, const Tensor& q, bool output) {
  check_attention_view((std::string("cuda ") + kernel).c_str(), name, t, shape, dtype, output);
  TESSERA_CHECK(t.device() == q.device(), "cuda ", kernel, ": ", name, " must be on ",
                q.device().str(), ", got ", t.str());
}

// A backward's gradients and inputs under the strided contract: dq, dk, dv written (rows
// disjoint), dout and out read, all in q's dtype on q's device.
inline void check_backward_views(const char* kernel, const Tensor& dq, const Tensor& dk,
                                 const Tensor& dv, const Tensor& dout, const Tensor& out,
                                 const Tensor& q, const Tensor& k, const Tensor& v) {
  check_view(kernel, "dq", dq, q.shape(), q.dtype(), q, /*output=*/true);
  check_view(kernel, "dk", dk, k.shape(), q.dtype(), q, /*output=*/true);
  check_view(kernel, "dv", dv, v.shape(), q.dtype(), q, /*output=*/true);
  check_view(kernel, "dout", dout, q.shape(), q.dtype(), q, /*output=*/false);
  check_view(kernel, "out", out, q.shape(), q.dtype(), q, /*output=*/false);
}

inline void check_like(const char* kernel, const char* name, const Tensor& t, const Shape& shape,
                       DType dtype, const Tensor& q) {
  TESSERA_CHECK(t.defined() && t.shape() == shape && t.dtype() == dtype && t.is_contiguous() &&
                    t.device() == q.device(),
                "cuda ", kernel, ": ", name, " must be a contiguous ", dtype_name(dtype), " ",
                shape_str(shape), " on ", q.device().str(), ", got ",
                t.defined() ? t.str() : std::string("an undefined tensor"));
}

// The tensor-core path reads and writes rows of 8 bf16 (16 bytes) at a time: every row must start
// on a 16-byte boundary, so the data pointer and the batch, head and position strides of a view
// (in elements) must be multiples of 8.
inline bool aligned16(const Tensor& t) {
  if (reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0) return false;
  for (int i = 0; i < 3 && i < t.dim(); ++i)
    if (t.size(i) > 1 && t.strides()[size_t(i)] % 8 != 0) return false;
  return true;
}
// An input as is when its rows are 16-byte aligned, else an aligned contiguous copy.
inline Tensor aligned_input(const Tensor& t) {
  if (t.dtype() != DType::BF16 || aligned16(t)) return t;
  Tensor c = Tensor::empty(t.shape(), t.options());
  c.copy_(t);
  return c;
}
inline void check_aligned_output(const char* kernel, const char* name, const Tensor& t) {
  TESSERA_CHECK(t.dtype() != DType::BF16 || aligned16(t), "cuda ", kernel, ": output ", name, " ",
                t.str(), " is not 16-byte aligned");
}

// Documents in one launch (doc_tiles.h), flash and stick-breaking alike: bf16 only (the f32 kernels
// take one document at a time), and not under TESSERA_FLASH_DOCUMENTS=views, which leaves each
// document's view to a launch of its own (the before of a measurement).
inline bool documents_launch_allowed(const Tensor& q) {
  return q.dtype() == DType::BF16 && !env_switch("TESSERA_FLASH_DOCUMENTS", "launch", "views");
}

// The documents' table on q's device, its entries for blocks of 64 rows (the mma.sync kernels'
// tiles): docs set to it; returned, the stick-breaking checkpoints of every document (in units of
// 4 H). Built and uploaded once a set of spans (doc_table.cu): every layer of a model, forward and
// backward, passes the same ones, and a device holds the last set it was given.
int64_t document_tiles(const char* kernel, const std::vector<DocumentSpan>& spans, const Dims& d,
                       const Tensor& q, DocTiles& docs);

// A 1-D grid over heads x tiles in BlockOrder (block_order.h); shared_bytes: what a head's blocks
// all read (the forward's and dQ's K and V, the dK dV's Q and dO of its query heads).
inline BlockOrder block_order(int64_t heads, int64_t tiles, int64_t shared_bytes) {
  TESSERA_CHECK(heads * tiles <= 0x7fffffff, "flash attention: ", heads, " heads x ", tiles,
                " tiles exceed the grid's 2^31 - 1 blocks");
  return {heads, tiles, heads_per_group(heads, shared_bytes)};
}
// A head slice's rows (head_slices.h) of a (B, H, ...) tensor (per_kv = G: the slice's query
// heads) or of a (B, Hkv, ...) one (per_kv = 1: its kv heads).
inline Tensor slice_rows(const Tensor& t, const HeadSlice& s, int64_t per_kv) {
  return t.narrow(0, s.b0, s.nb).narrow(1, s.g0 * per_kv, s.ng * per_kv);
}

inline dim3 grid_of(const BlockOrder& o) { return dim3(unsigned(o.heads * o.tiles)); }
// Over query heads (forward, dQ): a head's blocks share its kv head's K and V, Tk rows of D bf16
// each, with the group's H / Hkv query heads (adjacent in the order). Over kv heads (dK dV): a
// head's blocks share the Q and dO of its H / Hkv query heads, T rows each.
inline BlockOrder query_head_order(int64_t B, int64_t H, int64_t Hkv, int64_t tiles, int64_t Tk,
                                   int64_t D) {
  return block_order(B * H, tiles, Tk * D * 4 / (H / Hkv));
}
inline BlockOrder kv_head_order(int64_t B, int64_t H, int64_t Hkv, int64_t tiles, int64_t T,
                                int64_t D) {
  return block_order(B * Hkv, tiles, T * D * 4 * (H / Hkv));
}

// The plain warp-per-row kernels (flash_attention.cu, stick_breaking.cu): kPlainWarps query rows
// a block (a warp each) with the head on the grid's x (up to 2^31 - 1) and the row block on y; the
// key-side backward a warp per block of 32 keys of one kv head, the same way. check_qkv bounds T so
// that y stays within its 65535.
inline dim3 plain_row_grid(const Dims& d) {
  return dim3(unsigned(d.B * d.H), unsigned((d.T + kPlainWarps - 1) / kPlainWarps));
}
inline dim3 plain_key_grid(const Dims& d) {
  return dim3(unsigned(d.B * d.Hkv), unsigned((d.T + 31) / 32));
}
// Shared memory: `rows` f32 vectors of D per warp (q; q and dout); the key side's dK and dV rows
// at an odd stride.
inline size_t plain_row_smem(const Dims& d, int rows) {
  return size_t(kPlainWarps) * size_t(rows) * size_t(d.D) * sizeof(float);
}
inline size_t plain_key_smem(const Dims& d) { return 2 * 32 * size_t(d.D + 1) * sizeof(float); }
// f(E{}) for the plain forwards' element type E: bf16_t (KV-cached decoding) or float.
template <typename F>
void with_plain_type(DType dtype, F&& f) {
  if (dtype == DType::BF16)
    f(bf16_t{});
  else
    f(0.0f);
}

// ---- device side ------------------------------------------------------------------------------

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16_t x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16_t from_f32<bf16_t>(float x) {
  return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFull, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFull, x, o));
  return x;
}
// Inclusive suffix scan over the 32 lanes (lanes >= l).
__device__ __forceinline__ float warp_suffix_sum(float x, int lane) {
  for (int o = 1; o < 32; o <<= 1) {
    const float y = __shfl_down_sync(kFull, x, o);
    if (lane + o < 32) x += y;
  }
  return x;
}

// Stick-breaking terms of one score z (Tan et al. 2024), overflow-free for any z: with
// e = exp(-|z|), softplus(z) = -log(1 - sigmoid(z)) = max(z, 0) + log(1 + e) and
// log sigmoid(z) = min(z, 0) - log(1 + e), libm-accurate (the plain kernels are compared with the
// CPU reference at f32 precision).
struct Stick {
  float softplus, log_sigmoid, sigmoid;
};
__device__ __forceinline__ Stick stick_terms(float z) {
  const float e = expf(-fabsf(z));
  const float l = log1pf(e);
  Stick s;
  s.softplus = fmaxf(z, 0.0f) + l;
  s.log_sigmoid = fminf(z, 0.0f) - l;
  s.sigmoid = (z >= 0.0f ? 1.0f : e) / (1.0f + e);
  return s;
}

// out[r] = sum_e a[r, e] * b[r, e] over the rows r = (b H + h) T + t of two (B, H, T, D) views
// (one warp per row): rowsum(dout * out) for the backward passes (FlashAttention-2's D;
// stick-breaking's total of g plus the remainder term). out is a contiguous (B, H, T).
template <typename T>
__global__ void rowdot_kernel(float* out, const T* a, const T* b, HeadStrides sa, HeadStrides sb,
                              int64_t rows, int64_t H, int64_t T_len, int D) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t t = row % T_len, h = (row / T_len) % H, bi = row / (T_len * H);
  const T* ar = a + sa.row(bi, h, t);
  const T* br = b + sb.row(bi, h, t);
  float s = 0;
  for (int e = lane; e < D; e += 32) s += to_f32(ar[e]) * to_f32(br[e]);
  s = warp_sum(s);
  if (lane == 0) out[row] = s;
}

template <typename T>
inline void rowdot(const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t rows = out.numel();
  const int D = int(a.size(-1));
  const int warps = 8;
  rowdot_kernel<T><<<unsigned((rows + warps - 1) / warps), warps * 32>>>(
      static_cast<float*>(out.data_ptr()), static_cast<const T*>(a.data_ptr()),
      static_cast<const T*>(b.data_ptr()), head_strides(a), head_strides(b), rows, a.size(1),
      a.size(2), D);
  CUDA_CHECK_LAUNCH();
}

// ---- tensor-core tiles ------------------------------------------------------------------------
// Shared-memory row strides are padded (bf16 rows by 8, f32 rows by 4 elements) so the 16 rows a
// wmma fragment touches fall in different banks; every fragment then starts on a 32-byte boundary
// as wmma requires (16 * stride * element size and 16 * element size are multiples of 32).
template <int D>
struct TileLayout {
  static constexpr int ld_in = D + 8;     // bf16 q / k / v / dout tiles, 64 x D
  static constexpr int ld_s = kTile + 4;  // f32 score tiles, 64 x 64
  static constexpr int ld_p = kTile + 8;  // bf16 probability / gradient tiles, 64 x 64
  static constexpr int ld_acc = D + 4;    // f32 staging of accumulators, 64 x D
  static constexpr size_t in_bytes = size_t(kTile) * ld_in * 2;
  static constexpr size_t s_bytes = size_t(kTile) * ld_s * 4;
  static constexpr size_t p_bytes = size_t(kTile) * ld_p * 2;
  static constexpr size_t acc_bytes = size_t(kTile) * ld_acc * 4;
  static_assert(in_bytes % 128 == 0 && s_bytes % 128 == 0 && p_bytes % 128 == 0 &&
                    acc_bytes % 128 == 0,
                "regions must keep 128-byte alignment");
};

// Rows [row0, row0 + 64) of a (rows_total, D) bf16 matrix whose rows lie ld elements apart (D
// when dense; a multiple of 8) into a padded shared tile; rows past rows_total read as zeros
// (their scores are masked, and zero rows add nothing to products).
template <int D>
__device__ __forceinline__ void load_tile(bf16_t* dst, const bf16_t* src, int64_t row0,
                                          int64_t rows_total, int64_t ld = D) {
  constexpr int kVec = 8;  // bf16 per 16-byte load
  constexpr int kPerRow = D / kVec;
  for (int idx = threadIdx.x; idx < kTile * kPerRow; idx += blockDim.x) {
    const int r = idx / kPerRow, c = (idx % kPerRow) * kVec;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (row0 + r < rows_total) val = *reinterpret_cast<const uint4*>(src + (row0 + r) * ld + c);
    *reinterpret_cast<uint4*>(dst + r * TileLayout<D>::ld_in + c) = val;
  }
}

namespace wmma = nvcuda::wmma;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16_t, wmma::row_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16_t, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16_t, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// s (16 x 64, f32, stride ld_s) = a (16 x D rows of a bf16 tile) @ b^T, b a 64 x D bf16 tile:
// scores of one warp's 16 rows against the 64 rows of b.
template <int D>
__device__ __forceinline__ void warp_abt(float* s, const bf16_t* a, const bf16_t* b) {
  constexpr int ld = TileLayout<D>::ld_in;
#pragma unroll
  for (int n = 0; n < kTile / 16; ++n) {
    FragC c;
    wmma::fill_fragment(c, 0.0f);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      FragA fa;
      FragBT fb;
      wmma::load_matrix_sync(fa, a + kk * 16, ld);
      wmma::load_matrix_sync(fb, b + n * 16 * ld + kk * 16, ld);
      wmma::mma_sync(c, fa, fb, c);
    }
    wmma::store_matrix_sync(s + n * 16, c, TileLayout<D>::ld_s, wmma::mem_row_major);
  }
}

// acc[ct] (16 x D as D/16 fragments) += p (16 x 64 bf16, stride ld_p) @ m (64 x D bf16 tile).
template <int D>
__device__ __forceinline__ void warp_pm(FragC (&acc)[D / 16], const bf16_t* p, const bf16_t* m) {
  constexpr int ld = TileLayout<D>::ld_in, ldp = TileLayout<D>::ld_p;
#pragma unroll
  for (int ks = 0; ks < kTile / 16; ++ks) {
    FragA fa;
    wmma::load_matrix_sync(fa, p + ks * 16, ldp);
#pragma unroll
    for (int ct = 0; ct < D / 16; ++ct) {
      FragB fb;
      wmma::load_matrix_sync(fb, m + ks * 16 * ld + ct * 16, ld);
      wmma::mma_sync(acc[ct], fa, fb, acc[ct]);
    }
  }
}

// One warp's 16 x D accumulator out to rows [row0, row0 + 16) of a (rows_total, D) matrix whose
// rows lie ld elements apart (D when dense), times `mul`, through a 16 x ld_acc f32 staging area
// (the warp's own).
template <int D, typename T>
__device__ __forceinline__ void warp_store_acc(T* dst, int64_t row0, int64_t rows_total,
                                               FragC (&acc)[D / 16], float* stage, float mul,
                                               int64_t ld_dst = D) {
  constexpr int ld = TileLayout<D>::ld_acc;
#pragma unroll
  for (int ct = 0; ct < D / 16; ++ct)
    wmma::store_matrix_sync(stage + ct * 16, acc[ct], ld, wmma::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x % 32;
  for (int idx = lane; idx < 16 * D; idx += 32) {
    const int r = idx / D, c = idx % D;
    if (row0 + r < rows_total) dst[(row0 + r) * ld_dst + c] = from_f32<T>(mul * stage[r * ld + c]);
  }
  __syncwarp();
}

}  // namespace tessera::cuda::attn

namespace tessera::cuda {
// flash_attention.cu
void flash_attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                             const Tensor& v, double scale, const AttentionMask& mask);
void flash_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                              const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& out, const Tensor& lse, double scale,
                              const AttentionMask& mask);
bool flash_attention_forward_documents(const Tensor& out, const Tensor& lse, const Tensor& q,
                                       const Tensor& k, const Tensor& v, double scale,
                                       const AttentionMask& mask,
                                       const std::vector<DocumentSpan>& spans);
bool flash_attention_backward_documents(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                        const Tensor& dout, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& out, const Tensor& lse,
                                        double scale, const AttentionMask& mask,
                                        const std::vector<DocumentSpan>& spans);
// flash_mma.cu: the register-tile bf16 kernels at D in {64, 128}, on inputs already checked and
// 16-byte aligned (flash_attention.cu does both); drow = rowsum(dout * out), as the backward's D.
namespace attn {
void flash_mma_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                       const Tensor& v, const FlashParams& p, int64_t B, int64_t D);
void flash_mma_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                        const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lse,
                        const Tensor& drow, const FlashParams& p, int64_t B, int64_t D);
// The same kernels over the documents of p.docs (doc_tiles.h), one launch each pass.
void flash_mma_documents_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                 const Tensor& k, const Tensor& v, const FlashParams& p, int64_t B,
                                 int64_t D);
void flash_mma_documents_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                  const Tensor& dout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& lse, const Tensor& drow,
                                  const FlashParams& p, int64_t B, int64_t D);
FlashStats& flash_counts();  // what cuda::flash_stats() returns, for the launches to count in
// flash_wgmma.cu: the same kernels on Hopper's wgmma (FlashKernels::Wgmma and WgmmaNarrow, the
// latter with fewer registers at D 64: a 64-query forward, K and V not held in dK dV; sm_90a
// builds, compute capability 9.0 devices: an error naming what is missing otherwise).
void flash_wgmma_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, const FlashParams& p, int64_t B, int64_t D, bool narrow);
void flash_wgmma_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                          const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lse,
                          const Tensor& drow, const FlashParams& p, int64_t B, int64_t D,
                          bool narrow);
}  // namespace attn
// stick_breaking.cu
void stick_breaking_forward(const Tensor& out, const Tensor& log_rem, const Tensor& rem,
                            const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                            bool attend_current, bool add_remainder);
void stick_breaking_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& out, const Tensor& log_rem, double scale,
                             bool attend_current, bool add_remainder);
bool stick_breaking_forward_documents(const Tensor& out, const Tensor& log_rem, const Tensor& rem,
                                      const Tensor& q, const Tensor& k, const Tensor& v,
                                      double scale, bool attend_current, bool add_remainder,
                                      const std::vector<DocumentSpan>& spans);
bool stick_breaking_backward_documents(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                       const Tensor& dout, const Tensor& q, const Tensor& k,
                                       const Tensor& v, const Tensor& out, const Tensor& log_rem,
                                       double scale, bool attend_current, bool add_remainder,
                                       const std::vector<DocumentSpan>& spans);
}  // namespace tessera::cuda
