// CUDA LayerNorm and RMSNorm over the last dimension: the twins of src/backend/cpu/norm.cpp
// (formulas there).
//
// x, y, dx, dy (N, C); w, b, dw, db (C); mean, rstd (N), f32 or x's dtype (core.cuh's StatPtr)
//
// One block per row for the forward and for dx (dx accumulating into the gradient it holds when
// asked), statistics in f32: the mean first, then the biased variance as the mean of squared
// deviations (two passes, as the CPU: no E[x^2] - mean^2 cancellation), rstd = 1 / sqrt(var +
// eps). The forward normalises with the f32 statistics it has just computed and saves them; the
// backward reads the saved ones.
//
// dw and db are sums over rows, done in two deterministic stages: blocks of 32 column groups x a
// chunk of rows write f32 partial sums, then blocks of 32 columns add the chunks' partials in a
// fixed order (norm_weight_grad_final_kernel), writing the sum or adding it to what dw / db hold
// (NormAccumulate), in x's dtype or f32 (a bf16 weight's f32 gradient buffer: the sum is not
// rounded to bf16 first). Rows are read 16 bytes at a time where their length and pointers allow
// (core.cuh); a row's block then has one thread per group (row_threads), so more rows share an SM.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "backend/kernels.h"
#include "common.cuh"
#include "core.cuh"
#include "core/env.h"

namespace tessera::cuda {
namespace {

using core::block_sum;
using core::check_args;
using core::dispatch;
using core::kThreads;
using core::ld;
using core::ld_n;
using core::rows_packed;
using core::row_groups;
using core::st;
using core::st_n;
using core::StatPtr;

// ---- forward ----------------------------------------------------------------------------------

// kLayerNorm: y = (x - mean) * rstd * w + b; else (RMSNorm) y = x * rstd * w with
// rstd = 1 / sqrt(mean(x^2) + eps). Rows in groups of W (core.cuh's 16-byte accesses).
template <typename T, bool kLayerNorm, int W>
__global__ void __launch_bounds__(kThreads)
norm_forward_kernel(T* y, StatPtr mean, StatPtr rstd, const T* x, const T* w, const T* b,
                    int64_t C, float eps) {
  __shared__ float scratch[32];
  const int64_t n = blockIdx.x;
  const T* xr = x + n * C;
  T* yr = y + n * C;
  float m = 0.0f;
  if constexpr (kLayerNorm) {
    float s = 0.0f;
    row_groups<W>(C, [&](int64_t c, auto tag) {
      constexpr int K = decltype(tag)::value;
      float v[K];
      ld_n<K>(xr, c, v);
#pragma unroll
      for (int k = 0; k < K; ++k) s += v[k];
    });
    m = block_sum(s, scratch) / float(C);
  }
  float ss = 0.0f;
  row_groups<W>(C, [&](int64_t c, auto tag) {
    constexpr int K = decltype(tag)::value;
    float v[K];
    ld_n<K>(xr, c, v);
#pragma unroll
    for (int k = 0; k < K; ++k) ss += (v[k] - m) * (v[k] - m);
  });
  const float r = 1.0f / sqrtf(block_sum(ss, scratch) / float(C) + eps);
  row_groups<W>(C, [&](int64_t c, auto tag) {
    constexpr int K = decltype(tag)::value;
    float v[K], wv[K];
    [[maybe_unused]] float bv[K];  // layernorm only
    ld_n<K>(xr, c, v);
    ld_n<K>(w, c, wv);
    if constexpr (kLayerNorm) ld_n<K>(b, c, bv);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if constexpr (kLayerNorm) {
        v[k] = (v[k] - m) * r * wv[k] + bv[k];
      } else {
        v[k] = v[k] * r * wv[k];
      }
    }
    st_n<K>(yr, c, v);
  });
  if (threadIdx.x == 0) {
    if constexpr (kLayerNorm) mean.store(n, m);
    rstd.store(n, r);
  }
}

// ---- backward: dx -----------------------------------------------------------------------------

// With xhat = (x - mean) * rstd (mean = 0 for RMSNorm) and g = dy * w:
//   layernorm: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//   rmsnorm:   dx = rstd * (g - xhat * mean(g * xhat))
template <typename T, bool kLayerNorm, int W>
__global__ void __launch_bounds__(kThreads)
norm_backward_dx_kernel(T* dx, const T* dy, const T* x, const T* w, StatPtr mean, StatPtr rstd,
                        int64_t C, bool accumulate) {
  __shared__ float scratch[32];
  const int64_t n = blockIdx.x;
  const T* xr = x + n * C;
  const T* gr = dy + n * C;
  const float m = kLayerNorm ? mean.load(n) : 0.0f, r = rstd.load(n);
  float sum_g = 0.0f, sum_gx = 0.0f;
  row_groups<W>(C, [&](int64_t c, auto tag) {
    constexpr int K = decltype(tag)::value;
    float gv[K], xv[K], wv[K];
    ld_n<K>(gr, c, gv);
    ld_n<K>(xr, c, xv);
    ld_n<K>(w, c, wv);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float g = gv[k] * wv[k];
      sum_g += g;
      sum_gx += g * (xv[k] - m) * r;
    }
  });
  const float mean_g = kLayerNorm ? block_sum(sum_g, scratch) / float(C) : 0.0f;
  const float mean_gx = block_sum(sum_gx, scratch) / float(C);
  T* dxr = dx + n * C;
  row_groups<W>(C, [&](int64_t c, auto tag) {
    constexpr int K = decltype(tag)::value;
    float gv[K], xv[K], wv[K], held[K];
    ld_n<K>(gr, c, gv);
    ld_n<K>(xr, c, xv);
    ld_n<K>(w, c, wv);
    if (accumulate) ld_n<K>(dxr, c, held);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      // Its products rounded alone: with a * b - c left to the compiler, the accumulating launch
      // and the plain one may contract it differently (nvcc fuses by default).
      const float xhat = (xv[k] - m) * r;
      const float d = r * (__fmul_rn(gv[k], wv[k]) - mean_g - __fmul_rn(xhat, mean_gx));
      // Accumulating: d rounded to T, then added (no fma contraction): axpby's bits, see kernels.h.
      gv[k] = accumulate ? __fadd_rn(held[k], core::rounded(dxr, d)) : d;
    }
    st_n<K>(dxr, c, gv);
  });
}

// ---- backward: dw, db -------------------------------------------------------------------------

constexpr int kColTile = 32;                   // column groups per block (one warp wide)
constexpr int kRowThreads = kThreads / kColTile;  // threads down the rows

// Rows per chunk: at least 64 (GPT-2's C = 768 in bf16 is 3 column tiles: 64-row chunks give
// B T / 64 x 3 blocks), more when N needs more than the grid's 65535 chunks. A function of N
// alone, so the partition (and the order of the sums) does not depend on the device.
int64_t rows_per_chunk(int64_t N) { return std::max<int64_t>(64, (N + 65534) / 65535); }

// Block (x, y) sums dy * xhat (into pw) and dy (into pb, layernorm only) over rows
// [y * chunk, (y + 1) * chunk) for the W-column groups [x * 32, x * 32 + 32): thread (tx, ty)
// takes every kRowThreads-th row from ty for its W columns, then thread row 0 adds the
// kRowThreads partials in order. C is a multiple of W, so a group is in range whole or not at all.
template <typename T, bool kLayerNorm, int W>
__global__ void __launch_bounds__(kThreads)
norm_weight_grad_partial_kernel(float* pw, float* pb, const T* dy, const T* x, StatPtr mean,
                                StatPtr rstd, int64_t N, int64_t C, int64_t chunk) {
  __shared__ float sw[kRowThreads][kColTile * W], sb[kRowThreads][kColTile * W];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = (int64_t(blockIdx.x) * kColTile + tx) * W;
  const int64_t n0 = int64_t(blockIdx.y) * chunk, n1 = std::min(N, n0 + chunk);
  float aw[W], ab[W];
#pragma unroll
  for (int k = 0; k < W; ++k) aw[k] = ab[k] = 0.0f;
  if (c < C) {
    // Unrolled for four rows' loads in flight per thread (the adds keep their order).
#pragma unroll 4
    for (int64_t n = n0 + ty; n < n1; n += kRowThreads) {
      float g[W], xv[W];
      ld_n<W>(dy, n * C + c, g);
      ld_n<W>(x, n * C + c, xv);
      const float m = kLayerNorm ? mean.load(n) : 0.0f, r = rstd.load(n);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        aw[k] += g[k] * (xv[k] - m) * r;
        ab[k] += g[k];
      }
    }
  }
#pragma unroll
  for (int k = 0; k < W; ++k) sw[ty][tx * W + k] = aw[k], sb[ty][tx * W + k] = ab[k];
  __syncthreads();
  if (ty == 0 && c < C) {
    for (int k = 0; k < W; ++k) {
      float tw = 0.0f, tb = 0.0f;
      for (int q = 0; q < kRowThreads; ++q) tw += sw[q][tx * W + k], tb += sb[q][tx * W + k];
      pw[int64_t(blockIdx.y) * C + c + k] = tw;
      if (kLayerNorm) pb[int64_t(blockIdx.y) * C + c + k] = tb;
    }
  }
}

// dw[c] = sum over chunks of pw[chunk, c] (db likewise when db is given), written or added to
// what dw holds (put_sum). O: T, or f32 under bf16 x (a weight's f32 gradient buffer). Block x
// takes kColTile columns and its kFinalWarps warps a contiguous run of chunks each (lane = column,
// so a warp's load is 128 contiguous bytes), loads issued kBatch at a time before their adds; then
// thread row 0 adds the warps' sums in warp order. The order is fixed whatever the schedule (the
// same sums every run), chunk order within a run. One thread a column walking all 128 of GPT-2's
// chunks took 16.5 us on the H200 (3 blocks for C 768, each thread's loads in series: ncu, GPU
// session 1, call 4); here 24 blocks of 1024 threads, each warp's run 2 batches of loads for the
// one-pass backward's 512 chunks (the separate kernels' 128: one).
constexpr int kFinalWarps = 32;
template <typename O>
__global__ void __launch_bounds__(kColTile* kFinalWarps)
    norm_weight_grad_final_kernel(O* dw, O* db, const float* pw, const float* pb, int64_t chunks,
                                  int64_t C, bool acc_w, bool acc_b) {
  __shared__ float sw[kFinalWarps][kColTile], sb[kFinalWarps][kColTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = int64_t(blockIdx.x) * kColTile + tx;
  const int64_t run = (chunks + kFinalWarps - 1) / kFinalWarps;
  const int64_t k0 = ty * run, k1 = std::min(chunks, k0 + run);
  constexpr int kBatch = 8;
  float tw = 0.0f, tb = 0.0f;
  if (c < C) {
    for (int64_t k = k0; k < k1; k += kBatch) {
      float w[kBatch], b[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const bool in = k + u < k1;
        w[u] = in ? pw[(k + u) * C + c] : 0.0f;
        b[u] = in && db ? pb[(k + u) * C + c] : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        if (k + u >= k1) break;
        tw += w[u];
        if (db) tb += b[u];
      }
    }
  }
  sw[ty][tx] = tw, sb[ty][tx] = tb;
  __syncthreads();
  if (ty == 0 && c < C) {
    float w = 0.0f, b = 0.0f;
    for (int q = 0; q < kFinalWarps; ++q) w += sw[q][tx], b += sb[q][tx];
    core::put_sum(dw, c, w, acc_w);
    if (db) core::put_sum(db, c, b, acc_b);
  }
}

// The f32 partial sums of dw and db for N rows in chunks of `chunk`: a row of C a chunk, db's
// after dw's (layernorm only; pb null otherwise).
struct Partials {
  int64_t chunk, chunks;
  Tensor buffer;
  float *pw, *pb;
  Partials(int64_t N, int64_t chunk_rows, int64_t C, bool with_db, const Tensor& x)
      : chunk(chunk_rows),
        chunks((N + chunk_rows - 1) / chunk_rows),
        buffer(Tensor::empty({(with_db ? 2 : 1) * chunks * C}, {DType::F32, x.device()})),
        pw(static_cast<float*>(buffer.data_ptr())),
        pb(with_db ? pw + chunks * C : nullptr) {}
};

// dw (and db when defined) from the chunks' partial sums, in dw's dtype.
template <typename T>
void final_sums(const Tensor& dw, const Tensor& db, const Partials& ps, int64_t C,
                NormAccumulate acc) {
  auto launch = [&](auto* out) {
    using O = std::remove_pointer_t<decltype(out)>;
    norm_weight_grad_final_kernel<O>
        <<<unsigned((C + kColTile - 1) / kColTile), dim3(kColTile, kFinalWarps)>>>(
            static_cast<O*>(dw.data_ptr()), ps.pb ? static_cast<O*>(db.data_ptr()) : nullptr, ps.pw,
            ps.pb, ps.chunks, C, acc.dw, acc.db);
    CUDA_CHECK_LAUNCH();
  };
  if (dw.dtype() == DType::F32)
    launch(static_cast<float*>(nullptr));
  else
    launch(static_cast<T*>(nullptr));
}

// dw (and db when defined) for N rows of C columns, in groups of W columns.
template <typename T, bool kLayerNorm, int W>
void weight_grads(const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                  StatPtr mean, StatPtr rstd, int64_t N, int64_t C, NormAccumulate acc) {
  const Partials ps(N, rows_per_chunk(N), C, kLayerNorm, x);
  const dim3 grid(unsigned((C + kColTile * W - 1) / (kColTile * W)), unsigned(ps.chunks));
  norm_weight_grad_partial_kernel<T, kLayerNorm, W><<<grid, dim3(kColTile, kRowThreads)>>>(
      ps.pw, ps.pb, static_cast<const T*>(dy.data_ptr()), static_cast<const T*>(x.data_ptr()), mean,
      rstd, N, C, ps.chunk);
  CUDA_CHECK_LAUNCH();
  final_sums<T>(dw, db, ps, C, acc);
}

// ---- backward: dx, dw, db in one pass ----------------------------------------------------------

// Where a row's C / W groups fit a warp at most kMaxLaneGroups a lane (GPT-2's 768 bf16 columns:
// 96 groups, 3 a lane) one kernel does all three: a block of kFusedWarps warps takes a chunk of
// fused_rows_per_chunk(N) rows, warp w its rows w, w + kFusedWarps, ...; a lane reads its groups
// of dy, x and w once per row, the row's two sums come from warp shuffles (no barrier a row), and
// it writes dx and adds dy xhat and dy into its dw / db partials; at the end the warps' partials
// are added in warp order into the chunk's row of pw / pb, which norm_weight_grad_final_kernel
// sums as before. The separate kernels read dy and x twice (the dx kernel, then the partial sums:
// 16.5 and 11.1 us a call on the H200, ncu, GPU session 1); this reads them once. Deterministic:
// the partition is a function of N, every sum's order fixed (a butterfly's partners add the same
// two values, so every lane holds the same bits).
constexpr int kFusedWarps = 4;
constexpr int kMaxLaneGroups = 4;
int64_t fused_rows_per_chunk(int64_t N) { return std::max<int64_t>(16, (N + 65534) / 65535); }

template <typename T, bool kLayerNorm, int W, int KG>
__global__ void __launch_bounds__(kFusedWarps * 32)
    norm_backward_fused_kernel(T* dx, float* pw, float* pb, const T* dy, const T* x, const T* w,
                               StatPtr mean, StatPtr rstd, int64_t N, int64_t C, int64_t chunk,
                               bool accumulate) {
  __shared__ float sw[kFusedWarps][32 * W], sb[kFusedWarps][32 * W];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t n0 = int64_t(blockIdx.x) * chunk, n1 = std::min(N, n0 + chunk);
  const int64_t groups = C / W;
  float aw[KG][W], ab[KG][W];
#pragma unroll
  for (int k = 0; k < KG; ++k)
#pragma unroll
    for (int e = 0; e < W; ++e) aw[k][e] = ab[k][e] = 0.0f;
  for (int64_t n = n0 + warp; n < n1; n += kFusedWarps) {
    const float m = kLayerNorm ? mean.load(n) : 0.0f, r = rstd.load(n);
    const T* gr = dy + n * C;
    const T* xr = x + n * C;
    float gv[KG][W], xv[KG][W], sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
    for (int k = 0; k < KG; ++k) {
      const int64_t c = (lane + 32 * int64_t(k)) * W;
      if (c >= C) continue;
      float wv[W];
      ld_n<W>(gr, c, gv[k]);
      ld_n<W>(xr, c, xv[k]);
      ld_n<W>(w, c, wv);
#pragma unroll
      for (int e = 0; e < W; ++e) {
        const float xhat = (xv[k][e] - m) * r, g = gv[k][e] * wv[e];
        sum_g += g;
        sum_gx += g * xhat;
        aw[k][e] += gv[k][e] * xhat;
        ab[k][e] += gv[k][e];
      }
    }
    const float mean_g = kLayerNorm ? core::warp_reduce(sum_g, core::SumOp{}) / float(C) : 0.0f;
    const float mean_gx = core::warp_reduce(sum_gx, core::SumOp{}) / float(C);
    T* dxr = dx + n * C;
#pragma unroll
    for (int k = 0; k < KG; ++k) {
      const int64_t c = (lane + 32 * int64_t(k)) * W;
      if (c >= C) continue;
      float wv[W], held[W];
      ld_n<W>(w, c, wv);
      if (accumulate) ld_n<W>(dxr, c, held);
#pragma unroll
      for (int e = 0; e < W; ++e) {
        // As norm_backward_dx_kernel: the products rounded alone, the accumulating add axpby's.
        const float xhat = (xv[k][e] - m) * r;
        const float d = r * (__fmul_rn(gv[k][e], wv[e]) - mean_g - __fmul_rn(xhat, mean_gx));
        gv[k][e] = accumulate ? __fadd_rn(held[e], core::rounded(dxr, d)) : d;
      }
      st_n<W>(dxr, c, gv[k]);
    }
  }
  // The warps' partials, added in warp order, one lane group of columns at a time.
#pragma unroll
  for (int k = 0; k < KG; ++k) {
#pragma unroll
    for (int e = 0; e < W; ++e)
      sw[warp][lane * W + e] = aw[k][e], sb[warp][lane * W + e] = ab[k][e];
    __syncthreads();
    if (warp == 0 && lane + 32 * int64_t(k) < groups) {
      const int64_t c = (lane + 32 * int64_t(k)) * W;
#pragma unroll
      for (int e = 0; e < W; ++e) {
        float tw = 0.0f, tb = 0.0f;
        for (int q = 0; q < kFusedWarps; ++q) tw += sw[q][lane * W + e], tb += sb[q][lane * W + e];
        pw[int64_t(blockIdx.x) * C + c + e] = tw;
        if (kLayerNorm) pb[int64_t(blockIdx.x) * C + c + e] = tb;
      }
    }
    __syncthreads();
  }
}

// dx, dw and db by norm_backward_fused_kernel when C / W groups fit a warp kMaxLaneGroups a lane;
// false (nothing launched) when they do not, or under TESSERA_NORM_FUSED=off (the separate
// kernels: the before of a before-and-after, scripts/bench_gpu.sh's BENCH_SWITCHES).
template <typename T, bool kLayerNorm, int W>
bool backward_fused(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                    const Tensor& x, const Tensor& w, StatPtr mean, StatPtr rstd, int64_t N,
                    int64_t C, NormAccumulate acc) {
  const int64_t lane_groups = (C / W + 31) / 32;
  if (C % W != 0 || lane_groups > kMaxLaneGroups || env_switch("TESSERA_NORM_FUSED", "on", "off"))
    return false;
  const Partials ps(N, fused_rows_per_chunk(N), C, kLayerNorm, x);  // chunks <= 65535
  auto launch = [&](auto kg) {
    constexpr int KG = decltype(kg)::value;
    norm_backward_fused_kernel<T, kLayerNorm, W, KG><<<unsigned(ps.chunks), kFusedWarps * 32>>>(
        static_cast<T*>(dx.data_ptr()), ps.pw, ps.pb, static_cast<const T*>(dy.data_ptr()),
        static_cast<const T*>(x.data_ptr()), static_cast<const T*>(w.data_ptr()), mean, rstd, N, C,
        ps.chunk, acc.dx);
    CUDA_CHECK_LAUNCH();
  };
  switch (lane_groups) {
    case 1:
      launch(core::Width<1>{});
      break;
    case 2:
      launch(core::Width<2>{});
      break;
    case 3:
      launch(core::Width<3>{});
      break;
    default:
      launch(core::Width<4>{});
      break;
  }
  final_sums<T>(dw, db, ps, C, acc);
  return true;
}

// Threads for a block that owns one row of C columns in groups of W: one group per thread, in
// whole warps, at most kThreads. GPT-2's rows (C = 768, bf16) take 96 threads, so an SM holds
// about 21 rows' blocks instead of 8 (each with 16 bytes in flight per thread).
unsigned row_threads(int64_t C, int W) {
  const int64_t groups = (C + W - 1) / W;
  return unsigned(std::min<int64_t>(kThreads, (groups + 31) / 32 * 32));
}

// ---- entries ----------------------------------------------------------------------------------

// The forward of either norm, its arguments checked: one block per row (b undefined for RMSNorm).
template <bool kLayerNorm>
void norm_forward(const char* kernel, const Tensor& y, StatPtr mean, StatPtr rstd, const Tensor& x,
                  const Tensor& w, const Tensor& b, double eps) {
  if (x.numel() == 0) return;
  const int64_t N = core::rows_of(x), C = core::cols_of(x);
  const void* bp = b.defined() ? b.data_ptr() : nullptr;
  DeviceGuard guard(x.device().index);
  dispatch(kernel, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const bool packed = rows_packed<T>(C, {y.data_ptr(), x.data_ptr(), w.data_ptr(), bp});
    core::with_width<T>(packed, [&](auto tag) {
      constexpr int W = decltype(tag)::value;
      norm_forward_kernel<T, kLayerNorm, W><<<core::row_grid(kernel, N), row_threads(C, W)>>>(
          static_cast<T*>(y.data_ptr()), mean, rstd, static_cast<const T*>(x.data_ptr()),
          static_cast<const T*>(w.data_ptr()), static_cast<const T*>(bp), C, float(eps));
      CUDA_CHECK_LAUNCH();
    });
  });
}

// The backward of either norm, its arguments checked: dx, dw (and db) in one kernel where a row
// fits a warp (backward_fused), else dx one block per row, then dw (and db).
template <bool kLayerNorm>
void norm_backward(const char* kernel, const Tensor& dx, const Tensor& dw, const Tensor& db,
                   const Tensor& dy, const Tensor& x, const Tensor& w, StatPtr mean, StatPtr rstd,
                   NormAccumulate acc) {
  if (x.numel() == 0) return;
  const int64_t N = core::rows_of(x), C = core::cols_of(x);
  DeviceGuard guard(x.device().index);
  dispatch(kernel, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const bool packed =
        rows_packed<T>(C, {dx.data_ptr(), dy.data_ptr(), x.data_ptr(), w.data_ptr()});
    core::with_width<T>(packed, [&](auto tag) {
      constexpr int W = decltype(tag)::value;
      if (backward_fused<T, kLayerNorm, W>(dx, dw, db, dy, x, w, mean, rstd, N, C, acc)) return;
      norm_backward_dx_kernel<T, kLayerNorm, W>
          <<<core::row_grid(kernel, N), row_threads(C, W)>>>(
              static_cast<T*>(dx.data_ptr()), static_cast<const T*>(dy.data_ptr()),
              static_cast<const T*>(x.data_ptr()), static_cast<const T*>(w.data_ptr()), mean,
              rstd, C, acc.dx);
      CUDA_CHECK_LAUNCH();
      weight_grads<T, kLayerNorm, W>(dw, db, dy, x, mean, rstd, N, C, acc);
    });
  });
}

void check_rows(const char* kernel, const Tensor& x, const Tensor& y, const Tensor& w) {
  const int64_t C = core::cols_of(x);
  TESSERA_CHECK(y.numel() == x.numel() && w.numel() == C, "cuda kernel ", kernel, ": x ",
                shape_str(x.shape()), ", out ", shape_str(y.shape()), ", weight ",
                shape_str(w.shape()), " (expected x (N, C), weight (C))");
}

void layernorm_forward(const Tensor& y, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                       const Tensor& w, const Tensor& b, double eps) {
  check_rows("layernorm_forward", x, y, w);
  check_rows("layernorm_forward", x, y, b);
  check_args("layernorm_forward", x.dtype(), {{"x", x}, {"y", y}, {"weight", w}, {"bias", b}});
  const int64_t N = core::rows_of(x);
  const StatPtr m = core::stat_arg("layernorm_forward", "mean", mean, x, N);
  const StatPtr r = core::stat_arg("layernorm_forward", "rstd", rstd, x, N);
  norm_forward<true>("layernorm_forward", y, m, r, x, w, b, eps);
}

// A norm's weight gradients (dw, then db): contiguous, on x's device, of x's dtype or all f32 under
// bf16 x (a bf16 weight's f32 gradient buffer).
void check_weight_grads(const char* kernel, const Tensor& x,
                        std::initializer_list<core::Arg> grads) {
  const Tensor& dw = grads.begin()->t;
  const bool widened = x.dtype() == DType::BF16 && dw.defined() && dw.dtype() == DType::F32;
  check_args(kernel, widened ? DType::F32 : x.dtype(), grads);
  TESSERA_CHECK(dw.device() == x.device(), "cuda kernel ", kernel, ": dweight ", dw.str(),
                " is not on x's device ", x.device().str());
}

void layernorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                        const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                        NormAccumulate acc) {
  check_rows("layernorm_backward", x, dy, w);
  check_rows("layernorm_backward", x, dx, dw);
  check_rows("layernorm_backward", x, dx, db);
  check_args("layernorm_backward", x.dtype(), {{"x", x}, {"dx", dx}, {"dy", dy}, {"weight", w}});
  check_weight_grads("layernorm_backward", x, {{"dweight", dw}, {"dbias", db}});
  const int64_t N = core::rows_of(x);
  const StatPtr m = core::stat_arg("layernorm_backward", "mean", mean, x, N);
  const StatPtr r = core::stat_arg("layernorm_backward", "rstd", rstd, x, N);
  norm_backward<true>("layernorm_backward", dx, dw, db, dy, x, w, m, r, acc);
}

void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w,
                     double eps) {
  check_rows("rmsnorm_forward", x, y, w);
  check_args("rmsnorm_forward", x.dtype(), {{"x", x}, {"y", y}, {"weight", w}});
  const StatPtr r = core::stat_arg("rmsnorm_forward", "rstd", rstd, x, core::rows_of(x));
  norm_forward<false>("rmsnorm_forward", y, StatPtr{}, r, x, w, Tensor(), eps);
}

void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                      const Tensor& w, const Tensor& rstd, NormAccumulate acc) {
  check_rows("rmsnorm_backward", x, dy, w);
  check_rows("rmsnorm_backward", x, dx, dw);
  check_args("rmsnorm_backward", x.dtype(), {{"x", x}, {"dx", dx}, {"dy", dy}, {"weight", w}});
  check_weight_grads("rmsnorm_backward", x, {{"dweight", dw}});
  const int64_t N = core::rows_of(x);
  const StatPtr r = core::stat_arg("rmsnorm_backward", "rstd", rstd, x, N);
  norm_backward<false>("rmsnorm_backward", dx, dw, Tensor(), dy, x, w, StatPtr{}, r, acc);
}

}  // namespace

void add_norm_kernels(Kernels& k) {
  k.layernorm_forward = layernorm_forward;
  k.layernorm_backward = layernorm_backward;
  k.rmsnorm_forward = rmsnorm_forward;
  k.rmsnorm_backward = rmsnorm_backward;
}

}  // namespace tessera::cuda
