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
#include <algorithm>
#include <cstdint>

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
using core::st;

// ---- binary, axpby ----------------------------------------------------------------------------

// row > 0: b is one row of `row` elements repeated over a's rows. Its column is carried from one
// grid-stride step to the next (one division per thread, not one 64-bit modulo per element).
template <typename T>
__global__ void binary_kernel(BinaryOp op, T* out, const T* a, const T* b, int64_t n, int64_t row) {
  const int64_t stride = grid_stride();
  int64_t i = global_index();
  int64_t col = row ? i % row : 0;
  const int64_t step = row ? stride % row : 0;
  for (; i < n; i += stride) {
    const float x = ld(a, i), y = ld(b, row ? col : i);
    float r;
    switch (op) {
      case BinaryOp::Add: r = x + y; break;
      case BinaryOp::Sub: r = x - y; break;
      default: r = x * y; break;
    }
    st(out, i, r);
    col += step;
    if (col >= row) col -= row;
  }
}

template <typename T>
__global__ void axpby_kernel(T* out, float alpha, const T* x, float beta, const T* y, int64_t n) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) {
    float r = __fmul_rn(alpha, ld(x, i));
    if (y) r = __fadd_rn(r, __fmul_rn(beta, ld(y, i)));
    st(out, i, r);
  }
}

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t n = a.numel(), nb = b.numel(), C = core::cols_of(a);
  TESSERA_CHECK(out.numel() == n && (nb == n || nb == C), "cuda kernel binary: out ",
                shape_str(out.shape()), ", a ", shape_str(a.shape()), ", b ",
                shape_str(b.shape()), " (b must have a's numel or be one row of a)");
  check_args("binary", out.dtype(), {{"out", out}, {"a", a}, {"b", b}});
  if (n == 0) return;
  DeviceGuard guard(out.device().index);
  dispatch("binary", out.dtype(), [&](auto z) {
    using T = decltype(z);
    binary_kernel<T><<<grid_for(n), kThreads>>>(op, static_cast<T*>(out.data_ptr()),
                                                static_cast<const T*>(a.data_ptr()),
                                                static_cast<const T*>(b.data_ptr()), n,
                                                nb != n ? C : 0);
    CUDA_CHECK_LAUNCH();
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
  dispatch("axpby", out.dtype(), [&](auto z) {
    using T = decltype(z);
    axpby_kernel<T><<<grid_for(n), kThreads>>>(
        static_cast<T*>(out.data_ptr()), float(alpha), static_cast<const T*>(x.data_ptr()),
        float(beta), y.defined() ? static_cast<const T*>(y.data_ptr()) : nullptr, n);
    CUDA_CHECK_LAUNCH();
  });
}

// ---- sum_dim, expand_dim ----------------------------------------------------------------------

// A block of (bx, by) threads, bx * by = kThreads, owns bx consecutive inner columns of one outer
// index and the rows [y chunk, (y + 1) chunk) of split y = blockIdx.y: thread (tx, ty) sums rows
// k = ty, ty + by, ... of its column, then row ty == 0 adds the by partial sums in order. bx is the
// power of two covering inner, at most 32, so a row sum (inner == 1) still puts all kThreads
// threads on the one column. With one split the sum goes to out; with several, to partial
// (splits, outer, inner) f32, and sum_splits_kernel adds the splits in order: a bias gradient
// (1, B T, C) then runs on hundreds of blocks instead of C / 32.
template <typename T>
__global__ void sum_dim_kernel(T* out, float* partial, const T* x, int64_t outer, int64_t n,
                               int64_t inner, int64_t inner_tiles, int64_t chunk) {
  __shared__ float part[kThreads];
  const int bx = blockDim.x, by = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
  const int64_t o = blockIdx.x / inner_tiles, i = (blockIdx.x % inner_tiles) * bx + tx;
  const int64_t k0 = int64_t(blockIdx.y) * chunk, k1 = k0 + chunk < n ? k0 + chunk : n;
  float acc = 0.0f;
  if (i < inner)
    for (int64_t k = k0 + ty; k < k1; k += by) acc += ld(x, (o * n + k) * inner + i);
  part[ty * bx + tx] = acc;
  __syncthreads();
  if (ty == 0 && i < inner) {
    float s = 0.0f;
    for (int r = 0; r < by; ++r) s += part[r * bx + tx];
    if (partial)
      partial[(int64_t(blockIdx.y) * outer + o) * inner + i] = s;
    else
      st(out, o * inner + i, s);
  }
}

// out[j] = sum over the splits p of partial[p, j], in order of p.
template <typename T>
__global__ void sum_splits_kernel(T* out, const float* partial, int64_t splits, int64_t m) {
  for (int64_t j = global_index(); j < m; j += grid_stride()) {
    float s = 0.0f;
    for (int64_t p = 0; p < splits; ++p) s += partial[p * m + j];
    st(out, j, s);
  }
}

template <typename T>
__global__ void expand_dim_kernel(T* out, const T* x, int64_t total, int64_t n, int64_t inner) {
  for (int64_t j = global_index(); j < total; j += grid_stride())
    out[j] = x[(j / (n * inner)) * inner + j % inner];  // a copy of the bits: exact for bf16 too
}

void sum_dim(const Tensor& out, const Tensor& x, int64_t outer, int64_t n, int64_t inner) {
  TESSERA_CHECK(x.numel() == outer * n * inner && out.numel() == outer * inner,
                "cuda kernel sum_dim: x ", shape_str(x.shape()), " out ", shape_str(out.shape()),
                " as (", outer, ", ", n, ", ", inner, ")");
  check_args("sum_dim", out.dtype(), {{"out", out}, {"x", x}});
  if (out.numel() == 0) return;
  int bx = 1;
  while (bx < 32 && bx < inner) bx *= 2;
  const int64_t inner_tiles = (inner + bx - 1) / bx;
  TESSERA_CHECK(outer * inner_tiles <= int64_t(0x7fffffff), "cuda kernel sum_dim: (", outer, ", ",
                n, ", ", inner, ") exceeds the grid limit");
  // Enough splits of n for ~512 blocks, each split at least 16 rows per thread.
  const int by = kThreads / bx;
  const int64_t tiles = outer * inner_tiles, min_rows = 16 * int64_t(by);
  int64_t splits = 1;
  if (tiles < 512) splits = std::min((512 + tiles - 1) / tiles, (n + min_rows - 1) / min_rows);
  splits = std::max<int64_t>(splits, 1);
  const int64_t chunk = (n + splits - 1) / splits;
  splits = n > 0 ? (n + chunk - 1) / chunk : 1;
  DeviceGuard guard(out.device().index);
  Tensor partial;
  if (splits > 1) partial = Tensor::empty({splits * outer * inner}, {DType::F32, out.device()});
  float* pp = splits > 1 ? static_cast<float*>(partial.data_ptr()) : nullptr;
  dispatch("sum_dim", out.dtype(), [&](auto z) {
    using T = decltype(z);
    T* o = static_cast<T*>(out.data_ptr());
    sum_dim_kernel<T><<<dim3(unsigned(tiles), unsigned(splits)), dim3(bx, by)>>>(
        o, pp, static_cast<const T*>(x.data_ptr()), outer, n, inner, inner_tiles,
        n > 0 ? chunk : 1);
    CUDA_CHECK_LAUNCH();
    if (pp) {
      sum_splits_kernel<T><<<grid_for(outer * inner), kThreads>>>(o, pp, splits, outer * inner);
      CUDA_CHECK_LAUNCH();
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

template <typename T, typename F>
__global__ void map1_kernel(T* y, const T* a, int64_t n, F f) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) st(y, i, f(ld(a, i)));
}

template <typename T, typename F>
__global__ void map2_kernel(T* y, const T* a, const T* b, int64_t n, F f) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) st(y, i, f(ld(a, i), ld(b, i)));
}

template <typename T>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dy, const T* gate, const T* up,
                                       int64_t n) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) {
    const float g = ld(gate, i), s = sigmoid(g), d = ld(dy, i);
    st(dgate, i, d * ld(up, i) * s * (1.0f + g * (1.0f - s)));
    st(dup, i, d * g * s);
  }
}

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
    map1_kernel<T, F><<<grid_for(n), kThreads>>>(static_cast<T*>(y.data_ptr()),
                                                 static_cast<const T*>(x.data_ptr()), n, f);
    CUDA_CHECK_LAUNCH();
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
    map2_kernel<T, F><<<grid_for(n), kThreads>>>(static_cast<T*>(y.data_ptr()),
                                                 static_cast<const T*>(a.data_ptr()),
                                                 static_cast<const T*>(b.data_ptr()), n, f);
    CUDA_CHECK_LAUNCH();
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
    swiglu_backward_kernel<T><<<grid_for(n), kThreads>>>(
        static_cast<T*>(dgate.data_ptr()), static_cast<T*>(dup.data_ptr()),
        static_cast<const T*>(dy.data_ptr()), static_cast<const T*>(gate.data_ptr()),
        static_cast<const T*>(up.data_ptr()), n);
    CUDA_CHECK_LAUNCH();
  });
}

// ---- dropout ----------------------------------------------------------------------------------

// keep_i = (philox_uniform(offset + i, seed) >= p): core/rng.h's own function, so the mask is the
// CPU's bit for bit, and x * scale is the same single f32 product.
template <typename T>
__global__ void dropout_kernel(T* y, const T* x, int64_t n, double p, float scale, uint64_t seed,
                               uint64_t offset) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) {
    const bool keep = double(philox_uniform(offset + uint64_t(i), seed)) >= p;
    st(y, i, keep ? ld(x, i) * scale : 0.0f);
  }
}

void dropout(const Tensor& y, const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  check_same("dropout", {{"y", y}, {"x", x}});
  TESSERA_CHECK(p >= 0.0 && p < 1.0, "cuda kernel dropout: p must be in [0, 1), got ", p);
  const int64_t n = x.numel();
  if (n == 0) return;
  DeviceGuard guard(x.device().index);
  const float scale = float(1.0 / (1.0 - p));
  dispatch("dropout", x.dtype(), [&](auto z) {
    using T = decltype(z);
    dropout_kernel<T><<<grid_for(n), kThreads>>>(static_cast<T*>(y.data_ptr()),
                                                 static_cast<const T*>(x.data_ptr()), n, p, scale,
                                                 seed, offset);
    CUDA_CHECK_LAUNCH();
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
