// Exact resume and automatic loss-spike rollback, end to end on the tiny model: an interrupted run
// resumed with --resume auto ends with the same bytes and logs the same losses as an uninterrupted
// one; injected spikes are detected, rolled back and skipped; too many spikes stop the run with
// every checkpoint intact.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "test_util.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::metric;
using tessera::testing::metric_lines;
using tessera::testing::TempRun;

namespace {

// Every state the next step depends on is exercised: dropout (RNG), two micro-batches per step
// (accumulation), a spike window short enough to fill, and one injected spike on each side of
// the interruption (rollback history crosses the resume).
Config resume_config(const TempRun& run) {
  Config c = run.config(30);
  c.model.dropout = 0.1;
  c.train.total_batch_size = 2 * 8 * 16;
  c.checkpoint.interval = 5, c.checkpoint.keep = 2;
  c.eval.interval = 10;
  c.log.interval = 1;
  c.spike.window = 6;
  c.spike.inject_steps = "14,17";  // the second comes up 1 step after the resume: the window
                                     // must come back full for it to be caught
  c.spike.inject_kind = "scale";
  return c;
}

void expect_same_bytes(const std::vector<std::pair<std::string, Tensor>>& a,
                       const std::vector<std::pair<std::string, Tensor>>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const Tensor &x = a[i].second, &y = b[i].second;
    ASSERT_EQ(a[i].first, b[i].first);
    ASSERT_EQ(x.nbytes(), y.nbytes());
    EXPECT_EQ(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()), 0) << a[i].first;
  }
}

void expect_same_bytes(const CheckpointData& a, const CheckpointData& b) {
  expect_same_bytes(a.model, b.model);
}

// The "loss" fields of every line, in file order (rolled-back steps included).
std::vector<std::string> loss_sequence(const fs::path& metrics) {
  std::vector<std::string> out;
  for (const std::string& line : metric_lines(metrics, "\"loss\": ")) {
    size_t i = line.find("\"loss\": ") + 8;
    out.push_back(line.substr(i, line.find(',', i) - i));
  }
  return out;
}

}  // namespace

TEST(Resume, interrupted_and_resumed_run_ends_with_identical_bytes_and_losses) {
  TempRun run;
  std::ostringstream log;
  Config full = resume_config(run);
  full.train.run_name = "full";
  train::TrainResult a = train::run_training(full, log);

  Config half = resume_config(run);
  half.train.run_name = "split";
  half.train.stop_after = 15;
  train::TrainResult first = train::run_training(half, log);
  EXPECT_EQ(first.steps, 15);
  half.train.stop_after = 0;
  half.checkpoint.resume = "auto";
  train::TrainResult b = train::run_training(half, log);

  EXPECT_EQ(a.steps, 30);
  EXPECT_EQ(b.steps, 30);
  EXPECT_EQ(a.rollbacks, 2) << log.str();  // both injected spikes were caught
  EXPECT_EQ(b.rollbacks, 2) << log.str();
  expect_same_bytes(load_checkpoint(a.last_checkpoint), load_checkpoint(b.last_checkpoint));
  const fs::path ma = run.dir / "ckpt" / "full" / "metrics.jsonl";
  const fs::path mb = run.dir / "ckpt" / "split" / "metrics.jsonl";
  const std::vector<std::string> la = loss_sequence(ma), lb = loss_sequence(mb);
  EXPECT_GE(la.size(), 30u);
  EXPECT_EQ(la, lb);
  EXPECT_EQ(metric(ma, "val_loss"), metric(mb, "val_loss"));
  EXPECT_EQ(metric_lines(ma, "rollback"), metric_lines(mb, "rollback"));
}

TEST(Rollback, injected_spikes_are_detected_rolled_back_and_skipped_for_every_kind) {
  TempRun run;
  Config clean = run.config(120);
  clean.train.run_name = "clean";
  clean.checkpoint.interval = 10;
  clean.spike.window = 32;
  clean.eval.interval = 120, clean.eval.steps = 4;
  std::ostringstream log;
  train::TrainResult base = train::run_training(clean, log);
  ASSERT_EQ(base.rollbacks, 0) << "false positive in a clean run:\n" << log.str();

  for (const char* kind : {"corrupt", "scale", "nan"}) {
    {
      SCOPED_TRACE(kind);
      Config c = clean;
      c.train.run_name = std::string("inject_") + kind;
      c.spike.inject_steps = "65,90";
      c.spike.inject_kind = kind;
      std::ostringstream klog;
      train::TrainResult r = train::run_training(c, klog);
      EXPECT_EQ(r.steps, 120);
      EXPECT_EQ(r.rollbacks, 2) << klog.str();
      const std::vector<std::string> events =
          metric_lines(run.dir / "ckpt" / c.train.run_name / "metrics.jsonl", "\"rollback\"");
      ASSERT_EQ(events.size(), 2u) << klog.str();
      // Positions count windows (B = 8 per step). Step 65's windows [512, 520) are skipped,
      // back to the step-60 checkpoint; the skip moves the data one step earlier, so the windows
      // of clean step 90 ([712, 720)) come up at step 89 and go back to step 80.
      EXPECT_NE(events[0].find("\"to_step\": 60, \"skip_begin\": 512, \"skip_end\": 520"),
                std::string::npos) << events[0];
      EXPECT_NE(events[1].find("\"to_step\": 80, \"skip_begin\": 712, \"skip_end\": 720"),
                std::string::npos) << events[1];
      // Without the poisoned batches (and the clean one skipped after each) the run ends where
      // the clean one does: within a few percent (0.2% when measured; the skipped batches are 2
      // of 120 and the LR schedule position came back with each checkpoint).
      std::printf("[ %s ] val loss %.4f vs clean %.4f\n", kind, r.last_val_loss,
                  base.last_val_loss);
      EXPECT_NEAR(r.last_val_loss, base.last_val_loss, 0.03 * base.last_val_loss) << klog.str();
    }
  }
}

// With checkpoint.async too: the checkpoints a background write may still hold when the third
// spike stops the run are committed before run_training's error reaches the caller, the same
// files as the synchronous run's.
TEST(Rollback, too_many_spikes_stop_with_a_clear_error_and_every_checkpoint_intact) {
  TempRun run;
  std::vector<std::vector<int64_t>> steps;
  for (bool async : {false, true}) {
    SCOPED_TRACE(async);
    Config c = run.config(60);
    c.train.run_name = async ? "async" : "sync";
    c.checkpoint.interval = 10;
    c.checkpoint.async = async;
    c.spike.window = 16;
    c.spike.inject_steps = "25,32,45";
    c.spike.inject_kind = "nan";
    c.spike.max_rollbacks = 2;
    std::ostringstream log;
    const std::string msg = tessera::testing::error_of([&] { train::run_training(c, log); });
    EXPECT_NE(msg.find("spike.max_rollbacks"), std::string::npos) << msg;
    const std::string dir = (run.dir / "ckpt" / c.train.run_name).string();
    const std::vector<CheckpointFile> files = list_checkpoints(dir);
    ASSERT_FALSE(files.empty());
    steps.emplace_back();
    for (const CheckpointFile& f : files) {
      EXPECT_NO_THROW(load_checkpoint(f.path)) << f.path;
      steps.back().push_back(f.step);
    }
    EXPECT_EQ(resolve_checkpoint(dir), files.back().path);
    EXPECT_NO_THROW(load_checkpoint(resolve_checkpoint(dir)));
  }
  EXPECT_EQ(steps[0], steps[1]);
}

// checkpoint.async: saves written on a thread of their own while training goes on leave the
// synchronous run's checkpoints, byte for byte (weights and AdamW state), and its losses, through
// two rollbacks (each waits for the write in flight, which may be the checkpoint it goes back to)
// and an interruption resumed from a checkpoint written in the background.
TEST(AsyncSave, background_saves_leave_the_checkpoints_and_losses_of_synchronous_saves) {
  TempRun run;
  std::ostringstream log;
  Config sync = resume_config(run);
  sync.train.run_name = "full";
  train::TrainResult a = train::run_training(sync, log);
  Config async = resume_config(run);
  async.checkpoint.async = true;
  async.train.run_name = "async";
  std::ostringstream alog;
  train::TrainResult b = train::run_training(async, alog);
  train::TrainResult split = tessera::testing::run_split(async, 15, alog);
  EXPECT_NE(alog.str().find("(host copy in "), std::string::npos) << alog.str();
  EXPECT_NE(alog.str().find("written in the background)"), std::string::npos) << alog.str();

  const fs::path root = run.dir / "ckpt";
  const std::vector<CheckpointFile> kept = list_checkpoints((root / "full").string());
  ASSERT_EQ(kept.size(), 2u);  // checkpoint.keep
  for (const char* name : {"async", "split"}) {
    SCOPED_TRACE(name);
    const train::TrainResult& r = std::string(name) == "async" ? b : split;
    EXPECT_EQ(r.steps, 30);
    EXPECT_EQ(r.rollbacks, 2) << alog.str();
    EXPECT_EQ(fs::path(r.last_checkpoint).filename(), fs::path(a.last_checkpoint).filename());
    const std::vector<CheckpointFile> files = list_checkpoints((root / name).string());
    ASSERT_EQ(files.size(), kept.size());
    for (size_t i = 0; i < kept.size(); ++i) {
      ASSERT_EQ(files[i].step, kept[i].step);
      const CheckpointData x = load_checkpoint(kept[i].path), y = load_checkpoint(files[i].path);
      expect_same_bytes(x.model, y.model);
      expect_same_bytes(x.optimizer, y.optimizer);
      EXPECT_EQ(x.trainer_ints, y.trainer_ints);
      EXPECT_EQ(x.data, y.data);
    }
    EXPECT_EQ(loss_sequence(root / "full" / "metrics.jsonl"),
              loss_sequence(root / name / "metrics.jsonl"));
  }
}

// A background write that fails stops the run, on the step the failure is seen or at the next
// save at the latest, with an error naming the checkpoint; the checkpoints committed before it
// stay, and `latest` names the newest of them.
TEST(AsyncSave, a_failed_background_write_stops_the_run_by_the_next_save_naming_the_file) {
  TempRun run;
  Config c = run.config(40);
  c.checkpoint.interval = 4, c.checkpoint.keep = 5;
  c.checkpoint.async = true;
  const fs::path dir = run.dir / "ckpt" / "run";
  // HDF5 cannot create step_00000008.h5.tmp where a directory of that name stands.
  fs::create_directories(dir / "step_00000008.h5.tmp" / "blocker");
  std::ostringstream log;
  const std::string msg = tessera::testing::error_of([&] { train::run_training(c, log); });
  EXPECT_NE(msg.find("checkpoint.async: the background write of step_00000008.h5 failed"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find((dir / "step_00000008.h5.tmp").string()), std::string::npos) << msg;
  const size_t at = msg.find("training stopped at step ");
  ASSERT_NE(at, std::string::npos) << msg;
  const int64_t stopped = std::stoll(msg.substr(at + 25));
  std::printf("[ stopped ] at step %ld (the failed write: step 8; the next save: step 12)\n",
              long(stopped));
  EXPECT_GE(stopped, 8);
  EXPECT_LE(stopped, 12);
  EXPECT_EQ(resolve_checkpoint(dir.string()), (dir / "step_00000004.h5").string());
  EXPECT_NO_THROW(load_checkpoint((dir / "step_00000004.h5").string()));
  EXPECT_FALSE(fs::exists(dir / "step_00000008.h5"));
  EXPECT_FALSE(fs::exists(dir / "step_00000012.h5"));
}

TEST(Rollback, without_an_earlier_checkpoint_the_update_is_skipped) {
  TempRun run;
  Config c = run.config(12);
  c.spike.inject_steps = "3";
  c.spike.inject_kind = "nan";  // NaN is a spike even before the window fills
  std::ostringstream log;
  train::TrainResult r = train::run_training(c, log);
  EXPECT_EQ(r.steps, 12);
  EXPECT_EQ(r.rollbacks, 1);
  EXPECT_NE(log.str().find("no checkpoint before the spike, update skipped"), std::string::npos)
      << log.str();
  EXPECT_TRUE(std::isfinite(r.last_train_loss));
}

TEST(Resume, auto_falls_back_past_a_truncated_checkpoint_with_a_warning) {
  TempRun run;
  Config c = run.config(20);
  c.checkpoint.interval = 5, c.checkpoint.keep = 3;
  std::ostringstream log;
  train::TrainResult r = train::run_training(c, log);
  const fs::path newest = r.last_checkpoint;
  ASSERT_EQ(newest.filename(), "step_00000020.h5");
  fs::resize_file(newest, fs::file_size(newest) / 2);

  c.train.max_steps = 25;
  c.checkpoint.resume = "auto";
  std::ostringstream log2;
  train::TrainResult r2 = train::run_training(c, log2);
  EXPECT_EQ(r2.steps, 25);
  EXPECT_NE(log2.str().find("warning: skipping checkpoint " + newest.string()), std::string::npos)
      << log2.str();
  EXPECT_NE(log2.str().find("resume: " + (newest.parent_path() / "step_00000015.h5").string()),
            std::string::npos) << log2.str();

  // An explicit path to a damaged file is an error that names it.
  const fs::path damaged = r2.last_checkpoint;
  fs::resize_file(damaged, fs::file_size(damaged) - 100);
  c.checkpoint.resume = damaged.string();
  const std::string msg = tessera::testing::error_of([&] { train::run_training(c, log2); });
  EXPECT_NE(msg.find(damaged.string()), std::string::npos) << msg;
}
