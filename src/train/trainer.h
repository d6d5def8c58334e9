// The training loop: config -> model + optimizer + loaders -> (forward -> loss -> backward ->
// clip -> update) -> log lines, metrics.jsonl, validation, checkpoints.
//
//   Config cfg = load_config("configs/tiny.yaml");
//   TrainResult r = run_training(cfg, std::cout);   // checkpoints/<run_name>/step_*.h5, latest
//
// Loss spikes (config section spike:) are detected before the update is applied and rolled back
// to the newest earlier checkpoint, skipping the data that caused them; see trainer.cpp and
// docs/checkpoints.md.
//
// One optimizer step = grad_accum_steps micro-batches of (B, T) on each of the world's ranks (a
// launcher's processes: mpirun, srun); each micro-batch's loss is scaled by 1 / grad_accum_steps
// and the ranks' gradients are averaged, so the gradient is the mean over the global batch.
#pragma once

#include <functional>
#include <ostream>
#include <string>

#include "config/config.h"
#include "nn/gpt.h"
#include "train/options.h"  // model_config, lora_options

namespace tessera::dist {
class Communicator;
}

namespace tessera::train {

struct TrainResult {
  int64_t steps = 0;             // optimizer steps completed in total (resumed ones included)
  double last_train_loss = -1;   // mean over the last step's micro-batches; -1 when none ran
  double last_val_loss = -1;     // -1 when never evaluated
  std::string last_checkpoint;   // "" when none was written
  int64_t rollbacks = 0;         // loss spikes handled (rollbacks or skipped updates)
  int stop_signal = 0;           // the signal that stopped the run before its last step, after
                                 // saving it (train/stop_signals.h); 0 when none did
};

TrainResult run_training(const Config& cfg, std::ostream& log);

// Mean loss over the first `windows` windows of sequence length T of the files `pattern` matches
// (over their scored targets: data/loader.h's loss masks)
// (in order; at most all of them, once), in batches of train.batch_size (the last may be
// partial). With a communicator, batch i is evaluated by rank i mod world and the sum is reduced:
// every rank returns the same mean over the same windows, whatever the batch size and world size
// (to f32 rounding). The trainer scores cfg.eval_windows() of data.val.
struct ValidationLoss {
  double loss = 0;      // the mean over the targets scored (a loss mask's 0s are not)
  int64_t windows = 0;  // scored
  int64_t tokens = 0;   // targets scored: windows x T without loss masks
};
ValidationLoss evaluate_windows(const nn::GPT& model, const Config& cfg,
                                const std::string& pattern, int64_t windows,
                                dist::Communicator* comm = nullptr);
// Batches of B of the first n windows of loader (one window a next()), batch i to rank i mod
// world: f(rows) reads this rank's `rows` windows from loader, the other ranks' are skipped. How
// evaluations share their windows (here and train/dpo.h's evaluate_pairs).
void for_each_rank_batch(data::DataLoader& loader, int64_t B, int64_t n, dist::Communicator* comm,
                         const std::function<void(int64_t)>& f);
// The same over the first `batches` whole batches of train.batch_size windows (fewer when the
// files hold fewer: whole batches only, as `eval --batches` counts them).
double evaluate(const nn::GPT& model, const Config& cfg, const std::string& pattern,
                int64_t batches, dist::Communicator* comm = nullptr);

// Sliding-window evaluation (eval --stride): the mean loss over the target tokens evaluate()
// scores (its first `batches` whole batches of windows of T = cfg.sequence_length()), each
// scored once, in a window of T tokens that moves by `stride` in [1, T]: a token then has at least
// T - stride tokens before it in its window (all that precede it in its shard, when fewer) instead
// of only those since its window began. stride = T scores evaluate()'s own windows; a smaller one
// costs about T / stride forward passes as many.
struct StridedLoss {
  double loss = 0;      // mean over the scored tokens
  int64_t tokens = 0;   // target tokens scored
  int64_t windows = 0;  // forward passes' rows
};
StridedLoss evaluate_strided(const nn::GPT& model, const Config& cfg, const std::string& pattern,
                             int64_t batches, int64_t stride);

}  // namespace tessera::train
