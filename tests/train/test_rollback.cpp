// Exact resume and automatic loss-spike rollback, end to end on the tiny model: an interrupted run
// resumed with --resume auto ends with the same bytes and logs the same losses as an uninterrupted
// one; injected spikes are detected, rolled back and skipped; too many spikes stop the run with
// every checkpoint intact.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "checkpoint/sidecar.h"
#include "test_util.h"
#include "train/rollback.h"
#include "train/run_notes.h"
#include "train/run_state.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::error_of;
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

// A run with checkpoints at steps 4, 8 and 9 (stopped there), whose resume meets a NaN loss at
// step 10 and rolls back at least 1 step: to step 8, unless something is wrong with it. Returns
// the config that resumes it.
Config stopped_before_a_spike_at_step_10(const TempRun& run) {
  Config c = run.config(12);
  c.checkpoint.interval = 4, c.checkpoint.keep = 10;
  c.spike.rollback_steps = 1;
  c.spike.inject_steps = "10";
  c.spike.inject_kind = "nan";
  c.train.stop_after = 9;
  std::ostringstream log;
  EXPECT_EQ(train::run_training(c, log).steps, 9);
  c.train.stop_after = 0;
  c.checkpoint.resume = "auto";
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

std::map<std::string, int64_t> without_lineage_ids(std::map<std::string, int64_t> ints) {
  std::erase_if(ints, [](const auto& kv) {
    return kv.first.rfind("lineage_", 0) == 0 && kv.first.ends_with("_id");
  });
  return ints;
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
    EXPECT_NE(msg.find("The checkpoints in " + dir + " are intact (the newest: step_"),
              std::string::npos)
        << msg;
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
      // Lineage ids are drawn per process: the segments' steps must agree, not their ids.
      EXPECT_EQ(without_lineage_ids(x.trainer_ints), without_lineage_ids(y.trainer_ints));
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
  EXPECT_NE(log.str().find("rollback 1/5: no checkpoint at or before step 2 to go back to, update "
                           "skipped"),
            std::string::npos)
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

// spike.enabled: false turns detection off, and with it the rollback: a non-finite loss is then an
// error naming the step (the run cannot go on from NaN weights), and the checkpoints written before
// it stay loadable for a --resume with a lower LR.
TEST(Rollback, with_detection_off_a_nan_loss_stops_the_run_naming_the_step) {
  TempRun run;
  Config c = run.config(12);
  c.checkpoint.interval = 4;
  c.spike.enabled = false;
  c.spike.inject_steps = "6";
  c.spike.inject_kind = "nan";
  std::ostringstream log;
  const std::string msg = tessera::testing::error_of([&] { train::run_training(c, log); });
  EXPECT_NE(msg.find("step 6: loss is nan (diverged)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("enable spike:"), std::string::npos) << msg;
  const std::string dir = (run.dir / "ckpt" / "run").string();
  const std::vector<CheckpointFile> files = list_checkpoints(dir);
  ASSERT_EQ(files.size(), 1u) << log.str();  // step 4; nothing after the NaN was saved
  EXPECT_EQ(files[0].step, 4);
  EXPECT_EQ(resolve_checkpoint(dir), files[0].path);
  EXPECT_EQ(load_checkpoint(files[0].path).trainer_ints.at("step"), 4);
  EXPECT_EQ(metric_lines(run.dir / "ckpt" / "run" / "metrics.jsonl", "\"rollback\"").size(), 0u);
}

namespace {

// The LRs logged per step in a metrics.jsonl (the last line for a step wins: after a rollback, the
// replayed step's), as numbers.
std::map<int64_t, double> lr_by_step(const fs::path& metrics) {
  std::map<int64_t, double> out;
  for (const auto& [step, v] : metric(metrics, "lr")) out[step] = std::stod(v);
  return out;
}

}  // namespace

// The rollback settings of a real run: rollback_steps goes back past the newest checkpoint (step 8
// is within 6 steps of the spike at 12: back to step 4), skip_batches sets the skipped range
// (3 batches of B = 8 windows from the spike's first window, 11 x 8 = 88), and lr_factor lowers
// the LR for exactly lr_factor_steps steps after the rollback point (steps 5, 6, 7), the LR the
// clean run logged at every other step. The window is saved with the checkpoint rolled back to
// (lr_factor_until = 7), so a run resumed from it after a crash keeps the lowered LR and ends
// with the same losses as the run that never stopped.
TEST(Rollback, rollback_steps_skip_batches_and_lr_factor_shape_the_rolled_back_run) {
  TempRun run;
  Config clean = run.config(16);
  clean.train.run_name = "clean";
  clean.checkpoint.interval = 4, clean.checkpoint.keep = 10;
  clean.log.interval = 1;
  clean.spike.rollback_steps = 6;
  clean.spike.skip_batches = 3;
  clean.spike.lr_factor = 0.5, clean.spike.lr_factor_steps = 3;
  std::ostringstream log;
  train::run_training(clean, log);
  Config c = clean;
  c.train.run_name = "spiked";
  c.spike.inject_steps = "12";
  c.spike.inject_kind = "nan";
  train::TrainResult r = train::run_training(c, log);
  EXPECT_EQ(r.steps, 16);
  EXPECT_EQ(r.rollbacks, 1);

  const fs::path dir = run.dir / "ckpt" / "spiked", metrics = dir / "metrics.jsonl";
  const std::vector<std::string> events = metric_lines(metrics, "\"rollback\"");
  ASSERT_EQ(events.size(), 1u) << log.str();
  EXPECT_NE(events[0].find("{\"step\": 12, \"event\": \"rollback\""), std::string::npos)
      << events[0];
  EXPECT_NE(events[0].find("\"to_step\": 4, \"skip_begin\": 88, \"skip_end\": 112, "
                           "\"rollbacks\": 1}"),
            std::string::npos)
      << events[0];
  EXPECT_NE(log.str().find("; lr x0.5 for 3 steps"), std::string::npos) << log.str();

  // Logged with %.6g: the factor is exact, the text rounds to 6 digits.
  const std::map<int64_t, double> want = lr_by_step(run.dir / "ckpt" / "clean" / "metrics.jsonl");
  const std::map<int64_t, double> got = lr_by_step(metrics);
  ASSERT_EQ(want.size(), 16u);
  ASSERT_EQ(got.size(), 16u);
  for (int64_t s = 1; s <= 16; ++s) {
    const double factor = s >= 5 && s <= 7 ? 0.5 : 1.0;
    EXPECT_NEAR(got.at(s), factor * want.at(s), 1e-5 * want.at(s)) << "step " << s;
  }

  // The checkpoint rolled back to was saved again with the rollback's history.
  const CheckpointData ck = load_checkpoint((dir / "step_00000004.h5").string());
  EXPECT_EQ(ck.trainer_ints.at("lr_factor_until"), 7);
  EXPECT_EQ(ck.trainer_ints.at("rollbacks"), 1);
  EXPECT_EQ(ck.trainer_ints.at("skip_0_begin"), 88);
  EXPECT_EQ(ck.trainer_ints.at("skip_0_end"), 112);

  // A crash right after the rollback: the run resumed from that checkpoint, in a directory of its
  // own, logs the same LRs and losses from step 5 on, bit for bit (same text).
  const fs::path crash = run.dir / "ckpt" / "crash";
  fs::create_directories(crash);
  tessera::testing::copy_checkpoint(dir / "step_00000004.h5", crash);
  Config resumed = c;
  resumed.train.run_name = "crash";
  resumed.checkpoint.resume = "auto";
  std::ostringstream rlog;
  train::TrainResult rr = train::run_training(resumed, rlog);
  EXPECT_EQ(rr.steps, 16);
  EXPECT_NE(rlog.str().find("resume: " + (crash / "step_00000004.h5").string()), std::string::npos)
      << rlog.str();
  const std::map<int64_t, std::string> lr_full = metric(metrics, "lr"),
                                       lr_crash = metric(crash / "metrics.jsonl", "lr");
  const std::map<int64_t, std::string> loss_full = metric(metrics, "loss"),
                                       loss_crash = metric(crash / "metrics.jsonl", "loss");
  for (int64_t s = 5; s <= 16; ++s) {
    SCOPED_TRACE(s);
    ASSERT_TRUE(lr_crash.count(s));
    EXPECT_EQ(lr_crash.at(s), lr_full.at(s));
    EXPECT_EQ(loss_crash.at(s), loss_full.at(s));
  }
  EXPECT_EQ(rr.last_train_loss, r.last_train_loss);
}

// The rollback target is the newest checkpoint within reach that loads: a damaged one is passed
// over with a warning naming it, and the run goes back to the one before. Steps 4 and 8 are saved,
// the run stops at 9 (saved too) and step 8's file is cut in half; resumed from step 9, the spike
// at step 10 looks for a checkpoint at or before step 9 - spike.rollback_steps (1) = 8: step 8
// does not load, so the run rolls back to step 4 and deletes the abandoned files after it.
// skip_batches counts global batches, whole optimizer steps: with 2 micro-batches of B = 8 a step
// reads 16 windows, so 3 skip 48 from the spike's first (step 12: 11 x 16 = 176). A count of
// micro-batches (24 windows) would leave every later step straddling two of the clean run's, and
// differently on each world size (2 ranks of B = 4 would skip 12).
TEST(Rollback, skip_batches_skips_whole_steps_of_accumulated_micro_batches) {
  TempRun run;
  Config c = run.config(13);
  c.train.total_batch_size = 2 * c.train.batch_size * c.sequence_length();
  c.checkpoint.interval = 4;
  c.spike.skip_batches = 3;
  c.spike.inject_steps = "12";
  c.spike.inject_kind = "nan";
  std::ostringstream log;
  EXPECT_EQ(train::run_training(c, log).rollbacks, 1);
  const std::vector<std::string> events =
      metric_lines(run.dir / "ckpt" / "run" / "metrics.jsonl", "\"rollback\"");
  ASSERT_EQ(events.size(), 1u) << log.str();
  EXPECT_NE(events[0].find("\"skip_begin\": 176, \"skip_end\": 224"), std::string::npos)
      << events[0];
}

TEST(Rollback, a_damaged_newest_target_is_passed_over_with_a_warning_for_the_one_before) {
  TempRun run;
  Config c = stopped_before_a_spike_at_step_10(run);
  const fs::path dir = run.dir / "ckpt" / "run";
  const fs::path damaged = dir / "step_00000008.h5";
  ASSERT_TRUE(fs::exists(dir / "step_00000004.h5"));
  ASSERT_TRUE(fs::exists(dir / "step_00000009.h5"));
  fs::resize_file(damaged, fs::file_size(damaged) / 2);

  std::ostringstream log2;
  train::TrainResult r = train::run_training(c, log2);
  EXPECT_EQ(r.steps, 12);
  EXPECT_EQ(r.rollbacks, 1);
  EXPECT_NE(log2.str().find("warning: cannot roll back to " + damaged.string()), std::string::npos)
      << log2.str();
  EXPECT_NE(log2.str().find("back to step 4 (" + (dir / "step_00000004.h5").string() + ")"),
            std::string::npos)
      << log2.str();
  const std::vector<std::string> events = metric_lines(dir / "metrics.jsonl", "\"rollback\"");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_NE(events[0].find("\"step\": 10, \"event\": \"rollback\""), std::string::npos)
      << events[0];
  EXPECT_NE(events[0].find("\"to_step\": 4"), std::string::npos) << events[0];
  // Steps 8 (damaged) and 9 were after the rollback point: gone; the run then saved 8 and 12 anew.
  std::vector<int64_t> steps;
  for (const CheckpointFile& f : list_checkpoints(dir.string())) {
    steps.push_back(f.step);
    EXPECT_NO_THROW(load_checkpoint(f.path)) << f.path;
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{4, 8, 12}));
}

// A target that cannot be read (here its digest file is a directory) is no evidence of damage:
// passing over it would throw away its steps for nothing, so the run stops, naming it, and every
// checkpoint stays where it was.
TEST(Rollback, an_unreadable_target_stops_the_run_rather_than_pass_over_it) {
  TempRun run;
  Config c = stopped_before_a_spike_at_step_10(run);
  const fs::path dir = run.dir / "ckpt" / "run";
  const fs::path target = dir / "step_00000008.h5";
  fs::remove(digest_path(target.string()));
  fs::create_directories(digest_path(target.string()) + "/x");

  std::ostringstream log2;
  const std::string msg = error_of([&] { train::run_training(c, log2); });
  EXPECT_NE(msg.find("cannot roll back to " + target.string() + ": "), std::string::npos) << msg;
  EXPECT_NE(msg.find("the run stopped rather than pass over it"), std::string::npos) << msg;
  for (int step : {4, 8, 9}) EXPECT_TRUE(fs::exists(dir / checkpoint_name(step))) << step;
  EXPECT_TRUE(metric_lines(dir / "metrics.jsonl", "\"rollback\"").empty());
}

// A segment id is a fresh draw in [1, 2^52), odd, each time: one run's segments, and two runs in
// one directory, never share one (a repeated id would put an abandoned branch on the trajectory).
TEST(Lineage, segment_ids_are_fresh_odd_draws_below_2_to_the_52) {
  dist::CommOptions o;
  o.backend = "single";
  const std::unique_ptr<dist::Communicator> comm = dist::make_communicator(o, dist::LaunchInfo{});
  std::set<int64_t> ids;
  for (int i = 0; i < 8; ++i) {
    const int64_t id = train::agreed_segment_id(*comm);
    EXPECT_EQ(id % 2, 1) << id;
    EXPECT_GT(id, 0);
    EXPECT_LT(id, int64_t(1) << 52);
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 8u);  // two equal draws of 51 random bits: about 1 in 10^14
}

// A checkpoint lies on a run's trajectory when its last segment is one of the run's, at a step no
// later than where the run left that segment.
TEST(Lineage, on_trajectory_accepts_ancestors_and_refuses_abandoned_branches_and_other_runs) {
  using train::Lineage;
  const Lineage run = {{11, 0}, {22, 40}, {33, 60}};  // started, resumed at 40, rolled back to 60
  EXPECT_TRUE(train::on_trajectory({{11, 0}}, 40, run, 75));   // where the resume branched off
  EXPECT_TRUE(train::on_trajectory({{11, 0}}, 20, run, 75));
  EXPECT_FALSE(train::on_trajectory({{11, 0}}, 50, run, 75));  // the branch the resume left
  EXPECT_TRUE(train::on_trajectory({{11, 0}, {22, 40}}, 60, run, 75));
  EXPECT_FALSE(train::on_trajectory({{11, 0}, {22, 40}}, 70, run, 75));  // rolled back past it
  EXPECT_TRUE(train::on_trajectory({{11, 0}, {22, 40}, {33, 60}}, 70, run, 75));
  EXPECT_FALSE(train::on_trajectory({{11, 0}, {22, 40}, {33, 60}}, 80, run, 75));  // not yet
  EXPECT_FALSE(train::on_trajectory({{44, 0}}, 20, run, 75));            // another run
  EXPECT_FALSE(train::on_trajectory({{44, 0}, {22, 40}}, 50, run, 75));  // another past
  // Files from before lineages were saved read as [(0, 0)]: on the trajectory of a run resumed
  // from one of them, up to the step it resumed at.
  const Lineage legacy_run = {{0, 0}, {55, 30}};
  EXPECT_TRUE(train::on_trajectory({{0, 0}}, 30, legacy_run, 45));
  EXPECT_FALSE(train::on_trajectory({{0, 0}}, 40, legacy_run, 45));
  EXPECT_FALSE(train::on_trajectory({{0, 0}}, 10, run, 75));
}

// A run resumed from an older checkpoint leaves the newer ones of the run it branches off in the
// directory until its own saves replace them. A spike must not roll back to one of them: their
// weights were trained on another trajectory (here with saves every 10 steps, the branch's every
// 25). Resumed at 20, the spike at step 33 looks at or before step 31: step 30 is the old run's,
// passed over with a warning; the branch's own step 25 is the target. Then a checkpoint another
// run saved (another seed) put in the directory is passed over alike.
TEST(Rollback, the_target_is_on_the_runs_trajectory_never_an_abandoned_branch_or_another_run) {
  TempRun run;
  Config c = run.config(40);
  c.checkpoint.interval = 10, c.checkpoint.keep = 10;
  std::ostringstream log;
  train::run_training(c, log);
  const fs::path dir = run.dir / "ckpt" / "run";
  ASSERT_TRUE(fs::exists(dir / "step_00000030.h5"));

  Config branch = c;
  branch.checkpoint.resume = (dir / "step_00000020.h5").string();
  branch.checkpoint.interval = 25;
  branch.spike.rollback_steps = 1;
  branch.spike.inject_steps = "33";
  branch.spike.inject_kind = "nan";
  std::ostringstream blog;
  train::TrainResult r = train::run_training(branch, blog);
  EXPECT_EQ(r.steps, 40);
  EXPECT_EQ(r.rollbacks, 1);
  EXPECT_NE(blog.str().find("warning: rollback: passing over " +
                            (dir / "step_00000030.h5").string() + ": it is not on this run's "
                            "trajectory"),
            std::string::npos)
      << blog.str();
  const std::vector<std::string> events = metric_lines(dir / "metrics.jsonl", "\"rollback\"");
  ASSERT_EQ(events.size(), 1u) << blog.str();
  EXPECT_NE(events[0].find("\"step\": 33, \"event\": \"rollback\", \"reason\""), std::string::npos)
      << events[0];
  EXPECT_NE(events[0].find("\"to_step\": 25"), std::string::npos) << events[0];

  // Another run's step 30 in the directory: the spike at step 35 goes back to this run's 25.
  Config other = c;
  other.train.run_name = "other", other.train.seed = 7, other.train.max_steps = 30;
  train::run_training(other, log);
  tessera::testing::copy_checkpoint(run.dir / "ckpt" / "other" / "step_00000030.h5", dir);
  Config again = branch;
  again.checkpoint.resume = (dir / "step_00000025.h5").string();
  again.spike.inject_steps = "35";
  std::ostringstream alog;
  r = train::run_training(again, alog);
  EXPECT_EQ(r.rollbacks, 2);  // the first run's rollback is in the history
  EXPECT_NE(alog.str().find("passing over " + (dir / "step_00000030.h5").string()),
            std::string::npos)
      << alog.str();
  EXPECT_NE(alog.str().find("back to step 25"), std::string::npos) << alog.str();
}

// A crash between the two renames of a save that replaces a file (a rollback saves its step
// again) leaves the old bytes under the name, beside the digest file of the new bytes, which lie
// complete in <name>.tmp. --resume auto finishes that rename (the digest file vouches for the
// .tmp) and resumes from the new bytes, instead of refusing the old ones and falling back a
// checkpoint. A .tmp the digest file does not match is a write that stopped earlier: left alone,
// then removed as an interrupted write.
TEST(Resume, auto_finishes_a_save_a_crash_stopped_between_its_renames) {
  TempRun run;
  Config c = run.config(8);
  c.checkpoint.interval = 4, c.checkpoint.keep = 5;
  std::ostringstream log;
  train::run_training(c, log);
  const fs::path dir = run.dir / "ckpt" / "run", name = "step_00000008.h5";
  // The new bytes of step 8: the same checkpoint with a rollback recorded.
  CheckpointData resaved = load_checkpoint((dir / name).string());
  resaved.trainer_ints["rollbacks"] = 1;
  tessera::testing::leave_interrupted_resave(dir, name.string(), resaved);
  EXPECT_THROW(load_checkpoint((dir / name).string()), Error);  // old bytes, new digest
  // An unrelated partial write: no digest file of its own matches it.
  std::ofstream(dir / "step_00000004.h5.tmp") << "partial";

  c.checkpoint.resume = "auto";
  c.train.max_steps = 10;
  std::ostringstream log2;
  train::TrainResult r = train::run_training(c, log2);
  EXPECT_NE(log2.str().find("warning: resume: finished the save of " + (dir / name).string()),
            std::string::npos)
      << log2.str();
  EXPECT_NE(log2.str().find("resume: " + (dir / name).string() + " at step 8"), std::string::npos)
      << log2.str();
  EXPECT_EQ(r.steps, 10);
  EXPECT_EQ(r.rollbacks, 1);  // the history came from the new bytes
  EXPECT_EQ(log2.str().find("skipping checkpoint"), std::string::npos) << log2.str();
  EXPECT_FALSE(fs::exists(dir / "step_00000008.h5.tmp"));
  EXPECT_FALSE(fs::exists(dir / "step_00000004.h5.tmp"));  // removed as an interrupted write
  EXPECT_NO_THROW(load_checkpoint((dir / "step_00000004.h5").string()));
}

// spike.rollback_steps past what retention keeps ((keep - 1) x interval steps) can never find a
// checkpoint once the first saves are pruned: the log says so before the first step, naming the
// keep that would reach. Milestones stay, so with them there is nothing to say.
TEST(Rollback, a_rollback_reach_past_the_kept_checkpoints_is_warned_about) {
  Config c = TempRun().config(20);
  c.checkpoint.interval = 4, c.checkpoint.keep = 2;
  c.spike.rollback_steps = 4;
  EXPECT_EQ(train::rollback_reach_note(c), "");
  c.spike.rollback_steps = 6;
  EXPECT_EQ(train::rollback_reach_note(c),
            "warning: spike.rollback_steps (6) reaches further back than the checkpoints "
            "retention keeps (checkpoint.keep 2 x checkpoint.interval 4 span 4 steps): past the "
            "first saves a spike finds no checkpoint to roll back to and only skips its update; "
            "set checkpoint.keep: 3 (or a checkpoint.milestone_interval)");
  c.checkpoint.milestone_interval = 8;
  EXPECT_EQ(train::rollback_reach_note(c), "");
  c.checkpoint.milestone_interval = 0, c.spike.enabled = false;
  EXPECT_EQ(train::rollback_reach_note(c), "");
}

// Too many spikes before any checkpoint was saved: the error says none was, and how to start
// again, instead of calling the (absent) checkpoints intact.
TEST(Rollback, too_many_spikes_before_any_save_say_no_checkpoint_was_saved) {
  TempRun run;
  Config c = run.config(20);
  c.checkpoint.interval = 0;
  c.spike.inject_steps = "2,3,4";
  c.spike.inject_kind = "nan";
  c.spike.max_rollbacks = 2;
  std::ostringstream log;
  const std::string msg = tessera::testing::error_of([&] { train::run_training(c, log); });
  EXPECT_NE(msg.find("after 2 rollbacks (spike.max_rollbacks): stopping. No checkpoint was saved "
                     "in " + (run.dir / "ckpt" / "run").string()),
            std::string::npos)
      << msg;
  EXPECT_TRUE(list_checkpoints((run.dir / "ckpt" / "run").string()).empty());
}
