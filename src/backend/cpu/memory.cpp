// CPU memory kernels: strided dtype-converting copy, fill, arange, Philox random draws.
#include <cmath>
#include <cstring>

#include "backend/copy_geometry.h"
#include "backend/cpu/cpu.h"
#include "core/rng.h"

namespace tessera::cpu {
namespace {

// Calls f(T{}) with the C++ type of dtype t.
template <typename F>
void visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); break;
    case DType::F64: f(double{}); break;
    case DType::BF16: f(bf16{}); break;
    case DType::I32: f(int32_t{}); break;
    case DType::U8: f(uint8_t{}); break;
  }
}

template <typename T>
inline double load(const T* p) {
  if constexpr (std::is_same_v<T, bf16>) {
    return double(float(*p));
  } else {
    return double(*p);
  }
}

template <typename T>
inline void store(T* p, double v) {
  if constexpr (std::is_same_v<T, bf16>) {
    *p = bf16(float(v));
  } else {
    *p = static_cast<T>(v);
  }
}

template <typename D, typename S>
void copy_typed(const Tensor& dst, const Tensor& src) {
  D* dp = static_cast<D*>(dst.data_ptr());
  const S* sp = static_cast<const S*>(src.data_ptr());
  const int64_t n = dst.numel();
  if (n == 0) return;
  if constexpr (std::is_same_v<D, S>) {
    if (dst.is_contiguous() && src.is_contiguous()) {
      std::memcpy(dp, sp, size_t(n) * sizeof(D));
      return;
    }
  }
  // Runs of the innermost merged dimension, each at an offset found once (backend/copy_geometry.h).
  const CopyGeometry g = copy_geometry("copy", dst, src);
  const int r = g.rank - 1;
  const int64_t run = g.shape[r], ds = g.dst_strides[r], ss = g.src_strides[r], runs = n / run;
#pragma omp parallel for if (n > 65536)
  for (int64_t k = 0; k < runs; ++k) {
    int64_t rest = k, so = 0, dof = 0;
    for (int d = r - 1; d >= 0; --d) {
      const int64_t idx = rest % g.shape[d];
      rest /= g.shape[d];
      so += idx * g.src_strides[d];
      dof += idx * g.dst_strides[d];
    }
    D* to = dp + dof;
    const S* from = sp + so;
    if constexpr (std::is_same_v<D, S>) {
      if (ds == 1 && ss == 1) {
        std::memcpy(to, from, size_t(run) * sizeof(D));
        continue;
      }
      for (int64_t i = 0; i < run; ++i) to[i * ds] = from[i * ss];
    } else {
      for (int64_t i = 0; i < run; ++i) store(to + i * ds, load(from + i * ss));
    }
  }
}

}  // namespace

void copy(const Tensor& dst, const Tensor& src) {
  TESSERA_CHECK(dst.shape() == src.shape(), "copy: shape mismatch: ", shape_str(dst.shape()),
                " vs ", shape_str(src.shape()));
  visit_dtype(dst.dtype(), [&](auto d) {
    visit_dtype(src.dtype(), [&](auto s) { copy_typed<decltype(d), decltype(s)>(dst, src); });
  });
}

void fill(const Tensor& dst, double value) {
  visit_dtype(dst.dtype(), [&](auto z) {
    using T = decltype(z);
    T v;
    store(&v, value);
    T* p = static_cast<T*>(dst.data_ptr());
    const int64_t n = dst.numel();
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  });
}

void arange(const Tensor& dst, double start, double step) {
  visit_dtype(dst.dtype(), [&](auto z) {
    using T = decltype(z);
    T* p = static_cast<T*>(dst.data_ptr());
    const int64_t n = dst.numel();
    for (int64_t i = 0; i < n; ++i) store(p + i, start + double(i) * step);
  });
}

void uniform(const Tensor& dst, uint64_t seed, uint64_t offset) {
  const int64_t n = dst.numel();
  if (dst.dtype() == DType::F64) {
    double* p = dst.data<double>();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) p[i] = philox_uniform_f64(offset + uint64_t(i), seed);
    return;
  }
  visit_dtype(dst.dtype(), [&](auto z) {
    using T = decltype(z);
    T* p = static_cast<T*>(dst.data_ptr());
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) store(p + i, philox_uniform(offset + uint64_t(i), seed));
  });
}

void normal(const Tensor& dst, uint64_t seed, uint64_t offset) {
  const int64_t n = dst.numel();
  visit_dtype(dst.dtype(), [&](auto z) {
    using T = decltype(z);
    T* p = static_cast<T*>(dst.data_ptr());
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) store(p + i, philox_normal(offset + uint64_t(i), seed));
  });
}

}  // namespace tessera::cpu
