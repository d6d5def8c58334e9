// Loss-spike rollback, the file side: which checkpoint a spike returns to, which files go.
//
//   std::optional<Resumable> t = rollback_target(run_dir, step, spike.rollback_steps, warn);
//   remove_checkpoints_after(run_dir, t->step, log);   // rank 0 only, once every rank has loaded t
//
// The target is the newest checkpoint at least rollback_steps before the spiked step that loads
// completely (files that do not load are passed over with a warning). Checkpoints after it belong
// to the abandoned trajectory: resuming from one would replay into the spike, so they are deleted.
// What the loop does around it (skipping the data, the LR factor, the history) is trainer.cpp's.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "checkpoint/retention.h"

namespace tessera::train {

struct RollbackTarget {
  int64_t step = 0;
  Resumable file;
};

std::optional<RollbackTarget> rollback_target(const std::string& run_dir, int64_t step,
                                              int64_t rollback_steps, std::ostream& warn);
void remove_checkpoints_after(const std::string& run_dir, int64_t step, std::ostream& log);

}  // namespace tessera::train
