// What a checkpoint holds about a run besides its weights and optimizer state, and how it is
// written to and read from CheckpointData (/trainer, /rng, /data).
//
//   RunState s = ...;  put_run_state(s, ck);  save_checkpoint(path, ck);
//   RunState back = get_run_state(load_checkpoint(path), path, tokens_per_step, batch_size);
//
//   step, tokens_seen, optimizer_step   /trainer attrs
//   spike windows                        /trainer/spike/{loss,log_norm}_window (f64, oldest first)
//   RunHistory                           /trainer attrs rollbacks, lr_factor_until, skip_ranges,
//                                        skip_<i>_begin/_end (windows)
//   dropout generator                    /rng/default: the run's seed and rank 0's offset (each
//                                        rank draws with dropout_key(seed, rank))
//   data cursor                          /data: seed, epoch, position (windows)
//   world, tokens_per_step               /trainer attrs: the run that wrote it
//   Lineage                              /trainer attrs lineage_segments, lineage_<i>_id/_from
//
// Positions and skipped ranges count windows of the data order, so they mean the same on any
// world size; a run resumes at another world size when its tokens per step are the same. Files
// written before positions counted windows (no /trainer attr window_positions) counted batches of
// B windows on one process; they are converted with the resuming run's B.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "core/rng.h"
#include "data/loader.h"

namespace tessera::train {

// What a run has been through: saved with every checkpoint, and kept (not restored) by a rollback.
struct RunHistory {
  int64_t rollbacks = 0;        // spikes handled so far
  int64_t lr_factor_until = 0;  // steps below it run at lr * spike.lr_factor
  std::vector<std::pair<int64_t, int64_t>> skips;  // [begin, end) windows never read
};

// The trajectory a checkpoint's weights were trained along, as segments, oldest first: each
// (id, from) is the stretch one training process ran from step `from` (a fresh start at 0, a
// resume or a rollback at the checkpoint's step) until the next segment's `from`, or the
// checkpoint's own step for the last. Every start, resume and rollback begins a new segment with a
// new random id, so a checkpoint lies on a run's trajectory exactly when its last segment is one
// of the run's, at a step no later than where the run's trajectory left it (on_trajectory).
// Files written before checkpoints held a lineage read back as [(0, 0)]: one segment of unknown
// id, which a run resumed from such a file keeps as its first.
struct Segment {
  int64_t id = 0, from = 0;
  bool operator==(const Segment&) const = default;
};
using Lineage = std::vector<Segment>;

struct RunState {
  int64_t step = 0, tokens_seen = 0, optimizer_step = 0;
  RngState rng;
  data::LoaderState data;
  std::deque<double> loss_window, log_norm_window;
  RunHistory history;
  int64_t world = 1, tokens_per_step = 0;
  Lineage lineage;
};

// Rank r's dropout generator's Philox key: the run's seed with a constant and the rank folded in.
// Every rank draws its own masks, and none draws with the seed itself, which the initial weights
// are drawn with from counter 0 on: dropout's first draws would be theirs again.
constexpr uint64_t dropout_key(uint64_t seed, int rank) {
  return seed ^ 0x44524F504F555421ull ^ (uint64_t(rank) * 0x9E3779B97F4A7C15ull);
}

void put_run_state(const RunState& s, CheckpointData& ck);
// The checkpoint's lineage alone ([(0, 0)] for a file written before lineages were saved).
Lineage get_lineage(const CheckpointData& ck, const std::string& path);
// Whether a checkpoint (its lineage and step) lies on the trajectory of a run at run_step: one its
// run passed through, not a step of a branch it left or of another run.
bool on_trajectory(const Lineage& checkpoint, int64_t checkpoint_step, const Lineage& run,
                   int64_t run_step);
// Reads everything back; errors name the file and the missing attribute. A checkpoint written with
// other tokens per step than this run's cannot continue its data order: an error naming both.
RunState get_run_state(const CheckpointData& ck, const std::string& path, int64_t tokens_per_step,
                       int64_t batch_size);

}  // namespace tessera::train
