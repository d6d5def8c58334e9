// Gradient norm clipping over all parameters at once (global L2 norm, as torch.nn.utils.
// clip_grad_norm_ and llm.c do).
//
//   double norm = clip_grad_norm(params, 1.0);   // rescales the grads when norm > 1.0
//   if (!std::isfinite(norm)) { /* a spike: skip the update, roll back, ... */ }
//   metrics.grad_norm = norm;                    // the norm before clipping
//
// norm = sqrt(sum over parameters with a defined gradient, sum over elements of g^2), accumulated
// in double whatever the gradient's dtype (an f32 sum of squares over 10^8 elements loses digits,
// and squares of large f32 values overflow f32). When max_norm > 0 and norm > max_norm every
// gradient is multiplied by max_norm / (norm + 1e-6) (PyTorch's coefficient; the 1e-6 keeps the
// result just under max_norm). A NaN or infinite norm is returned without touching the gradients,
// so the caller sees the spike and decides.
#pragma once

#include <vector>

#include "optim/param.h"

namespace tessera {

double grad_norm(const std::vector<NamedParam>& params);
double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm);
// The second half of clip_grad_norm, for a caller that inspected the norm first (the spike
// detector): rescales the gradients as clip_grad_norm would for this norm.
void clip_grads(const std::vector<NamedParam>& params, double norm, double max_norm);

// The pieces behind them, for flat gradient buffers and their shards (optim/flat_adamw.h):
// each tensor's sum of squares in double (0 for an undefined or empty one), read back from each
// device in one transfer; and their sum, added in the order given;
std::vector<double> sums_of_squares(const std::vector<Tensor>& pieces);
double sum_of_squares(const std::vector<Tensor>& pieces);
// max_norm / (norm + 1e-6) when clipping is due, else 1 (adamw_step_flat's grad_scale).
double clip_coefficient(double norm, double max_norm);

}  // namespace tessera
