// AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019), in PyTorch's order.
//
//   AdamW opt(named_params(model.parameters()), {.lr = 6e-4, .weight_decay = 0.1});
//   for (int64_t step = 0; step < max_steps; ++step) {
//     opt.zero_grad();
//     model.loss(x, y).backward();
//     clip_grad_norm(opt.params(), 1.0);         // optim/clip.h
//     opt.step(lr_at(schedule, step));           // optim/schedule.h
//   }
//
// One step, t += 1, then for every parameter p whose gradient g is defined (PyTorch's
// torch.optim.AdamW, decay first):
//   p = p * (1 - lr * wd)                      (only tensors with dim() >= 2: matrices, embeddings)
//   m = b1 m + (1 - b1) g
//   v = b2 v + (1 - b2) g^2
//   p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// Biases and norm gains are not decayed (GPT-2 / llm.c practice: decay on 2-D tensors only).
//
// Precision. The moments m, v and the master weights the update runs on are f32; for an f32
// parameter the master IS the parameter (no second copy); for a bf16 parameter the master is a
// separate f32 tensor and the parameter receives the rounded result after every step, so updates
// smaller than a bf16 ulp accumulate instead of vanishing. f64 parameters (tests) keep f64 state
// and compute in double.
//
// The step count t is shared by all parameters (PyTorch keeps one per parameter). They differ only
// for a parameter that misses a gradient on some steps: its bias correction then assumes more
// updates than its moments received. Training a language model gives every parameter a gradient
// on every step.
//
// Checkpoints: state() lists {name, m, v, master} per parameter (aliases of the live tensors),
// step_count() the t of the last step; load_state() and set_step_count() put them back, after
// which the next step is bit-identical to the uninterrupted run's. load_state() checks everything
// before it copies anything, so a bad checkpoint leaves the optimizer as it was.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"
#include "optim/param.h"

namespace tessera {

struct AdamWOptions {
  double lr = 1e-3;  // used by step(); step(lr) overrides it (a schedule drives it)
  double beta1 = 0.9;
  double beta2 = 0.95;  // llm.c / GPT-3 value; PyTorch's default is 0.999
  double eps = 1e-8;
  double weight_decay = 0.1;
};

// One parameter's optimizer state, as a checkpoint stores it under /optimizer/<name>/.
struct StateEntry {
  std::string name;
  Tensor m, v;    // first and second moment, the parameter's shape
  Tensor master;  // the weights the update runs on; may be left undefined for load_state
};

class AdamW {
 public:
  // Names must be unique and non-empty; parameters contiguous, floating (f32, f64, bf16) and
  // distinct tensors. State is allocated here, zero moments, on each parameter's device.
  explicit AdamW(std::vector<NamedParam> params, AdamWOptions opt = {});

  void step() { step(opt_.lr); }
  void step(double lr);  // parameters without a gradient are skipped, their state untouched
  void zero_grad();      // drops every parameter's gradient

  bool decays(const std::string& name) const;  // does weight decay apply to this parameter?
  const AdamWOptions& options() const { return opt_; }
  const std::vector<NamedParam>& params() const { return params_; }

  // ---- state, for checkpoints ----
  int64_t step_count() const { return t_; }
  void set_step_count(int64_t t);
  const Tensor& m(const std::string& name) const;
  const Tensor& v(const std::string& name) const;
  const Tensor& master(const std::string& name) const;  // the parameter itself unless bf16
  std::vector<StateEntry> state() const;  // in parameter order; aliases, not copies
  // Copies every entry into the state (dtype converted; bit-exact when it is the state's dtype,
  // f32, or f64 for f64 parameters). Every parameter needs an entry with m and v. A defined master
  // sets the weights (an f32/f64 parameter is its master; a bf16 one gets the rounded master); an
  // undefined one leaves them as they are. Unknown, duplicate or missing names and wrong shapes
  // are errors naming the parameter.
  void load_state(const std::vector<StateEntry>& entries);

 private:
  struct Slot {
    bool decay = false;
    Tensor m, v, master;  // master aliases the parameter unless the parameter is bf16
  };
  const Slot& slot(const std::string& name, const char* what) const;

  AdamWOptions opt_;
  std::vector<NamedParam> params_;
  std::vector<Slot> slots_;  // slots_[i] belongs to params_[i]
  std::unordered_map<std::string, size_t> index_;
  int64_t t_ = 0;
};

}  // namespace tessera
