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

struct RunState {
  int64_t step = 0, tokens_seen = 0, optimizer_step = 0;
  RngState rng;
  data::LoaderState data;
  std::deque<double> loss_window, log_norm_window;
  RunHistory history;
  int64_t world = 1, tokens_per_step = 0;
};

// Rank r's dropout generator's Philox key: the run's seed with a constant and the rank folded in.
// Every rank draws its own masks, and none draws with the seed itself, which the initial weights
// are drawn with from counter 0 on: dropout's first draws would be theirs again.
constexpr uint64_t dropout_key(uint64_t seed, int rank) {
  return seed ^ 0x44524F504F555421ull ^ (uint64_t(rank) * 0x9E3779B97F4A7C15ull);
}

void put_run_state(const RunState& s, CheckpointData& ck);
// Reads everything back; errors name the file and the missing attribute. A checkpoint written with
// other tokens per step than this run's cannot continue its data order: an error naming both.
RunState get_run_state(const CheckpointData& ck, const std::string& path, int64_t tokens_per_step,
                       int64_t batch_size);

}  // namespace tessera::train
