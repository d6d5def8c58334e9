// CUDA softmax, log-softmax and cross-entropy over the last dimension: the twins of
// src/backend/cpu/softmax.cpp (formulas there).
//
// x, y, dx, dy (N, C); logits, dlogits (N, V); targets i32 (N);
// losses, dlosses, lse (N): f32 or the logits' dtype (core.cuh's StatPtr), all three one dtype
//
// One block per row, f32 throughout: lse in one pass over the row (row_lse, online), so no exp
// overflows; an all -inf row has lse = -inf as on the CPU. softmax is exp(x - lse) (one rounding
// per element), log-softmax x - lse. Rows are read and written 16 bytes at a time when their
// length and pointers allow (core.cuh). The cross-entropy backward needs no reduction (lse
// is saved), so it is elementwise over (N, V). The cross-entropy's forward and fused kernels hold
// a wide packed row in the registers of a 1024-thread block instead (cross_entropy_held_kernel).
//
// The op validates targets on the host (ops/softmax.cpp); a target outside [0, V) that is not
// ignore_index only gets a NaN loss here, never an out-of-bounds read.
#include <algorithm>
#include <cstdint>

#include "backend/kernels.h"
#include "common.cuh"
#include "core.cuh"
#include "core/env.h"

namespace tessera::cuda {
namespace {

using core::block_max;
using core::block_sum;
using core::check_args;
using core::dispatch;
using core::kThreads;
using core::ld;
using core::ld_n;
using core::rows_packed;
using core::st;
using core::st_n;
using core::StatPtr;

// log sum_c exp(x[c]) of one row in one pass over it, returned to every thread of the block. Each
// thread keeps a running max m and the sum s of exp(x - m) over its columns, rescaling s when m
// grows (the online softmax of Milakov & Gimelshein 2018); the block then takes M = max m and
// sums s exp(m - M). No exp overflows. An all -inf row has lse = -inf as on the CPU; a NaN or
// +inf logit gives NaN, as the CPU's exp(inf - inf) does.
template <int W, typename T>
__device__ float row_lse(const T* x, int64_t C, float* scratch) {
  float m = -INFINITY, s = 0.0f;
  core::row_groups<W>(C, [&](int64_t c, auto w) {
    constexpr int K = decltype(w)::value;
    float v[K];
    ld_n<K>(x, c, v);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (v[k] > m) {
        s = s * expf(m - v[k]) + 1.0f;
        m = v[k];
      } else if (v[k] != -INFINITY) {
        s += expf(v[k] - m);  // NaN stays NaN
      }
    }
  });
  const float M = block_max(m, scratch);
  // m = -inf gives exp(-inf) = 0 unless M is -inf too, whose row returns -inf below anyway.
  s = block_sum(s * expf(m - M), scratch);
  return (isinf(M) && M < 0.0f) ? M : M + logf(s);  // an all -inf row: -inf, not NaN
}

template <typename T, bool kLog, int W>
__global__ void __launch_bounds__(kThreads)
softmax_forward_kernel(T* y, const T* x, int64_t C) {
  __shared__ float scratch[32];
  const T* xr = x + int64_t(blockIdx.x) * C;
  T* yr = y + int64_t(blockIdx.x) * C;
  const float lse = row_lse<W>(xr, C, scratch);
  core::row_groups<W>(C, [&](int64_t c, auto w) {
    constexpr int K = decltype(w)::value;
    float v[K];
    ld_n<K>(xr, c, v);
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = kLog ? v[k] - lse : expf(v[k] - lse);
    st_n<K>(yr, c, v);
  });
}

// softmax: dx = y * (dy - sum_c dy[c] y[c]);  log-softmax: dx = dy - exp(y) * sum_c dy[c].
template <typename T, bool kLog, int W>
__global__ void __launch_bounds__(kThreads)
softmax_backward_kernel(T* dx, const T* dy, const T* y, int64_t C) {
  __shared__ float scratch[32];
  const int64_t r = int64_t(blockIdx.x) * C;
  float s = 0.0f;
  core::row_groups<W>(C, [&](int64_t c, auto w) {
    constexpr int K = decltype(w)::value;
    float g[K], v[K];
    ld_n<K>(dy, r + c, g);
    if (!kLog) ld_n<K>(y, r + c, v);
#pragma unroll
    for (int k = 0; k < K; ++k) s += kLog ? g[k] : g[k] * v[k];
  });
  s = block_sum(s, scratch);
  core::row_groups<W>(C, [&](int64_t c, auto w) {
    constexpr int K = decltype(w)::value;
    float g[K], v[K];
    ld_n<K>(dy, r + c, g);
    ld_n<K>(y, r + c, v);
#pragma unroll
    for (int k = 0; k < K; ++k) g[k] = kLog ? g[k] - expf(v[k]) * s : v[k] * (g[k] - s);
    st_n<K>(dx, r + c, g);
  });
}

// losses[n] = lse[n] - logits[n, t], 0 where t == ignore_index. One block per row; rows lie V
// apart and only their first `classes` columns are read (the rest is padding).
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
cross_entropy_forward_kernel(StatPtr losses, StatPtr lse, const T* logits, const int32_t* targets,
                             int64_t V, int64_t classes, int64_t ignore_index) {
  __shared__ float scratch[32];
  const int64_t n = blockIdx.x;
  const T* xr = logits + n * V;
  const float l = row_lse<W>(xr, classes, scratch);
  if (threadIdx.x != 0) return;
  const int64_t t = targets[n];
  lse.store(n, l);
  if (t == ignore_index) {
    losses.store(n, 0.0f);
  } else {
    losses.store(n, (t >= 0 && t < classes) ? l - ld(xr, t) : NAN);
  }
}

// Row n of dlogits: g (exp(x[v] - l) - [v == t]) for v < classes; 0 on the padding columns and
// on an ignored row. dr may be xr: a thread reads its group, then writes it.
template <int W, typename T>
__device__ void write_row_gradient(T* dr, const T* xr, float g, float l, int64_t t, bool ignored,
                                   int64_t V, int64_t classes) {
  core::row_groups<W>(V, [&](int64_t c, auto w) {
    constexpr int K = decltype(w)::value;
    float v[K];
    ld_n<K>(xr, c, v);  // padding columns too: they lie inside the row
#pragma unroll
    for (int k = 0; k < K; ++k) {
      float d = 0.0f;
      if (!ignored && c + k < classes) {
        const float e = expf(v[k] - l);
        d = c + k == t ? g * (e - 1.0f) : g * e;
      }
      v[k] = d;
    }
    st_n<K>(dr, c, v);
  });
}

// dlogits[n, v] = dlosses[n] * (exp(logits[n, v] - lse[n]) - [v == t]) for v < classes; 0 on the
// padding columns and on ignored rows. One block per row (no per-element division by V).
// dlogits may be logits (the op's in-place backward).
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_backward_kernel(T* dlogits, StatPtr dlosses, const T* logits, StatPtr lse,
                                  const int32_t* targets, int64_t V, int64_t classes,
                                  int64_t ignore_index) {
  const int64_t n = blockIdx.x, t = targets[n];
  const bool ignored = t == ignore_index;
  write_row_gradient<W>(dlogits + n * V, logits + n * V, ignored ? 0.0f : dlosses.load(n),
                        ignored ? 0.0f : lse.load(n), t, ignored, V, classes);
}

// The forward kernel, then the backward's row with dlosses known: one block reads its row twice
// (the lse's pass, then the gradient's), the second time most likely from L2, and writes it
// once, where the two kernels read it twice from memory. The gradient uses the lse as stored
// (lse.load), so the values are the two kernels' bit for bit. dlogits may be logits: thread 0
// reads the target's logit before the barrier, every write comes after it.
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_fused_kernel(StatPtr losses, StatPtr lse, T* dlogits, StatPtr dlosses,
                               const T* logits, const int32_t* targets, int64_t V, int64_t classes,
                               int64_t ignore_index) {
  __shared__ float scratch[32];
  const int64_t n = blockIdx.x, t = targets[n];
  const T* xr = logits + n * V;
  const bool ignored = t == ignore_index;
  const float l = row_lse<W>(xr, classes, scratch);
  if (threadIdx.x == 0) {
    lse.store(n, l);
    losses.store(n, ignored ? 0.0f : (t >= 0 && t < classes) ? l - ld(xr, t) : NAN);
  }
  __syncthreads();  // the stores above are visible to the block, the target's logit read
  write_row_gradient<W>(dlogits + n * V, xr, ignored ? 0.0f : dlosses.load(n),
                        ignored ? 0.0f : lse.load(n), t, ignored, V, classes);
}

// ---- a row held in registers ------------------------------------------------------------------
// The fused kernel above reads its row twice; at GPT-2's vocabulary (100 KB a bf16 row) eight
// blocks an SM have 1000 rows in flight, more than L2 holds, so the second read comes from HBM as
// well (0.90 ms for 8192 rows on the H200: three row-sized passes at 2.8 TB/s). Here a row is
// read once: 1024 threads, each holding up to kHeldGroups 16-byte groups (thread t the groups t,
// t + 1024, ...: every load issued before any is used), lse by two passes over the registers (the
// max, then the sum of exp(x - max)), then the loss, and with kGrad the gradient written from the
// registers. For packed rows of more groups than threads, up to kHeldGroups x 1024 groups (65536
// bf16 columns, 32768 f32); cross_entropy_forward takes the same kernel for the same rows, so the
// fused kernel's lse and losses are its bits, and its gradient the backward kernel's (which loads
// the stored lse as this kernel does).
constexpr int kHeldThreads = 1024;
constexpr int kHeldGroups = 8;

// TESSERA_CE_STREAMED=on puts the streaming kernels back for every row (the before of a
// before-and-after: scripts/bench_gpu.sh's BENCH_SWITCHES).
template <typename T>
bool held_row(int64_t V, bool packed) {
  const int64_t groups = V / core::kPack<T>;
  return packed && groups > kHeldThreads && groups <= int64_t(kHeldGroups) * kHeldThreads &&
         !env_switch("TESSERA_CE_STREAMED", "off", "on");
}

template <typename T, bool kGrad>
__global__ void __launch_bounds__(kHeldThreads, 1)
    cross_entropy_held_kernel(StatPtr losses, StatPtr lse, T* dlogits, StatPtr dlosses,
                              const T* logits, const int32_t* targets, int64_t V, int64_t classes,
                              int64_t ignore_index) {
  constexpr int W = core::kPack<T>, kStride = kHeldThreads * W;
  __shared__ float scratch[32];
  const int64_t n = blockIdx.x, t64 = targets[n];
  const T* xr = logits + n * V;
  const bool ignored = t64 == ignore_index;
  // Rows of at most 65536 columns: 32-bit columns, relative to this thread's first.
  const int base = int(threadIdx.x) * W, width = int(V) - base, valid = int(classes) - base;
  const int t = ignored || t64 < 0 || t64 >= classes ? -1 : int(t64) - base;
  T raw[kHeldGroups][W];
#pragma unroll
  for (int g = 0; g < kHeldGroups; ++g)
    if (g * kStride < width) core::ld_raw<W>(xr, base + g * kStride, raw[g]);
  float m = -INFINITY;
#pragma unroll
  for (int g = 0; g < kHeldGroups; ++g)
#pragma unroll
    for (int k = 0; k < W; ++k)
      if (g * kStride + k < valid) m = fmaxf(m, ld(raw[g], k));  // NaN: caught by the sum
  const float M = core::block_max(m, scratch);
  const bool all_neg_inf = isinf(M) && M < 0.0f;
  float s = 0.0f;
  if (!all_neg_inf) {
#pragma unroll
    for (int g = 0; g < kHeldGroups; ++g)
#pragma unroll
      for (int k = 0; k < W; ++k)
        if (g * kStride + k < valid) s += expf(ld(raw[g], k) - M);
  }
  s = core::block_sum(s, scratch);
  const float l = all_neg_inf ? M : M + logf(s);  // an all -inf row: -inf, not NaN
  if (threadIdx.x == 0) {
    lse.store(n, l);
    if (ignored || t64 < 0 || t64 >= classes) losses.store(n, ignored ? 0.0f : NAN);
  }
#pragma unroll
  for (int g = 0; g < kHeldGroups; ++g)  // the target's holder: its logit is in registers
#pragma unroll
    for (int k = 0; k < W; ++k)
      if (g * kStride + k == t) losses.store(n, l - ld(raw[g], k));
  if constexpr (kGrad) {
    __syncthreads();  // the stored lse is visible: the gradient uses it as the backward kernel does
    const float gn = ignored ? 0.0f : dlosses.load(n), ln = ignored ? 0.0f : lse.load(n);
    T* dr = dlogits + n * V;
#pragma unroll
    for (int g = 0; g < kHeldGroups; ++g) {
      if (g * kStride >= width) continue;
      float d[W];
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const int c = g * kStride + k;
        d[k] = 0.0f;
        if (!ignored && c < valid) {
          const float e = expf(ld(raw[g], k) - ln);
          d[k] = c == t ? gn * (e - 1.0f) : gn * e;
        }
      }
      core::st_n<W>(dr, base + g * kStride, d);
    }
  }
}

// x *= dy / expected unless dy == expected, compared in dy's dtype (expected rounded to it).
// Every thread reads dy; when it equals expected, the kernel writes nothing. Grid-stride over at
// most 1024 blocks (enough to fill a GPU), so the equal case costs a launch and no pass over x.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_rescale_kernel(T* x, StatPtr dy, float expected, int64_t n) {
  const float d = dy.load(0);
  const float e = dy.bf16 ? core::bf16_to_f32(core::f32_to_bf16(expected)) : expected;
  if (d == e) return;
  const float r = d / e;
  for (int64_t i = core::global_index(); i < n; i += core::grid_stride()) st(x, i, ld(x, i) * r);
}

// ---- entries ----------------------------------------------------------------------------------

template <bool kLog>
void softmax_forward_rows(const char* kernel, const Tensor& y, const Tensor& x) {
  TESSERA_CHECK(y.shape() == x.shape(), "cuda kernel ", kernel, ": ", y.str(),
                " does not match ", x.str());
  check_args(kernel, x.dtype(), {{"x", x}, {"y", y}});
  if (x.numel() == 0) return;
  const int64_t N = core::rows_of(x), C = core::cols_of(x);
  DeviceGuard guard(x.device().index);
  dispatch(kernel, x.dtype(), [&](auto z) {
    using T = decltype(z);
    core::with_width<T>(rows_packed<T>(C, {y.data_ptr(), x.data_ptr()}), [&](auto w) {
      softmax_forward_kernel<T, kLog, decltype(w)::value>
          <<<core::row_grid(kernel, N), kThreads>>>(static_cast<T*>(y.data_ptr()),
                                                    static_cast<const T*>(x.data_ptr()), C);
      CUDA_CHECK_LAUNCH();
    });
  });
}

template <bool kLog>
void softmax_backward_rows(const char* kernel, const Tensor& dx, const Tensor& dy,
                           const Tensor& y) {
  TESSERA_CHECK(dx.shape() == y.shape() && dy.shape() == y.shape(), "cuda kernel ", kernel,
                ": dx ", dx.str(), ", dy ", dy.str(), " and y ", y.str(), " differ");
  check_args(kernel, y.dtype(), {{"y", y}, {"dx", dx}, {"dy", dy}});
  if (y.numel() == 0) return;
  const int64_t N = core::rows_of(y), C = core::cols_of(y);
  DeviceGuard guard(y.device().index);
  dispatch(kernel, y.dtype(), [&](auto z) {
    using T = decltype(z);
    const bool packed = rows_packed<T>(C, {dx.data_ptr(), dy.data_ptr(), y.data_ptr()});
    core::with_width<T>(packed, [&](auto w) {
      softmax_backward_kernel<T, kLog, decltype(w)::value>
          <<<core::row_grid(kernel, N), kThreads>>>(static_cast<T*>(dx.data_ptr()),
                                                    static_cast<const T*>(dy.data_ptr()),
                                                    static_cast<const T*>(y.data_ptr()), C);
      CUDA_CHECK_LAUNCH();
    });
  });
}

void softmax_forward(const Tensor& y, const Tensor& x) {
  softmax_forward_rows<false>("softmax_forward", y, x);
}
void log_softmax_forward(const Tensor& y, const Tensor& x) {
  softmax_forward_rows<true>("log_softmax_forward", y, x);
}
void softmax_backward(const Tensor& dx, const Tensor& dy, const Tensor& y) {
  softmax_backward_rows<false>("softmax_backward", dx, dy, y);
}
void log_softmax_backward(const Tensor& dx, const Tensor& dy, const Tensor& y) {
  softmax_backward_rows<true>("log_softmax_backward", dx, dy, y);
}

// Shapes and dtypes shared by the two cross-entropy kernels; the per-row tensors (lse, losses or
// dlosses) must share one dtype, as on the CPU.
void check_cross_entropy(const char* kernel, const Tensor& logits, const Tensor& targets,
                         const Tensor& lse, const Tensor& per_row, int64_t classes) {
  TESSERA_CHECK(logits.dim() == 2, "cuda kernel ", kernel, ": logits must be (N, V), got ",
                logits.str());
  const int64_t N = logits.size(0);
  TESSERA_CHECK(classes >= 1 && classes <= logits.size(1), "cuda kernel ", kernel, ": classes ",
                classes, " must be in [1, ", logits.size(1), "] for logits ", logits.str());
  TESSERA_CHECK(targets.dtype() == DType::I32 && targets.numel() == N &&
                    targets.is_contiguous() && targets.device() == logits.device(),
                "cuda kernel ", kernel, ": targets ", targets.str(),
                " must be contiguous i32 with one entry per row of ", logits.str());
  TESSERA_CHECK(lse.dtype() == per_row.dtype(), "cuda kernel ", kernel, ": lse ", lse.str(),
                " and ", per_row.str(), " differ in dtype");
}

void cross_entropy_forward(const Tensor& losses, const Tensor& lse, const Tensor& logits,
                           const Tensor& targets, int64_t ignore_index, int64_t classes) {
  const char* kernel = "cross_entropy_forward";
  check_cross_entropy(kernel, logits, targets, lse, losses, classes);
  check_args(kernel, logits.dtype(), {{"logits", logits}});
  const int64_t N = logits.size(0), V = logits.size(1);
  const StatPtr ls = core::stat_arg(kernel, "losses", losses, logits, N);
  const StatPtr lp = core::stat_arg(kernel, "lse", lse, logits, N);
  if (N == 0) return;
  DeviceGuard guard(logits.device().index);
  dispatch(kernel, logits.dtype(), [&](auto z) {
    using T = decltype(z);
    const bool packed = rows_packed<T>(V, {logits.data_ptr()});
    if (held_row<T>(V, packed)) {
      cross_entropy_held_kernel<T, false><<<core::row_grid(kernel, N), kHeldThreads>>>(
          ls, lp, nullptr, StatPtr{}, static_cast<const T*>(logits.data_ptr()),
          static_cast<const int32_t*>(targets.data_ptr()), V, classes, ignore_index);
      CUDA_CHECK_LAUNCH();
      return;
    }
    core::with_width<T>(packed, [&](auto w) {
      cross_entropy_forward_kernel<T, decltype(w)::value>
          <<<core::row_grid(kernel, N), kThreads>>>(
              ls, lp, static_cast<const T*>(logits.data_ptr()),
              static_cast<const int32_t*>(targets.data_ptr()), V, classes, ignore_index);
      CUDA_CHECK_LAUNCH();
    });
  });
}

void cross_entropy_backward(const Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& lse, const Tensor& targets, int64_t ignore_index,
                            int64_t classes) {
  const char* kernel = "cross_entropy_backward";
  check_cross_entropy(kernel, logits, targets, lse, dlosses, classes);
  TESSERA_CHECK(dlogits.shape() == logits.shape(), "cuda kernel ", kernel, ": dlogits ",
                dlogits.str(), " does not match logits ", logits.str());
  check_args(kernel, logits.dtype(), {{"logits", logits}, {"dlogits", dlogits}});
  const int64_t N = logits.size(0), V = logits.size(1);
  const StatPtr g = core::stat_arg(kernel, "dlosses", dlosses, logits, N);
  const StatPtr lp = core::stat_arg(kernel, "lse", lse, logits, N);
  if (N * V == 0) return;
  DeviceGuard guard(logits.device().index);
  dispatch(kernel, logits.dtype(), [&](auto z) {
    using T = decltype(z);
    const bool packed = rows_packed<T>(V, {dlogits.data_ptr(), logits.data_ptr()});
    core::with_width<T>(packed, [&](auto w) {
      cross_entropy_backward_kernel<T, decltype(w)::value>
          <<<core::row_grid(kernel, N), kThreads>>>(
              static_cast<T*>(dlogits.data_ptr()), g, static_cast<const T*>(logits.data_ptr()),
              lp, static_cast<const int32_t*>(targets.data_ptr()), V, classes, ignore_index);
      CUDA_CHECK_LAUNCH();
    });
  });
}

void cross_entropy_fused(const Tensor& losses, const Tensor& lse, const Tensor& dlogits,
                         const Tensor& dlosses, const Tensor& logits, const Tensor& targets,
                         int64_t ignore_index, int64_t classes) {
  const char* kernel = "cross_entropy_fused";
  check_cross_entropy(kernel, logits, targets, lse, losses, classes);
  check_cross_entropy(kernel, logits, targets, lse, dlosses, classes);
  TESSERA_CHECK(dlogits.shape() == logits.shape(), "cuda kernel ", kernel, ": dlogits ",
                dlogits.str(), " does not match logits ", logits.str());
  check_args(kernel, logits.dtype(), {{"logits", logits}, {"dlogits", dlogits}});
  const int64_t N = logits.size(0), V = logits.size(1);
  const StatPtr ls = core::stat_arg(kernel, "losses", losses, logits, N);
  const StatPtr lp = core::stat_arg(kernel, "lse", lse, logits, N);
  const StatPtr g = core::stat_arg(kernel, "dlosses", dlosses, logits, N);
  if (N == 0) return;
  DeviceGuard guard(logits.device().index);
  dispatch(kernel, logits.dtype(), [&](auto z) {
    using T = decltype(z);
    const bool packed = rows_packed<T>(V, {dlogits.data_ptr(), logits.data_ptr()});
    if (held_row<T>(V, packed)) {
      cross_entropy_held_kernel<T, true><<<core::row_grid(kernel, N), kHeldThreads>>>(
          ls, lp, static_cast<T*>(dlogits.data_ptr()), g, static_cast<const T*>(logits.data_ptr()),
          static_cast<const int32_t*>(targets.data_ptr()), V, classes, ignore_index);
      CUDA_CHECK_LAUNCH();
      return;
    }
    core::with_width<T>(packed, [&](auto w) {
      cross_entropy_fused_kernel<T, decltype(w)::value><<<core::row_grid(kernel, N), kThreads>>>(
          ls, lp, static_cast<T*>(dlogits.data_ptr()), g, static_cast<const T*>(logits.data_ptr()),
          static_cast<const int32_t*>(targets.data_ptr()), V, classes, ignore_index);
      CUDA_CHECK_LAUNCH();
    });
  });
}

void cross_entropy_rescale(const Tensor& dlogits, const Tensor& dy, double expected) {
  const char* kernel = "cross_entropy_rescale";
  TESSERA_CHECK(dlogits.is_contiguous(), "cuda kernel ", kernel,
                ": dlogits must be contiguous, got ", dlogits.str());
  check_args(kernel, dlogits.dtype(), {{"dlogits", dlogits}});
  const StatPtr d = core::stat_arg(kernel, "dy", dy, dlogits, 1);
  const int64_t n = dlogits.numel();
  if (n == 0) return;
  DeviceGuard guard(dlogits.device().index);
  dispatch(kernel, dlogits.dtype(), [&](auto z) {
    using T = decltype(z);
    cross_entropy_rescale_kernel<T><<<std::min(core::grid_for(n), 1024u), kThreads>>>(
        static_cast<T*>(dlogits.data_ptr()), d, float(expected), n);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void add_softmax_kernels(Kernels& k) {
  k.softmax_forward = softmax_forward;
  k.softmax_backward = softmax_backward;
  k.log_softmax_forward = log_softmax_forward;
  k.log_softmax_backward = log_softmax_backward;
  k.cross_entropy_forward = cross_entropy_forward;
  k.cross_entropy_backward = cross_entropy_backward;
  k.cross_entropy_fused = cross_entropy_fused;
  k.cross_entropy_rescale = cross_entropy_rescale;
}

}  // namespace tessera::cuda
