// matmul and linear. Gradients of C = op(A) op(B):
//   dA = dC op(B)^T      (trans_a: dA = op(B) dC^T)
//   dB = op(A)^T dC      (trans_b: dB = dC^T op(A)), summed over batches when B is shared.
#include "ops/matmul.h"

#include <functional>
#include <string>

#include "ops/activation.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/util.h"

namespace tessera::ops {
namespace {

// A parameter's gradient kernel, run(acc, accumulate), written straight into the gradient it goes
// to (GradSink::add_into): over a fresh accumulator (no zero-fill), or added onto one holding
// earlier contributions (the micro-batches before, in a flat gradient buffer: no temporary and no
// add); a bf16 parameter's into its f32 gradient buffer when it has one, the kernel writing f32.
void param_grad_into(GradSink& g, size_t input, DType dtype,
                     std::function<void(Tensor&, bool)> run) {
  g.add_into(
      input, dtype, [run](Tensor& acc, bool zero) { run(acc, !zero); },
      {.also = detail::f32_buffer_of(dtype), .overwrites = true});
}

}  // namespace

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
      if (shared_b && !trans_a) {  // fold the batch into rows: one gemm sums over it
        const Tensor A2 = A.view({nb * M, K}), dC2 = dC.view({nb * M, N});
        param_grad_into(g, 1, b.dtype(), [A2, dC2, trans_b](Tensor& acc, bool accumulate) {
          const double beta = accumulate ? 1.0 : 0.0;
          if (!trans_b) {
            TESSERA_KERNEL(dC2, gemm)(acc, A2, dC2, true, false, 1.0, beta);
          } else {
            TESSERA_KERNEL(dC2, gemm)(acc, dC2, A2, true, false, 1.0, beta);
          }
        });
      } else {
        Tensor dB, per = Tensor::empty({nb, b.size(-2), b.size(-1)}, b.options());
        if (!trans_b) {
          TESSERA_KERNEL(dy, gemm)(per, A, dC, !trans_a, false, 1.0, 0.0);
        } else {
          TESSERA_KERNEL(dy, gemm)(per, dC, A, true, trans_a, 1.0, 0.0);
        }
        if (shared_b) {
          dB = Tensor::empty(b_shape, b.options());
          TESSERA_KERNEL(dy, sum_dim)(dB, per, 1, nb, b.size(-2) * b.size(-1), false);
        } else {
          dB = per.view(b_shape);
        }
        g.add(1, dB);
      }
    }
  });
}

namespace {

void check_linear(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias) {
  TESSERA_CHECK(w.dim() == 2, op, ": weight must be (out, in), got ", shape_str(w.shape()));
  TESSERA_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), op, ": input ", shape_str(x.shape()),
                " does not end in the weight's in-features ", w.size(1), " (weight ",
                shape_str(w.shape()), ")");
  if (!bias.defined()) return;
  TESSERA_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), op, ": bias ",
                shape_str(bias.shape()), " does not match out-features of weight ",
                shape_str(w.shape()));
  detail::check_compatible(op, {&x, &w, &bias});
}

// A Linear whose kernel ran already: x viewed as X (R, K), out (..., N) holding x w^T + bias (or
// x w^T with the bias undefined; or, without a bias, out (..., columns > N) holding it in its
// first N columns: linear_padded). One node for x, w and bias: the weight's and the bias's
// gradients come from one kernel (linear_param_backward: on CUDA the bias gradient is summed in
// the weight gradient's gemm), written straight into their accumulators. With gelu_pre (R, K)
// defined, the Linear's input was gelu(gelu_pre): x is then the pre-activation (the graph's input),
// X the GELU output the product used, and x's gradient is dgelu(dY W) in one kernel. With
// W_padded (columns, K) defined (linear_padded: W with zero rows after its N), x's gradient is
// dy W_padded over all the columns, the padding's terms being zeros.
Tensor record_linear(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out,
                     const Tensor& X, const Tensor& W, const Tensor& gelu_pre = {},
                     const Tensor& W_padded = {}) {
  const int64_t R = X.size(0), K = X.size(1), N = W.size(0), columns = out.size(-1);
  const Shape x_shape = x.shape();
  const std::optional<DType> bias_dtype =
      bias.defined() ? std::optional<DType>(bias.dtype()) : std::nullopt;
  auto backward = [X, W, R, N, K, columns, x_shape, gelu_pre, W_padded, bias_dtype](
                      const Tensor& dy, GradSink& g) {
    // Padded rows (linear_padded): the weight's gradient reads dy's first N columns.
    const Tensor dy_rows = detail::dense(dy).view({R, columns});
    const Tensor dY = dy_rows.narrow(1, 0, N);
    if (g.needs(0)) {
      Tensor dX = Tensor::empty({R, K}, X.options());
      if (gelu_pre.defined()) {
        TESSERA_KERNEL(dy, linear_dgelu_backward)(dX, dY, W, gelu_pre);
      } else if (W_padded.defined()) {
        TESSERA_KERNEL(dy, gemm)(dX, dy_rows, W_padded, false, false, 1.0, 0.0);
      } else {
        TESSERA_KERNEL(dy, gemm)(dX, dY, W, false, false, 1.0, 0.0);
      }
      g.add(0, dX.view(x_shape));
    }
    const bool wants_b = bias_dtype && g.needs(2);
    if (!g.needs(1) && !wants_b) return;
    // Each written over a fresh accumulator (no zero-fill) or added onto earlier contributions
    // (the micro-batches before, in a flat gradient buffer); a bf16 parameter's into its f32
    // gradient buffer when it has one, the kernel writing f32.
    auto target = [](size_t input, DType dtype) {
      return IntoTarget{input, dtype, {.also = detail::f32_buffer_of(dtype), .overwrites = true}};
    };
    std::vector<IntoTarget> targets{target(1, W.dtype())};
    if (wants_b) targets.push_back(target(2, *bias_dtype));
    g.add_into(std::move(targets), [dY, X](std::vector<Into>& into) {
      const Into none;
      const Into &w = into[0], &b = into.size() > 1 ? into[1] : none;
      TESSERA_KERNEL(dY, linear_param_backward)(w.acc, b.acc, dY, X, !w.zero, !b.zero);
    });
  };
  return record(bias.defined() ? "linear_bias" : "linear", out, {x, w, bias}, std::move(backward));
}

// The rows of a Linear's input x (..., K): every leading dimension's size multiplied (not
// numel / K, which divides by zero for K = 0 in-features).
int64_t linear_rows(const Tensor& x) {
  return shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
}

Shape linear_shape(const Tensor& x, const Tensor& w) {
  Shape s(x.shape().begin(), x.shape().end() - 1);
  s.push_back(w.size(0));
  return s;
}

// The residual of a Linear's output (..., N): that shape, the Linear's dtype and device.
void check_residual(const char* op, const Tensor& x, const Tensor& w, const Tensor& residual) {
  TESSERA_CHECK(residual.defined() && residual.shape() == linear_shape(x, w), op, ": residual ",
                residual.defined() ? shape_str(residual.shape()) : std::string("undefined"),
                " is not the output's shape ", shape_str(linear_shape(x, w)), " (input ",
                shape_str(x.shape()), ", weight ", shape_str(w.shape()), ")");
  detail::check_compatible(op, {&x, &residual});
}

// residual + y, where y's kernel already added the residual in: the node ops::add records (dy to
// both), so the graph and the gradients are those of the separate add.
Tensor record_residual(const Tensor& residual, const Tensor& y) {
  return record("add", y, {residual, y}, [](const Tensor& dy, GradSink& g) {
    g.add(0, dy);
    g.add(1, dy);
  });
}

Tensor dense_or_none(const Tensor& t) { return t.defined() ? detail::dense(t) : Tensor(); }

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_linear("linear", x, w, bias);
  if (!bias.defined()) {
    Tensor y = matmul(x.dim() == 1 ? x.view({1, x.size(0)}) : x, w, false, true);
    return x.dim() == 1 ? y.view({w.size(0)}) : y;
  }
  // One kernel for the product and the bias (on CUDA the bias rides the gemm's epilogue).
  const int64_t N = w.size(0), K = w.size(1), R = linear_rows(x);
  const Tensor X = detail::dense(x).view({R, K}), W = detail::dense(w);
  Tensor out = Tensor::empty(linear_shape(x, w), x.options());
  TESSERA_KERNEL(x, linear_forward)(out.view({R, N}), X, W, detail::dense(bias), Tensor());
  return record_linear(x, w, bias, out, X, W);
}

Tensor linear_add(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) {
  check_linear("linear_add", x, w, bias);
  check_residual("linear_add", x, w, residual);
  const int64_t N = w.size(0), K = w.size(1), R = linear_rows(x);
  const Tensor X = detail::dense(x).view({R, K}), W = detail::dense(w);
  Tensor out = Tensor::empty(linear_shape(x, w), x.options());
  TESSERA_KERNEL(x, linear_forward)(out.view({R, N}), X, W, dense_or_none(bias),
                                    detail::dense(residual).view({R, N}));
  return record_residual(residual, record_linear(x, w, bias, out, X, W));
}

Tensor linear_padded(const Tensor& x, const Tensor& w, int64_t columns) {
  check_linear("linear_padded", x, w, Tensor());
  const int64_t V = w.size(0), K = w.size(1), R = linear_rows(x);
  TESSERA_CHECK(columns >= V, "linear_padded: ", columns, " output columns cannot hold the ", V,
                " rows of weight ", shape_str(w.shape()));
  Shape shape = linear_shape(x, w);
  shape.back() = columns;
  const Tensor X = detail::dense(x).view({R, K}), W = detail::dense(w);
  Tensor out = Tensor::empty(shape, x.options());
  const Tensor O = out.view({R, columns});
  if (columns == V || x.device().is_cpu()) {
    // The product into the first V columns of each row (rows `columns` apart), zeros after: on
    // the CPU the values and gradients of linear's, bit for bit.
    TESSERA_KERNEL(x, gemm)(O.narrow(1, 0, V), X, W, false, true, 1.0, 0.0);
    if (columns > V) O.narrow(1, V, columns - V).fill_(0.0);
    return record_linear(x, w, Tensor(), out, X, W);  // the padding's gradient dropped
  }
  // On a GPU, the product over the padded width, its columns past V zeros: W with zero rows
  // after its V. An odd V (GPT-2's 50257) as a gemm's contiguous dimension keeps cuBLASLt off its
  // 16-byte kernels: measured on an H200 (docs/gpu-notes.md, 2026-12-04), the (8192, 768) x
  // (768, 50257) product and its dx gemm ran at ~95 and ~130 TFLOP/s against ~500 for the
  // weight's gradient, whose contiguous dimension is K. One copy of W per forward (V K elements)
  // buys both gemms their aligned width; the weight's gradient still reads dy's first V columns,
  // and dx takes dy's padding times zero rows (dropped, as on the CPU, for a finite dy).
  Tensor W_padded = Tensor::empty({columns, K}, W.options());
  W_padded.narrow(0, 0, V).copy_(W);
  W_padded.narrow(0, V, columns - V).fill_(0.0);
  TESSERA_KERNEL(x, gemm)(O, X, W_padded, false, true, 1.0, 0.0);
  return record_linear(x, w, Tensor(), out, X, W, Tensor(), W_padded);  // padding: no gradient
}

Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_linear("linear_gelu", x, w, bias);
  TESSERA_CHECK(bias.defined(), "linear_gelu: the bias is required (use gelu(linear(x, w)))");
  const int64_t N = w.size(0), K = w.size(1), R = linear_rows(x);
  const Tensor X = detail::dense(x).view({R, K}), W = detail::dense(w);
  Tensor pre = Tensor::empty(linear_shape(x, w), x.options());
  Tensor y = Tensor::empty(pre.shape(), x.options());
  TESSERA_KERNEL(x, linear_gelu_forward)(y.view({R, N}), pre.view({R, N}), X, W,
                                         detail::dense(bias));
  return detail::record_gelu(record_linear(x, w, bias, pre, X, W), pre, y);
}

Tensor mlp_gelu(const Tensor& x, const Tensor& fc_w, const Tensor& fc_b, const Tensor& proj_w,
                const Tensor& proj_b, const Tensor& residual) {
  check_linear("mlp_gelu", x, fc_w, fc_b);
  TESSERA_CHECK(fc_b.defined() && proj_b.defined(), "mlp_gelu: both biases are required");
  const int64_t H = fc_w.size(0), K = fc_w.size(1), R = linear_rows(x);
  const Tensor X = detail::dense(x).view({R, K}), Wfc = detail::dense(fc_w);
  Tensor pre = Tensor::empty(linear_shape(x, fc_w), x.options());
  check_linear("mlp_gelu", pre, proj_w, proj_b);
  Tensor h = Tensor::empty(pre.shape(), x.options());
  const Tensor P = pre.view({R, H}), Hm = h.view({R, H}), Wp = detail::dense(proj_w);
  TESSERA_KERNEL(x, linear_gelu_forward)(Hm, P, X, Wfc, detail::dense(fc_b));
  const Tensor pre_out = record_linear(x, fc_w, fc_b, pre, X, Wfc);  // the graph's pre-activation
  if (residual.defined()) check_residual("mlp_gelu", pre, proj_w, residual);
  const int64_t N = proj_w.size(0);
  Tensor out = Tensor::empty(linear_shape(pre, proj_w), x.options());
  TESSERA_KERNEL(x, linear_forward)(out.view({R, N}), Hm, Wp, detail::dense(proj_b),
                                    residual.defined() ? detail::dense(residual).view({R, N})
                                                       : Tensor());
  // The second Linear's product node takes the pre-activation as its input: GELU has no node.
  const Tensor y = record_linear(pre_out, proj_w, proj_b, out, Hm, Wp, P);
  return residual.defined() ? record_residual(residual, y) : y;
}

}  // namespace tessera::ops
