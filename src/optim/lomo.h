// LOMO and AdaLomo: optimizers fused into backward. Each parameter is updated inside its
// gradient-ready hook (autograd/autograd.h) and its gradient is freed there, so gradients do not
// pile up: at any moment only those of the op being differentiated exist (plus a tied embedding's,
// which waits for its second contribution), not one per parameter, and there is no optimizer
// state beyond AdaLomo's factored second moment.
//
//   FusedOptimizer opt(named_params(model.parameters()), {.name = "adalomo", .max_norm = 1.0});
//   for (int64_t step = 0; step < max_steps; ++step) {
//     Tensor loss = model.loss(x, y);
//     double norm = opt.backward_step(loss, lr_at(schedule, step));  // no zero_grad, no step()
//   }
//   // Or look at the norm before anything is applied (spike detection), then apply or skip:
//   double norm = opt.grad_norm(loss);                                   // pass 1
//   if (std::isfinite(norm)) opt.apply(loss, lr, opt.clip_coef(norm));   // pass 2
//
// Every gradient g a hook sees is first brought to
//   G = clamp(g / loss_scale, -clip_value, clip_value) * clip_coef
// (no clamp when clip_value = 0; clip_coef = 1 without norm clipping). Then:
//
// LOMO (Lv et al. 2023, "Full Parameter Fine-tuning for Large Language Models with Limited
// Resources"): SGD with decoupled weight decay,
//   p = p * (1 - lr * wd) - lr * G
//
// AdaLomo (Lv et al. 2023, "AdaLomo: Low-memory Optimization with Adaptive Learning Rate",
// Algorithm 1; the factored second moment and update clipping are Adafactor's, Shazeer & Stern
// 2018), at step t = 1, 2, ... (one count per apply(), shared by all parameters):
//   beta2_t = 1 - t^-0.8,  u = G^2 + 1e-30
//   matrix (dim >= 2, seen as rows = size(0) by cols = numel / rows):
//     R = beta2_t R + (1 - beta2_t) mean_over_cols(u)        (rows)
//     C = beta2_t C + (1 - beta2_t) mean_over_rows(u)        (cols)
//     U[i,j] = G[i,j] * rsqrt(R[i] / mean(R)) * rsqrt(C[j])
//   vector (dim < 2):
//     v = beta2_t v + (1 - beta2_t) u,  U = G / sqrt(v)
//   U = U / max(1, RMS(U))                  update clipping, threshold 1
//   eta = lr * max(1e-3, RMS(p))            relative step size; p before this update
//   p = p * (1 - eta * wd) - eta * U
// Weight decay applies to tensors with dim() >= 2 only, as in AdamW.
//
// Clipping by global norm needs the norm before the first update, so max_norm > 0 costs a second
// backward (the papers' two passes): pass 1 (grad_norm, retain_graph) sums each gradient's squares
// in its hook and frees it; pass 2 (apply) updates with clip_coef = max_norm / (norm + 1e-6) when
// norm > max_norm, else 1 (optim/clip.cpp's rule). The norm is that of g / loss_scale before any
// clipping, summed per parameter in double and added up in parameter order: bit-equal to
// clip_grad_norm's over the same gradients, whatever order the hooks fire in. A non-finite norm
// makes backward_step skip pass 2 (nothing applied; the caller sees the norm). With max_norm = 0
// there is one pass and updates are applied as the gradients arrive, so the norm apply() returns
// comes too late to veto them.
//
// Invariants. Hooks act only during this optimizer's own passes: a plain backward elsewhere
// accumulates gradients as usual, and a pass refuses to start while a parameter holds a gradient
// (LOMO cannot accumulate; it would mix a stale gradient into the update). The engine fires a
// hook once per backward, after the parameter's last contribution, so a tied embedding gets one
// update with its whole gradient; and backward never reads a parameter after its hook, since
// every op that used it has been differentiated by then. Hooks run in registration order and this
// one drops the gradient, so a hook that must see it (a data-parallel all-reduce) is registered
// before the optimizer is built. The hooks hold the optimizer weakly and do nothing once it is
// destroyed (register_grad_hook cannot unregister them).
//
// Precision, as AdamW: f32 parameters are updated in place in f32; bf16 parameters through an f32
// master copy, rounded into the parameter after each update; f64 parameters (tests) in double.
// AdaLomo's R, C, v are f32 (f64 for f64 parameters). Sums (norms, means, RMS) accumulate in
// double over fixed blocks, so no result depends on the thread count.
//
// Devices. The parameters share one device, CPU or CUDA (train.device cuda: bf16 weights with f32
// masters). The updates go through the kernel table (lomo_grad_sum_squares, lomo_step,
// adalomo_step in backend/kernels.h), so the hooks hold no element loop: on CUDA a hook only
// launches kernels, every sum stays on the device (each gradient's squares in its slot of an f64
// buffer; RMS(p), RMS(U) and the step size inside adalomo_step), and the norm is read back once
// per pass, not once per parameter. A gradient is freed in its hook on either device (on CUDA its
// block returns to the caching allocator, reusable by the next op on the same stream).
//
// Checkpoints: state() lists "<name>/row", "<name>/col" (AdaLomo, matrices), "<name>/v" (AdaLomo,
// vectors) and "<name>/master" (bf16 parameters), aliases of the live tensors, in the form
// CheckpointData::optimizer takes; step_count() is t. load_state() and set_step_count() put them
// back, after which the next step is bit-identical to the uninterrupted run's.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "optim/param.h"

namespace tessera {

struct LomoOptions {
  std::string name = "lomo";  // lomo | adalomo
  double weight_decay = 0.0;  // decoupled, matrices only
  double clip_value = 0.0;    // clamp each gradient element to [-clip_value, clip_value]; 0 = off
  double loss_scale = 1.0;    // the loss was multiplied by this; gradients are divided by it
  double max_norm = 0.0;      // > 0: clip by global norm, at the price of a second backward
};

class FusedOptimizer {
 public:
  // Names unique and non-empty; parameters distinct leaves on one device that require a gradient,
  // contiguous, f32, f64 or bf16. Registers one hook per parameter and allocates the state there.
  FusedOptimizer(std::vector<NamedParam> params, LomoOptions opt = {});
  FusedOptimizer(const FusedOptimizer&) = delete;
  FusedOptimizer& operator=(const FusedOptimizer&) = delete;

  // One optimizer step from a scalar loss: grad_norm + apply when max_norm > 0, apply alone
  // otherwise. Returns the global norm of g / loss_scale before clipping. Frees every gradient.
  double backward_step(const Tensor& loss, double lr);
  // Pass 1: backward with retain_graph, each gradient's squares summed and the gradient freed;
  // nothing is applied. loss's graph stays alive for apply().
  double grad_norm(const Tensor& loss);
  // The update pass (consumes loss's graph): t += 1, then every parameter that gets a gradient is
  // updated in its hook with this clip_coef. Returns the pre-clip norm of this pass's gradients.
  double apply(const Tensor& loss, double lr, double clip_coef = 1.0);
  // The coefficient apply() should get after grad_norm() returned norm (1 without max_norm).
  double clip_coef(double norm) const;

  // Largest sum of bytes of this optimizer's parameter gradients alive at once during the last
  // pass, sampled at every hook (the moments right after an op's backward delivered its gradients).
  int64_t peak_grad_bytes() const;

  const LomoOptions& options() const;
  const std::vector<NamedParam>& params() const;

  // ---- state, for checkpoints ----
  int64_t step_count() const;
  void set_step_count(int64_t t);
  std::vector<std::pair<std::string, Tensor>> state() const;  // aliases, in parameter order
  // Copies each entry into the state (any floating dtype, converted; bit-exact from the state's own
  // dtype). Every key of state() is required; unknown or duplicate keys and wrong shapes are errors
  // naming the key (and both shapes). A bf16 parameter also receives its rounded master.
  void load_state(const std::vector<std::pair<std::string, Tensor>>& entries);

 private:
  struct Core;                  // options, parameters, state and the current pass (lomo.cpp)
  std::shared_ptr<Core> core_;  // the hooks hold it weakly
};

}  // namespace tessera
