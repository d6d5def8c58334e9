// Checkpoint averaging: the mean of the weights of several checkpoints of one model, as a
// weights-only checkpoint that eval, generate and --init read like any other. Averaging the
// checkpoints along a run (stochastic weight averaging, Izmailov et al. 2018, arXiv:1803.05407;
// over a stable learning rate, an alternative to a cooldown: Hagele et al. 2024,
// arXiv:2405.18392, section 4) or the fine-tunes of one base (model soups, Wortsman et al. 2022).
//
//   Averaged a = average_checkpoints({"ck/step_00001200.h5", "ck/step_00001400.h5"});
//   write_checkpoint_dir(out, checkpoint_name(a.step), a.data);   // train/output_dir.h
//
// The models must be the same (config/config.h model_difference: every key but dropout); a LoRA
// checkpoint is refused (merge it into its base first), as is a checkpoint given twice.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"

namespace tessera::train {

struct Averaged {
  CheckpointData data;             // /model: the means; the config and step of the newest input
  int64_t step = 0;                // the largest step of the inputs
  std::vector<std::string> paths;  // the files read (run directories resolved), in order
  std::vector<int64_t> steps;      // their steps
};

// checkpoints: files, run directories or .../latest, at least two. The sums run in double, a
// parameter at a time, then round once to f32: the mean of two copies of one checkpoint is that
// checkpoint, bit for bit.
Averaged average_checkpoints(const std::vector<std::string>& checkpoints);

// The moving average of the weights one checkpoint's run kept (train.ema_decay, train/ema.h), as
// such a weights-only checkpoint with that checkpoint's step and config; an error naming the file
// where it holds none, or where its tensors are not the model's.
Averaged ema_checkpoint(const std::string& checkpoint);

}  // namespace tessera::train
