// CUDA elementwise kernels, the two reshaping reductions, activations and dropout: the twins of
// src/backend/cpu/elementwise.cpp and src/backend/cpu/activation.cpp (formulas there).
//
// binary: out, a (N, C); b (N, C) or one row (C) broadcast over a's rows
// axpby, activations, dropout: every tensor the same numel
// sum_dim: x (outer, n, inner) -> out (outer, inner);  expand_dim: the reverse, a repeat
//
// binary and axpby round exactly where the CPU does (explicit __fmul_rn / __fadd_rn: nvcc would
// otherwise fuse a * x + b * y into one fma), so their f32 results are the CPU's bit for bit, and a
// bf16 result is the CPU's f32 result rounded once. Activations use CUDA's tanhf / expf (within
// 2 ulp), so they agree with the CPU to a few ulps. dropout draws the CPU's Philox mask.
//
// Every kernel here moves 16 bytes per access where the pointers' alignment (and a broadcast
// row's length, sum_dim's inner size) allow: core.cuh's grouped loops. The elementwise results do
// not change; sum_dim's order of f32 additions follows its block shape, as before.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "backend/kernels.h"
#include "common.cuh"
#include "core.cuh"
#include "core/rng.h"

namespace tessera::cuda {
namespace {

using core::Arg;
using core::check_args;
using core::dispatch;
using core::global_index;
using core::grid_for;
using core::grid_stride;
using core::kThreads;
using core::ld;
using core::ld_n;
using core::st;
using core::st_n;

// ---- binary, axpby ----------------------------------------------------------------------------

// Groups of W elements (core.cuh's 16-byte accesses). row > 0: b is one row of `row` elements
// repeated over a's rows, row a multiple of W, so a group never straddles two rows (one 64-bit
// modulo per group finds its column). A row-broadcast n is a multiple of row, so only row == 0
// leaves a tail.
template <int W, typename T>
__global__ void binary_kernel(BinaryOp op, T* out, const T* a, const T* b, int64_t n, int64_t row) {
  const int64_t full = n - n % W;
  for (int64_t i = global_index() * W; i < full; i += grid_stride() * W) {
    float x[W], y[W];
    ld_n<W>(a, i, x);
    ld_n<W>(b, row ? i % row : i, y);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      switch (op) {
        case BinaryOp::Add: x[k] = x[k] + y[k]; break;
        case BinaryOp::Sub: x[k] = x[k] - y[k]; break;
        default: x[k] = x[k] * y[k]; break;
      }
    }
    st_n<W>(out, i, x);
  }
  if constexpr (W > 1) {
    const int64_t t = full + global_index();
    if (row == 0 && t < n) {
      const float x = ld(a, t), y = ld(b, t);
      st(out, t, op == BinaryOp::Add ? x + y : op == BinaryOp::Sub ? x - y : x * y);
    }
  }
}

// out = alpha x + beta y, y optional (null: out = alpha x).
template <typename T>
struct Axpby {
  T* out;
  float alpha;
  const T* x;
  float beta;
  const T* y;
  template <int W>
  __device__ void run(int64_t i) const {
    float r[W], v[W];
    ld_n<W>(x, i, r);
#pragma unroll
    for (int k = 0; k < W; ++k) r[k] = __fmul_rn(alpha, r[k]);
    if (y) {
      ld_n<W>(y, i, v);
#pragma unroll
      for (int k = 0; k < W; ++k) r[k] = __fadd_rn(r[k], __fmul_rn(beta, v[k]));
    }
    st_n<W>(out, i, r);
  }
};

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t n = a.numel(), nb = b.numel(), C = core::cols_of(a);
  TESSERA_CHECK(out.numel() == n && (nb == n || nb == C), "cuda kernel binary: out ",
                shape_str(out.shape()), ", a ", shape_str(a.shape()), ", b ",
                shape_str(b.shape()), " (b must have a's numel or be one row of a)");
  check_args("binary", out.dtype(), {{"out", out}, {"a", a}, {"b", b}});
  if (n == 0) return;
  DeviceGuard guard(out.device().index);
  const int64_t row = nb != n ? C : 0;
  dispatch("binary", out.dtype(), [&](auto z) {
    using T = decltype(z);
    const bool packed = core::aligned16({out.data_ptr(), a.data_ptr(), b.data_ptr()}) &&
                        row % core::kPack<T> == 0;
    core::with_width<T>(packed, [&](auto w) {
      constexpr int W = decltype(w)::value;
      binary_kernel<W, T><<<grid_for((n + W - 1) / W), kThreads>>>(
          op, static_cast<T*>(out.data_ptr()), static_cast<const T*>(a.data_ptr()),
          static_cast<const T*>(b.data_ptr()), n, row);
      CUDA_CHECK_LAUNCH();
    });
  });
}

void axpby(const Tensor& out, double alpha, const Tensor& x, double beta, const Tensor& y) {
  const int64_t n = out.numel();
  TESSERA_CHECK(x.numel() == n && (!y.defined() || y.numel() == n), "cuda kernel axpby: out ",
                shape_str(out.shape()), ", x ", shape_str(x.shape()), ", y ",
                y.defined() ? shape_str(y.shape()) : "none");
  if (y.defined()) {
    check_args("axpby", out.dtype(), {{"out", out}, {"x", x}, {"y", y}});
  } else {
    check_args("axpby", out.dtype(), {{"out", out}, {"x", x}});
  }
  if (n == 0) return;
  DeviceGuard guard(out.device().index);
  const void* yp = y.defined() ? y.data_ptr() : nullptr;
  dispatch("axpby", out.dtype(), [&](auto z) {
    using T = decltype(z);
    core::launch_packed<T>(n, core::aligned16({out.data_ptr(), x.data_ptr(), yp}),
                           Axpby<T>{static_cast<T*>(out.data_ptr()), float(alpha),
                                    static_cast<const T*>(x.data_ptr()), float(beta),
                                    static_cast<const T*>(yp)});
  });
}

// ---- sum_dim, expand_dim ----------------------------------------------------------------------

// A block of (bx, by) threads, bx * by = kThreads, owns bx consecutive groups of W inner columns
// of one outer index and the rows [y chunk, (y + 1) chunk) of split y = blockIdx.y: thread (tx, ty)
// sums rows k = ty, ty + by, ... of its W columns (16-byte loads when W is kPack<T>: inner is then
// a multiple of W), then row ty == 0 adds the by partial sums in order. bx is the power of two
// covering inner / W, at most 32, so a row sum (inner == 1) still puts all kThreads threads on the
// one column. With one split the sum goes to out; with several, to partial (splits, outer, inner)
// f32, and sum_splits_kernel adds the splits in order: a bias gradient (1, B T, C) then runs on
// hundreds of blocks instead of C / 32.

template <int W, typename T, typename O>
__global__ void sum_dim_kernel(O* out, float* partial, const T* x, int64_t outer, int64_t n,
                               int64_t inner, int64_t inner_tiles, int64_t chunk,
                               bool accumulate) {
  __shared__ float part[kThreads * W];
  const int bx = blockDim.x, by = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
  const int64_t o = blockIdx.x / inner_tiles, i = ((blockIdx.x % inner_tiles) * bx + tx) * W;
  const int64_t k0 = int64_t(blockIdx.y) * chunk, k1 = k0 + chunk < n ? k0 + chunk : n;
  float acc[W];
#pragma unroll
  for (int q = 0; q < W; ++q) acc[q] = 0.0f;
  if (i < inner) {
    // Unrolled for four rows' loads in flight per thread (the adds keep their order).
#pragma unroll 4
    for (int64_t k = k0 + ty; k < k1; k += by) {
      float v[W];
      ld_n<W>(x, (o * n + k) * inner + i, v);
#pragma unroll
      for (int q = 0; q < W; ++q) acc[q] += v[q];
    }
  }
#pragma unroll
  for (int q = 0; q < W; ++q) part[(ty * bx + tx) * W + q] = acc[q];
  __syncthreads();
  if (ty == 0 && i < inner) {
    for (int q = 0; q < W; ++q) {
      float s = 0.0f;
      for (int r = 0; r < by; ++r) s += part[(r * bx + tx) * W + q];
      if (partial)
        partial[(int64_t(blockIdx.y) * outer + o) * inner + i + q] = s;
      else
        core::put_sum(out, o * inner + i + q, s, accumulate);
    }
  }
}

// out[j] = sum over the splits p of partial[p, j], in order of p (or out[j] += it).
template <typename O>
__global__ void sum_splits_kernel(O* out, const float* partial, int64_t splits, int64_t m,
                                  bool accumulate) {
  for (int64_t j = global_index(); j < m; j += grid_stride()) {
    float s = 0.0f;
    for (int64_t p = 0; p < splits; ++p) s += partial[p * m + j];
    core::put_sum(out, j, s, accumulate);
  }
}

template <typename T>
__global__ void expand_dim_kernel(T* out, const T* x, int64_t total, int64_t n, int64_t inner) {
  for (int64_t j = global_index(); j < total; j += grid_stride())
    out[j] = x[(j / (n * inner)) * inner + j % inner];  // a copy of the bits: exact for bf16 too
}

void sum_dim(const Tensor& out, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
             bool accumulate) {
  TESSERA_CHECK(x.numel() == outer * n * inner && out.numel() == outer * inner,
                "cuda kernel sum_dim: x ", shape_str(x.shape()), " out ", shape_str(out.shape()),
                " as (", outer, ", ", n, ", ", inner, ")");
  // out f32 under bf16 x: a bf16 parameter's gradient summed into its f32 buffer, unrounded.
  const bool widen = out.dtype() == DType::F32 && x.dtype() == DType::BF16;
  check_args("sum_dim", x.dtype(), {{"x", x}});
  check_args("sum_dim", widen ? DType::F32 : x.dtype(), {{"out", out}});
  TESSERA_CHECK(out.device() == x.device(), "cuda kernel sum_dim: out ", out.str(), " and x ",
                x.str(), " are on different devices");
  if (out.numel() == 0) return;
  DeviceGuard guard(out.device().index);
  dispatch("sum_dim", x.dtype(), [&](auto z) {
    using T = decltype(z);
    auto run = [&](auto* o) {
      using O = std::remove_pointer_t<decltype(o)>;
      core::with_width<T>(inner % core::kPack<T> == 0 && core::aligned16({x.data_ptr()}),
                          [&](auto tag) {
        constexpr int W = decltype(tag)::value;
        const int64_t groups = inner / W;
        int bx = 1;
        while (bx < 32 && bx < groups) bx *= 2;
        const int64_t inner_tiles = (groups + bx - 1) / bx;
        TESSERA_CHECK(outer * inner_tiles <= int64_t(0x7fffffff), "cuda kernel sum_dim: (", outer,
                      ", ", n, ", ", inner, ") exceeds the grid limit");
        // Enough splits of n for ~512 blocks, each split at least 16 rows per thread.
        const int by = kThreads / bx;
        const int64_t tiles = outer * inner_tiles, min_rows = 16 * int64_t(by);
        int64_t splits = 1;
        if (tiles < 512)
          splits = std::min((512 + tiles - 1) / tiles, (n + min_rows - 1) / min_rows);
        splits = std::max<int64_t>(splits, 1);
        const int64_t chunk = (n + splits - 1) / splits;
        splits = n > 0 ? (n + chunk - 1) / chunk : 1;
        Tensor partial;
        if (splits > 1)
          partial = Tensor::empty({splits * outer * inner}, {DType::F32, out.device()});
        float* pp = splits > 1 ? static_cast<float*>(partial.data_ptr()) : nullptr;
        sum_dim_kernel<W, T, O><<<dim3(unsigned(tiles), unsigned(splits)), dim3(bx, by)>>>(
            o, pp, static_cast<const T*>(x.data_ptr()), outer, n, inner, inner_tiles,
            n > 0 ? chunk : 1, accumulate);
        CUDA_CHECK_LAUNCH();
        if (pp) {
          sum_splits_kernel<O><<<grid_for(outer * inner), kThreads>>>(o, pp, splits,
                                                                      outer * inner, accumulate);
          CUDA_CHECK_LAUNCH();
        }
      });
    };
    if (widen) {
      run(static_cast<float*>(out.data_ptr()));
    } else {
      run(static_cast<T*>(out.data_ptr()));
    }
  });
}

void expand_dim(const Tensor& out, const Tensor& x, int64_t outer, int64_t n, int64_t inner) {
  TESSERA_CHECK(out.numel() == outer * n * inner && x.numel() == outer * inner,
                "cuda kernel expand_dim: x ", shape_str(x.shape()), " out ",
                shape_str(out.shape()), " as (", outer, ", ", n, ", ", inner, ")");
  check_args("expand_dim", out.dtype(), {{"out", out}, {"x", x}});
  const int64_t total = out.numel();
  if (total == 0) return;
  DeviceGuard guard(out.device().index);
  dispatch("expand_dim", out.dtype(), [&](auto z) {
    using T = decltype(z);
    expand_dim_kernel<T><<<grid_for(total), kThreads>>>(
        static_cast<T*>(out.data_ptr()), static_cast<const T*>(x.data_ptr()), total, n, inner);
    CUDA_CHECK_LAUNCH();
  });
}

// ---- activations ------------------------------------------------------------------------------
// Each functor spells its formula exactly as the CPU loop does (same constants, same order of
// operations), in f32.

constexpr float kGeluK = float(0.7978845608028654);  // sqrt(2 / pi)
constexpr float kGeluA = float(0.044715);

// exp(-|x|) never overflows; each branch divides by a number in [1, 2].
__device__ __forceinline__ float sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  const float e = expf(x);
  return e / (1.0f + e);
}

struct GeluForward {
  __device__ float operator()(float v) const {
    return 0.5f * v * (1.0f + tanhf(kGeluK * (v + kGeluA * v * v * v)));
  }
};
struct GeluBackward {  // (dy, x) -> dx
  __device__ float operator()(float g, float v) const {
    const float t = tanhf(kGeluK * (v + kGeluA * v * v * v));
    const float d = 0.5f * (1.0f + t) +
                    0.5f * v * (1.0f - t * t) * kGeluK * (1.0f + 3.0f * kGeluA * v * v);
    return g * d;
  }
};
struct SiluForward {
  __device__ float operator()(float v) const { return v * sigmoid(v); }
};
struct SiluBackward {  // (dy, x) -> dx
  __device__ float operator()(float g, float v) const {
    const float s = sigmoid(v);
    return g * s * (1.0f + v * (1.0f - s));
  }
};
struct SwigluForward {  // (gate, up) -> y
  __device__ float operator()(float g, float u) const { return g * sigmoid(g) * u; }
};

// y = f(a), y = f(a, b): f applied to each element.
template <typename T, typename F>
struct Map1 {
  T* y;
  const T* a;
  F f;
  template <int W>
  __device__ void run(int64_t i) const {
    float v[W];
    ld_n<W>(a, i, v);
#pragma unroll
    for (int k = 0; k < W; ++k) v[k] = f(v[k]);
    st_n<W>(y, i, v);
  }
};

template <typename T, typename F>
struct Map2 {
  T* y;
  const T* a;
  const T* b;
  F f;
  template <int W>
  __device__ void run(int64_t i) const {
    float u[W], v[W];
    ld_n<W>(a, i, u);
    ld_n<W>(b, i, v);
#pragma unroll
    for (int k = 0; k < W; ++k) u[k] = f(u[k], v[k]);
    st_n<W>(y, i, u);
  }
};

template <typename T>
struct SwigluBackward {
  T* dgate;
  T* dup;
  const T* dy;
  const T* gate;
  const T* up;
  template <int W>
  __device__ void run(int64_t i) const {
    float g[W], u[W], d[W], dg[W], du[W];
    ld_n<W>(gate, i, g);
    ld_n<W>(up, i, u);
    ld_n<W>(dy, i, d);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float s = sigmoid(g[k]);
      dg[k] = d[k] * u[k] * s * (1.0f + g[k] * (1.0f - s));
      du[k] = d[k] * g[k] * s;
    }
    st_n<W>(dgate, i, dg);
    st_n<W>(dup, i, du);
  }
};

// Every tensor of x's numel; the first names the dtype and device.
void check_same(const char* kernel, std::initializer_list<core::Arg> args) {
  const Tensor& first = args.begin()->t;
  for (const core::Arg& a : args)
    TESSERA_CHECK(a.t.defined() && a.t.numel() == first.numel(), "cuda kernel ", kernel,
                  ": tensors differ in size: ", shape_str(first.shape()), " vs ",
                  a.t.defined() ? shape_str(a.t.shape()) : std::string("undefined"));
  check_args(kernel, first.dtype(), args);
}

template <typename F>
void map1(const char* kernel, const Tensor& y, const Tensor& x, F f) {
  check_same(kernel, {{"y", y}, {"x", x}});
  const int64_t n = x.numel();
  if (n == 0) return;
  DeviceGuard guard(x.device().index);
  dispatch(kernel, x.dtype(), [&](auto z) {
    using T = decltype(z);
    core::launch_packed<T>(n, core::aligned16({y.data_ptr(), x.data_ptr()}),
                           Map1<T, F>{static_cast<T*>(y.data_ptr()),
                                      static_cast<const T*>(x.data_ptr()), f});
  });
}

template <typename F>
void map2(const char* kernel, const Tensor& y, const char* a_name, const Tensor& a,
          const char* b_name, const Tensor& b, F f) {
  check_same(kernel, {{"out", y}, {a_name, a}, {b_name, b}});
  const int64_t n = y.numel();
  if (n == 0) return;
  DeviceGuard guard(y.device().index);
  dispatch(kernel, y.dtype(), [&](auto z) {
    using T = decltype(z);
    core::launch_packed<T>(n, core::aligned16({y.data_ptr(), a.data_ptr(), b.data_ptr()}),
                           Map2<T, F>{static_cast<T*>(y.data_ptr()),
                                      static_cast<const T*>(a.data_ptr()),
                                      static_cast<const T*>(b.data_ptr()), f});
  });
}

void gelu_forward(const Tensor& y, const Tensor& x) { map1("gelu_forward", y, x, GeluForward{}); }
void gelu_backward(const Tensor& dx, const Tensor& dy, const Tensor& x) {
  map2("gelu_backward", dx, "dy", dy, "x", x, GeluBackward{});
}
void silu_forward(const Tensor& y, const Tensor& x) { map1("silu_forward", y, x, SiluForward{}); }
void silu_backward(const Tensor& dx, const Tensor& dy, const Tensor& x) {
  map2("silu_backward", dx, "dy", dy, "x", x, SiluBackward{});
}
void swiglu_forward(const Tensor& y, const Tensor& gate, const Tensor& up) {
  map2("swiglu_forward", y, "gate", gate, "up", up, SwigluForward{});
}

void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dy, const Tensor& gate,
                     const Tensor& up) {
  check_same("swiglu_backward",
             {{"dgate", dgate}, {"dup", dup}, {"dy", dy}, {"gate", gate}, {"up", up}});
  const int64_t n = dy.numel();
  if (n == 0) return;
  DeviceGuard guard(dy.device().index);
  dispatch("swiglu_backward", dy.dtype(), [&](auto z) {
    using T = decltype(z);
    core::launch_packed<T>(
        n,
        core::aligned16({dgate.data_ptr(), dup.data_ptr(), dy.data_ptr(), gate.data_ptr(),
                         up.data_ptr()}),
        SwigluBackward<T>{static_cast<T*>(dgate.data_ptr()), static_cast<T*>(dup.data_ptr()),
                          static_cast<const T*>(dy.data_ptr()),
                          static_cast<const T*>(gate.data_ptr()),
                          static_cast<const T*>(up.data_ptr())});
  });
}

// ---- dropout ----------------------------------------------------------------------------------

// keep_i = (philox_uniform(offset + i, seed) >= p): core/rng.h's own function, so the mask is the
// CPU's bit for bit, and x * scale is the same single f32 product.
template <typename T>
struct Dropout {
  T* y;
  const T* x;
  double p;
  float scale;
  uint64_t seed, offset;
  template <int W>
  __device__ void run(int64_t i) const {
    float v[W];
    ld_n<W>(x, i, v);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const bool keep = double(philox_uniform(offset + uint64_t(i + k), seed)) >= p;
      v[k] = keep ? v[k] * scale : 0.0f;
    }
    st_n<W>(y, i, v);
  }
};

void dropout(const Tensor& y, const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  check_same("dropout", {{"y", y}, {"x", x}});
  TESSERA_CHECK(p >= 0.0 && p < 1.0, "cuda kernel dropout: p must be in [0, 1), got ", p);
  const int64_t n = x.numel();
  if (n == 0) return;
  DeviceGuard guard(x.device().index);
  const float scale = float(1.0 / (1.0 - p));
  dispatch("dropout", x.dtype(), [&](auto z) {
    using T = decltype(z);
    core::launch_packed<T>(n, core::aligned16({y.data_ptr(), x.data_ptr()}),
                           Dropout<T>{static_cast<T*>(y.data_ptr()),
                                      static_cast<const T*>(x.data_ptr()), p, scale, seed,
                                      offset});
  });
}

}  // namespace

void add_elementwise_kernels(Kernels& k) {
  k.binary = binary;
  k.axpby = axpby;
  k.sum_dim = sum_dim;
  k.expand_dim = expand_dim;
  k.gelu_forward = gelu_forward;
  k.gelu_backward = gelu_backward;
  k.silu_forward = silu_forward;
  k.silu_backward = silu_backward;
  k.swiglu_forward = swiglu_forward;
  k.swiglu_backward = swiglu_backward;
  k.dropout = dropout;
}

}  // namespace tessera::cuda
