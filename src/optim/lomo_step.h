// LOMO and AdaLomo (optim/lomo.h) behind the Optimizer interface, data-parallel when world > 1.
//
// The update runs inside backward, one parameter at a time, so there is nothing to accumulate:
// one micro-batch per step (the trainer refuses more). backward() keeps the loss; grad_norm() runs
// the update-free first pass when norm clipping is on (nullopt otherwise); step() runs the pass
// that updates.
//
// Several ranks: each parameter's gradient is all-reduced (average) inside its gradient-ready
// hook, registered before the fused optimizer's own hook, so every rank applies the same update.
// The cost: the all-reduces are synchronous, one per parameter and per pass (two passes with norm
// clipping), and nothing overlaps them; LOMO's point is memory, not speed. AdamW with buckets is
// the data-parallel optimizer to reach for when speed matters.
#pragma once

#include <memory>

#include "distributed/communicator.h"
#include "optim/lomo.h"
#include "optim/optimizer.h"

namespace tessera {

class LomoStep : public Optimizer {
 public:
  LomoStep(std::vector<NamedParam> params, LomoOptions options, dist::Communicator& comm);

  std::string name() const override { return fused_->options().name; }
  void backward(const Tensor& loss, bool last) override;
  std::optional<double> grad_norm() override;
  double step(double lr) override;
  void zero_grad() override;

  int64_t step_count() const override { return fused_->step_count(); }
  void set_step_count(int64_t t) override { fused_->set_step_count(t); }
  std::vector<StateTensor> state() override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& entries,
                  const std::string& path) override;
  int64_t state_bytes() const override;
  double comm_wait_seconds() const override { return *comm_seconds_; }

  FusedOptimizer& fused() { return *fused_; }

 private:
  std::unique_ptr<FusedOptimizer> fused_;
  Tensor loss_;
  std::optional<double> norm_;
  std::shared_ptr<double> comm_seconds_ = std::make_shared<double>(0.0);  // the hooks add to it
};

}  // namespace tessera
