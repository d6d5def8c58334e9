// matmul and linear. Gradients of C = op(A) op(B):
//   dA = dC op(B)^T      (trans_a: dA = op(B) dC^T)
//   dB = op(A)^T dC      (trans_b: dB = dC^T op(A)), summed over batches when B is shared.
#include "ops/matmul.h"

#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/util.h"

namespace tessera::ops {

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  detail::check_compatible("matmul", {&a, &b});
  TESSERA_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: operands must be at least 2-D, got a ",
                shape_str(a.shape()), " and b ", shape_str(b.shape()));
  const int64_t M = trans_a ? a.size(-1) : a.size(-2), K = trans_a ? a.size(-2) : a.size(-1);
  const int64_t Kb = trans_b ? b.size(-1) : b.size(-2), N = trans_b ? b.size(-2) : b.size(-1);
  TESSERA_CHECK(K == Kb, "matmul: inner dimensions differ: a ", shape_str(a.shape()),
                (trans_a ? "^T" : ""), " has ", K, ", b ", shape_str(b.shape()),
                (trans_b ? "^T" : ""), " has ", Kb);
  Shape batch(a.shape().begin(), a.shape().end() - 2);
  const bool shared_b = b.dim() == 2;
  TESSERA_CHECK(shared_b || Shape(b.shape().begin(), b.shape().end() - 2) == batch,
                "matmul: batch dimensions differ: a ", shape_str(a.shape()), " vs b ",
                shape_str(b.shape()), " (b must be 2-D or have a's batch dimensions)");
  const int64_t nb = shape_numel(batch);
  Tensor A = detail::dense(a).view({nb, a.size(-2), a.size(-1)});
  Tensor B = detail::dense(b).view({shared_b ? 1 : nb, b.size(-2), b.size(-1)});
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape, a.options());
  TESSERA_KERNEL(a, gemm)(out.view({nb, M, N}), A, B, trans_a, trans_b, 1.0, 0.0);

  Shape a_shape = a.shape(), b_shape = b.shape();
  return record("matmul", out, {a, b}, [=](const Tensor& dy, GradSink& g) {
    Tensor dC = dy.view({nb, M, N});
    if (g.needs(0)) {
      Tensor dA = Tensor::empty(A.shape(), A.options());
      if (!trans_a) {
        TESSERA_KERNEL(dy, gemm)(dA, dC, B, false, !trans_b, 1.0, 0.0);
      } else {
        TESSERA_KERNEL(dy, gemm)(dA, B, dC, trans_b, true, 1.0, 0.0);
      }
      g.add(0, dA.view(a_shape));
    }
    if (g.needs(1)) {
      Tensor dB;
      if (shared_b && !trans_a) {  // fold the batch into rows: one gemm sums over it
        Tensor A2 = A.view({nb * M, K}), dC2 = dC.view({nb * M, N});
        dB = Tensor::empty(b_shape, b.options());
        if (!trans_b) {
          TESSERA_KERNEL(dy, gemm)(dB, A2, dC2, true, false, 1.0, 0.0);
        } else {
          TESSERA_KERNEL(dy, gemm)(dB, dC2, A2, true, false, 1.0, 0.0);
        }
      } else {
        Tensor per = Tensor::empty({nb, b.size(-2), b.size(-1)}, b.options());
        if (!trans_b) {
          TESSERA_KERNEL(dy, gemm)(per, A, dC, !trans_a, false, 1.0, 0.0);
        } else {
          TESSERA_KERNEL(dy, gemm)(per, dC, A, true, trans_a, 1.0, 0.0);
        }
        if (shared_b) {
          dB = Tensor::empty(b_shape, b.options());
          TESSERA_KERNEL(dy, sum_dim)(dB, per, 1, nb, b.size(-2) * b.size(-1));
        } else {
          dB = per.view(b_shape);
        }
      }
      g.add(1, dB);
    }
  });
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  TESSERA_CHECK(w.dim() == 2, "linear: weight must be (out, in), got ", shape_str(w.shape()));
  TESSERA_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input ", shape_str(x.shape()),
                " does not end in the weight's in-features ", w.size(1), " (weight ",
                shape_str(w.shape()), ")");
  Tensor x2 = x.dim() == 1 ? x.view({1, x.size(0)}) : x;
  Tensor y = matmul(x2, w, false, true);
  if (bias.defined()) {
    TESSERA_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "linear: bias ",
                  shape_str(bias.shape()), " does not match out-features of weight ",
                  shape_str(w.shape()));
    y = add(y, bias);
  }
  return x.dim() == 1 ? y.view({w.size(0)}) : y;
}

}  // namespace tessera::ops
