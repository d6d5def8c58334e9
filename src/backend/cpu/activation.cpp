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
// with fast_exp.h's vectorisable exp in f32 (no libm call per element); for very negative x, y
// keeps its tiny value instead of 1 + t rounding to 0.
// SiLU: y = x s, s = sigmoid(x); dy/dx = s (1 + x (1 - s)).
// SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer"): y = silu(gate) * up;
//   dgate = dy * up * silu'(gate), dup = dy * silu(gate).
// Dropout: keep_i = (philox_uniform(offset + i, seed) >= p), y = keep ? x / (1 - p) : 0.
#include <cmath>
#include <initializer_list>

#include "backend/cpu/cpu.h"
#include "backend/cpu/fast_exp.h"
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

void gelu_forward(const Tensor& y, const Tensor& x) {
  check_numel("gelu_forward", {&y, &x});
  const int64_t n = x.numel();
  dispatch_float("gelu_forward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x.data_ptr());
    T* yp = static_cast<T*>(y.data_ptr());
    const T k = T(kGeluK), a = T(kGeluA);
#pragma omp parallel for if (n > kParallelWork)
    for (int64_t i = 0; i < n; ++i) {
      const T v = xp[i];
      yp[i] = v * sigmoid(T(2) * k * (v + a * v * v * v));
    }
  });
}

void gelu_backward(const Tensor& dx, const Tensor& dy, const Tensor& x) {
  check_numel("gelu_backward", {&dx, &dy, &x});
  const int64_t n = x.numel();
  dispatch_float("gelu_backward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* gp = static_cast<const T*>(dy.data_ptr());
    T* dxp = static_cast<T*>(dx.data_ptr());
    const T k = T(kGeluK), a = T(kGeluA);
#pragma omp parallel for if (n > kParallelWork)
    for (int64_t i = 0; i < n; ++i) {
      const T v = xp[i];
      const T s = sigmoid(T(2) * k * (v + a * v * v * v));
      const T d = s + T(2) * v * s * (T(1) - s) * k * (T(1) + T(3) * a * v * v);
      dxp[i] = gp[i] * d;
    }
  });
}

void silu_forward(const Tensor& y, const Tensor& x) {
  check_numel("silu_forward", {&y, &x});
  const int64_t n = x.numel();
  dispatch_float("silu_forward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x.data_ptr());
    T* yp = static_cast<T*>(y.data_ptr());
#pragma omp parallel for if (n > kParallelWork)
    for (int64_t i = 0; i < n; ++i) yp[i] = xp[i] * sigmoid(xp[i]);
  });
}

void silu_backward(const Tensor& dx, const Tensor& dy, const Tensor& x) {
  check_numel("silu_backward", {&dx, &dy, &x});
  const int64_t n = x.numel();
  dispatch_float("silu_backward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* gp = static_cast<const T*>(dy.data_ptr());
    T* dxp = static_cast<T*>(dx.data_ptr());
#pragma omp parallel for if (n > kParallelWork)
    for (int64_t i = 0; i < n; ++i) {
      const T s = sigmoid(xp[i]);
      dxp[i] = gp[i] * s * (T(1) + xp[i] * (T(1) - s));
    }
  });
}

void swiglu_forward(const Tensor& y, const Tensor& gate, const Tensor& up) {
  check_numel("swiglu_forward", {&y, &gate, &up});
  const int64_t n = y.numel();
  dispatch_float("swiglu_forward", gate.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* gp = static_cast<const T*>(gate.data_ptr());
    const T* up_ = static_cast<const T*>(up.data_ptr());
    T* yp = static_cast<T*>(y.data_ptr());
#pragma omp parallel for if (n > kParallelWork)
    for (int64_t i = 0; i < n; ++i) yp[i] = gp[i] * sigmoid(gp[i]) * up_[i];
  });
}

void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dy, const Tensor& gate,
                     const Tensor& up) {
  check_numel("swiglu_backward", {&dgate, &dup, &dy, &gate, &up});
  const int64_t n = dy.numel();
  dispatch_float("swiglu_backward", gate.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* gp = static_cast<const T*>(gate.data_ptr());
    const T* up_ = static_cast<const T*>(up.data_ptr());
    const T* dyp = static_cast<const T*>(dy.data_ptr());
    T* dgp = static_cast<T*>(dgate.data_ptr());
    T* dup_ = static_cast<T*>(dup.data_ptr());
#pragma omp parallel for if (n > kParallelWork)
    for (int64_t i = 0; i < n; ++i) {
      const T g = gp[i], s = sigmoid(g);
      dgp[i] = dyp[i] * up_[i] * s * (T(1) + g * (T(1) - s));
      dup_[i] = dyp[i] * g * s;
    }
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
