// The optimizer as the training loop sees it: AdamW over flat buffers (optim/flat_adamw.h) and
// LOMO/AdaLomo fused into backward (optim/lomo_step.h) behind one interface, so the loop never
// asks which one it holds.
//
//   std::unique_ptr<Optimizer> opt = make_optimizer(...);          // train/build.cpp
//   for (micro = 0; micro < accum; ++micro) opt->backward(loss_m / accum, micro == accum - 1);
//   std::optional<double> norm = opt->grad_norm();   // global, before any update (spike check)
//   if (spike) opt->zero_grad(); else reported = opt->step(lr);
//
// One step is backward() per micro-batch, then grad_norm(), then step() or zero_grad(). An
// optimizer that cannot accumulate (LOMO: the update happens inside backward) takes one micro-batch
// per step; the trainer refuses a config that accumulates with one before it builds anything.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tessera {

// One /optimizer/<key> dataset of a checkpoint. get() may run collectives (a ZeRO shard gathered
// to rank 0), so every rank calls the getters of state() in the same order and rank 0 writes what
// they return.
struct StateTensor {
  std::string key;  // "<parameter name>/m"
  std::function<Tensor()> get;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  virtual std::string name() const = 0;  // adamw | lomo | adalomo

  // Backpropagates one micro-batch's loss (already divided by the micro-batch count). `last`
  // marks the step's last micro-batch: data-parallel gradient sync runs during that backward.
  virtual void backward(const Tensor& loss, bool last) = 0;
  // The global L2 norm of the step's gradients before clipping, the same on every rank; nullopt
  // when it cannot be known before the update (LOMO/AdaLomo without norm clipping).
  virtual std::optional<double> grad_norm() = 0;
  // Applies the update at lr (gradients clipped to the configured global norm) and returns the
  // norm to report. Gradients are zero afterwards.
  virtual double step(double lr) = 0;
  // Drops this step's gradients (a spike): nothing is applied.
  virtual void zero_grad() = 0;

  // ---- state, for checkpoints ----
  virtual int64_t step_count() const = 0;
  virtual void set_step_count(int64_t t) = 0;
  virtual std::vector<StateTensor> state() = 0;  // in parameter order
  // From the /optimizer entries of a checkpoint (path names it in errors). Checks every entry
  // before changing anything.
  virtual void load_state(const std::vector<std::pair<std::string, Tensor>>& entries,
                          const std::string& path) = 0;
  virtual int64_t state_bytes() const = 0;  // what this rank holds (ZeRO: about 1/world)

  // Seconds spent waiting for gradient communication that backward did not hide (0 on one rank).
  virtual double comm_wait_seconds() const { return 0.0; }
};

}  // namespace tessera
