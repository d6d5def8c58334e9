// CPU gemm: batched, row-major, through OpenBLAS (cblas_sgemm / cblas_dgemm); a 2-D operand's row
// stride is BLAS's leading dimension (backend/gemm_shapes.h).
// c (Bc, M, N) = alpha * op(a) @ op(b) + beta * c; a batch of 1 is shared by every c batch.
// linear_forward: the gemm, then the bias added to every row and the residual added;
// linear_gelu_forward: the gemm and the bias, then GELU; linear_dgelu_backward: the gemm of a
// Linear's dx, then GELU's backward on it; linear_param_backward: the gemm of a Linear's dw, then
// sum_dim for its db.
#include <algorithm>
#include <cstdlib>

#include "backend/cpu/blas.h"
#include "backend/cpu/cpu.h"
#include "backend/gemm_shapes.h"
#include "backend/linear_shapes.h"

namespace tessera::cpu {
namespace {

// The rows of c a gemm splits into, one BLAS call each, shared out over the OpenMP team. A
// function of the shape alone, never of the thread count: OpenBLAS's bits for a row depend on the
// block it is computed in (measured: splitting 768 x 384 x 128 in 2 or 3 changes them), so a
// split by threads would make a run's bits depend on OMP_NUM_THREADS, and a resumed run on another
// thread count would not repeat the uninterrupted one. Blocks of at least 64 rows (each call packs
// all of op(b) again), at most kMaxRowBlocks, starts on multiples of 16 (the kernels' row unroll);
// under kParallelMacs multiply-adds (tens of microseconds) one call, as a thread team would cost
// more than it saves. On 2 cores this runs most of configs/tiny.yaml's gemm shapes 1.5-1.9x
// faster than one call, within ~10% of halving them by thread count (a microbenchmark on the
// shared 2-core machine; noisy), and the tiny model trains 1.7x faster with GELU's change
// (fast_exp.h).
constexpr int64_t kMaxRowBlocks = 8, kMinBlockRows = 64, kParallelMacs = int64_t(1) << 20;
int64_t row_block_size(int64_t M, int64_t N, int64_t K) {
  if (M * N * K < kParallelMacs) return M;
  const int64_t blocks = std::clamp<int64_t>(M / kMinBlockRows, 1, kMaxRowBlocks);
  return ((M + blocks - 1) / blocks + 15) / 16 * 16;
}

}  // namespace

// OpenBLAS's own worker threads spin while they wait, and so do the OpenMP threads of every other
// kernel: on 2 cores the two pools fight (configs/tiny.yaml's model: 343 ms per forward + backward
// with both, 151 ms with one BLAS thread). Unless OPENBLAS_NUM_THREADS asks otherwise, each BLAS
// call runs on the thread that makes it, and gemm spreads its calls over the OpenMP team instead
// (row_block_size): one pool of threads for every kernel.
void single_threaded_blas_unless_asked() {
  static const bool done = [] {
    if (!std::getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

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
  const int64_t sa = ma.batch == 1 ? 0 : ma.rows * ma.cols, sb = mb.batch == 1 ? 0 : mb.rows * mb.cols;
  const int64_t sc = M * mc.ld;  // batches (3-D, dense); one matrix when 2-D
  dispatch_float("gemm", c.dtype(), [&](auto z) {
    using T = decltype(z);
    T* cp = static_cast<T*>(c.data_ptr());
    const T* ap = static_cast<const T*>(a.data_ptr());
    const T* bp = static_cast<const T*>(b.data_ptr());
    // Block (i, r0): rows r0 .. r0 + rows of batch i; op(a)'s row r is a's row r, or a's column r
    // when a is transposed.
    const int64_t R = row_block_size(M, N, K), per_batch = (M + R - 1) / R;
    const int64_t a_row = trans_a ? 1 : ma.ld;
#pragma omp parallel for schedule(static) if (mc.batch * per_batch > 1)
    for (int64_t blk = 0; blk < mc.batch * per_batch; ++blk) {
      const int64_t i = blk / per_batch, r0 = blk % per_batch * R, rows = std::min(R, M - r0);
      const T* a0 = ap + i * sa + r0 * a_row;
      T* c0 = cp + i * sc + r0 * mc.ld;
      blas_gemm<T>(trans_a, trans_b, rows, N, K, T(alpha), a0, ma.ld, bp + i * sb, mb.ld, T(beta),
                   c0, mc.ld);
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

void linear_param_backward(const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                           bool accumulate_w, bool accumulate_b) {
  check_linear_param_backward("linear_param_backward", dw, db, dy, x);
  if (dw.defined()) gemm(dw, dy, x, true, false, 1.0, accumulate_w ? 1.0 : 0.0);
  if (db.defined()) sum_dim(db, dy, 1, dy.size(0), dy.size(1), accumulate_b);
}

}  // namespace tessera::cpu
