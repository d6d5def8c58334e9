// The notes a run's log gives before its first step (train/run_notes.h), on their own: when each
// is said and the figures it gives. The runs that print them are in test_rollback and test_run_dir.
#include <gtest/gtest.h>

#include <algorithm>

#include "checkpoint/retention.h"
#include "config/expect_contains.h"
#include "data/shard.h"
#include "test_util.h"
#include "train/run_notes.h"

namespace tessera::train {
namespace {

using testing::TempDir;

// Four names are listed whole; a fifth is counted instead.
TEST(RunNotes, newer_checkpoints_are_listed_up_to_four_then_counted) {
  TempDir dir;
  for (int64_t step = 1; step <= 7; ++step) dir.write(checkpoint_name(step), "");
  const std::string run = dir.path.string();
  EXPECT_EQ(newer_checkpoints_note(run, "x/step_00000007.h5", 7), "");
  const std::string four = newer_checkpoints_note(run, "x/step_00000003.h5", 3);
  EXPECT_CONTAINS(four,
                  "holds checkpoints after step 3 (x/step_00000003.h5), from the run this "
                  "one branches off: " +
                      checkpoint_name(4) + ", " + checkpoint_name(5) + ", " + checkpoint_name(6) +
                      ", " + checkpoint_name(7) + "; ");
  EXPECT_EQ(four.find("files)"), std::string::npos) << four;
  const std::string five = newer_checkpoints_note(run, "x/step_00000002.h5", 2);
  EXPECT_CONTAINS(five, checkpoint_name(6) + ", ... (5 files); ");
  EXPECT_EQ(five.find(checkpoint_name(7)), std::string::npos) << five;
}

// The note about a short data.val is given only when it holds fewer windows than asked.
TEST(RunNotes, a_validation_split_is_short_only_below_the_windows_asked) {
  TempDir dir;
  std::vector<uint32_t> tokens(200, 1);
  data::write_shard(dir.file("val_000.bin"), tokens, 257);
  Config cfg;
  cfg.model.block_size = 16;
  data::LoaderOptions o;
  o.files = {dir.file("val_000.bin")};
  o.batch_size = 1;
  o.seq_len = cfg.sequence_length();
  o.vocab_size = 257;
  const data::DataLoader val(o);
  const int64_t windows = val.windows_per_epoch();
  ASSERT_GT(windows, 1);
  cfg.eval.tokens = windows * cfg.sequence_length();
  EXPECT_TRUE(validation_notes(cfg, val, {}).empty());
  cfg.eval.tokens = (windows + 1) * cfg.sequence_length();
  const std::vector<std::string> notes = validation_notes(cfg, val, {});
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_CONTAINS(notes[0], "each evaluation scores " + std::to_string(windows) + ", not the " +
                                std::to_string(windows + 1) + " that eval.tokens");
}

// With loss masks: the share of each split's tokens scored; a warning when only one split has
// them (the validation loss would score other tokens than training does); nothing without.
TEST(RunNotes, loss_masks_are_reported_per_split_and_a_mismatch_is_a_warning) {
  TempDir dir;
  const auto loader = [&](const std::string& name, int ones) {
    data::write_shard(dir.file(name + ".bin"), std::vector<uint32_t>(100, 1), 257);
    if (ones >= 0) {  // -1: no mask
      std::vector<uint8_t> mask(100, 0);
      std::fill(mask.begin(), mask.begin() + ones, uint8_t(1));
      data::write_loss_mask(dir.file(name + ".mask"), mask);
    }
    data::LoaderOptions o;
    o.files = {dir.file(name + ".bin")};
    o.batch_size = 1, o.seq_len = 16, o.vocab_size = 257;
    return data::DataLoader(o);
  };
  const data::DataLoader train = loader("train", 25), val = loader("val", 50),
                         plain_train = loader("plain_train", -1),
                         plain_val = loader("plain_val", -1);
  EXPECT_EQ(loss_mask_note(plain_train, &plain_val), "");
  EXPECT_EQ(loss_mask_note(plain_train, nullptr), "");
  EXPECT_EQ(loss_mask_note(train, &val),
            "data: loss masks (tokenize --format sft): the loss scores 25.0% of data.train's 100 "
            "tokens and 50.0% of data.val's 100 tokens (the rest are prompts)");
  EXPECT_EQ(loss_mask_note(train, nullptr),
            "data: loss masks (tokenize --format sft): the loss scores 25.0% of data.train's 100 "
            "tokens (the rest are prompts)");
  EXPECT_CONTAINS(loss_mask_note(train, &plain_val),
                  "warning: data.train has loss masks and data.val has none: the validation loss "
                  "scores every token, training only the masked-in ones");
  EXPECT_CONTAINS(loss_mask_note(plain_train, &val),
                  "warning: data.val has loss masks and data.train has none: the validation loss "
                  "scores only the masked-in tokens, training every one");
}

// keep x interval spans (keep - 1) x interval steps; the keep advised is the least that reaches
// rollback_steps: ceil(rollback_steps / interval) + 1.
TEST(RunNotes, rollback_reach_names_the_least_keep_that_reaches) {
  Config cfg;
  cfg.spike.enabled = true;
  cfg.checkpoint.milestone_interval = 0;
  cfg.checkpoint.interval = 5;
  cfg.checkpoint.keep = 2;  // spans 5 steps
  for (const auto& [steps, keep] :
       std::vector<std::pair<int64_t, int64_t>>{{6, 3}, {10, 3}, {11, 4}}) {
    cfg.spike.rollback_steps = steps;
    EXPECT_CONTAINS(rollback_reach_note(cfg), "set checkpoint.keep: " + std::to_string(keep) + " ");
  }
  cfg.spike.rollback_steps = 5;  // reached
  EXPECT_EQ(rollback_reach_note(cfg), "");
  cfg.spike.rollback_steps = 50;
  cfg.checkpoint.interval = 0;  // no periodic saves: nothing to reach
  EXPECT_EQ(rollback_reach_note(cfg), "");
}

// The schedule note is given when the resumed step's LR moves at all (relative 1e-9), also where
// both are 0 it is not; the hint to keep the old decay only where the decay horizon alone changed.
TEST(RunNotes, a_schedule_change_is_noted_when_the_lr_moves) {
  Config was;
  was.optim.schedule = "cosine";
  was.optim.lr = 1e-3;
  was.optim.min_lr = 0;
  was.optim.warmup_steps = 0;
  was.train.max_steps = 100;
  EXPECT_EQ(schedule_change_note(was, was, 50, "ck.h5"), "");
  EXPECT_EQ(schedule_change_note(was, was, 100, "ck.h5"), "") << "both at lr 0";
  Config nudged = was;
  nudged.optim.lr = 1e-3 * (1 + 1e-6);
  EXPECT_CONTAINS(schedule_change_note(was, nudged, 50, "ck.h5"),
                  "warning: resume: the LR schedule differs from the one checkpoint ck.h5 "
                  "followed: step 51 runs at lr");
  Config longer = was;
  longer.train.max_steps = 200;
  EXPECT_CONTAINS(schedule_change_note(was, longer, 50, "ck.h5"),
                  "(its decay ended at step 100, now at 200");
  longer.optim.lr = 2e-3;  // and another peak: no single key to set back
  const std::string both = schedule_change_note(was, longer, 50, "ck.h5");
  EXPECT_CONTAINS(both, "step 51 runs at lr");
  EXPECT_EQ(both.find("its decay ended"), std::string::npos) << both;
}

}  // namespace
}  // namespace tessera::train
