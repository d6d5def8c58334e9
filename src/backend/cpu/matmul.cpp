// CPU gemm: batched, row-major, through OpenBLAS (cblas_sgemm / cblas_dgemm); a 2-D operand's row
// stride is BLAS's leading dimension (backend/gemm_shapes.h).
// c (Bc, M, N) = alpha * op(a) @ op(b) + beta * c; a batch of 1 is shared by every c batch.
// linear_forward: the gemm, then the bias added to every row and the residual added; linear_gelu_forward:
// the gemm and the bias, then GELU;
// linear_dgelu_backward: the gemm of a Linear's dx, then GELU's backward on it.
#include <cblas.h>

#include <cstdlib>

#include "backend/cpu/cpu.h"
#include "backend/gemm_shapes.h"
#include "backend/linear_shapes.h"

namespace tessera::cpu {
namespace {

// OpenBLAS's own worker threads spin while they wait, and so do the OpenMP threads of every other
// kernel: on 2 cores the two pools fight (configs/tiny.yaml's model: 343 ms per forward + backward
// with both, 151 ms with one BLAS thread). Unless OPENBLAS_NUM_THREADS asks otherwise, gemm runs
// on the calling thread and the other kernels keep the cores.
void single_threaded_blas_unless_asked() {
  static const bool done = [] {
    if (!std::getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

}  // namespace

void gemm(const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
          double alpha, double beta) {
  const GemmOperand mc = gemm_operand("gemm", c, "c"), ma = gemm_operand("gemm", a, "a"),
                    mb = gemm_operand("gemm", b, "b");
  const int64_t M = mc.rows, N = mc.cols;
  const int64_t K = trans_a ? ma.rows : ma.cols;
  const int64_t am = trans_a ? ma.cols : ma.rows;
  const int64_t bk = trans_b ? mb.cols : mb.rows, bn = trans_b ? mb.rows : mb.cols;
  TESSERA_CHECK(am == M && bk == K && bn == N, "gemm: shapes do not agree: c ", shape_str(c.shape()),
                " = a ", shape_str(a.shape()), (trans_a ? "^T" : ""), " @ b ", shape_str(b.shape()),
                (trans_b ? "^T" : ""));
  TESSERA_CHECK((ma.batch == 1 || ma.batch == mc.batch) && (mb.batch == 1 || mb.batch == mc.batch),
                "gemm: batch sizes do not agree: c ", shape_str(c.shape()), ", a ",
                shape_str(a.shape()), ", b ", shape_str(b.shape()));
  TESSERA_CHECK(a.dtype() == c.dtype() && b.dtype() == c.dtype(), "gemm: dtypes differ: c ",
                dtype_name(c.dtype()), ", a ", dtype_name(a.dtype()), ", b ", dtype_name(b.dtype()));
  if (M == 0 || N == 0) return;
  single_threaded_blas_unless_asked();
  const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  const int64_t sa = ma.batch == 1 ? 0 : ma.rows * ma.cols, sb = mb.batch == 1 ? 0 : mb.rows * mb.cols;
  const int64_t sc = M * mc.ld;  // batches (3-D, dense); one matrix when 2-D
  dispatch_float("gemm", c.dtype(), [&](auto z) {
    using T = decltype(z);
    T* cp = static_cast<T*>(c.data_ptr());
    const T* ap = static_cast<const T*>(a.data_ptr());
    const T* bp = static_cast<const T*>(b.data_ptr());
    for (int64_t i = 0; i < mc.batch; ++i) {
      if (K == 0) {  // BLAS may skip the beta scaling when K == 0: do it here
        for (int64_t r = 0; r < M; ++r)
          for (int64_t j = 0; j < N; ++j) {
            T& e = cp[i * sc + r * mc.ld + j];
            e = beta == 0 ? T(0) : T(beta) * e;
          }
        continue;
      }
      if constexpr (std::is_same_v<T, float>) {
        cblas_sgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), float(alpha), ap + i * sa,
                    int(ma.ld), bp + i * sb, int(mb.ld), float(beta), cp + i * sc, int(mc.ld));
      } else {
        cblas_dgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, ap + i * sa,
                    int(ma.ld), bp + i * sb, int(mb.ld), beta, cp + i * sc, int(mc.ld));
      }
    }
  });
}

void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& bias,
                    const Tensor& residual) {
  check_linear_forward("linear_forward", y, x, w, bias, residual);
  gemm(y, x, w, false, true, 1.0, 0.0);
  // The row broadcast, then the residual, as separate adds would do them (a + b rounds as b + a).
  if (bias.defined()) binary(BinaryOp::Add, y, y, bias);
  if (residual.defined()) binary(BinaryOp::Add, y, y, residual);
}

void linear_gelu_forward(const Tensor& y, const Tensor& pre, const Tensor& x, const Tensor& w,
                         const Tensor& bias) {
  check_linear_gelu_forward("linear_gelu_forward", y, pre, x, w, bias);
  linear_forward(pre, x, w, bias, Tensor());
  gelu_forward(y, pre);  // the bits of linear then gelu
}

void linear_dgelu_backward(const Tensor& dpre, const Tensor& dy, const Tensor& w,
                           const Tensor& pre) {
  check_linear_dgelu_backward("linear_dgelu_backward", dpre, dy, w, pre);
  gemm(dpre, dy, w, false, false, 1.0, 0.0);
  gelu_backward(dpre, dpre, pre);  // the bits of the Linear's dx, then gelu's backward
}

}  // namespace tessera::cpu
