// CPU elementwise kernels and the two reshaping reductions (sum over / expand along a middle dim).
#include <algorithm>

#include "backend/cpu/cpu.h"

namespace tessera::cpu {

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t n = a.numel(), nb = b.numel();
  const int64_t C = cols_of(a);
  TESSERA_CHECK(out.numel() == n && (nb == n || nb == C), "binary: out ", shape_str(out.shape()),
                ", a ", shape_str(a.shape()), ", b ", shape_str(b.shape()));
  // b is either like a or one row broadcast over a's rows. The work goes in runs of `width`
  // elements (a's rows when b is broadcast, else fixed chunks) whose inner loop vectorises.
  const bool row = nb != n;
  constexpr int64_t kChunk = 16384;
  const int64_t width = row ? C : std::min(n, kChunk);
  const int64_t rows = width > 0 ? (n + width - 1) / width : 0;
  dispatch_float("binary", out.dtype(), [&](auto z) {
    using T = decltype(z);
    T* o = static_cast<T*>(out.data_ptr());
    const T* x = static_cast<const T*>(a.data_ptr());
    const T* y = static_cast<const T*>(b.data_ptr());
    auto run = [&](auto f) {
#pragma omp parallel for if (n > 65536 && rows > 1)
      for (int64_t r = 0; r < rows; ++r) {
        const T* yr = row ? y : y + r * width;
        T* orow = o + r * width;
        const T* xr = x + r * width;
        const int64_t w = std::min(width, n - r * width);
        for (int64_t c = 0; c < w; ++c) orow[c] = f(xr[c], yr[c]);
      }
    };
    switch (op) {
      case BinaryOp::Add: run([](T u, T w) { return u + w; }); break;
      case BinaryOp::Sub: run([](T u, T w) { return u - w; }); break;
      case BinaryOp::Mul: run([](T u, T w) { return u * w; }); break;
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
    // Each output adds its n terms in order k = 0, 1, ...; the loop runs k outside and a chunk of
    // kChunk outputs inside, so it streams rows and vectorises across outputs (the same bits as
    // one output at a time), and the chunks, fixed by the shape, are shared out over threads.
    constexpr int64_t kChunk = 256;
    const int64_t chunks = (inner + kChunk - 1) / kChunk;
#pragma omp parallel for if (outer * chunks > 1 && outer * n * inner > 65536)
    for (int64_t oc = 0; oc < outer * chunks; ++oc) {
      const int64_t o_ = oc / chunks, i0 = oc % chunks * kChunk,
                    w = std::min(kChunk, inner - i0);
      double acc[kChunk] = {};
      for (int64_t k = 0; k < n; ++k) {
        const T* xr = xp + (o_ * n + k) * inner + i0;
        for (int64_t i = 0; i < w; ++i) acc[i] += double(xr[i]);
      }
      T* orow = o + o_ * inner + i0;
      // Accumulating: the sum rounded to T, then one rounded add (axpby's bits).
      for (int64_t i = 0; i < w; ++i)
        orow[i] = accumulate ? T(double(orow[i]) + double(T(acc[i]))) : T(acc[i]);
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
