// CPU elementwise kernels and the two reshaping reductions (sum over / expand along a middle dim).
#include "backend/cpu/cpu.h"

namespace tessera::cpu {

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t n = a.numel(), nb = b.numel();
  const int64_t C = cols_of(a);
  TESSERA_CHECK(out.numel() == n && (nb == n || nb == C), "binary: out ", shape_str(out.shape()),
                ", a ", shape_str(a.shape()), ", b ", shape_str(b.shape()));
  const bool row = nb != n;
  dispatch_float("binary", out.dtype(), [&](auto z) {
    using T = decltype(z);
    T* o = static_cast<T*>(out.data_ptr());
    const T* x = static_cast<const T*>(a.data_ptr());
    const T* y = static_cast<const T*>(b.data_ptr());
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      T bv = y[row ? i % C : i];
      switch (op) {
        case BinaryOp::Add: o[i] = x[i] + bv; break;
        case BinaryOp::Sub: o[i] = x[i] - bv; break;
        case BinaryOp::Mul: o[i] = x[i] * bv; break;
      }
    }
  });
}

void axpby(const Tensor& out, double alpha, const Tensor& x, double beta, const Tensor& y) {
  const int64_t n = out.numel();
  TESSERA_CHECK(x.numel() == n && (!y.defined() || y.numel() == n), "axpby: out ",
                shape_str(out.shape()), ", x ", shape_str(x.shape()), ", y ",
                y.defined() ? shape_str(y.shape()) : "none");
  dispatch_float("axpby", out.dtype(), [&](auto z) {
    using T = decltype(z);
    T* o = static_cast<T*>(out.data_ptr());
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T a = T(alpha), b = T(beta);
    if (y.defined()) {
      const T* yp = static_cast<const T*>(y.data_ptr());
#pragma omp parallel for if (n > 65536)
      for (int64_t i = 0; i < n; ++i) o[i] = a * xp[i] + b * yp[i];
    } else {
#pragma omp parallel for if (n > 65536)
      for (int64_t i = 0; i < n; ++i) o[i] = a * xp[i];
    }
  });
}

void sum_dim(const Tensor& out, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
             bool accumulate) {
  TESSERA_CHECK(x.numel() == outer * n * inner && out.numel() == outer * inner, "sum_dim: x ",
                shape_str(x.shape()), " out ", shape_str(out.shape()), " as (", outer, ", ", n,
                ", ", inner, ")");
  dispatch_float("sum_dim", out.dtype(), [&](auto z) {
    using T = decltype(z);
    T* o = static_cast<T*>(out.data_ptr());
    const T* xp = static_cast<const T*>(x.data_ptr());
    // Accumulate in double: the CPU backend is the reference, so sums are as exact as is cheap.
#pragma omp parallel for if (outer * inner > 4096)
    for (int64_t oi = 0; oi < outer * inner; ++oi) {
      const int64_t o_ = oi / inner, i_ = oi % inner;
      double acc = 0;
      for (int64_t k = 0; k < n; ++k) acc += double(xp[(o_ * n + k) * inner + i_]);
      // Accumulating: the sum rounded to T, then one rounded add (axpby's bits).
      o[oi] = accumulate ? T(double(o[oi]) + double(T(acc))) : T(acc);
    }
  });
}

void expand_dim(const Tensor& out, const Tensor& x, int64_t outer, int64_t n, int64_t inner) {
  TESSERA_CHECK(out.numel() == outer * n * inner && x.numel() == outer * inner, "expand_dim: x ",
                shape_str(x.shape()), " out ", shape_str(out.shape()), " as (", outer, ", ", n,
                ", ", inner, ")");
  dispatch_float("expand_dim", out.dtype(), [&](auto z) {
    using T = decltype(z);
    T* o = static_cast<T*>(out.data_ptr());
    const T* xp = static_cast<const T*>(x.data_ptr());
#pragma omp parallel for if (outer * n * inner > 65536)
    for (int64_t j = 0; j < outer * n * inner; ++j) {
      const int64_t o_ = j / (n * inner), i_ = j % inner;
      o[j] = xp[o_ * inner + i_];
    }
  });
}

}  // namespace tessera::cpu
