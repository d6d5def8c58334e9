// Stick-breaking attention (Tan et al. 2024, arXiv:2410.17980), fused forward and backward on
// CUDA. The CPU twin (src/backend/cpu/stick_breaking.cpp) is the reference and derives the
// formulas. In brief, for query j and the keys i it attends (i < j, or i <= j with
// attend_current), with z = scale q_j . k_i and sp = softplus(z) = -log(1 - beta):
//   log A[i] = logsigmoid(z[i]) - tail(i),  tail(i) = sum of sp over the attended keys after i,
//   out_j = sum_i A[i] v_i (+ rem_j v_j),  log rem_j = -(sum of sp over every attended key).
//
// q, out, dq, dout (B, H, T, D) bf16 or f32; k, v, dk, dv (B, Hkv, T, D); log_rem (B, H, T) f32;
// rem (B, H, T) in q's dtype, optional. The forward also takes q (B, H, Tq, D) over Tk > Tq keys
// (KV-cached decoding): query j then sits at position Tk - Tq + j, on the plain path
// (sb_forward_plain) for bf16 and f32 alike.
//
// Forward: a block per query tile; key tiles visited from the diagonal back to position 0, each
// row carrying tail across tiles, so every term of every sum is <= 0 and nothing underflows but
// the weights that truly are below f32's range. No running max or rescaling: A <= 1.
//
// Backward, with g[i] = A[i] (dout_j . v_i) and W_j = dout_j . out_j (the CPU file shows that its
// running sum rbar rem_j + sum_{i<=k} g[i] ends at W_j):
//   dz[k] = g[k] - beta[k] (W_j - sum_{i>k} g[i]),
// so both running sums go over the keys after k, the same direction as the forward's tail.
//  - Pass 1, a block per query tile, key tiles from the diagonal down:
//    dq_j = scale sum_k dz[k] k_k; at each key tile it also writes each row's checkpoint,
//    (tail, sum of g) over the keys past that tile: ckpt (B*H, T, key tiles) float2,
//    T^2 / 64 * 8 bytes per head (0.5 GiB at B*H = 16, T = 16k).
//  - Pass 2, a block per key tile of one kv head, over the query tiles after it and the G query
//    heads of its group: recomputes A and dz of each tile pair from the checkpoints, and
//    dk_k = scale sum_j dz[k, j] q_j,  dv_i = sum_j A[i, j] dout_j (+ rem_i dout_i, remainder).
// Each output row is written by one warp, with no atomics: deterministic.
#include "attention.cuh"

namespace tessera::cuda {
namespace {

using namespace attn;

struct SBParams {
  int64_t T;  // queries; every kernel but the plain forward needs T == Tk
  int H, Hkv;
  float scale;
  bool attend_current, add_remainder;
  int64_t Tk;  // keys; query j sits at position Tk - T + j
  int64_t kv_rows;  // positions between (b, kv head) rows of k and v: Tk, or a cache's capacity
};

// Does query i attend key j?
__device__ __forceinline__ bool attends(int64_t i, int64_t j, const SBParams& p) {
  return i < p.T && (p.attend_current ? j <= i : j < i);
}

__device__ __forceinline__ int64_t kv_head_of(int bh, int H, int Hkv) {
  return int64_t(bh / H) * Hkv + (bh % H) / (H / Hkv);
}

// The last key any row of [q0, q0 + rows) attends (-1: none).
__device__ __forceinline__ int64_t last_key(int64_t q0, int64_t rows, const SBParams& p) {
  const int64_t i = q0 + rows - 1 < p.T - 1 ? q0 + rows - 1 : p.T - 1;
  return p.attend_current ? i : i - 1;
}

// One row of a 64-key tile: the lane holds columns c = 2 lane and c + 1. From the scores and the
// row's carries (tail: sum of sp past this tile; gsum: sum of g past it) it gives A and, with
// kGrad, dz; returns the tile's totals through tail_add / gsum_add.
template <bool kGrad>
__device__ __forceinline__ void stick_tile_row(float2 z, float2 da, bool vis0, bool vis1,
                                               float tail, float gsum, float w, float2& a,
                                               float2& dz, float& tail_add, float& gsum_add,
                                               int lane) {
  const Stick t0 = stick_terms<true>(z.x), t1 = stick_terms<true>(z.y);
  const float sp0 = vis0 ? t0.softplus : 0.0f, sp1 = vis1 ? t1.softplus : 0.0f;
  const float sp_incl = warp_suffix_sum(sp0 + sp1, lane);  // columns >= 2 lane
  const float after1 = sp_incl - (sp0 + sp1), after0 = after1 + sp1;
  a.x = vis0 ? __expf(t0.log_sigmoid - tail - after0) : 0.0f;
  a.y = vis1 ? __expf(t1.log_sigmoid - tail - after1) : 0.0f;
  tail_add = __shfl_sync(kFull, sp_incl, 0);
  if constexpr (kGrad) {
    const float g0 = a.x * da.x, g1 = a.y * da.y;
    const float g_incl = warp_suffix_sum(g0 + g1, lane);
    const float gafter1 = g_incl - (g0 + g1), gafter0 = gafter1 + g1;
    dz.x = vis0 ? g0 - t0.sigmoid * (w - gsum - gafter0) : 0.0f;
    dz.y = vis1 ? g1 - t1.sigmoid * (w - gsum - gafter1) : 0.0f;
    gsum_add = __shfl_sync(kFull, g_incl, 0);
  }
}

// ---- bf16, tensor cores ---------------------------------------------------------------------

template <int D>
struct FwdSmem {
  using L = TileLayout<D>;
  static constexpr size_t q = 0, k = L::in_bytes, v = 2 * L::in_bytes, s = 3 * L::in_bytes,
                          p = s + L::s_bytes, tail = p + L::p_bytes,
                          bytes = tail + kTile * sizeof(float);
  static_assert(2 * L::in_bytes >= L::acc_bytes, "K and V tiles stage the output");
};

template <int D>
__global__ void __launch_bounds__(kThreads)
    sb_forward_tc(bf16_t* out, float* log_rem, bf16_t* rem, const bf16_t* q, const bf16_t* k,
                  const bf16_t* v, SBParams p, BlockOrder order) {
  using L = TileLayout<D>;
  using M = FwdSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem + M::q);
  bf16_t* Ks = reinterpret_cast<bf16_t*>(smem + M::k);
  bf16_t* Vs = reinterpret_cast<bf16_t*>(smem + M::v);
  float* Ss = reinterpret_cast<float*>(smem + M::s);
  bf16_t* Ps = reinterpret_cast<bf16_t*>(smem + M::p);
  float* tail_s = reinterpret_cast<float*>(smem + M::tail);

  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);  // the longest rows first
  const int64_t qt = at.tile;
  const int bh = int(at.head);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = qt * kTile, T = p.T;
  const int64_t kvh = kv_head_of(bh, p.H, p.Hkv);
  const bf16_t* kh = k + kvh * T * D;
  const bf16_t* vh = v + kvh * T * D;
  load_tile<D>(Qs, q + int64_t(bh) * T * D, q0, T);

  FragC acc[D / 16];
#pragma unroll
  for (int ct = 0; ct < D / 16; ++ct) wmma::fill_fragment(acc[ct], 0.0f);
  float tail[16];  // per row of this warp, the same in every lane
#pragma unroll
  for (int r = 0; r < 16; ++r) tail[r] = 0.0f;
  float* Sw = Ss + warp * 16 * L::ld_s;

  const int64_t last = last_key(q0, kTile, p);
  for (int64_t kt = last >= 0 ? last / kTile : -1; kt >= 0; --kt) {
    const int64_t k0 = kt * kTile;
    __syncthreads();
    load_tile<D>(Ks, kh, k0, T);
    load_tile<D>(Vs, vh, k0, T);
    __syncthreads();
    warp_abt<D>(Sw, Qs + warp * 16 * L::ld_in, Ks);
    __syncwarp();
#pragma unroll
    for (int r = 0; r < 16; ++r) {
      const int row = warp * 16 + r;
      const int64_t i = q0 + row;
      const int c = 2 * lane;
      float2 z = *reinterpret_cast<const float2*>(Sw + r * L::ld_s + c);
      z.x *= p.scale;
      z.y *= p.scale;
      float2 a, unused_dz;
      float add, unused_g;
      stick_tile_row<false>(z, z, attends(i, k0 + c, p), attends(i, k0 + c + 1, p), tail[r], 0.0f,
                            0.0f, a, unused_dz, add, unused_g, lane);
      tail[r] += add;
      *reinterpret_cast<__nv_bfloat162*>(Ps + row * L::ld_p + c) = __floats2bfloat162_rn(a.x, a.y);
    }
    __syncwarp();
    warp_pm<D, false>(acc, Ps + warp * 16 * L::ld_p, Vs);  // O += A V
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < 16; ++r) tail_s[warp * 16 + r] = tail[r];
  }
  __syncthreads();  // K and V tiles become the staging area
  constexpr int ld = L::ld_acc;
  float* stage = reinterpret_cast<float*>(smem + M::k) + warp * 16 * ld;
#pragma unroll
  for (int ct = 0; ct < D / 16; ++ct)
    wmma::store_matrix_sync(stage + ct * 16, acc[ct], ld, wmma::mem_row_major);
  __syncwarp();
  for (int idx = lane; idx < 16 * D; idx += 32) {
    const int r = idx / D, c = idx % D;
    const int64_t i = q0 + warp * 16 + r;
    if (i >= T) continue;
    float o = stage[r * ld + c];
    if (p.add_remainder) o += __expf(-tail_s[warp * 16 + r]) * to_f32(vh[i * D + c]);
    out[(int64_t(bh) * T + i) * D + c] = from_f32<bf16_t>(o);
  }
  if (lane < 16) {
    const int64_t i = q0 + warp * 16 + lane;
    if (i < T) {
      const float t = tail_s[warp * 16 + lane];
      log_rem[int64_t(bh) * T + i] = -t;
      if (rem) rem[int64_t(bh) * T + i] = from_f32<bf16_t>(__expf(-t));
    }
  }
}

template <int D>
struct BwdSmem {
  using L = TileLayout<D>;
  static constexpr size_t a = 0, b = L::in_bytes, c = 2 * L::in_bytes, d = 3 * L::in_bytes,
                          s = 4 * L::in_bytes, da = s + L::s_bytes, pa = da + L::s_bytes,
                          pz = pa + L::p_bytes, bytes = pz + L::p_bytes;
  static_assert(2 * L::s_bytes >= L::acc_bytes, "score tiles stage the accumulators");
};

// Pass 1: dq for one query tile, and the checkpoints. Warp w owns queries 16w..16w+15.
template <int D>
__global__ void __launch_bounds__(kThreads)
    sb_backward_dq_tc(bf16_t* dq, float2* ckpt, const bf16_t* q, const bf16_t* k, const bf16_t* v,
                      const bf16_t* dout, const float* wrow, SBParams p, int64_t tiles,
                      BlockOrder order) {
  using L = TileLayout<D>;
  using M = BwdSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem + M::a);
  bf16_t* dOs = reinterpret_cast<bf16_t*>(smem + M::b);
  bf16_t* Ks = reinterpret_cast<bf16_t*>(smem + M::c);
  bf16_t* Vs = reinterpret_cast<bf16_t*>(smem + M::d);
  float* Ss = reinterpret_cast<float*>(smem + M::s);
  float* dAs = reinterpret_cast<float*>(smem + M::da);
  bf16_t* dZs = reinterpret_cast<bf16_t*>(smem + M::pz);

  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);
  const int64_t qt = at.tile;
  const int bh = int(at.head);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = qt * kTile, T = p.T;
  const int64_t kvh = kv_head_of(bh, p.H, p.Hkv);
  load_tile<D>(Qs, q + int64_t(bh) * T * D, q0, T);
  load_tile<D>(dOs, dout + int64_t(bh) * T * D, q0, T);

  FragC dq_acc[D / 16];
#pragma unroll
  for (int ct = 0; ct < D / 16; ++ct) wmma::fill_fragment(dq_acc[ct], 0.0f);
  float tail[16], gsum[16], w[16];
#pragma unroll
  for (int r = 0; r < 16; ++r) {
    const int64_t i = q0 + warp * 16 + r;
    tail[r] = gsum[r] = 0.0f;
    w[r] = i < T ? wrow[int64_t(bh) * T + i] : 0.0f;
  }
  float* Sw = Ss + warp * 16 * L::ld_s;
  float* dAw = dAs + warp * 16 * L::ld_s;

  const int64_t last = last_key(q0, kTile, p);
  for (int64_t kt = last >= 0 ? last / kTile : -1; kt >= 0; --kt) {
    const int64_t k0 = kt * kTile;
    if (lane == 0) {  // the sums over the keys past tile kt, for pass 2
#pragma unroll
      for (int r = 0; r < 16; ++r) {
        const int64_t i = q0 + warp * 16 + r;
        if (i < T) ckpt[(int64_t(bh) * T + i) * tiles + kt] = make_float2(tail[r], gsum[r]);
      }
    }
    __syncthreads();
    load_tile<D>(Ks, k + kvh * T * D, k0, T);
    load_tile<D>(Vs, v + kvh * T * D, k0, T);
    __syncthreads();
    warp_abt<D>(Sw, Qs + warp * 16 * L::ld_in, Ks);    // z / scale
    warp_abt<D>(dAw, dOs + warp * 16 * L::ld_in, Vs);  // dA = dout . v
    __syncwarp();
#pragma unroll
    for (int r = 0; r < 16; ++r) {
      const int row = warp * 16 + r;
      const int64_t i = q0 + row;
      const int c = 2 * lane;
      float2 z = *reinterpret_cast<const float2*>(Sw + r * L::ld_s + c);
      const float2 da = *reinterpret_cast<const float2*>(dAw + r * L::ld_s + c);
      z.x *= p.scale;
      z.y *= p.scale;
      float2 a, dz;
      float tail_add, gsum_add;
      stick_tile_row<true>(z, da, attends(i, k0 + c, p), attends(i, k0 + c + 1, p), tail[r],
                           gsum[r], w[r], a, dz, tail_add, gsum_add, lane);
      tail[r] += tail_add;
      gsum[r] += gsum_add;
      *reinterpret_cast<__nv_bfloat162*>(dZs + row * L::ld_p + c) =
          __floats2bfloat162_rn(dz.x, dz.y);
    }
    __syncwarp();
    warp_pm<D, false>(dq_acc, dZs + warp * 16 * L::ld_p, Ks);  // dq += dz K
  }
  __syncthreads();
  float* stage = reinterpret_cast<float*>(smem + M::s) + warp * 16 * L::ld_acc;
  warp_store_acc<D>(dq + int64_t(bh) * T * D, q0 + warp * 16, T, dq_acc, stage, p.scale);
}

// Pass 2: dk, dv for one key tile of kv head (b, g). The row scans need whole query rows, so the
// tile pair is computed with warps owning query rows, then the products with warps owning keys
// read A and dz transposed.
template <int D>
__global__ void __launch_bounds__(kThreads)
    sb_backward_dkdv_tc(bf16_t* dk, bf16_t* dv, const float2* ckpt, const bf16_t* q,
                        const bf16_t* k, const bf16_t* v, const bf16_t* dout, const float* wrow,
                        const float* log_rem, SBParams p, int64_t tiles, BlockOrder order) {
  using L = TileLayout<D>;
  using M = BwdSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16_t* Ks = reinterpret_cast<bf16_t*>(smem + M::a);
  bf16_t* Vs = reinterpret_cast<bf16_t*>(smem + M::b);
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem + M::c);
  bf16_t* dOs = reinterpret_cast<bf16_t*>(smem + M::d);
  float* Ss = reinterpret_cast<float*>(smem + M::s);
  float* dAs = reinterpret_cast<float*>(smem + M::da);
  bf16_t* As = reinterpret_cast<bf16_t*>(smem + M::pa);   // [query][key]
  bf16_t* dZs = reinterpret_cast<bf16_t*>(smem + M::pz);  // [query][key]

  const HeadTile at = key_tile_block(int64_t(blockIdx.x), order);  // key tile 0 first
  const int64_t kt = at.tile;
  const int bkv = int(at.head);
  const int b = bkv / p.Hkv, g = bkv % p.Hkv, G = p.H / p.Hkv;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t k0 = kt * kTile, T = p.T;
  load_tile<D>(Ks, k + int64_t(bkv) * T * D, k0, T);
  load_tile<D>(Vs, v + int64_t(bkv) * T * D, k0, T);

  FragC dk_acc[D / 16], dv_acc[D / 16];
#pragma unroll
  for (int ct = 0; ct < D / 16; ++ct) {
    wmma::fill_fragment(dk_acc[ct], 0.0f);
    wmma::fill_fragment(dv_acc[ct], 0.0f);
  }
  float* Sw = Ss + warp * 16 * L::ld_s;
  float* dAw = dAs + warp * 16 * L::ld_s;
  for (int h = g * G; h < (g + 1) * G; ++h) {
    const int64_t bh = int64_t(b) * p.H + h;
    // Queries attending a key of this tile start at k0 (or k0 + 1), inside query tile kt.
    for (int64_t qt = kt; qt * kTile < T; ++qt) {
      const int64_t q0 = qt * kTile;
      __syncthreads();
      load_tile<D>(Qs, q + bh * T * D, q0, T);
      load_tile<D>(dOs, dout + bh * T * D, q0, T);
      __syncthreads();
      warp_abt<D>(Sw, Qs + warp * 16 * L::ld_in, Ks);
      warp_abt<D>(dAw, dOs + warp * 16 * L::ld_in, Vs);
      __syncwarp();
#pragma unroll
      for (int r = 0; r < 16; ++r) {
        const int row = warp * 16 + r;
        const int64_t i = q0 + row;
        const int c = 2 * lane;
        float2 ck = make_float2(0.0f, 0.0f);
        float wr = 0.0f;
        // Pass 1 wrote the checkpoint of tile kt for every row that attends a key in it.
        if (i < T && (p.attend_current ? i >= k0 : i > k0)) {
          ck = ckpt[(bh * T + i) * tiles + kt];
          wr = wrow[bh * T + i];
        }
        float2 z = *reinterpret_cast<const float2*>(Sw + r * L::ld_s + c);
        const float2 da = *reinterpret_cast<const float2*>(dAw + r * L::ld_s + c);
        z.x *= p.scale;
        z.y *= p.scale;
        float2 a, dz;
        float unused_t, unused_g;
        stick_tile_row<true>(z, da, attends(i, k0 + c, p), attends(i, k0 + c + 1, p), ck.x, ck.y,
                             wr, a, dz, unused_t, unused_g, lane);
        *reinterpret_cast<__nv_bfloat162*>(As + row * L::ld_p + c) =
            __floats2bfloat162_rn(a.x, a.y);
        *reinterpret_cast<__nv_bfloat162*>(dZs + row * L::ld_p + c) =
            __floats2bfloat162_rn(dz.x, dz.y);
      }
      __syncthreads();                                // the products below read every warp's rows
      warp_pm<D, true>(dv_acc, As + warp * 16, dOs);  // dv += A^T dout
      warp_pm<D, true>(dk_acc, dZs + warp * 16, Qs);  // dk += dz^T q
    }
  }
  __syncthreads();
  constexpr int ld = L::ld_acc;
  float* stage = reinterpret_cast<float*>(smem + M::s) + warp * 16 * ld;
  warp_store_acc<D>(dk + int64_t(bkv) * T * D, k0 + warp * 16, T, dk_acc, stage, p.scale);
#pragma unroll
  for (int ct = 0; ct < D / 16; ++ct)
    wmma::store_matrix_sync(stage + ct * 16, dv_acc[ct], ld, wmma::mem_row_major);
  __syncwarp();
  for (int idx = lane; idx < 16 * D; idx += 32) {
    const int r = idx / D, c = idx % D;
    const int64_t j = k0 + warp * 16 + r;
    if (j >= T) continue;
    float val = stage[r * ld + c];
    if (p.add_remainder)  // out_j += rem_j v_j: dv_j += rem_j dout_j over the group's heads
      for (int h = g * G; h < (g + 1) * G; ++h) {
        const int64_t bh = int64_t(b) * p.H + h;
        val += __expf(log_rem[bh * T + j]) * to_f32(dout[(bh * T + j) * D + c]);
      }
    dv[(int64_t(bkv) * T + j) * D + c] = from_f32<bf16_t>(val);
  }
}

// ---- f32, plain -------------------------------------------------------------------------------
// Keys in fixed blocks of 32 (lane l = key 32 kb + l), visited from the diagonal down; a warp per
// query row for the forward and pass 1, a warp per key block for pass 2. Exact libm functions:
// this path is compared with the CPU reference at f32 precision.

constexpr int kPlainWarps = 4;
constexpr int kPerLane = kPlainMaxD / 32;

// One block of 32 keys for one query row: A (and dz) of this lane's key.
template <bool kGrad>
__device__ __forceinline__ void stick_block_lane(float z, float da, bool vis, float tail,
                                                 float gsum, float w, float& a, float& dz,
                                                 float& tail_add, float& gsum_add, int lane) {
  const Stick t = stick_terms<false>(z);
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
                     SBParams p, int D) {
  extern __shared__ float plain_smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t i = int64_t(blockIdx.x) * kPlainWarps + warp, T = p.T, Tk = p.Tk;
  const int64_t pos = Tk - T + i;  // the query's position among the keys
  const int bh = blockIdx.y;
  if (i >= T) return;  // whole warps only; no block-wide barrier below
  const int64_t kvh = kv_head_of(bh, p.H, p.Hkv);
  const E* kh = k + kvh * p.kv_rows * D;  // a cache's filled prefix is read in place
  const E* vh = v + kvh * p.kv_rows * D;
  float* qs = plain_smem + warp * D;
  for (int e = lane; e < D; e += 32) qs[e] = to_f32(q[(int64_t(bh) * T + i) * D + e]);
  __syncwarp();
  float o[kPerLane] = {};
  float tail = 0.0f;
  const int64_t last = p.attend_current ? pos : pos - 1;
  for (int64_t kb = last >= 0 ? last / 32 : -1; kb >= 0; --kb) {
    const int64_t j = kb * 32 + lane;
    const bool vis = j <= last;
    float z = 0.0f;
    if (vis) {
      for (int e = 0; e < D; ++e) z += qs[e] * to_f32(kh[j * D + e]);
      z *= p.scale;
    }
    float a, unused_dz, add, unused_g;
    stick_block_lane<false>(z, 0.0f, vis, tail, 0.0f, 0.0f, a, unused_dz, add, unused_g, lane);
    tail += add;
    const int n = int(last - kb * 32 + 1 < 32 ? last - kb * 32 + 1 : 32);
    for (int src = 0; src < n; ++src) {
      const float av = __shfl_sync(kFull, a, src);
      const E* vr = vh + (kb * 32 + src) * D;
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
    if (p.add_remainder) o[t] += r * to_f32(vh[pos * D + e]);
    out[(int64_t(bh) * T + i) * D + e] = from_f32<E>(o[t]);
  }
  if (lane == 0) {
    log_rem[int64_t(bh) * T + i] = -tail;
    if (rem) rem[int64_t(bh) * T + i] = from_f32<E>(r);
  }
}

__global__ void __launch_bounds__(kPlainWarps * 32)
    sb_backward_dq_plain(float* dq, float2* ckpt, const float* q, const float* k, const float* v,
                         const float* dout, const float* wrow, SBParams p, int D, int64_t blocks) {
  extern __shared__ float plain_smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t i = int64_t(blockIdx.x) * kPlainWarps + warp, T = p.T;
  const int bh = blockIdx.y;
  if (i >= T) return;
  const int64_t kvh = kv_head_of(bh, p.H, p.Hkv);
  const float* kh = k + kvh * T * D;
  const float* vh = v + kvh * T * D;
  float* qs = plain_smem + warp * 2 * D;
  float* dos = qs + D;
  for (int e = lane; e < D; e += 32) {
    qs[e] = q[(int64_t(bh) * T + i) * D + e];
    dos[e] = dout[(int64_t(bh) * T + i) * D + e];
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
        z += qs[e] * kh[j * D + e];
        da += dos[e] * vh[j * D + e];
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
      const float* kr = kh + (kb * 32 + src) * D;
#pragma unroll
      for (int t = 0; t < kPerLane; ++t)
        if (lane + 32 * t < D) acc[t] += dzv * kr[lane + 32 * t];
    }
  }
#pragma unroll
  for (int t = 0; t < kPerLane; ++t)
    if (lane + 32 * t < D) dq[(int64_t(bh) * T + i) * D + lane + 32 * t] = p.scale * acc[t];
}

// A warp per block of 32 keys of one kv head (lane = key); queries one at a time, the same for
// every lane, over the G query heads of the group; dK and dV rows accumulate in shared memory.
__global__ void __launch_bounds__(32)
    sb_backward_dkdv_plain(float* dk, float* dv, const float2* ckpt, const float* q, const float* k,
                           const float* v, const float* dout, const float* wrow,
                           const float* log_rem, SBParams p, int D, int64_t blocks) {
  extern __shared__ float plain_smem[];
  const int lane = threadIdx.x;
  const int bkv = blockIdx.y;
  const int b = bkv / p.Hkv, g = bkv % p.Hkv, G = p.H / p.Hkv;
  const int64_t T = p.T, kb = blockIdx.x, j = kb * 32 + lane;
  const int ld = D + 1;  // odd stride: lanes hit different banks
  float* dks = plain_smem;
  float* dvs = plain_smem + 32 * ld;
  for (int e = 0; e < D; ++e) dks[lane * ld + e] = dvs[lane * ld + e] = 0.0f;
  const float* kj = k + (int64_t(bkv) * T + j) * D;
  const float* vj = v + (int64_t(bkv) * T + j) * D;
  for (int h = g * G; h < (g + 1) * G; ++h) {
    const int64_t bh = int64_t(b) * p.H + h;
    // Pass 1 wrote ckpt[i][kb] for every row whose last key is in block kb or later.
    for (int64_t i = kb * 32 + (p.attend_current ? 0 : 1); i < T; ++i) {
      const bool vis = j < T && attends(i, j, p);
      const float* qi = q + (bh * T + i) * D;
      const float* doi = dout + (bh * T + i) * D;
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
      for (int e = 0; e < D; ++e) dvs[lane * ld + e] += r * dout[(bh * T + j) * D + e];
    }
  }
  if (j < T)
    for (int e = 0; e < D; ++e) {
      dk[(int64_t(bkv) * T + j) * D + e] = p.scale * dks[lane * ld + e];
      dv[(int64_t(bkv) * T + j) * D + e] = dvs[lane * ld + e];
    }
}

SBParams params_of(const Dims& d, double scale, bool attend_current, bool add_remainder) {
  return {d.T, int(d.H), int(d.Hkv), float(scale), attend_current, add_remainder, d.Tk,
          d.kv_rows};
}

}  // namespace

void stick_breaking_forward(const Tensor& out, const Tensor& log_rem, const Tensor& rem,
                            const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                            bool attend_current, bool add_remainder) {
  const char* name = "stick_breaking_forward";
  const Dims d = check_qkv(name, q, k, v, /*allow_offset=*/true);
  check_like(name, "out", out, q.shape(), q.dtype(), q);
  check_like(name, "log_rem", log_rem, {d.B, d.H, d.T}, DType::F32, q);
  if (rem.defined()) check_like(name, "rem", rem, {d.B, d.H, d.T}, q.dtype(), q);
  if (d.T == 0 || d.B == 0 || d.H == 0) return;
  DeviceGuard guard(q.device().index);
  const SBParams p = params_of(d, scale, attend_current, add_remainder);
  float* lr = static_cast<float*>(log_rem.data_ptr());
  if (q.dtype() == DType::BF16 && d.offset() == 0) {
    check_aligned_output(name, "out", out);
    Tensor Q = aligned_input(q), K = aligned_input(k), V = aligned_input(v);
    bf16_t* rp = rem.defined() ? static_cast<bf16_t*>(rem.data_ptr()) : nullptr;
    const BlockOrder order =
        query_head_order(d.B, d.H, d.Hkv, (d.T + kTile - 1) / kTile, d.T, d.D);
    auto launch = [&](auto kernel, size_t bytes) {
      allow_smem(kernel, bytes);
      kernel<<<grid_of(order), kThreads, bytes>>>(
          static_cast<bf16_t*>(out.data_ptr()), lr, rp, static_cast<const bf16_t*>(Q.data_ptr()),
          static_cast<const bf16_t*>(K.data_ptr()), static_cast<const bf16_t*>(V.data_ptr()), p,
          order);
      CUDA_CHECK_LAUNCH();
    };
    if (d.D == 64)
      launch(sb_forward_tc<64>, FwdSmem<64>::bytes);
    else
      launch(sb_forward_tc<128>, FwdSmem<128>::bytes);
  } else {
    const dim3 grid(unsigned((d.T + kPlainWarps - 1) / kPlainWarps), unsigned(d.B * d.H));
    auto launch = [&](auto zero) {
      using E = decltype(zero);
      E* rp = rem.defined() ? static_cast<E*>(rem.data_ptr()) : nullptr;
      sb_forward_plain<E><<<grid, kPlainWarps * 32, kPlainWarps * d.D * sizeof(float)>>>(
          static_cast<E*>(out.data_ptr()), lr, rp, static_cast<const E*>(q.data_ptr()),
          static_cast<const E*>(k.data_ptr()), static_cast<const E*>(v.data_ptr()), p, int(d.D));
      CUDA_CHECK_LAUNCH();
    };
    if (q.dtype() == DType::BF16)
      launch(bf16_t{});
    else
      launch(0.0f);
  }
}

void stick_breaking_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& out, const Tensor& log_rem, double scale,
                             bool attend_current, bool add_remainder) {
  const char* name = "stick_breaking_backward";
  const Dims d = check_qkv(name, q, k, v);
  check_like(name, "dq", dq, q.shape(), q.dtype(), q);
  check_like(name, "dk", dk, k.shape(), q.dtype(), q);
  check_like(name, "dv", dv, v.shape(), q.dtype(), q);
  check_like(name, "dout", dout, q.shape(), q.dtype(), q);
  check_like(name, "out", out, q.shape(), q.dtype(), q);
  check_like(name, "log_rem", log_rem, {d.B, d.H, d.T}, DType::F32, q);
  if (d.T == 0 || d.B == 0 || d.H == 0) return;
  DeviceGuard guard(q.device().index);
  const SBParams p = params_of(d, scale, attend_current, add_remainder);
  Tensor wrow = Tensor::empty({d.B, d.H, d.T}, {DType::F32, q.device()});  // dout . out per row
  const float* wr = static_cast<const float*>(wrow.data_ptr());
  const float* lr = static_cast<const float*>(log_rem.data_ptr());
  if (q.dtype() == DType::BF16) {
    check_aligned_output(name, "dq", dq);
    check_aligned_output(name, "dk", dk);
    check_aligned_output(name, "dv", dv);
    rowdot<bf16_t>(wrow, dout, out);
    const int64_t tiles = (d.T + kTile - 1) / kTile;
    Tensor ckpt = Tensor::empty({d.B * d.H * d.T * tiles * 2}, {DType::F32, q.device()});
    auto* cp = static_cast<float2*>(ckpt.data_ptr());
    Tensor Q = aligned_input(q), K = aligned_input(k), V = aligned_input(v),
           dO = aligned_input(dout);
    auto ptr = [](const Tensor& t) { return static_cast<const bf16_t*>(t.data_ptr()); };
    auto mut = [](const Tensor& t) { return static_cast<bf16_t*>(t.data_ptr()); };
    const BlockOrder q_order = query_head_order(d.B, d.H, d.Hkv, tiles, d.T, d.D);
    const BlockOrder kv_order = kv_head_order(d.B, d.H, d.Hkv, tiles, d.T, d.D);
    auto run = [&](auto dq_kernel, auto dkdv_kernel, size_t bytes) {
      allow_smem(dq_kernel, bytes);
      dq_kernel<<<grid_of(q_order), kThreads, bytes>>>(mut(dq), cp, ptr(Q), ptr(K), ptr(V),
                                                       ptr(dO), wr, p, tiles, q_order);
      CUDA_CHECK_LAUNCH();
      allow_smem(dkdv_kernel, bytes);
      dkdv_kernel<<<grid_of(kv_order), kThreads, bytes>>>(
          mut(dk), mut(dv), cp, ptr(Q), ptr(K), ptr(V), ptr(dO), wr, lr, p, tiles, kv_order);
      CUDA_CHECK_LAUNCH();
    };
    if (d.D == 64)
      run(sb_backward_dq_tc<64>, sb_backward_dkdv_tc<64>, BwdSmem<64>::bytes);
    else
      run(sb_backward_dq_tc<128>, sb_backward_dkdv_tc<128>, BwdSmem<128>::bytes);
  } else {
    rowdot<float>(wrow, dout, out);
    const int64_t blocks = (d.T + 31) / 32;
    Tensor ckpt = Tensor::empty({d.B * d.H * d.T * blocks * 2}, {DType::F32, q.device()});
    auto* cp = static_cast<float2*>(ckpt.data_ptr());
    auto ptr = [](const Tensor& t) { return static_cast<const float*>(t.data_ptr()); };
    auto mut = [](const Tensor& t) { return static_cast<float*>(t.data_ptr()); };
    const int D = int(d.D);
    sb_backward_dq_plain<<<dim3(unsigned((d.T + kPlainWarps - 1) / kPlainWarps),
                                unsigned(d.B * d.H)),
                           kPlainWarps * 32, kPlainWarps * 2 * D * sizeof(float)>>>(
        mut(dq), cp, ptr(q), ptr(k), ptr(v), ptr(dout), wr, p, D, blocks);
    CUDA_CHECK_LAUNCH();
    sb_backward_dkdv_plain<<<dim3(unsigned(blocks), unsigned(d.B * d.Hkv)), 32,
                             2 * 32 * (D + 1) * sizeof(float)>>>(
        mut(dk), mut(dv), cp, ptr(q), ptr(k), ptr(v), ptr(dout), wr, lr, p, D, blocks);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace tessera::cuda
