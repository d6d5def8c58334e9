// OpenBLAS for the CPU kernels: one row-major product on raw pointers, sgemm or dgemm by the
// element type, and the one-time choice that every BLAS call runs on the thread that makes it
// (the CPU kernels share their cores through OpenMP instead: cpu/matmul.cpp says why).
//   c (M, N) = alpha * op(a) @ op(b) + beta * c, with leading dimensions lda, ldb, ldc; K == 0
//   gives beta * c (0 when beta is 0, whatever c held).
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "backend/attention_shapes.h"
#include "core/tensor.h"

namespace tessera::cpu {

void single_threaded_blas_unless_asked();  // cpu/matmul.cpp

template <typename T>
void blas_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS may skip the beta scaling when K == 0 (and check lda >= 1): do it here
    for (int64_t r = 0; r < M; ++r)
      for (int64_t j = 0; j < N; ++j) c[r * ldc + j] = beta == T(0) ? T(0) : beta * c[r * ldc + j];
    return;
  }
  const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, a, int(lda), b, int(ldb),
                beta, c, int(ldc));
  } else {
    cblas_dgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, a, int(lda), b, int(ldb),
                beta, c, int(ldc));
  }
}

// For the attention kernels, which hand BLAS one (b, h) head of a (B, H, T, D) view with
// contiguous rows at a time (backend/attention_shapes.h), causal, in blocks of kRowBlock query
// rows whose products need the keys up to the block's last row only:
constexpr int64_t kRowBlock = 64;

// BLAS's leading dimension of a head's rows: their stride, or D for a single row (BLAS asks
// ld >= D even where it never steps).
inline int64_t head_ld(int64_t row_stride, int64_t T, int64_t D) { return T > 1 ? row_stride : D; }

// A view whose rows overlap (a row stride under D: a broadcast along T), as a dense copy BLAS can
// read; any other view as it is.
inline Tensor blas_readable(const Tensor& t) {
  return t.size(2) > 1 && t.strides()[2] < t.size(3) ? t.contiguous() : t;
}

// Zeroes the T rows of head (b, h) of a view with head strides s (p: its data), as a kv head's dK
// or dV before the BLAS calls of its group's query heads add into it.
template <typename F>
void zero_head_rows(F* p, const HeadStrides& s, int64_t b, int64_t h, int64_t T, int64_t D) {
  for (int64_t t = 0; t < T; ++t) std::fill_n(p + s.row(b, h, t), D, F(0));
}

}  // namespace tessera::cpu
