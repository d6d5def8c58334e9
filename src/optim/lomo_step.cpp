// LomoStep: see lomo_step.h.
#include "optim/lomo_step.h"

#include <chrono>

#include "autograd/autograd.h"
#include "ops/ops.h"

namespace tessera {

LomoStep::LomoStep(std::vector<NamedParam> params, LomoOptions options, dist::Communicator& comm) {
  if (comm.world() > 1)
    for (const NamedParam& p : params)
      register_grad_hook(p.param, [&comm, seconds = comm_seconds_](Tensor& param) {
        const Tensor& g = param.grad();
        if (!g.defined()) return;
        const auto t0 = std::chrono::steady_clock::now();
        comm.all_reduce(g, dist::ReduceOp::Average);  // nothing overlaps it: all of it is waiting
        *seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      });
  fused_ = std::make_unique<FusedOptimizer>(std::move(params), options);
}

void LomoStep::backward(const Tensor& loss, bool) {
  TESSERA_CHECK(!loss_.defined(), "optim.name ", name(),
                ": one micro-batch per step (the update runs inside backward)");
  // The loss scaled here, the gradients divided by the same factor in the update's kernels
  // (optim/lomo.h): the option's f16-style contract, with the scale an exact power of two when the
  // user picks one.
  const double scale = fused_->options().loss_scale;
  loss_ = scale == 1.0 ? loss : ops::scale(loss, scale);
}

std::optional<double> LomoStep::grad_norm() {
  if (!norm_ && fused_->options().max_norm > 0) norm_ = fused_->grad_norm(loss_);
  return norm_;
}

double LomoStep::step(double lr) {
  const double norm =
      norm_ ? fused_->apply(loss_, lr, fused_->clip_coef(*norm_)) : fused_->apply(loss_, lr);
  zero_grad();
  return norm;
}

void LomoStep::zero_grad() {
  loss_ = Tensor();  // releases the graph
  norm_.reset();
}

std::vector<StateTensor> LomoStep::state() {
  std::vector<StateTensor> out;
  for (auto& [key, t] : fused_->state()) out.push_back({key, [t] { return t; }});
  return out;
}

void LomoStep::load_state(const std::vector<std::pair<std::string, Tensor>>& entries,
                          const std::string& path) {
  try {
    fused_->load_state(entries);
  } catch (const Error& e) {
    TESSERA_FAIL("checkpoint ", path, ": ", e.what(), " (resume with the optimizer it was saved ",
                 "with; --init takes the weights alone)");
  }
}

int64_t LomoStep::state_bytes() const {
  int64_t n = 0;
  for (const auto& [key, t] : fused_->state()) n += int64_t(t.nbytes());
  return n;
}

}  // namespace tessera
