// An exponential moving average of the weights while training (train.ema_decay): after every
// update, ema <- decay ema + (1 - decay) w, in f32 beside the weights on their device, from the
// run's first weights on (Polyak and Juditsky 1992; for language-model pre-training, Sanyal et al.
// 2023, arXiv:2306.03241, and Morales-Brotons et al. 2024, arXiv:2411.18704). Each evaluation
// also scores the weights it holds (val_loss_ema); a checkpoint keeps it as trainer tensors
// ema/<name> (/trainer/ema/<name>), so a resumed or rolled-back run continues it bit for bit; and
// `average --ema` writes it as a checkpoint of its own that eval, generate and export read.
//
//   WeightEma ema(params, 0.999);          // starts at the weights
//   opt.step(lr);  ema.update();           // after each update
//   ValidationLoss v = ema.with_weights([&] { return evaluate_windows(model, ...); });
//   ema.put(ck);                           // saving;  ema.take(ck, path) restoring
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "optim/flat.h"
#include "optim/param.h"

namespace tessera::train {

class WeightEma {
 public:
  // flat: the buffer params live in (optim/flat.h), when they do: the average is then one f32
  // buffer of its layout, updated in one pass over all of it (after an f32 copy of bf16 weights);
  // else a tensor a parameter (LOMO), a pass each. The same values either way.
  WeightEma(std::vector<NamedParam> params, double decay, const FlatParams* flat = nullptr);
  void update();
  // Starts again at the weights (a checkpoint that holds no average: restore's fallback).
  void restart();

  // f() run with the average's values in the weights (converted to their dtype), the weights put
  // back afterwards, also when f throws.
  template <class F>
  auto with_weights(F&& f) {
    std::vector<Tensor> held = swap_in();
    try {
      auto result = f();
      swap_out(held);
      return result;
    } catch (...) {
      swap_out(held);
      throw;
    }
  }

  // The average as ck's trainer tensors ema/<name>.
  void put(CheckpointData& ck) const;
  // The average ck holds into this one: false, and nothing changed, when it holds none (a run
  // without train.ema_decay wrote it); every tensor checked before any is taken, a missing or
  // misshapen one an error naming it and path.
  bool take(const CheckpointData& ck, const std::string& path);

 private:
  std::vector<Tensor> swap_in();
  void swap_out(const std::vector<Tensor>& held);
  Tensor average(size_t i) const;  // parameter i's average (a view of the flat one, or its own)

  std::vector<NamedParam> params_;
  const FlatParams* flat_;
  std::vector<int64_t> offsets_;  // flat_: each parameter's offset in it
  std::vector<Tensor> ema_;       // f32, on the weights' device: the flat average alone, or one
                                  // a parameter
  double decay_;
};

// The average a checkpoint holds, as (parameter name, tensor) pairs in the order it was saved; an
// error naming path where it holds none.
std::vector<std::pair<std::string, Tensor>> ema_weights(const CheckpointData& ck,
                                                        const std::string& path);

}  // namespace tessera::train
