// OpenBLAS for the CPU kernels: one row-major product on raw pointers, sgemm or dgemm by the
// element type, and the one-time choice that every BLAS call runs on the thread that makes it
// (the CPU kernels share their cores through OpenMP instead: cpu/matmul.cpp says why).
//   c (M, N) = alpha * op(a) @ op(b) + beta * c, with leading dimensions lda, ldb, ldc; K == 0
//   gives beta * c (0 when beta is 0, whatever c held).
#pragma once

#include <cblas.h>

#include <cstdint>
#include <type_traits>

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

}  // namespace tessera::cpu
