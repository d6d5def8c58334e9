// RunState <-> CheckpointData (train/run_state.h) on its own, without a training run: everything
// written reads back; files written before positions counted windows, or before they held the
// tokens per step, are read as they were meant; a missing part is an error naming the file and
// the part.
#include <gtest/gtest.h>

#include "config/expect_contains.h"
#include "test_util.h"
#include "train/run_state.h"

namespace tessera::train {
namespace {

using testing::error_of;

RunState sample_state() {
  RunState s;
  s.step = 30;
  s.tokens_seen = 30 * 512;
  s.optimizer_step = 29;
  s.rng = {1337, 4096};
  s.data = {7, 2, 96};
  s.loss_window = {3.5, 3.25, 3.125};
  s.log_norm_window = {0.5};
  s.history = {2, 40, {{8, 12}, {20, 24}}};
  s.world = 2;
  s.tokens_per_step = 512;
  s.lineage = {{11, 0}, {22, 20}};
  return s;
}

TEST(RunState, everything_put_reads_back) {
  const RunState s = sample_state();
  CheckpointData ck;
  put_run_state(s, ck);
  const RunState b = get_run_state(ck, "ck.h5", 512, 4);
  EXPECT_EQ(b.step, s.step);
  EXPECT_EQ(b.tokens_seen, s.tokens_seen);
  EXPECT_EQ(b.optimizer_step, s.optimizer_step);
  EXPECT_EQ(b.rng, s.rng);
  EXPECT_EQ(b.data, s.data);
  EXPECT_EQ(b.loss_window, s.loss_window);
  EXPECT_EQ(b.log_norm_window, s.log_norm_window);
  EXPECT_EQ(b.history.rollbacks, 2);
  EXPECT_EQ(b.history.lr_factor_until, 40);
  EXPECT_EQ(b.history.skips, s.history.skips);
  EXPECT_EQ(b.world, 2);
  EXPECT_EQ(b.tokens_per_step, 512);
  EXPECT_EQ(b.lineage, s.lineage);
  // Empty windows are left out of the file and read back empty.
  RunState quiet = s;
  quiet.loss_window.clear();
  quiet.log_norm_window.clear();
  CheckpointData ck2;
  put_run_state(quiet, ck2);
  EXPECT_TRUE(ck2.trainer_tensors.empty());
  EXPECT_TRUE(get_run_state(ck2, "ck.h5", 512, 4).loss_window.empty());
}

// Before positions counted windows they counted batches of B windows on one process: the position
// and the skipped ranges of such a file are scaled by the resuming run's batch size.
TEST(RunState, a_file_that_counted_batches_is_read_in_windows) {
  CheckpointData ck;
  put_run_state(sample_state(), ck);
  ck.trainer_ints.erase("window_positions");
  const RunState b = get_run_state(ck, "old.h5", 512, 4);
  EXPECT_EQ(b.data.position, 96 * 4);
  EXPECT_EQ(b.history.skips,
            (std::vector<std::pair<int64_t, int64_t>>{{8 * 4, 12 * 4}, {20 * 4, 24 * 4}}));
}

// A file without the figure tells its tokens per step by its own steps; one at step 0 has taken
// none and takes the resuming run's.
TEST(RunState, a_file_without_tokens_per_step_is_judged_by_its_own_steps) {
  CheckpointData ck;
  put_run_state(sample_state(), ck);
  ck.trainer_ints.erase("tokens_per_step");
  EXPECT_EQ(get_run_state(ck, "old.h5", 512, 4).tokens_per_step, 512);
  EXPECT_CONTAINS(error_of([&] { get_run_state(ck, "old.h5", 1024, 4); }),
                  "checkpoint old.h5 was trained with 512 tokens per step (on 2 rank(s)) but this "
                  "run takes 1024");
  ck.trainer_ints["step"] = 0;
  ck.trainer_ints["tokens_seen"] = 0;
  EXPECT_EQ(get_run_state(ck, "old.h5", 1024, 4).tokens_per_step, 1024);
}

TEST(RunState, a_missing_or_impossible_part_is_named_with_the_file) {
  const auto error_without = [](auto&& change) {
    CheckpointData ck;
    put_run_state(sample_state(), ck);
    change(ck);
    return error_of([&] { get_run_state(ck, "ck.h5", 512, 4); });
  };
  EXPECT_CONTAINS(error_without([](CheckpointData& ck) { ck.trainer_ints.erase("step"); }),
                  "checkpoint ck.h5: /trainer has no attribute 'step'");
  EXPECT_CONTAINS(error_without([](CheckpointData& ck) { ck.rng.clear(); }),
                  "checkpoint ck.h5: no /rng/default");
  EXPECT_CONTAINS(error_without([](CheckpointData& ck) { ck.data.erase("epoch"); }),
                  "checkpoint ck.h5: /data has no attribute 'epoch'");
  EXPECT_CONTAINS(error_without([](CheckpointData& ck) { ck.trainer_ints.erase("skip_1_end"); }),
                  "checkpoint ck.h5: /trainer has no attribute 'skip_1_end'");
  EXPECT_CONTAINS(
      error_without([](CheckpointData& ck) { ck.trainer_ints.erase("lineage_1_from"); }),
      "checkpoint ck.h5: /trainer has no attribute 'lineage_1_from'");
  EXPECT_CONTAINS(error_without([](CheckpointData& ck) { ck.trainer_ints["micro_step"] = 1; }),
                  "checkpoint ck.h5 was taken inside gradient accumulation");
}

// A lineage read from a file is never empty ([(0, 0)] stands for an unknown one): an empty one
// lies on no run's trajectory.
TEST(RunState, an_empty_lineage_is_on_no_trajectory) {
  EXPECT_FALSE(on_trajectory({}, 0, {{11, 0}}, 75));
  CheckpointData ck;
  EXPECT_EQ(get_lineage(ck, "old.h5"), (Lineage{{0, 0}}));
}

}  // namespace
}  // namespace tessera::train
