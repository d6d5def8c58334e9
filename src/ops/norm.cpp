// layernorm and rmsnorm over the last dimension. x (..., C) is handed to the kernels as is: they
// treat every leading dimension as rows. The formulas, forward and backward, are in
// src/backend/cpu/norm.cpp; mean and rstd are saved so backward does not recompute the statistics.
// The gradients are added into the ones accumulated so far (GradSink::add_into): a residual
// stream's gradient (x feeds the norm and the residual add) takes the norm's contribution in the
// kernel that computes it, with no separate add over (N, C) (and the same bits as one), and the
// weight's and bias's sums go straight into their gradient buffers.
#include "ops/norm.h"

#include <functional>
#include <string>
#include <vector>

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

// Runs a norm's backward kernel `run(into)` with its gradients' accumulators (GradSink::add_into):
// into[0] x's (the residual stream's gradient so far: the kernel adds dx into it), into[1] and
// into[2] the weight's and the bias's (a bf16 weight's f32 gradient buffer when it has one: its sum
// goes there unrounded, with no copy). An input that takes no gradient gets scratch memory: the
// kernel writes all of its outputs.
void grads_into(GradSink& g, const Tensor& x, const std::vector<Tensor>& params,
                std::function<void(const std::vector<Into>&)> run) {
  std::vector<IntoTarget> targets{{0, x.dtype(), {.overwrites = true}}};  // written whole when zero
  for (size_t i = 0; i < params.size(); ++i)
    targets.push_back(
        {i + 1, params[i].dtype(),
         {.also = detail::f32_buffer_of(params[i].dtype()), .overwrites = true}});
  g.add_into(std::move(targets), [x, params, run](std::vector<Into>& into) {
    for (size_t i = 0; i < into.size(); ++i)
      if (!into[i].acc.defined()) {
        const Tensor& like = i == 0 ? x : params[i - 1];
        into[i] = {Tensor::empty(like.shape(), like.options()), true};
      }
    run(into);
  });
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
                  grads_into(g, X, {W, W}, [dy, X, W, mean, rstd](const std::vector<Into>& in) {
                    TESSERA_KERNEL(dy, layernorm_backward)(
                        in[0].acc, in[1].acc, in[2].acc, dy, X, W, mean, rstd,
                        {.dx = !in[0].zero, .dw = !in[1].zero, .db = !in[2].zero});
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
    grads_into(g, X, {W}, [dy, X, W, rstd](const std::vector<Into>& in) {
      TESSERA_KERNEL(dy, rmsnorm_backward)(in[0].acc, in[1].acc, dy, X, W, rstd,
                                           {.dx = !in[0].zero, .dw = !in[1].zero});
    });
  });
}

}  // namespace tessera::ops
