// layernorm and rmsnorm over the last dimension. x (..., C) is handed to the kernels as is: they
// treat every leading dimension as rows. The formulas, forward and backward, are in
// src/backend/cpu/norm.cpp; mean and rstd are saved so backward does not recompute the statistics.
// The input's gradient is added into the one accumulated so far (GradSink::add_into): a residual
// stream's gradient (x feeds the norm and the residual add) takes the norm's contribution in the
// kernel that computes it, with no separate add over (N, C) (and the same bits as one).
#include "ops/norm.h"

#include <functional>
#include <string>

#include "ops/util.h"

namespace tessera::ops {
namespace {

// x (..., C) with C > 0: the kernels divide by C and take rows = numel / C.
void check_input(const char* op, const Tensor& x) {
  TESSERA_CHECK(x.dim() >= 1 && x.size(-1) > 0, op,
                ": x must have a non-empty last dimension, got ", shape_str(x.shape()));
}

// A per-channel parameter must be (C), C the last dimension of x.
void check_param(const char* op, const char* name, const Tensor& x, const Tensor& p) {
  const std::string want = shape_str({x.size(-1)});
  TESSERA_CHECK(p.defined(), op, ": ", name, " is undefined (expected ", want, " for x ",
                shape_str(x.shape()), ")");
  TESSERA_CHECK(p.dim() == 1 && p.size(0) == x.size(-1), op, ": ", name, " ",
                shape_str(p.shape()), " does not match x ", shape_str(x.shape()), " (", name,
                " must be ", want, ", the last dimension of x)");
}

// Saved row statistics are f32 when x is bf16 (the mixed-precision policy: 8 bits of mantissa would
// cost the backward its accuracy); otherwise x's dtype, as the CPU reference keeps them.
Options stat_options(const Tensor& x) {
  return x.dtype() == DType::BF16 ? Options(DType::F32, x.device()) : x.options();
}

// Runs a norm's backward kernel `run(dx, zero)`, which also adds the weight gradients to g: into
// x's accumulated gradient when x wants one (add_into; zero: dx holds zeros), else into a scratch dx.
void input_grad_into(GradSink& g, const Tensor& x, std::function<void(Tensor&, bool)> run) {
  if (g.needs(0)) {
    g.add_into(0, x.dtype(), std::move(run), {.overwrites = true});  // written whole when zero
  } else {
    Tensor scratch = Tensor::empty(x.shape(), x.options());
    run(scratch, true);
  }
}

}  // namespace

Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_input("layernorm", x);
  check_param("layernorm", "weight", x, weight);
  check_param("layernorm", "bias", x, bias);
  detail::check_compatible("layernorm", {&x, &weight, &bias});
  const int64_t N = x.numel() / x.size(-1);
  Tensor X = detail::dense(x), W = detail::dense(weight);
  Tensor y = Tensor::empty(x.shape(), x.options());
  Tensor mean = Tensor::empty({N}, stat_options(x)), rstd = Tensor::empty({N}, stat_options(x));
  TESSERA_KERNEL(x, layernorm_forward)(y, mean, rstd, X, W, detail::dense(bias), eps);
  return record("layernorm", y, {x, weight, bias},
                [X, W, mean, rstd](const Tensor& dy, GradSink& g) {
                  input_grad_into(g, X, [&g, dy, X, W, mean, rstd](Tensor& dx, bool zero) {
                    Tensor dw = Tensor::empty(W.shape(), W.options());
                    Tensor db = Tensor::empty(W.shape(), W.options());
                    TESSERA_KERNEL(dy, layernorm_backward)(dx, dw, db, dy, X, W, mean, rstd,
                                                           !zero);
                    g.add(1, dw);
                    g.add(2, db);
                  });
                });
}

Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps) {
  check_input("rmsnorm", x);
  check_param("rmsnorm", "weight", x, weight);
  detail::check_compatible("rmsnorm", {&x, &weight});
  const int64_t N = x.numel() / x.size(-1);
  Tensor X = detail::dense(x), W = detail::dense(weight);
  Tensor y = Tensor::empty(x.shape(), x.options());
  Tensor rstd = Tensor::empty({N}, stat_options(x));
  TESSERA_KERNEL(x, rmsnorm_forward)(y, rstd, X, W, eps);
  return record("rmsnorm", y, {x, weight}, [X, W, rstd](const Tensor& dy, GradSink& g) {
    input_grad_into(g, X, [&g, dy, X, W, rstd](Tensor& dx, bool zero) {
      Tensor dw = Tensor::empty(W.shape(), W.options());
      TESSERA_KERNEL(dy, rmsnorm_backward)(dx, dw, dy, X, W, rstd, !zero);
      g.add(1, dw);
    });
  });
}

}  // namespace tessera::ops
