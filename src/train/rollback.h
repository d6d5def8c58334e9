// Loss-spike rollback, the file side: which checkpoint a spike returns to, which files go.
//
//   std::optional<RollbackTarget> t =
//       agree_rollback_target(comm, run_dir, step, spike.rollback_steps, warn);  // every rank
//   remove_checkpoints_after(run_dir, t->step, log);   // rank 0 only, once every rank has loaded t
//
// The target is the newest checkpoint at or before step - rollback_steps (step: the last step
// done; the spike is at step + 1) that lies on the run's trajectory and loads completely. A
// checkpoint off the trajectory (run_state.h, Lineage: a step of the branch the run left when it
// resumed from an older checkpoint or rolled back, or another run's file in the directory) is
// passed over with a warning: its weights were never this run's. Damaged files are passed over
// with a warning too; a file that cannot be read at all,
// CheckpointUnreadable, stops the run as it stops a resume: nothing says its bytes are bad, and
// going further back would discard its steps). Checkpoints after it belong to the abandoned
// trajectory: resuming from one would replay into the spike, so they are deleted. What the loop
// does around it (skipping the data, the LR factor, the history) is trainer.cpp's.
//
// Ranks. Rank 0 chooses from its run directory, and every rank rolls back to that step or none
// does: each reads that step's file from its own run_dir (the same file where checkpoint.dir is
// shared) and the ranks compare what they read (checkpoint_crc). A rank that cannot load it (a
// checkpoint.dir that is not shared, an I/O error on one node) or holds another file stops every
// rank, naming itself and the file: ranks that went back to different steps would train different
// models side by side, silently.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "checkpoint/retention.h"
#include "distributed/communicator.h"
#include "train/run_state.h"

namespace tessera::train {

struct RollbackTarget {
  int64_t step = 0;
  Resumable file;
};

std::optional<RollbackTarget> rollback_target(const std::string& run_dir, int64_t step,
                                              int64_t rollback_steps, const Lineage& lineage,
                                              std::ostream& warn);
// Every rank calls it at the same point (collectives); `warn` is rank 0's log. nullopt on every
// rank when rank 0 finds no target.
std::optional<RollbackTarget> agree_rollback_target(dist::Communicator& comm,
                                                    const std::string& run_dir, int64_t step,
                                                    int64_t rollback_steps, const Lineage& lineage,
                                                    std::ostream& warn);

// A random segment id (Lineage), in [1, 2^52): rank 0's draw, on every rank (a collective).
int64_t agreed_segment_id(dist::Communicator& comm);
void remove_checkpoints_after(const std::string& run_dir, int64_t step, std::ostream& log);

}  // namespace tessera::train
