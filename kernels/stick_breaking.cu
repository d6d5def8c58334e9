// Stick-breaking attention (Tan et al. 2024, arXiv:2410.17980), fused forward and backward on
// CUDA. The CPU twin (src/backend/cpu/stick_breaking.cpp) is the reference and derives the
// formulas. In brief, for query j and the keys i it attends (i < j, or i <= j with
// attend_current), with z = scale q_j . k_i and sp = softplus(z) = -log(1 - beta):
//   log A[i] = logsigmoid(z[i]) - tail(i),  tail(i) = sum of sp over the attended keys after i,
//   out_j = sum_i A[i] v_i (+ rem_j v_j),  log rem_j = -(sum of sp over every attended key).
//
// q, out, dq, dout (B, H, T, D) bf16 or f32; k, v, dk, dv (B, Hkv, T, D): any views with
// contiguous rows (the strided contract of backend/attention_shapes.h), so the heads are read and
// written where a fused projection keeps them; log_rem (B, H, T) f32 and rem (B, H, T) in q's
// dtype, optional, contiguous. The forward also takes q (B, H, Tq, D) over Tk > Tq keys
// (KV-cached decoding): query j then sits at position Tk - Tq + j, on the plain path
// (sb_forward_plain) for bf16 and f32 alike.
//
// Key blocks are visited from the diagonal back to position 0, each row carrying tail across
// blocks, so every term of every sum is <= 0 and nothing underflows but the weights that truly are
// below f32's range. No running max or rescaling: A <= 1.
//
// Backward, with g[i] = A[i] (dout_j . v_i) and W_j = dout_j . out_j (the CPU file shows that its
// running sum rbar rem_j + sum_{i<=k} g[i] ends at W_j):
//   dz[k] = g[k] - beta[k] (W_j - sum_{i>k} g[i]),
// so both running sums go over the keys after k, the same direction as the forward's tail.
//  - Pass 1, per query row, key blocks from the diagonal down: dq_j = scale sum_k dz[k] k_k; at
//    each key block it also checkpoints the sums over the keys past it (tail, sum of g). (The
//    register-tile pass lets a tail whose exp is below f32's range be -inf: a tail only ever
//    becomes a factor exp(-tail), 0 either way; stick_mma.h.)
//  - Pass 2, per key block of one kv head, over the queries after it and the G query heads of its
//    group: recomputes A and dz from the checkpoints, and
//    dk_k = scale sum_j dz[k, j] q_j,  dv_i = sum_j A[i, j] dout_j (+ rem_i dout_i, remainder).
// Each output row is written by one warp, with no atomics: deterministic.
//
// Two paths: bf16 at D 64 and 128 runs stick_mma.h's register-tile bodies (64-key tiles; its
// checkpoints are per row, tile and lane of a quad, 32 bytes: T^2 / 2 bytes per head, 2 GiB at
// B H = 16, T = 16384); f32 (and bf16 with a query offset) the plain warp-per-row kernels below.
#include "attention.cuh"
#include "backend/cuda.h"
#include "mma_device.cuh"
#include "stick_mma.h"

namespace tessera::cuda {
namespace {

using namespace attn;

// ---- bf16, tensor cores: stick_mma.h ----------------------------------------------------------

template <int D, int MT, int kStages = 1>
__device__ __forceinline__ void sb_forward_body(uint16_t* out, float* log_rem, uint16_t* rem,
                                                const uint16_t* q, const uint16_t* k,
                                                const uint16_t* v, const StickParams& p,
                                                const BlockOrder& order) {
  extern __shared__ __align__(128) unsigned char smem[];
  DeviceCtx w{smem};
  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);  // the longest rows first
  mma::stick_forward_block<D, MT, kStages>(w, out, log_rem, rem, q, k, v, p, at.tile, at.head);
}

// 64-row blocks held to four blocks an SM at D 64 (126 registers, no spill; unbounded, ptxas took
// 144, three blocks, once the walks' rare exact-log path, stick_exact_log2, was in the loop) and
// to three at D 128 (162; the tiles allow four); 128-row blocks to one (230) (nvcc 13.0, sm_90).
template <int D, int MT>
__global__ void __launch_bounds__(kMmaThreads, MT == 2   ? 1
                                               : D == 64 ? 4
                                                         : 3)
    sb_forward_mma(uint16_t* out, float* log_rem, uint16_t* rem, const uint16_t* q,
                   const uint16_t* k, const uint16_t* v, StickParams p, BlockOrder order) {
  sb_forward_body<D, MT>(out, log_rem, rem, q, k, v, p, order);
}

// K and V in two stages (FlashKernels::Mma2Stage), 64-row blocks, held to the one-stage kernel's
// blocks an SM: at D 64 four (ptxas, nvcc 13.0, sm_90: 128 registers, no spill; unbounded it took
// 141, three blocks); at D 128 three (166; 217 under a bound of one block), though there the five
// 17 KB tiles allow two blocks an SM where one stage's three allow four. Not yet run on a GPU.
template <int D, int kMinBlocks>
__global__ void __launch_bounds__(kMmaThreads, kMinBlocks)
    sb_forward_mma_2stage(uint16_t* out, float* log_rem, uint16_t* rem, const uint16_t* q,
                          const uint16_t* k, const uint16_t* v, StickParams p, BlockOrder order) {
  sb_forward_body<D, 1, 2>(out, log_rem, rem, q, k, v, p, order);
}

// At D 64 held to three blocks an SM: unbounded, ptxas (nvcc 13.0, sm_90) takes 230 registers
// for the straight-line walks (two blocks); bounded, 168 and no spill.
template <int D>
__global__ void __launch_bounds__(kMmaThreads, D == 64 ? 3 : 1)
    sb_backward_dq_mma(uint16_t* dq, mma::StickCkpt* ckpt, const uint16_t* q, const uint16_t* k,
                       const uint16_t* v, const uint16_t* dout, const float* wrow, StickParams p,
                       BlockOrder order) {
  extern __shared__ __align__(128) unsigned char smem[];
  DeviceCtx w{smem};
  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);
  mma::stick_backward_dq_block<D>(w, dq, ckpt, q, k, v, dout, wrow, p, at.tile, at.head);
}

// Two stages of the streamed Q and dO at D 64; one at D 128, where two would leave room for one
// block per SM (123 KB).
template <int D>
constexpr int kStickDkdvStages = D == 64 ? 2 : 1;

// At D 64 held to three blocks an SM, as the softmax dK dV kernel is (measured 0.86-0.88x of its
// time at two blocks on the H200, spills and all): ptxas (nvcc 13.0, sm_90) 168 registers and 24
// bytes of spill (6 accesses an item) where unbounded it took 231 (two blocks); its 72 KB of
// shared memory allow three. Not yet run on a GPU.
template <int D>
__global__ void __launch_bounds__(kMmaThreads, D == 64 ? 3 : 1)
    sb_backward_dkdv_mma(uint16_t* dk, uint16_t* dv, const mma::StickCkpt* ckpt, const uint16_t* q,
                         const uint16_t* k, const uint16_t* v, const uint16_t* dout,
                         const float* wrow, const float* log_rem, StickParams p, BlockOrder order) {
  extern __shared__ __align__(128) unsigned char smem[];
  DeviceCtx w{smem};
  const HeadTile at = key_tile_block(int64_t(blockIdx.x), order);
  mma::stick_backward_dkdv_block<D, kStickDkdvStages<D>>(w, dk, dv, ckpt, q, k, v, dout, wrow,
                                                         log_rem, p, at.tile, at.head);
}

// A documents launch (doc_tiles.h), as flash_launch.cuh's kDocs bodies: each block runs its entry's
// document as a launch on that document's view would (T its length, every pointer at its first
// row; log rem, rem and W kept in the batch's rows, p.T apart; the checkpoints at the document's
// own, doc_ckpt_base), bounded as the kernels above; the forward's K and V in two stages where the
// family's are (two_stage_forward: ptxas, nvcc 13.0, sm_90, 128 registers at D 64 and 168 at
// D 128, no spill). An empty entry's block returns at once.
__device__ __forceinline__ StickParams within_document(const StickParams& p, const DocTile& e) {
  StickParams d = p;
  d.T = d.Tk = e.length;
  return d;
}
// ckpt_base of a block of batch row b on entry e: the document's checkpoints start at e.ckpt 4 H,
// and the body's ckpt_index counts b H tiles length 4 of them before its head's.
__device__ __forceinline__ int64_t doc_ckpt_base(const StickParams& p, const DocTile& e,
                                                 int64_t b) {
  return (int64_t(e.ckpt) - b * doc_ckpt_units(e.length, kMmaTile)) * 4 * p.H;
}

template <int D, int kStages = 1>
__global__ void __launch_bounds__(kMmaThreads, D == 64 ? 4 : 3)
    sb_forward_mma_documents(uint16_t* out, float* log_rem, uint16_t* rem, const uint16_t* q,
                             const uint16_t* k, const uint16_t* v, StickParams p,
                             BlockOrder order) {
  extern __shared__ __align__(128) unsigned char smem[];
  DeviceCtx w{smem};
  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);
  const DocTile e = doc_tile(p.docs, at.head / p.H, order.tiles - 1 - at.tile);
  if (e.length == 0) return;
  const int64_t s = e.start;
  mma::stick_forward_block<D, 1, kStages>(w, out + s * p.o.t, log_rem + s, rem ? rem + s : nullptr,
                                          q + s * p.q.t, k + s * p.k.t, v + s * p.v.t,
                                          within_document(p, e), e.tile, at.head, p.T);
}

template <int D>
__global__ void __launch_bounds__(kMmaThreads, D == 64 ? 3 : 1)
    sb_backward_dq_mma_documents(uint16_t* dq, mma::StickCkpt* ckpt, const uint16_t* q,
                                 const uint16_t* k, const uint16_t* v, const uint16_t* dout,
                                 const float* wrow, StickParams p, BlockOrder order) {
  extern __shared__ __align__(128) unsigned char smem[];
  DeviceCtx w{smem};
  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);
  const int64_t b = at.head / p.H;
  const DocTile e = doc_tile(p.docs, b, order.tiles - 1 - at.tile);
  if (e.length == 0) return;
  const int64_t s = e.start;
  mma::stick_backward_dq_block<D>(
      w, dq + s * p.dq.t, ckpt, q + s * p.q.t, k + s * p.k.t, v + s * p.v.t, dout + s * p.dout.t,
      wrow + s, within_document(p, e), e.tile, at.head, p.T, doc_ckpt_base(p, e, b));
}

template <int D>
__global__ void __launch_bounds__(kMmaThreads, D == 64 ? 3 : 1)
    sb_backward_dkdv_mma_documents(uint16_t* dk, uint16_t* dv, const mma::StickCkpt* ckpt,
                                   const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                   const uint16_t* dout, const float* wrow, const float* log_rem,
                                   StickParams p, BlockOrder order) {
  extern __shared__ __align__(128) unsigned char smem[];
  DeviceCtx w{smem};
  const HeadTile at = key_tile_block(int64_t(blockIdx.x), order);
  const int64_t b = at.head / p.Hkv;
  const DocTile e = doc_tile(p.docs, b, at.tile);
  if (e.length == 0) return;
  const int64_t s = e.start;
  mma::stick_backward_dkdv_block<D, kStickDkdvStages<D>>(
      w, dk + s * p.dk.t, dv + s * p.dv.t, ckpt, q + s * p.q.t, k + s * p.k.t, v + s * p.v.t,
      dout + s * p.dout.t, wrow + s, log_rem + s, within_document(p, e), doc_key_tile(e, kMmaTile),
      at.head, p.T, doc_ckpt_base(p, e, b));
}

const uint16_t* bits(const Tensor& t) { return static_cast<const uint16_t*>(t.data_ptr()); }
uint16_t* mut_bits(const Tensor& t) { return static_cast<uint16_t*>(t.data_ptr()); }

// The bf16 backward's two launches: dQ, which writes the checkpoints cp, then dK dV, which reads
// them; the batch's kernels, or with kDocs the documents ones (p.docs). wr: W, lr: log rem.
template <bool kDocs>
void stick_backward_launches(const Dims& d, const BlockOrder& q_order, const BlockOrder& kv_order,
                             const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             mma::StickCkpt* cp, const Tensor& Q, const Tensor& K, const Tensor& V,
                             const Tensor& dO, const float* wr, const float* lr,
                             const StickParams& p) {
  auto run = [&](auto dq_kernel, size_t dq_bytes, auto dkdv_kernel, size_t dkdv_bytes) {
    allow_smem(dq_kernel, dq_bytes);
    dq_kernel<<<grid_of(q_order), kMmaThreads, dq_bytes>>>(mut_bits(dq), cp, bits(Q), bits(K),
                                                           bits(V), bits(dO), wr, p, q_order);
    CUDA_CHECK_LAUNCH();
    allow_smem(dkdv_kernel, dkdv_bytes);
    dkdv_kernel<<<grid_of(kv_order), kMmaThreads, dkdv_bytes>>>(
        mut_bits(dk), mut_bits(dv), cp, bits(Q), bits(K), bits(V), bits(dO), wr, lr, p, kv_order);
    CUDA_CHECK_LAUNCH();
  };
  constexpr size_t kDkdv64 = mma::StickDkdvSmem<64, kStickDkdvStages<64>>::bytes;
  constexpr size_t kDkdv128 = mma::StickDkdvSmem<128, kStickDkdvStages<128>>::bytes;
  if constexpr (kDocs) {
    if (d.D == 64)
      run(sb_backward_dq_mma_documents<64>, mma::BackwardSmem<64>::bytes,
          sb_backward_dkdv_mma_documents<64>, kDkdv64);
    else
      run(sb_backward_dq_mma_documents<128>, mma::BackwardSmem<128>::bytes,
          sb_backward_dkdv_mma_documents<128>, kDkdv128);
  } else {
    if (d.D == 64)
      run(sb_backward_dq_mma<64>, mma::BackwardSmem<64>::bytes, sb_backward_dkdv_mma<64>, kDkdv64);
    else
      run(sb_backward_dq_mma<128>, mma::BackwardSmem<128>::bytes, sb_backward_dkdv_mma<128>,
          kDkdv128);
  }
}

// ---- f32, plain -------------------------------------------------------------------------------
// Keys in fixed blocks of 32 (lane l = key 32 kb + l), visited from the diagonal down; a warp per
// query row for the forward and pass 1, a warp per key block for pass 2. Exact libm functions:
// this path is compared with the CPU reference at f32 precision.

// One block of 32 keys for one query row: A (and dz) of this lane's key.
template <bool kGrad>
__device__ __forceinline__ void stick_block_lane(float z, float da, bool vis, float tail,
                                                 float gsum, float w, float& a, float& dz,
                                                 float& tail_add, float& gsum_add, int lane) {
  const Stick t = stick_terms(z);
  const float sp = vis ? t.softplus : 0.0f;
  const float sp_incl = warp_suffix_sum(sp, lane);
  a = vis ? expf(t.log_sigmoid - tail - (sp_incl - sp)) : 0.0f;
  tail_add = __shfl_sync(kFull, sp_incl, 0);
  if constexpr (kGrad) {
    const float g = a * da;
    const float g_incl = warp_suffix_sum(g, lane);
    dz = vis ? g - t.sigmoid * (w - gsum - (g_incl - g)) : 0.0f;
    gsum_add = __shfl_sync(kFull, g_incl, 0);
  }
}

// The plain forward also takes a query offset (p.Tk > p.T: query i at position Tk - T + i) and
// bf16 tensors, loaded into f32: KV-cached decoding.
template <typename E>
__global__ void __launch_bounds__(kPlainWarps * 32)
    sb_forward_plain(E* out, float* log_rem, E* rem, const E* q, const E* k, const E* v,
                     StickParams p, int D) {
  extern __shared__ float plain_smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t i = int64_t(blockIdx.y) * kPlainWarps + warp, T = p.T, Tk = p.Tk;
  const int64_t pos = Tk - T + i;  // the query's position among the keys
  const int bh = blockIdx.x;  // plain_row_grid
  if (i >= T) return;  // whole warps only; no block-wide barrier below
  const HeadIndex hi = head_index(bh, p);
  const E* kh = k + p.k.row(hi.b, hi.g, 0);  // a cache's filled prefix is a view too
  const E* vh = v + p.v.row(hi.b, hi.g, 0);
  float* qs = plain_smem + warp * D;
  for (int e = lane; e < D; e += 32) qs[e] = to_f32(q[p.q.row(hi.b, hi.h, i) + e]);
  __syncwarp();
  float o[kPerLane] = {};
  float tail = 0.0f;
  const int64_t last = p.attend_current ? pos : pos - 1;
  for (int64_t kb = last >= 0 ? last / 32 : -1; kb >= 0; --kb) {
    const int64_t j = kb * 32 + lane;
    const bool vis = j <= last;
    float z = 0.0f;
    if (vis) {
      for (int e = 0; e < D; ++e) z += qs[e] * to_f32(kh[j * p.k.t + e]);
      z *= p.scale;
    }
    float a, unused_dz, add, unused_g;
    stick_block_lane<false>(z, 0.0f, vis, tail, 0.0f, 0.0f, a, unused_dz, add, unused_g, lane);
    tail += add;
    const int n = int(last - kb * 32 + 1 < 32 ? last - kb * 32 + 1 : 32);
    for (int src = 0; src < n; ++src) {
      const float av = __shfl_sync(kFull, a, src);
      const E* vr = vh + (kb * 32 + src) * p.v.t;
#pragma unroll
      for (int t = 0; t < kPerLane; ++t)
        if (lane + 32 * t < D) o[t] += av * to_f32(vr[lane + 32 * t]);
    }
  }
  const float r = expf(-tail);
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) {
    const int e = lane + 32 * t;
    if (e >= D) continue;
    if (p.add_remainder) o[t] += r * to_f32(vh[pos * p.v.t + e]);
    out[p.o.row(hi.b, hi.h, i) + e] = from_f32<E>(o[t]);
  }
  if (lane == 0) {
    log_rem[int64_t(bh) * T + i] = -tail;
    if (rem) rem[int64_t(bh) * T + i] = from_f32<E>(r);
  }
}

__global__ void __launch_bounds__(kPlainWarps * 32)
    sb_backward_dq_plain(float* dq, float2* ckpt, const float* q, const float* k, const float* v,
                         const float* dout, const float* wrow, StickParams p, int D, int64_t blocks) {
  extern __shared__ float plain_smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t i = int64_t(blockIdx.y) * kPlainWarps + warp, T = p.T;
  const int bh = blockIdx.x;  // plain_row_grid
  if (i >= T) return;
  const HeadIndex hi = head_index(bh, p);
  const float* kh = k + p.k.row(hi.b, hi.g, 0);
  const float* vh = v + p.v.row(hi.b, hi.g, 0);
  float* qs = plain_smem + warp * 2 * D;
  float* dos = qs + D;
  for (int e = lane; e < D; e += 32) {
    qs[e] = q[p.q.row(hi.b, hi.h, i) + e];
    dos[e] = dout[p.dout.row(hi.b, hi.h, i) + e];
  }
  __syncwarp();
  const float w = wrow[int64_t(bh) * T + i];
  float acc[kPerLane] = {};
  float tail = 0.0f, gsum = 0.0f;
  const int64_t last = p.attend_current ? i : i - 1;
  for (int64_t kb = last >= 0 ? last / 32 : -1; kb >= 0; --kb) {
    if (lane == 0) ckpt[(int64_t(bh) * T + i) * blocks + kb] = make_float2(tail, gsum);
    const int64_t j = kb * 32 + lane;
    const bool vis = j <= last;
    float z = 0.0f, da = 0.0f;
    if (vis) {
      for (int e = 0; e < D; ++e) {
        z += qs[e] * kh[j * p.k.t + e];
        da += dos[e] * vh[j * p.v.t + e];
      }
      z *= p.scale;
    }
    float a, dz, tail_add, gsum_add;
    stick_block_lane<true>(z, da, vis, tail, gsum, w, a, dz, tail_add, gsum_add, lane);
    tail += tail_add;
    gsum += gsum_add;
    const int n = int(last - kb * 32 + 1 < 32 ? last - kb * 32 + 1 : 32);
    for (int src = 0; src < n; ++src) {
      const float dzv = __shfl_sync(kFull, dz, src);
      const float* kr = kh + (kb * 32 + src) * p.k.t;
#pragma unroll
      for (int t = 0; t < kPerLane; ++t)
        if (lane + 32 * t < D) acc[t] += dzv * kr[lane + 32 * t];
    }
  }
#pragma unroll
  for (int t = 0; t < kPerLane; ++t)
    if (lane + 32 * t < D) dq[p.dq.row(hi.b, hi.h, i) + lane + 32 * t] = p.scale * acc[t];
}

// A warp per block of 32 keys of one kv head (lane = key); queries one at a time, the same for
// every lane, over the G query heads of the group; dK and dV rows accumulate in shared memory.
__global__ void __launch_bounds__(32)
    sb_backward_dkdv_plain(float* dk, float* dv, const float2* ckpt, const float* q, const float* k,
                           const float* v, const float* dout, const float* wrow,
                           const float* log_rem, StickParams p, int D, int64_t blocks) {
  extern __shared__ float plain_smem[];
  const int lane = threadIdx.x;
  const int bkv = blockIdx.x;  // plain_key_grid
  const int b = bkv / p.Hkv, g = bkv % p.Hkv, G = p.H / p.Hkv;
  const int64_t T = p.T, kb = blockIdx.y, j = kb * 32 + lane;
  const int ld = D + 1;  // odd stride: lanes hit different banks
  float* dks = plain_smem;
  float* dvs = plain_smem + 32 * ld;
  for (int e = 0; e < D; ++e) dks[lane * ld + e] = dvs[lane * ld + e] = 0.0f;
  const float* kj = k + p.k.row(b, g, j);
  const float* vj = v + p.v.row(b, g, j);
  for (int h = g * G; h < (g + 1) * G; ++h) {
    const int64_t bh = int64_t(b) * p.H + h;
    // Pass 1 wrote ckpt[i][kb] for every row whose last key is in block kb or later.
    for (int64_t i = kb * 32 + (p.attend_current ? 0 : 1); i < T; ++i) {
      const bool vis = j < T && attends(i, j, p);
      const float* qi = q + p.q.row(b, h, i);
      const float* doi = dout + p.dout.row(b, h, i);
      float z = 0.0f, da = 0.0f;
      if (vis) {
        for (int e = 0; e < D; ++e) {
          z += qi[e] * kj[e];
          da += doi[e] * vj[e];
        }
        z *= p.scale;
      }
      const float2 ck = ckpt[(bh * T + i) * blocks + kb];
      float a, dz, unused_t, unused_g;
      stick_block_lane<true>(z, da, vis, ck.x, ck.y, wrow[bh * T + i], a, dz, unused_t, unused_g,
                             lane);
      if (vis)
        for (int e = 0; e < D; ++e) {
          dks[lane * ld + e] += dz * qi[e];
          dvs[lane * ld + e] += a * doi[e];
        }
    }
    if (p.add_remainder && j < T) {
      const float r = expf(log_rem[bh * T + j]);
      for (int e = 0; e < D; ++e) dvs[lane * ld + e] += r * dout[p.dout.row(b, h, j) + e];
    }
  }
  if (j < T)
    for (int e = 0; e < D; ++e) {
      dk[p.dk.row(b, g, j) + e] = p.scale * dks[lane * ld + e];
      dv[p.dv.row(b, g, j) + e] = dvs[lane * ld + e];
    }
}

// The forward's parameters; the backward adds its gradients' strides.
StickParams params_of(const Dims& d, double scale, bool attend_current, bool add_remainder,
                      const Tensor& out) {
  StickParams p{};
  p.T = d.T, p.H = int(d.H), p.Hkv = int(d.Hkv), p.scale = float(scale), p.Tk = d.Tk;
  p.attend_current = attend_current, p.add_remainder = add_remainder;
  p.q = d.q, p.k = d.k, p.v = d.v, p.o = head_strides(out);
  return p;
}

}  // namespace

void stick_breaking_forward(const Tensor& out, const Tensor& log_rem, const Tensor& rem,
                            const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                            bool attend_current, bool add_remainder) {
  const char* name = "stick_breaking_forward";
  const Dims d = check_qkv(name, q, k, v, /*allow_offset=*/true, /*strided=*/true);
  check_view(name, "out", out, q.shape(), q.dtype(), q, /*output=*/true);
  check_like(name, "log_rem", log_rem, {d.B, d.H, d.T}, DType::F32, q);
  if (rem.defined()) check_like(name, "rem", rem, {d.B, d.H, d.T}, q.dtype(), q);
  if (d.T == 0 || d.B == 0 || d.H == 0) return;
  DeviceGuard guard(q.device().index);
  StickParams p = params_of(d, scale, attend_current, add_remainder, out);
  float* lr = static_cast<float*>(log_rem.data_ptr());
  if (q.dtype() == DType::BF16 && d.offset() == 0) {
    check_aligned_output(name, "out", out);
    Tensor Q = aligned_input(q), K = aligned_input(k), V = aligned_input(v);
    p.q = head_strides(Q), p.k = head_strides(K), p.v = head_strides(V);  // copies are dense
    uint16_t* rp = rem.defined() ? mut_bits(rem) : nullptr;
    // 64-row blocks: at D 64 the faster on the H200 (2026-12-04: 0.910 ms against 1.281 for
    // 128-row ones at B 16, H 32, T 1024; docs/gpu-notes.md), at D 128 the only ones, as two
    // groups spill there (nvcc 13.0, sm_90). 128-row blocks (two groups of 16 rows per warp, 232
    // registers at D 64) under Mma3Blocks, the family that measures 128-row forwards.
    const bool narrow = flash_kernels() != FlashKernels::Mma3Blocks || d.D == 128;
    const int64_t rows = kMmaTile * (narrow ? 1 : 2);
    const BlockOrder order = query_head_order(d.B, d.H, d.Hkv, (d.T + rows - 1) / rows, d.T, d.D);
    auto launch = [&](auto kernel, size_t bytes) {
      allow_smem(kernel, bytes);
      kernel<<<grid_of(order), kMmaThreads, bytes>>>(mut_bits(out), lr, rp, bits(Q), bits(K),
                                                     bits(V), p, order);
      CUDA_CHECK_LAUNCH();
    };
    // Mma2Stage, Mma2StageDs: K and V in two stages (mma::stick_forward_block<..., 2>).
    if (two_stage_forward(flash_kernels())) {  // counted with its launch (cuda::flash_stats)
      ++attn::flash_counts().two_stage_forwards;
      if (d.D == 128)
        launch(sb_forward_mma_2stage<128, 3>, mma::ForwardSmem<128, 1, mma::RowTiles, 2>::bytes);
      else
        launch(sb_forward_mma_2stage<64, 4>, mma::ForwardSmem<64, 1, mma::RowTiles, 2>::bytes);
    } else if (d.D == 128)
      launch(sb_forward_mma<128, 1>, mma::ForwardSmem<128, 1>::bytes);
    else if (narrow)
      launch(sb_forward_mma<64, 1>, mma::ForwardSmem<64, 1>::bytes);
    else
      launch(sb_forward_mma<64, 2>, mma::ForwardSmem<64, 2>::bytes);
  } else {
    with_plain_type(q.dtype(), [&](auto zero) {
      using E = decltype(zero);
      E* rp = rem.defined() ? static_cast<E*>(rem.data_ptr()) : nullptr;
      sb_forward_plain<E><<<plain_row_grid(d), kPlainWarps * 32, plain_row_smem(d, 1)>>>(
          static_cast<E*>(out.data_ptr()), lr, rp, static_cast<const E*>(q.data_ptr()),
          static_cast<const E*>(k.data_ptr()), static_cast<const E*>(v.data_ptr()), p, int(d.D));
      CUDA_CHECK_LAUNCH();
    });
  }
}

namespace {

// One backward over all of its (B, H): the checkpoints of every head at once.
void backward_pass(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                   const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                   const Tensor& log_rem, double scale, bool attend_current, bool add_remainder) {
  const char* name = "stick_breaking_backward";
  const Dims d = check_qkv(name, q, k, v, /*allow_offset=*/false, /*strided=*/true);
  check_backward_views(name, dq, dk, dv, dout, out, q, k, v);
  check_like(name, "log_rem", log_rem, {d.B, d.H, d.T}, DType::F32, q);
  if (d.T == 0 || d.B == 0 || d.H == 0) return;
  DeviceGuard guard(q.device().index);
  StickParams p = params_of(d, scale, attend_current, add_remainder, out);
  p.dq = head_strides(dq), p.dk = head_strides(dk), p.dv = head_strides(dv);
  p.dout = head_strides(dout);
  Tensor wrow = Tensor::empty({d.B, d.H, d.T}, {DType::F32, q.device()});  // dout . out per row
  // The backward's checkpoints grow with T^2 (B H T^2 / 2 bytes in bf16, T^2 / 4 in f32; flash
  // attention's scratch grows with T): an allocation that fails says so.
  auto checkpoints = [&](int64_t floats) {
    try {
      return Tensor::empty({floats}, {DType::F32, q.device()});
    } catch (const Error& e) {
      TESSERA_FAIL(name, ": the stick-breaking backward's checkpoints take ", floats * 4,
                   " bytes at B ", d.B, ", H ", d.H, ", T ", d.T, " (they grow with T^2): a "
                   "smaller batch or sequence length, or softmax attention, fits (",
                   e.what(), ")");
    }
  };
  const float* wr = static_cast<const float*>(wrow.data_ptr());
  const float* lr = static_cast<const float*>(log_rem.data_ptr());
  if (q.dtype() == DType::BF16) {
    check_aligned_output(name, "dq", dq);
    check_aligned_output(name, "dk", dk);
    check_aligned_output(name, "dv", dv);
    rowdot<bf16_t>(wrow, dout, out);
    const int64_t tiles = (d.T + kMmaTile - 1) / kMmaTile;
    // (B H, tiles, T, 4 lanes) checkpoints of 2 floats: stick_mma.h's StickCkpt.
    Tensor ckpt = checkpoints(d.B * d.H * tiles * d.T * 8);
    auto* cp = static_cast<mma::StickCkpt*>(ckpt.data_ptr());
    Tensor Q = aligned_input(q), K = aligned_input(k), V = aligned_input(v),
           dO = aligned_input(dout);
    p.q = head_strides(Q), p.k = head_strides(K), p.v = head_strides(V);  // copies are dense
    p.dout = head_strides(dO);
    const BlockOrder q_order = query_head_order(d.B, d.H, d.Hkv, tiles, d.T, d.D);
    const BlockOrder kv_order = kv_head_order(d.B, d.H, d.Hkv, tiles, d.T, d.D);
    stick_backward_launches<false>(d, q_order, kv_order, dq, dk, dv, cp, Q, K, V, dO, wr, lr, p);
  } else {
    rowdot<float>(wrow, dout, out);
    const int64_t blocks = (d.T + 31) / 32;
    Tensor ckpt = checkpoints(d.B * d.H * d.T * blocks * 2);
    auto* cp = static_cast<float2*>(ckpt.data_ptr());
    auto ptr = [](const Tensor& t) { return static_cast<const float*>(t.data_ptr()); };
    auto mut = [](const Tensor& t) { return static_cast<float*>(t.data_ptr()); };
    const int D = int(d.D);
    sb_backward_dq_plain<<<plain_row_grid(d), kPlainWarps * 32, plain_row_smem(d, 2)>>>(
        mut(dq), cp, ptr(q), ptr(k), ptr(v), ptr(dout), wr, p, D, blocks);
    CUDA_CHECK_LAUNCH();
    sb_backward_dkdv_plain<<<plain_key_grid(d), 32, plain_key_smem(d)>>>(
        mut(dk), mut(dv), cp, ptr(q), ptr(k), ptr(v), ptr(dout), wr, lr, p, D, blocks);
    CUDA_CHECK_LAUNCH();
  }
}

// The checkpoints' bytes for one query head of one batch element (backward_pass's sizes).
int64_t checkpoint_bytes_per_head(const Dims& d, DType dtype) {
  if (dtype == DType::BF16) return (d.T + kMmaTile - 1) / kMmaTile * d.T * 8 * 4;
  return d.T * ((d.T + 31) / 32) * 2 * 4;
}

}  // namespace

// The checkpoints grow with B H T^2 (backward_pass): a backward whose checkpoints pass
// TESSERA_SB_CKPT_BYTES (for tests and tuning; read at every call), else 1 GiB, runs as several
// passes over slices of the batch, or of one batch element's heads (head_slices.h: the same bits,
// each pass's checkpoints freed for the next). At T 8192 a head's checkpoints are 32 MiB, so a
// 1-GiB pass still launches thousands of blocks. A pass takes one whole group at least (G query
// heads with their kv head), so with GQA at long T one pass may hold more.
void stick_breaking_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& out, const Tensor& log_rem, double scale,
                             bool attend_current, bool add_remainder) {
  const char* name = "stick_breaking_backward";
  const Dims d = check_qkv(name, q, k, v, /*allow_offset=*/false, /*strided=*/true);
  check_backward_views(name, dq, dk, dv, dout, out, q, k, v);  // before they are sliced
  check_like(name, "log_rem", log_rem, {d.B, d.H, d.T}, DType::F32, q);
  const int64_t G = d.H > 0 ? d.H / d.Hkv : 1;
  for (const HeadSlice& s : head_slices(d.B, d.H, d.Hkv, checkpoint_bytes_per_head(d, q.dtype()),
                                        scratch_budget("TESSERA_SB_CKPT_BYTES"))) {
    auto qs = [&](const Tensor& t) { return slice_rows(t, s, G); };
    auto ks = [&](const Tensor& t) { return slice_rows(t, s, 1); };
    backward_pass(qs(dq), ks(dk), ks(dv), qs(dout), qs(q), ks(k), ks(v), qs(out), qs(log_rem),
                  scale, attend_current, add_remainder);
  }
}

bool stick_breaking_forward_documents(const Tensor& out, const Tensor& log_rem, const Tensor& rem,
                                      const Tensor& q, const Tensor& k, const Tensor& v,
                                      double scale, bool attend_current, bool add_remainder,
                                      const std::vector<DocumentSpan>& spans) {
  const char* name = "stick_breaking_forward_documents";
  const Dims d = check_qkv(name, q, k, v, /*allow_offset=*/false, /*strided=*/true);
  check_view(name, "out", out, q.shape(), q.dtype(), q, /*output=*/true);
  check_like(name, "log_rem", log_rem, {d.B, d.H, d.T}, DType::F32, q);
  if (rem.defined()) check_like(name, "rem", rem, {d.B, d.H, d.T}, q.dtype(), q);
  check_document_spans(name, spans, d.B, d.T);
  if (!documents_launch_allowed(q)) return false;
  if (d.T == 0 || d.B == 0 || d.H == 0) return true;
  DeviceGuard guard(q.device().index);
  check_aligned_output(name, "out", out);
  StickParams p = params_of(d, scale, attend_current, add_remainder, out);
  const Tensor Q = aligned_input(q), K = aligned_input(k), V = aligned_input(v);
  p.q = head_strides(Q), p.k = head_strides(K), p.v = head_strides(V);
  document_tiles(name, spans, d, q, p.docs);
  ++attn::flash_counts().document_forwards;
  const BlockOrder order = query_head_order(d.B, d.H, d.Hkv, p.docs.per_row, d.T, d.D);
  auto launch = [&](auto kernel, size_t bytes) {
    allow_smem(kernel, bytes);
    kernel<<<grid_of(order), kMmaThreads, bytes>>>(
        mut_bits(out), static_cast<float*>(log_rem.data_ptr()),
        rem.defined() ? mut_bits(rem) : nullptr, bits(Q), bits(K), bits(V), p, order);
    CUDA_CHECK_LAUNCH();
  };
  if (two_stage_forward(flash_kernels())) {  // as the batch's forward: K and V in two stages
    ++attn::flash_counts().two_stage_forwards;
    if (d.D == 64)
      launch(sb_forward_mma_documents<64, 2>, mma::ForwardSmem<64, 1, mma::RowTiles, 2>::bytes);
    else
      launch(sb_forward_mma_documents<128, 2>, mma::ForwardSmem<128, 1, mma::RowTiles, 2>::bytes);
  } else if (d.D == 64)
    launch(sb_forward_mma_documents<64>, mma::ForwardSmem<64, 1>::bytes);
  else
    launch(sb_forward_mma_documents<128>, mma::ForwardSmem<128, 1>::bytes);
  return true;
}

// One launch a pass when every document's checkpoints fit TESSERA_SB_CKPT_BYTES (else 1 GiB)
// together; else false, and each document's view takes its own backward, in passes of its own.
bool stick_breaking_backward_documents(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                       const Tensor& dout, const Tensor& q, const Tensor& k,
                                       const Tensor& v, const Tensor& out, const Tensor& log_rem,
                                       double scale, bool attend_current, bool add_remainder,
                                       const std::vector<DocumentSpan>& spans) {
  const char* name = "stick_breaking_backward_documents";
  const Dims d = check_qkv(name, q, k, v, /*allow_offset=*/false, /*strided=*/true);
  check_backward_views(name, dq, dk, dv, dout, out, q, k, v);
  check_like(name, "log_rem", log_rem, {d.B, d.H, d.T}, DType::F32, q);
  check_document_spans(name, spans, d.B, d.T);
  if (!documents_launch_allowed(q)) return false;
  if (d.T == 0 || d.B == 0 || d.H == 0) return true;
  StickParams p = params_of(d, scale, attend_current, add_remainder, out);
  const int64_t ckpts = document_tiles(name, spans, d, q, p.docs) * 4 * d.H;  // 8 bytes each
  if (ckpts * int64_t(sizeof(mma::StickCkpt)) > scratch_budget("TESSERA_SB_CKPT_BYTES"))
    return false;
  DeviceGuard guard(q.device().index);
  for (const auto& [what, t] : {std::pair{"dq", &dq}, {"dk", &dk}, {"dv", &dv}})
    check_aligned_output(name, what, *t);
  p.dq = head_strides(dq), p.dk = head_strides(dk), p.dv = head_strides(dv);
  Tensor wrow = Tensor::empty({d.B, d.H, d.T}, {DType::F32, q.device()});  // dout . out per row
  rowdot<bf16_t>(wrow, dout, out);
  const Tensor ckpt = Tensor::empty({ckpts * 2}, {DType::F32, q.device()});
  auto* cp = static_cast<mma::StickCkpt*>(ckpt.data_ptr());
  const Tensor Q = aligned_input(q), K = aligned_input(k), V = aligned_input(v),
               dO = aligned_input(dout);
  p.q = head_strides(Q), p.k = head_strides(K), p.v = head_strides(V), p.dout = head_strides(dO);
  ++attn::flash_counts().document_backwards;
  const BlockOrder q_order = query_head_order(d.B, d.H, d.Hkv, p.docs.per_row, d.T, d.D);
  const BlockOrder kv_order = kv_head_order(d.B, d.H, d.Hkv, p.docs.per_row, d.T, d.D);
  const float* wr = static_cast<const float*>(wrow.data_ptr());
  const float* lr = static_cast<const float*>(log_rem.data_ptr());
  stick_backward_launches<true>(d, q_order, kv_order, dq, dk, dv, cp, Q, K, V, dO, wr, lr, p);
  return true;
}

}  // namespace tessera::cuda
