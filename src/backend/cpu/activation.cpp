// CPU activations (GELU, SiLU, SwiGLU) and dropout: elementwise, every tensor the same shape.
//
// x, y, dx, dy, gate, up, dgate, dup (N, C), flattened to numel elements
//
// GELU, tanh form (Hendrycks & Gimpel 2016; the form GPT-2 uses):
//   y = 0.5 x (1 + t), t = tanh(u), u = k (x + a x^3), k = sqrt(2/pi), a = 0.044715
//   dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 a x^2)   (the derivative of this form, not of
//   the erf GELU it approximates, so that gradient checks against the forward pass agree).
// Computed through 0.5 (1 + tanh(u)) = sigmoid(2u) =: s, so 0.5 (1 - t^2) = 2 s (1 - s):
//   y = x s,   dy/dx = s + 2 x s (1 - s) k (1 + 3 a x^2),
// with fast_exp.h's vectorisable exp in f32 (no libm call per element), in AVX2 where the CPU
// has it (cpu/simd.h; the same bits); for very negative x, y keeps its tiny value instead of
// 1 + t rounding to 0.
// SiLU: y = x s, s = sigmoid(x); dy/dx = s (1 + x (1 - s)).
// SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer"): y = silu(gate) * up;
//   dgate = dy * up * silu'(gate), dup = dy * silu(gate).
// Dropout: keep_i = (philox_uniform(offset + i, seed) >= p), y = keep ? x / (1 - p) : 0.
#include <cmath>
#include <initializer_list>

#include "backend/cpu/cpu.h"
#include "backend/cpu/fast_exp.h"
#include "backend/cpu/simd.h"
#include "core/rng.h"

namespace tessera::cpu {
namespace {

// Elementwise loops are memory-bound: below this many elements a thread team costs more than it saves.
constexpr int64_t kParallelWork = 65536;

void check_numel(const char* kernel, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = *ts.begin();
  for (const Tensor* t : ts)
    TESSERA_CHECK(t->numel() == first->numel(), kernel, ": tensors differ in size: ",
                  shape_str(first->shape()), " vs ", shape_str(t->shape()));
}

constexpr double kGeluK = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluA = 0.044715;

}  // namespace

namespace {

// The loops, one function each so that TESSERA_SIMD_CLONES can give them AVX2 (cpu/simd.h).
template <typename T>
TESSERA_SIMD_CLONES void gelu_forward_loop(T* y, const T* x, int64_t n) {
  const T k = T(kGeluK), a = T(kGeluA);
#pragma omp parallel for if (n > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    y[i] = v * sigmoid(T(2) * k * (v + a * v * v * v));
  }
}

template <typename T>
TESSERA_SIMD_CLONES void gelu_backward_loop(T* dx, const T* dy, const T* x, int64_t n) {
  const T k = T(kGeluK), a = T(kGeluA);
#pragma omp parallel for if (n > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    const T s = sigmoid(T(2) * k * (v + a * v * v * v));
    const T d = s + T(2) * v * s * (T(1) - s) * k * (T(1) + T(3) * a * v * v);
    dx[i] = dy[i] * d;
  }
}

template <typename T>
TESSERA_SIMD_CLONES void silu_forward_loop(T* y, const T* x, int64_t n) {
#pragma omp parallel for if (n > kParallelWork)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sigmoid(x[i]);
}

template <typename T>
TESSERA_SIMD_CLONES void silu_backward_loop(T* dx, const T* dy, const T* x, int64_t n) {
#pragma omp parallel for if (n > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const T s = sigmoid(x[i]);
    dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
  }
}

template <typename T>
TESSERA_SIMD_CLONES void swiglu_forward_loop(T* y, const T* gate, const T* up, int64_t n) {
#pragma omp parallel for if (n > kParallelWork)
  for (int64_t i = 0; i < n; ++i) y[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

template <typename T>
TESSERA_SIMD_CLONES void swiglu_backward_loop(T* dgate, T* dup, const T* dy, const T* gate,
                                              const T* up, int64_t n) {
#pragma omp parallel for if (n > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i], s = sigmoid(g);
    dgate[i] = dy[i] * up[i] * s * (T(1) + g * (T(1) - s));
    dup[i] = dy[i] * g * s;
  }
}

template <typename T>
const T* in(const Tensor& t) {
  return static_cast<const T*>(t.data_ptr());
}
template <typename T>
T* out(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

}  // namespace

void gelu_forward(const Tensor& y, const Tensor& x) {
  check_numel("gelu_forward", {&y, &x});
  dispatch_float("gelu_forward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    gelu_forward_loop(out<T>(y), in<T>(x), x.numel());
  });
}

void gelu_backward(const Tensor& dx, const Tensor& dy, const Tensor& x) {
  check_numel("gelu_backward", {&dx, &dy, &x});
  dispatch_float("gelu_backward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    gelu_backward_loop(out<T>(dx), in<T>(dy), in<T>(x), x.numel());
  });
}

void silu_forward(const Tensor& y, const Tensor& x) {
  check_numel("silu_forward", {&y, &x});
  dispatch_float("silu_forward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    silu_forward_loop(out<T>(y), in<T>(x), x.numel());
  });
}

void silu_backward(const Tensor& dx, const Tensor& dy, const Tensor& x) {
  check_numel("silu_backward", {&dx, &dy, &x});
  dispatch_float("silu_backward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    silu_backward_loop(out<T>(dx), in<T>(dy), in<T>(x), x.numel());
  });
}

void swiglu_forward(const Tensor& y, const Tensor& gate, const Tensor& up) {
  check_numel("swiglu_forward", {&y, &gate, &up});
  dispatch_float("swiglu_forward", gate.dtype(), [&](auto z) {
    using T = decltype(z);
    swiglu_forward_loop(out<T>(y), in<T>(gate), in<T>(up), y.numel());
  });
}

void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dy, const Tensor& gate,
                     const Tensor& up) {
  check_numel("swiglu_backward", {&dgate, &dup, &dy, &gate, &up});
  dispatch_float("swiglu_backward", gate.dtype(), [&](auto z) {
    using T = decltype(z);
    swiglu_backward_loop(out<T>(dgate), out<T>(dup), in<T>(dy), in<T>(gate), in<T>(up),
                         dy.numel());
  });
}

void dropout(const Tensor& y, const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  check_numel("dropout", {&y, &x});
  TESSERA_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p);
  const int64_t n = x.numel();
  dispatch_float("dropout", x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x.data_ptr());
    T* yp = static_cast<T*>(y.data_ptr());
    const T scale = T(1.0 / (1.0 - p));
    // The f32 uniform for every dtype, so an f64 gradient check sees the mask an f32 run (and the
    // CUDA kernel) draws.
#pragma omp parallel for if (n > kParallelWork)
    for (int64_t i = 0; i < n; ++i) {
      const bool keep = double(philox_uniform(offset + uint64_t(i), seed)) >= p;
      yp[i] = keep ? xp[i] * scale : T(0);
    }
  });
}

}  // namespace tessera::cpu
