// What the CPU attention kernels (cpu/attention.cpp, cpu/stick_breaking.cpp) share: their shape
// checks under the strided contract of backend/attention_shapes.h, and one (B, H, T, D) view as
// they hand its heads to BLAS, one (b, h) head at a time, in blocks of kRowBlock query rows whose
// products need only the keys the block's rows attend.
#pragma once

#include <algorithm>
#include <cstdint>

#include "backend/attention_shapes.h"
#include "core/tensor.h"

namespace tessera::cpu {

constexpr int64_t kRowBlock = 64;

inline AttentionDims check_strided_qkv(const char* kernel, const Tensor& q, const Tensor& k,
                                       const Tensor& v, bool allow_offset = false) {
  return check_attention_qkv(kernel, q, k, v, allow_offset, /*strided=*/true);
}

// The dtype of a kernel's saved row statistics (lse, log rem): f64 for f64, else f32.
inline DType stat_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// BLAS's leading dimension of a head's rows: their stride, or D for a single row (BLAS asks
// ld >= D even where it never steps).
inline int64_t head_ld(int64_t row_stride, int64_t T, int64_t D) { return T > 1 ? row_stride : D; }

// A view whose rows overlap (a row stride under D: a broadcast along T), as a dense copy BLAS can
// read; any other view as it is.
inline Tensor blas_readable(const Tensor& t) {
  return t.size(2) > 1 && t.strides()[2] < t.size(3) ? t.contiguous() : t;
}

// One (B, H, T, D) view as BLAS sees its heads: element pointer, row geometry, and the leading
// dimension of a head's rows. P is const F for an input, F for an output.
template <typename P>
struct Heads {
  P* p;
  HeadStrides s;
  int64_t ld;
  P* at(int64_t b, int64_t h, int64_t t) const { return p + s.row(b, h, t); }
};
template <typename F>
Heads<const F> heads_of(const Tensor& t) {
  return {static_cast<const F*>(t.data_ptr()), head_strides(t),
          head_ld(t.strides()[2], t.size(2), t.size(3))};
}
template <typename F>
Heads<F> mut_heads_of(const Tensor& t) {
  return {static_cast<F*>(t.data_ptr()), head_strides(t),
          head_ld(t.strides()[2], t.size(2), t.size(3))};
}

// Zeroes the T rows of head (b, h), as a kv head's dK or dV before the BLAS calls of its group's
// query heads add into it.
template <typename F>
void zero_head_rows(const Heads<F>& x, int64_t b, int64_t h, int64_t T, int64_t D) {
  for (int64_t t = 0; t < T; ++t) std::fill_n(x.at(b, h, t), D, F(0));
}

}  // namespace tessera::cpu
