// Causal softmax attention without the (T, T) matrix: FlashAttention-2 (Dao 2023,
// arXiv:2307.08691), forward and backward, with grouped-query heads and an optional sliding
// window. The CPU twin (src/backend/cpu/attention.cpp, flash_attention_*) is the reference.
//
// q, out, dq, dout (B, H, T, D) bf16 or f32; k, v, dk, dv (B, Hkv, T, D); lse (B, H, T) f32.
// Every tensor but lse may be any view whose rows are contiguous (the strided contract of
// src/backend/attention_shapes.h; FlashParams carries each one's HeadStrides): the heads of a fused
// q, k, v projection are read where they lie and out, dq, dk, dv written in the projections'
// (B, T, H, D) order (ops/packed_attention.h), and a KV cache's filled prefix is read in place.
// Query i attends key j when j <= i and (window <= 0 or i - j < window). The forward also takes
// q (B, H, Tq, D) over Tk > Tq keys (KV-cached decoding): query i then sits at position
// Tk - Tq + i, on the plain path (flash_forward_plain) for bf16 and f32 alike.
//
// With ALiBi (Press et al. 2022, arXiv:2108.12409; FlashParams::alibi) S[i, j] also has
// -m_h (i - j), m_h the query head's slope (backend/attention_mask.h), on every visible pair; lse
// is that of the biased S, and the backward rebuilds P from the same biased S (the bias added to
// lse: P = exp(scale q.k - (lse + m_h (i - j)))). Every kernel takes it as a template flag, kAlibi:
// the instances without it hold none of its code.
//
// With a forget gate (Forgetting Attention, Lin et al. 2025, arXiv:2503.02130; FlashParams::forget)
// S[i, j] also has c[i] - c[j], c (B, H, Tk) the query head's running sums of log forget gates
// (query i at position Tk - Tq + i), formed in f32 as the CPU does, and the backward also writes
// dL/dc[t] = sum_j dS[t, j] - sum_i dS[i, t] (backend/attention_mask.h): the key-side pass writes
// each entry's column sum, then the query-side pass, launched after it, adds its row sum. The
// warp-per-row kernels below and flash_mma.cu's mma.sync families take it (kBias, flash_mma.h's
// ScoreBias, in place of kAlibi); the wmma kernels and the documents launches refuse it.
//
// Forward, per query tile, over the key tiles it can see (fully masked tiles are never visited):
//   S = scale Q K^T;  m' = max(m, rowmax S);  P = exp(S - m');  l = exp(m - m') l + rowsum P;
//   O = exp(m - m') O + P V;  at the end O /= l and lse = m + log l is saved.
// Backward, from the saved lse (P = exp(S - lse)) and D = rowsum(dO * O):
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - D),  dQ = scale dS K,  dK = scale dS^T Q.
// Deterministic: dK and dV by a key-tile-major pass (a block owns one kv head's key tile and loops
// over every query tile and every query head of its group), dQ by a query-tile-major pass; S and P
// are recomputed in each (7 tile products per (query, key) tile pair instead of FA2's 5, no float
// atomics).
#include "attention.cuh"
#include "backend/cuda.h"
#include "core/env.h"

namespace tessera::cuda {
namespace {

using namespace attn;

// FlashParams, visible, head_index, first_key_tile and last_key_tile: flash_mma.h, shared with the
// register-tile kernels (flash_mma.cu) that run instead of the wmma ones below unless
// set_flash_kernels chose these.
static_assert(kTile == kMmaTile, "the two bf16 paths tile alike");

// ---- bf16, tensor cores ---------------------------------------------------------------------

template <int D>
struct FwdSmem {
  using L = TileLayout<D>;
  static constexpr size_t q = 0, k = L::in_bytes, v = 2 * L::in_bytes, s = 3 * L::in_bytes,
                          p = s + L::s_bytes, o = p + L::p_bytes, stats = o + L::acc_bytes,
                          bytes = stats + 3 * kTile * sizeof(float);
};

template <int D, bool kAlibi>
__global__ void __launch_bounds__(kThreads)
    flash_forward_tc(bf16_t* out, float* lse, const bf16_t* q, const bf16_t* k, const bf16_t* v,
                     FlashParams p, BlockOrder order) {
  using L = TileLayout<D>;
  using M = FwdSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem + M::q);
  bf16_t* Ks = reinterpret_cast<bf16_t*>(smem + M::k);
  bf16_t* Vs = reinterpret_cast<bf16_t*>(smem + M::v);
  float* Ss = reinterpret_cast<float*>(smem + M::s);
  bf16_t* Ps = reinterpret_cast<bf16_t*>(smem + M::p);
  float* Os = reinterpret_cast<float*>(smem + M::o);
  float* m_s = reinterpret_cast<float*>(smem + M::stats);  // running max per row
  float* l_s = m_s + kTile;                                // running sum per row
  float* a_s = l_s + kTile;                                // this tile's rescale factor

  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);  // the longest rows first
  const int64_t qt = at.tile;
  const int bh = int(at.head);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = qt * kTile, T = p.T;
  const HeadIndex hi = head_index(bh, p);
  const bf16_t* kh = k + p.k.row(hi.b, hi.g, 0);
  const bf16_t* vh = v + p.v.row(hi.b, hi.g, 0);
  const float slope = kAlibi ? float(alibi_slope_of(hi.h, p)) : 0.0f;

  load_tile<D>(Qs, q + p.q.row(hi.b, hi.h, 0), q0, T, p.q.t);
  for (int idx = threadIdx.x; idx < kTile * L::ld_acc; idx += blockDim.x) Os[idx] = 0.0f;
  if (threadIdx.x < kTile) {
    m_s[threadIdx.x] = -INFINITY;
    l_s[threadIdx.x] = 0.0f;
  }
  float* Sw = Ss + warp * 16 * L::ld_s;
  float* Ow = Os + warp * 16 * L::ld_acc;

  for (int64_t kt = first_key_tile(q0, p); kt <= last_key_tile(q0, p); ++kt) {
    const int64_t k0 = kt * kTile;
    __syncthreads();  // the previous tile's K, V are no longer read
    load_tile<D>(Ks, kh, k0, T, p.k.t);
    load_tile<D>(Vs, vh, k0, T, p.v.t);
    __syncthreads();
    warp_abt<D>(Sw, Qs + warp * 16 * L::ld_in, Ks);
    __syncwarp();
    // Online softmax over this tile, row by row; lane holds columns 2 lane and 2 lane + 1.
    for (int r = 0; r < 16; ++r) {
      const int row = warp * 16 + r;
      const int64_t i = q0 + row;
      const int c = 2 * lane;
      const float2 sv = *reinterpret_cast<const float2*>(Sw + r * L::ld_s + c);
      const bool v0 = visible(i, k0 + c, p), v1 = visible(i, k0 + c + 1, p);
      float s0 = v0 ? sv.x * p.scale : -INFINITY, s1 = v1 ? sv.y * p.scale : -INFINITY;
      if constexpr (kAlibi) {  // masked ones stay -inf
        s0 -= slope * float(i - k0 - c);
        s1 -= slope * float(i - k0 - c - 1);
      }
      const float m_old = m_s[row];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(s0, s1)));
      float p0 = 0.0f, p1 = 0.0f, alpha = 1.0f;
      if (m_new != -INFINITY) {  // else nothing visible yet in this row: keep O = 0, l = 0
        p0 = v0 ? __expf(s0 - m_new) : 0.0f;
        p1 = v1 ? __expf(s1 - m_new) : 0.0f;
        alpha = __expf(m_old - m_new);  // 0 when m_old = -inf
      }
      const float sum = warp_sum(p0 + p1);
      *reinterpret_cast<__nv_bfloat162*>(Ps + row * L::ld_p + c) = __floats2bfloat162_rn(p0, p1);
      __syncwarp();  // every lane has read m_s[row]
      if (lane == 0) {
        m_s[row] = m_new;
        l_s[row] = alpha * l_s[row] + sum;
        a_s[row] = alpha;
      }
    }
    __syncwarp();
    for (int idx = lane; idx < 16 * D; idx += 32) {
      const int r = idx / D, c = idx % D;
      Ow[r * L::ld_acc + c] *= a_s[warp * 16 + r];
    }
    __syncwarp();
    // O (16 x D of this warp, staged in shared memory so it can be rescaled) += P V.
#pragma unroll
    for (int ct = 0; ct < D / 16; ++ct) {
      FragC acc;
      wmma::load_matrix_sync(acc, Ow + ct * 16, L::ld_acc, wmma::mem_row_major);
#pragma unroll
      for (int ks = 0; ks < kTile / 16; ++ks) {
        FragA fa;
        FragB fb;
        wmma::load_matrix_sync(fa, Ps + warp * 16 * L::ld_p + ks * 16, L::ld_p);
        wmma::load_matrix_sync(fb, Vs + ks * 16 * L::ld_in + ct * 16, L::ld_in);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(Ow + ct * 16, acc, L::ld_acc, wmma::mem_row_major);
    }
    __syncwarp();
  }
  __syncwarp();
  for (int idx = lane; idx < 16 * D; idx += 32) {
    const int r = idx / D, c = idx % D;
    const int64_t i = q0 + warp * 16 + r;
    if (i < T)
      out[p.o.row(hi.b, hi.h, i) + c] = from_f32<bf16_t>(Ow[r * L::ld_acc + c] / l_s[warp * 16 + r]);
  }
  if (lane < 16) {
    const int64_t i = q0 + warp * 16 + lane;
    if (i < T) lse[int64_t(bh) * T + i] = m_s[warp * 16 + lane] + logf(l_s[warp * 16 + lane]);
  }
}

template <int D>
struct BwdSmem {
  using L = TileLayout<D>;
  // a, b: the tiles that stay (K, V for dk/dv; Q, dO for dq); c, d: the tiles that stream.
  static constexpr size_t a = 0, b = L::in_bytes, c = 2 * L::in_bytes, d = 3 * L::in_bytes,
                          s = 4 * L::in_bytes, dp = s + L::s_bytes, pt = dp + L::s_bytes,
                          ds = pt + L::p_bytes, stats = ds + L::p_bytes,
                          bytes = stats + 2 * kTile * sizeof(float);
  // The accumulators are staged over the two score tiles at the end.
  static_assert(2 * L::s_bytes >= L::acc_bytes, "staging area too small");
};

// dK, dV for one key tile of kv head (b, g): loops over the G query heads of the group and the
// query tiles that can see the key tile. Warp w owns keys 16w..16w+15 (rows of S^T).
template <int D, bool kAlibi>
__global__ void __launch_bounds__(kThreads)
    flash_backward_dkdv_tc(bf16_t* dk, bf16_t* dv, const bf16_t* q, const bf16_t* k,
                           const bf16_t* v, const bf16_t* dout, const float* lse, const float* drow,
                           FlashParams p, BlockOrder order) {
  using L = TileLayout<D>;
  using M = BwdSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16_t* Ks = reinterpret_cast<bf16_t*>(smem + M::a);
  bf16_t* Vs = reinterpret_cast<bf16_t*>(smem + M::b);
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem + M::c);
  bf16_t* dOs = reinterpret_cast<bf16_t*>(smem + M::d);
  float* St = reinterpret_cast<float*>(smem + M::s);    // S^T  [key][query]
  float* dPt = reinterpret_cast<float*>(smem + M::dp);  // dP^T [key][query]
  bf16_t* Pt = reinterpret_cast<bf16_t*>(smem + M::pt);
  bf16_t* dSt = reinterpret_cast<bf16_t*>(smem + M::ds);
  float* lse_s = reinterpret_cast<float*>(smem + M::stats);
  float* d_s = lse_s + kTile;

  const HeadTile at = key_tile_block(int64_t(blockIdx.x), order);  // key tile 0 first
  const int64_t kt = at.tile;
  const int bkv = int(at.head);
  const int b = bkv / p.Hkv, g = bkv % p.Hkv, G = p.H / p.Hkv;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t k0 = kt * kTile, T = p.T;
  load_tile<D>(Ks, k + p.k.row(b, g, 0), k0, T, p.k.t);
  load_tile<D>(Vs, v + p.v.row(b, g, 0), k0, T, p.v.t);

  FragC dk_acc[D / 16], dv_acc[D / 16];
#pragma unroll
  for (int ct = 0; ct < D / 16; ++ct) {
    wmma::fill_fragment(dk_acc[ct], 0.0f);
    wmma::fill_fragment(dv_acc[ct], 0.0f);
  }
  float* Sw = St + warp * 16 * L::ld_s;
  float* dPw = dPt + warp * 16 * L::ld_s;
  const int64_t last_q = last_query(k0, p);
  for (int h = g * G; h < (g + 1) * G; ++h) {
    const int64_t bh = int64_t(b) * p.H + h;
    const float slope = kAlibi ? float(alibi_slope_of(h, p)) : 0.0f;
    for (int64_t qt = kt; qt <= last_q / kTile; ++qt) {
      const int64_t q0 = qt * kTile;
      __syncthreads();  // the previous query tile is no longer read
      load_tile<D>(Qs, q + p.q.row(b, h, 0), q0, T, p.q.t);
      load_tile<D>(dOs, dout + p.dout.row(b, h, 0), q0, T, p.dout.t);
      if (threadIdx.x < kTile) {
        const int64_t i = q0 + threadIdx.x;
        lse_s[threadIdx.x] = i < T ? lse[bh * T + i] : INFINITY;
        d_s[threadIdx.x] = i < T ? drow[bh * T + i] : 0.0f;
      }
      __syncthreads();
      warp_abt<D>(Sw, Ks + warp * 16 * L::ld_in, Qs);    // S^T = K Q^T
      warp_abt<D>(dPw, Vs + warp * 16 * L::ld_in, dOs);  // dP^T = V dO^T
      __syncwarp();
      for (int r = 0; r < 16; ++r) {
        const int row = warp * 16 + r;
        const int64_t j = k0 + row;
        const int c = 2 * lane;
        const float2 sv = *reinterpret_cast<const float2*>(Sw + r * L::ld_s + c);
        const float2 dpv = *reinterpret_cast<const float2*>(dPw + r * L::ld_s + c);
        float p0, p1;
        if constexpr (kAlibi) {  // ALiBi's bias, taken off with lse
          const float l0 = lse_s[c] + slope * float(q0 + c - j),
                      l1 = lse_s[c + 1] + slope * float(q0 + c + 1 - j);
          p0 = visible(q0 + c, j, p) ? __expf(sv.x * p.scale - l0) : 0.0f;
          p1 = visible(q0 + c + 1, j, p) ? __expf(sv.y * p.scale - l1) : 0.0f;
        } else {
          p0 = visible(q0 + c, j, p) ? __expf(sv.x * p.scale - lse_s[c]) : 0.0f;
          p1 = visible(q0 + c + 1, j, p) ? __expf(sv.y * p.scale - lse_s[c + 1]) : 0.0f;
        }
        *reinterpret_cast<__nv_bfloat162*>(Pt + row * L::ld_p + c) = __floats2bfloat162_rn(p0, p1);
        *reinterpret_cast<__nv_bfloat162*>(dSt + row * L::ld_p + c) =
            __floats2bfloat162_rn(p0 * (dpv.x - d_s[c]), p1 * (dpv.y - d_s[c + 1]));
      }
      __syncwarp();
      warp_pm<D>(dv_acc, Pt + warp * 16 * L::ld_p, dOs);  // dV += P^T dO
      warp_pm<D>(dk_acc, dSt + warp * 16 * L::ld_p, Qs);  // dK += dS^T Q
    }
  }
  __syncthreads();  // the score tiles become the staging area
  float* stage = reinterpret_cast<float*>(smem + M::s) + warp * 16 * L::ld_acc;
  warp_store_acc<D>(dv + p.dv.row(b, g, 0), k0 + warp * 16, T, dv_acc, stage, 1.0f, p.dv.t);
  warp_store_acc<D>(dk + p.dk.row(b, g, 0), k0 + warp * 16, T, dk_acc, stage, p.scale, p.dk.t);
}

// dQ for one query tile: loops over the key tiles it can see. Warp w owns queries 16w..16w+15.
template <int D, bool kAlibi>
__global__ void __launch_bounds__(kThreads)
    flash_backward_dq_tc(bf16_t* dq, const bf16_t* q, const bf16_t* k, const bf16_t* v,
                         const bf16_t* dout, const float* lse, const float* drow, FlashParams p,
                         BlockOrder order) {
  using L = TileLayout<D>;
  using M = BwdSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem + M::a);
  bf16_t* dOs = reinterpret_cast<bf16_t*>(smem + M::b);
  bf16_t* Ks = reinterpret_cast<bf16_t*>(smem + M::c);
  bf16_t* Vs = reinterpret_cast<bf16_t*>(smem + M::d);
  float* Ss = reinterpret_cast<float*>(smem + M::s);
  float* dPs = reinterpret_cast<float*>(smem + M::dp);
  bf16_t* dSs = reinterpret_cast<bf16_t*>(smem + M::ds);
  float* lse_s = reinterpret_cast<float*>(smem + M::stats);
  float* d_s = lse_s + kTile;

  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);
  const int64_t qt = at.tile;
  const int bh = int(at.head);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = qt * kTile, T = p.T;
  const HeadIndex hi = head_index(bh, p);
  const float slope = kAlibi ? float(alibi_slope_of(hi.h, p)) : 0.0f;
  load_tile<D>(Qs, q + p.q.row(hi.b, hi.h, 0), q0, T, p.q.t);
  load_tile<D>(dOs, dout + p.dout.row(hi.b, hi.h, 0), q0, T, p.dout.t);
  if (threadIdx.x < kTile) {
    const int64_t i = q0 + threadIdx.x;
    lse_s[threadIdx.x] = i < T ? lse[int64_t(bh) * T + i] : INFINITY;
    d_s[threadIdx.x] = i < T ? drow[int64_t(bh) * T + i] : 0.0f;
  }
  FragC dq_acc[D / 16];
#pragma unroll
  for (int ct = 0; ct < D / 16; ++ct) wmma::fill_fragment(dq_acc[ct], 0.0f);
  float* Sw = Ss + warp * 16 * L::ld_s;
  float* dPw = dPs + warp * 16 * L::ld_s;

  for (int64_t kt = first_key_tile(q0, p); kt <= last_key_tile(q0, p); ++kt) {
    const int64_t k0 = kt * kTile;
    __syncthreads();
    load_tile<D>(Ks, k + p.k.row(hi.b, hi.g, 0), k0, T, p.k.t);
    load_tile<D>(Vs, v + p.v.row(hi.b, hi.g, 0), k0, T, p.v.t);
    __syncthreads();
    warp_abt<D>(Sw, Qs + warp * 16 * L::ld_in, Ks);    // S = Q K^T
    warp_abt<D>(dPw, dOs + warp * 16 * L::ld_in, Vs);  // dP = dO V^T
    __syncwarp();
    for (int r = 0; r < 16; ++r) {
      const int row = warp * 16 + r;
      const int64_t i = q0 + row;
      const int c = 2 * lane;
      const float2 sv = *reinterpret_cast<const float2*>(Sw + r * L::ld_s + c);
      const float2 dpv = *reinterpret_cast<const float2*>(dPw + r * L::ld_s + c);
      float p0, p1;
      if constexpr (kAlibi) {  // ALiBi's bias, taken off with lse
        const float l0 = lse_s[row] + slope * float(i - k0 - c),
                    l1 = lse_s[row] + slope * float(i - k0 - c - 1);
        p0 = visible(i, k0 + c, p) ? __expf(sv.x * p.scale - l0) : 0.0f;
        p1 = visible(i, k0 + c + 1, p) ? __expf(sv.y * p.scale - l1) : 0.0f;
      } else {
        p0 = visible(i, k0 + c, p) ? __expf(sv.x * p.scale - lse_s[row]) : 0.0f;
        p1 = visible(i, k0 + c + 1, p) ? __expf(sv.y * p.scale - lse_s[row]) : 0.0f;
      }
      *reinterpret_cast<__nv_bfloat162*>(dSs + row * L::ld_p + c) =
          __floats2bfloat162_rn(p0 * (dpv.x - d_s[row]), p1 * (dpv.y - d_s[row]));
    }
    __syncwarp();
    warp_pm<D>(dq_acc, dSs + warp * 16 * L::ld_p, Ks);  // dQ += dS K
  }
  __syncthreads();
  float* stage = reinterpret_cast<float*>(smem + M::s) + warp * 16 * L::ld_acc;
  warp_store_acc<D>(dq + p.dq.row(hi.b, hi.h, 0), q0 + warp * 16, T, dq_acc, stage, p.scale,
                    p.dq.t);
}

// ---- f32, plain -------------------------------------------------------------------------------
// One warp per query row; lane l takes key c0 + l of each chunk of 32 keys, and the output row's
// dimensions e = l, l + 32, ... (D <= 128: 4 per lane). Exact expf/logf: this path is compared
// with the CPU reference at f32 precision. The forward takes a query offset (p.Tk > p.T: query i
// at position Tk - T + i) and also runs on bf16 tensors, loading into f32: KV-cached decoding.

template <typename E, ScoreBias kBias>
__global__ void __launch_bounds__(kPlainWarps * 32)
    flash_forward_plain(E* out, float* lse, const E* q, const E* k, const E* v, FlashParams p,
                        int D) {
  extern __shared__ float plain_smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t i = int64_t(blockIdx.y) * kPlainWarps + warp, T = p.T, Tk = p.Tk;
  const int64_t pos = Tk - T + i;  // the query's position among the keys
  const int bh = blockIdx.x;  // plain_row_grid
  if (i >= T) return;  // whole warps only; no block-wide barrier below
  const HeadIndex hi = head_index(bh, p);
  const E* kh = k + p.k.row(hi.b, hi.g, 0);  // key j at kh + j p.k.t: a cache's prefix too
  const E* vh = v + p.v.row(hi.b, hi.g, 0);
  const E* qi = q + p.q.row(hi.b, hi.h, i);
  const float slope = kBias == ScoreBias::Alibi ? float(alibi_slope_of(hi.h, p)) : 0.0f;
  const float* c = kBias == ScoreBias::Forget ? p.forget + int64_t(bh) * Tk : nullptr;
  const float ci = kBias == ScoreBias::Forget ? c[pos] : 0.0f;  // the query's own position's
  float* qs = plain_smem + warp * D;
  for (int e = lane; e < D; e += 32) qs[e] = to_f32(qi[e]);
  __syncwarp();
  float o[kPerLane] = {};
  float m = -INFINITY, l = 0.0f;
  const int64_t first = p.window > 0 && pos - p.window + 1 > 0 ? pos - p.window + 1 : 0;
  for (int64_t c0 = first; c0 <= pos; c0 += 32) {
    const int64_t j = c0 + lane;
    float s = -INFINITY;
    if (j <= pos) {
      float dot = 0.0f;
      const E* kj = kh + j * p.k.t;
      for (int e = 0; e < D; ++e) dot += qs[e] * to_f32(kj[e]);
      s = dot * p.scale;
      if constexpr (kBias == ScoreBias::Alibi) s -= slope * float(pos - j);
      if constexpr (kBias == ScoreBias::Forget) s += ci - c[j];
    }
    const float m_new = fmaxf(m, warp_max(s));  // finite: key c0 <= pos is visible
    const float alpha = expf(m - m_new);
    const float pj = j <= pos ? expf(s - m_new) : 0.0f;
    l = alpha * l + warp_sum(pj);
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) o[t] *= alpha;
    const int n = int(pos - c0 + 1 < 32 ? pos - c0 + 1 : 32);
    for (int src = 0; src < n; ++src) {
      const float pv = __shfl_sync(kFull, pj, src);
      const E* vr = vh + (c0 + src) * p.v.t;
#pragma unroll
      for (int t = 0; t < kPerLane; ++t)
        if (lane + 32 * t < D) o[t] += pv * to_f32(vr[lane + 32 * t]);
    }
    m = m_new;
  }
  E* oi = out + p.o.row(hi.b, hi.h, i);
#pragma unroll
  for (int t = 0; t < kPerLane; ++t)
    if (lane + 32 * t < D) oi[lane + 32 * t] = from_f32<E>(o[t] / l);
  if (lane == 0) lse[int64_t(bh) * T + i] = m + logf(l);
}

template <ScoreBias kBias>
__global__ void __launch_bounds__(kPlainWarps * 32)
    flash_backward_dq_plain(float* dq, const float* q, const float* k, const float* v,
                            const float* dout, const float* lse, const float* drow, FlashParams p,
                            int D) {
  extern __shared__ float plain_smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t i = int64_t(blockIdx.y) * kPlainWarps + warp, T = p.T;
  const int bh = blockIdx.x;  // plain_row_grid
  if (i >= T) return;
  const HeadIndex hi = head_index(bh, p);
  const float* kh = k + p.k.row(hi.b, hi.g, 0);
  const float* vh = v + p.v.row(hi.b, hi.g, 0);
  const float* qi = q + p.q.row(hi.b, hi.h, i);
  const float* doi = dout + p.dout.row(hi.b, hi.h, i);
  float* qs = plain_smem + warp * 2 * D;
  float* dos = qs + D;
  for (int e = lane; e < D; e += 32) {
    qs[e] = qi[e];
    dos[e] = doi[e];
  }
  __syncwarp();
  const float li = lse[int64_t(bh) * T + i], di = drow[int64_t(bh) * T + i];
  const float slope = kBias == ScoreBias::Alibi ? float(alibi_slope_of(hi.h, p)) : 0.0f;
  const float* c = kBias == ScoreBias::Forget ? p.forget + int64_t(bh) * T : nullptr;
  const float ci = kBias == ScoreBias::Forget ? c[i] : 0.0f;
  float acc[kPerLane] = {};
  float dc = 0.0f;  // the forget gate: this lane's keys' share of sum_j dS[i, j]
  const int64_t first = p.window > 0 && i - p.window + 1 > 0 ? i - p.window + 1 : 0;
  for (int64_t c0 = first; c0 <= i; c0 += 32) {
    const int64_t j = c0 + lane;
    float ds = 0.0f;
    if (j <= i) {
      float s = 0.0f, dp = 0.0f;
      const float* kj = kh + j * p.k.t;
      const float* vj = vh + j * p.v.t;
      for (int e = 0; e < D; ++e) {
        s += qs[e] * kj[e];
        dp += dos[e] * vj[e];
      }
      if constexpr (kBias == ScoreBias::Alibi)  // ALiBi's bias, taken off with lse
        ds = expf(s * p.scale - (li + slope * float(i - j))) * (dp - di);
      else if constexpr (kBias == ScoreBias::Forget)  // the biased score, as the forward's
        ds = expf(s * p.scale + (ci - c[j]) - li) * (dp - di);
      else
        ds = expf(s * p.scale - li) * (dp - di);
    }
    if constexpr (kBias == ScoreBias::Forget) dc += ds;
    const int n = int(i - c0 + 1 < 32 ? i - c0 + 1 : 32);
    for (int src = 0; src < n; ++src) {
      const float dsv = __shfl_sync(kFull, ds, src);
      const float* kr = kh + (c0 + src) * p.k.t;
#pragma unroll
      for (int t = 0; t < kPerLane; ++t)
        if (lane + 32 * t < D) acc[t] += dsv * kr[lane + 32 * t];
    }
  }
  float* dqi = dq + p.dq.row(hi.b, hi.h, i);
#pragma unroll
  for (int t = 0; t < kPerLane; ++t)
    if (lane + 32 * t < D) dqi[lane + 32 * t] = p.scale * acc[t];
  if constexpr (kBias == ScoreBias::Forget) {  // the row's share, onto the keys' (dK dV's)
    dc = warp_sum(dc);
    if (lane == 0) p.forget_grad[int64_t(bh) * T + i] += dc;
  }
}

// One warp per block of 32 keys of one kv head (lane = key); queries visited one at a time, the
// same for every lane; each lane accumulates its key's dK and dV rows in shared memory, and with
// the forget gate its dS over each query head's rows, written to forget_grad at the head's end.
template <ScoreBias kBias>
__global__ void __launch_bounds__(32)
    flash_backward_dkdv_plain(float* dk, float* dv, const float* q, const float* k, const float* v,
                              const float* dout, const float* lse, const float* drow, FlashParams p,
                              int D) {
  extern __shared__ float plain_smem[];
  const int lane = threadIdx.x;
  const int bkv = blockIdx.x;  // plain_key_grid
  const int b = bkv / p.Hkv, g = bkv % p.Hkv, G = p.H / p.Hkv;
  const int64_t T = p.T, j0 = int64_t(blockIdx.y) * 32, j = j0 + lane;
  const int ld = D + 1;  // odd stride: lanes hit different banks
  float* dks = plain_smem;
  float* dvs = plain_smem + 32 * ld;
  for (int e = 0; e < D; ++e) dks[lane * ld + e] = dvs[lane * ld + e] = 0.0f;
  // Lanes past T point at row T - 1 (read, never used: they skip every query below).
  const int64_t jr = j < T ? j : T - 1;
  const float* kj = k + p.k.row(b, g, jr);
  const float* vj = v + p.v.row(b, g, jr);
  const int64_t last_q =
      p.window > 0 && j0 + 31 + p.window - 1 < T - 1 ? j0 + 31 + p.window - 1 : T - 1;
  for (int h = g * G; h < (g + 1) * G; ++h) {
    const int64_t bh = int64_t(b) * p.H + h;
    const float slope = kBias == ScoreBias::Alibi ? float(alibi_slope_of(h, p)) : 0.0f;
    const float* c = kBias == ScoreBias::Forget ? p.forget + bh * T : nullptr;
    const float cj = kBias == ScoreBias::Forget ? c[jr] : 0.0f;
    float dc = 0.0f;  // sum_i dS[i, j] of this head
    for (int64_t i = j0; i <= last_q; ++i) {
      if (j >= T || !visible(i, j, p)) continue;
      const float* qi = q + p.q.row(b, h, i);
      const float* doi = dout + p.dout.row(b, h, i);
      float s = 0.0f, dp = 0.0f;
      for (int e = 0; e < D; ++e) {
        s += qi[e] * kj[e];
        dp += doi[e] * vj[e];
      }
      float pij;
      if constexpr (kBias == ScoreBias::Alibi)  // ALiBi's bias, taken off with lse
        pij = expf(s * p.scale - (lse[bh * T + i] + slope * float(i - j)));
      else if constexpr (kBias == ScoreBias::Forget)  // the biased score, as the forward's
        pij = expf(s * p.scale + (c[i] - cj) - lse[bh * T + i]);
      else
        pij = expf(s * p.scale - lse[bh * T + i]);
      const float ds = pij * (dp - drow[bh * T + i]);
      if constexpr (kBias == ScoreBias::Forget) dc += ds;
      for (int e = 0; e < D; ++e) {
        dks[lane * ld + e] += ds * qi[e];
        dvs[lane * ld + e] += pij * doi[e];
      }
    }
    if (kBias == ScoreBias::Forget && j < T) p.forget_grad[bh * T + j] = -dc;
  }
  if (j < T) {
    float* dkj = dk + p.dk.row(b, g, j);
    float* dvj = dv + p.dv.row(b, g, j);
    for (int e = 0; e < D; ++e) {
      dkj[e] = p.scale * dks[lane * ld + e];
      dvj[e] = dvs[lane * ld + e];
    }
  }
}

// The forward's parameters; the backward adds its gradients' strides (with_grads). A forget gate's
// sums: a contiguous f32 (B, H, Tk), as ops::flash_attention hands them over.
FlashParams params_of(const char* name, const Dims& d, double scale, const AttentionMask& mask,
                      const Tensor& q, const Tensor& out) {
  FlashParams p{};
  p.T = d.T, p.H = int(d.H), p.Hkv = int(d.Hkv), p.scale = float(scale), p.window = mask.window;
  p.alibi = mask.alibi, p.alibi_heads = int(d.H), p.alibi_h0 = 0;
  p.Tk = d.Tk, p.q = d.q, p.k = d.k, p.v = d.v, p.o = head_strides(out);
  p.eager_rescale = env_switch("TESSERA_FLASH_RESCALE", "lazy", "eager");
  if (mask.forget.defined()) {
    TESSERA_CHECK(!mask.alibi, "cuda ", name,
                  ": ALiBi and a forget gate at once (ALiBi is the gate of sums -m_h i: add those "
                  "to the gate's)");
    check_like(name, "forget", mask.forget, {d.B, d.H, d.Tk}, DType::F32, q);
    p.forget = static_cast<const float*>(mask.forget.data_ptr());
  }
  return p;
}
// ... and the forget gate's gradient, (B, H, T) as its sums, with them or not at all.
FlashParams with_grads(const char* name, FlashParams p, const Tensor& dq, const Tensor& dk,
                       const Tensor& dv, const Tensor& dout, const AttentionMask& mask) {
  p.dq = head_strides(dq);
  p.dk = head_strides(dk);
  p.dv = head_strides(dv);
  p.dout = head_strides(dout);
  TESSERA_CHECK(mask.forget.defined() == mask.forget_grad.defined(), "cuda ", name,
                ": a forget gate and its gradient go together");
  if (mask.forget_grad.defined()) {
    check_like(name, "forget_grad", mask.forget_grad, mask.forget.shape(), DType::F32, dq);
    p.forget_grad = static_cast<float*>(mask.forget_grad.data_ptr());
  }
  return p;
}

// Whether a documents call runs in one launch: as documents_launch_allowed says, with the mma.sync
// or wgmma families chosen (the documents kernels are flash_mma.cu's); the wmma kernels take one
// document at a time.
bool documents_in_one_launch(const Tensor& q) {
  return documents_launch_allowed(q) && flash_kernels() != FlashKernels::Wmma;
}
// The documents launches have no forget instances (causal_attention runs Forgetting Attention
// within documents one document a call, on views of the batch, so they are never asked).
void refuse_forget_documents(const char* name, const AttentionMask& mask) {
  TESSERA_CHECK(!mask.forget.defined(), "cuda ", name,
                ": the documents launches take no forget gate (Forgetting Attention runs in the "
                "mma.sync families and the warp-per-row kernels, on whole rows)");
}

}  // namespace

void flash_attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                             const Tensor& v, double scale, const AttentionMask& mask) {
  const char* name = "flash_attention_forward";
  const Dims d = check_qkv(name, q, k, v, /*allow_offset=*/true, /*strided=*/true);
  check_view(name, "out", out, q.shape(), q.dtype(), q, /*output=*/true);
  check_like(name, "lse", lse, {d.B, d.H, d.T}, DType::F32, q);
  if (d.T == 0 || d.B == 0 || d.H == 0) return;
  DeviceGuard guard(q.device().index);
  FlashParams p = params_of(name, d, scale, mask, q, out);
  float* lp = static_cast<float*>(lse.data_ptr());
  if (q.dtype() == DType::BF16 && d.offset() == 0) {
    check_aligned_output(name, "out", out);
    Tensor Q = aligned_input(q), K = aligned_input(k), V = aligned_input(v);
    p.q = head_strides(Q), p.k = head_strides(K), p.v = head_strides(V);  // copies are dense
    if (flash_kernels() != FlashKernels::Wmma) {
      flash_mma_forward(out, lse, Q, K, V, p, d.B, d.D);
      return;
    }
    refuse_forget(p, "the wmma flash kernels (TESSERA_FLASH_KERNELS=wmma)", kUseMmaFamily);
    const BlockOrder order =
        query_head_order(d.B, d.H, d.Hkv, (d.T + kTile - 1) / kTile, d.T, d.D);
    auto launch = [&](auto kernel, size_t bytes) {
      allow_smem(kernel, bytes);
      kernel<<<grid_of(order), kThreads, bytes>>>(
          static_cast<bf16_t*>(out.data_ptr()), lp, static_cast<const bf16_t*>(Q.data_ptr()),
          static_cast<const bf16_t*>(K.data_ptr()), static_cast<const bf16_t*>(V.data_ptr()), p,
          order);
      CUDA_CHECK_LAUNCH();
    };
    with_alibi(p, [&](auto alibi) {
      constexpr bool A = decltype(alibi)::value;
      if (d.D == 64)
        launch(flash_forward_tc<64, A>, FwdSmem<64>::bytes);
      else
        launch(flash_forward_tc<128, A>, FwdSmem<128>::bytes);
    });
  } else {
    with_plain_type(q.dtype(), [&](auto zero) {
      using E = decltype(zero);
      with_bias(p, [&](auto bias) {
        constexpr ScoreBias A = decltype(bias)::value;
        flash_forward_plain<E, A><<<plain_row_grid(d), kPlainWarps * 32, plain_row_smem(d, 1)>>>(
            static_cast<E*>(out.data_ptr()), lp, static_cast<const E*>(q.data_ptr()),
            static_cast<const E*>(k.data_ptr()), static_cast<const E*>(v.data_ptr()), p, int(d.D));
        CUDA_CHECK_LAUNCH();
      });
    });
  }
}

void flash_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                              const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& out, const Tensor& lse, double scale,
                              const AttentionMask& mask) {
  const char* name = "flash_attention_backward";
  const Dims d = check_qkv(name, q, k, v, /*allow_offset=*/false, /*strided=*/true);
  check_backward_views(name, dq, dk, dv, dout, out, q, k, v);
  check_like(name, "lse", lse, {d.B, d.H, d.T}, DType::F32, q);
  if (d.T == 0 || d.B == 0 || d.H == 0) return;
  DeviceGuard guard(q.device().index);
  FlashParams p = with_grads(name, params_of(name, d, scale, mask, q, out), dq, dk, dv, dout, mask);
  Tensor drow = Tensor::empty({d.B, d.H, d.T}, {DType::F32, q.device()});  // rowsum(dO * O)
  const float* lp = static_cast<const float*>(lse.data_ptr());
  const float* dr = static_cast<const float*>(drow.data_ptr());
  if (q.dtype() == DType::BF16) {
    check_aligned_output(name, "dq", dq);
    check_aligned_output(name, "dk", dk);
    check_aligned_output(name, "dv", dv);
    rowdot<bf16_t>(drow, dout, out);
    Tensor Q = aligned_input(q), K = aligned_input(k), V = aligned_input(v),
           dO = aligned_input(dout);
    p.q = head_strides(Q), p.k = head_strides(K), p.v = head_strides(V);  // copies are dense
    p.dout = head_strides(dO);
    if (flash_kernels() != FlashKernels::Wmma) {
      flash_mma_backward(dq, dk, dv, dO, Q, K, V, lse, drow, p, d.B, d.D);
      return;
    }
    refuse_forget(p, "the wmma flash kernels (TESSERA_FLASH_KERNELS=wmma)", kUseMmaFamily);
    auto ptr = [](const Tensor& t) { return static_cast<const bf16_t*>(t.data_ptr()); };
    auto mut = [](const Tensor& t) { return static_cast<bf16_t*>(t.data_ptr()); };
    const int64_t tiles = (d.T + kTile - 1) / kTile;
    const BlockOrder kv_order = kv_head_order(d.B, d.H, d.Hkv, tiles, d.T, d.D);
    const BlockOrder q_order = query_head_order(d.B, d.H, d.Hkv, tiles, d.T, d.D);
    auto run = [&](auto dkdv_kernel, auto dq_kernel, size_t bytes) {
      allow_smem(dkdv_kernel, bytes);
      dkdv_kernel<<<grid_of(kv_order), kThreads, bytes>>>(
          mut(dk), mut(dv), ptr(Q), ptr(K), ptr(V), ptr(dO), lp, dr, p, kv_order);
      CUDA_CHECK_LAUNCH();
      allow_smem(dq_kernel, bytes);
      dq_kernel<<<grid_of(q_order), kThreads, bytes>>>(mut(dq), ptr(Q), ptr(K), ptr(V), ptr(dO),
                                                       lp, dr, p, q_order);
      CUDA_CHECK_LAUNCH();
    };
    with_alibi(p, [&](auto alibi) {
      constexpr bool A = decltype(alibi)::value;
      if (d.D == 64)
        run(flash_backward_dkdv_tc<64, A>, flash_backward_dq_tc<64, A>, BwdSmem<64>::bytes);
      else
        run(flash_backward_dkdv_tc<128, A>, flash_backward_dq_tc<128, A>, BwdSmem<128>::bytes);
    });
  } else {
    rowdot<float>(drow, dout, out);
    auto ptr = [](const Tensor& t) { return static_cast<const float*>(t.data_ptr()); };
    auto mut = [](const Tensor& t) { return static_cast<float*>(t.data_ptr()); };
    const int D = int(d.D);
    with_bias(p, [&](auto bias) {
      constexpr ScoreBias A = decltype(bias)::value;  // dK dV first: dQ adds to its forget_grad
      flash_backward_dkdv_plain<A><<<plain_key_grid(d), 32, plain_key_smem(d)>>>(
          mut(dk), mut(dv), ptr(q), ptr(k), ptr(v), ptr(dout), lp, dr, p, D);
      CUDA_CHECK_LAUNCH();
      flash_backward_dq_plain<A><<<plain_row_grid(d), kPlainWarps * 32, plain_row_smem(d, 2)>>>(
          mut(dq), ptr(q), ptr(k), ptr(v), ptr(dout), lp, dr, p, D);
      CUDA_CHECK_LAUNCH();
    });
  }
}

bool flash_attention_forward_documents(const Tensor& out, const Tensor& lse, const Tensor& q,
                                       const Tensor& k, const Tensor& v, double scale,
                                       const AttentionMask& mask,
                                       const std::vector<DocumentSpan>& spans) {
  const char* name = "flash_attention_forward_documents";
  refuse_forget_documents(name, mask);
  const Dims d = check_qkv(name, q, k, v, /*allow_offset=*/false, /*strided=*/true);
  check_view(name, "out", out, q.shape(), q.dtype(), q, /*output=*/true);
  check_like(name, "lse", lse, {d.B, d.H, d.T}, DType::F32, q);
  check_document_spans(name, spans, d.B, d.T);
  if (!documents_in_one_launch(q)) return false;
  if (d.T == 0 || d.B == 0 || d.H == 0) return true;
  DeviceGuard guard(q.device().index);
  check_aligned_output(name, "out", out);
  FlashParams p = params_of(name, d, scale, mask, q, out);
  const Tensor Q = aligned_input(q), K = aligned_input(k), V = aligned_input(v);
  p.q = head_strides(Q), p.k = head_strides(K), p.v = head_strides(V);
  document_tiles(name, spans, d, q, p.docs);
  flash_mma_documents_forward(out, lse, Q, K, V, p, d.B, d.D);
  return true;
}

bool flash_attention_backward_documents(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                        const Tensor& dout, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& out, const Tensor& lse,
                                        double scale, const AttentionMask& mask,
                                        const std::vector<DocumentSpan>& spans) {
  const char* name = "flash_attention_backward_documents";
  refuse_forget_documents(name, mask);
  const Dims d = check_qkv(name, q, k, v, /*allow_offset=*/false, /*strided=*/true);
  check_backward_views(name, dq, dk, dv, dout, out, q, k, v);
  check_like(name, "lse", lse, {d.B, d.H, d.T}, DType::F32, q);
  check_document_spans(name, spans, d.B, d.T);
  if (!documents_in_one_launch(q)) return false;
  if (d.T == 0 || d.B == 0 || d.H == 0) return true;
  DeviceGuard guard(q.device().index);
  for (const auto& [what, t] : {std::pair{"dq", &dq}, {"dk", &dk}, {"dv", &dv}})
    check_aligned_output(name, what, *t);
  FlashParams p = with_grads(name, params_of(name, d, scale, mask, q, out), dq, dk, dv, dout, mask);
  Tensor drow = Tensor::empty({d.B, d.H, d.T}, {DType::F32, q.device()});  // rowsum(dO * O)
  rowdot<bf16_t>(drow, dout, out);
  const Tensor Q = aligned_input(q), K = aligned_input(k), V = aligned_input(v),
               dO = aligned_input(dout);
  p.q = head_strides(Q), p.k = head_strides(K), p.v = head_strides(V), p.dout = head_strides(dO);
  document_tiles(name, spans, d, q, p.docs);
  flash_mma_documents_backward(dq, dk, dv, dO, Q, K, V, lse, drow, p, d.B, d.D);
  return true;
}

}  // namespace tessera::cuda
