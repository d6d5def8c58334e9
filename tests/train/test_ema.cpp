// The weights' moving average while training (train.ema_decay, train/ema.h): each step moves it
// 1 - decay of the way to that step's weights, through a rollback too (the average goes back with
// the weights); its logged validation loss is the loss of the checkpoint average --ema writes; a
// resumed run continues it bit for bit; a checkpoint without one starts it at its weights.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "config/config.h"
#include "config/expect_contains.h"
#include "test_util.h"
#include "train/average.h"
#include "train/ema.h"
#include "train/load.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

namespace tessera {
namespace {

using testing::error_of;
using testing::run_command;
using testing::TempRun;
namespace fs = std::filesystem;

std::vector<float> values(const Tensor& t) {
  return t.contiguous().to(DType::F32).to_vector<float>();
}

// The checkpoint of step k of run dir: its weights and its average, by parameter name.
struct Step {
  std::map<std::string, std::vector<float>> weights, average;
};
Step step_of(const fs::path& dir, int64_t k) {
  const std::string path = (dir / checkpoint_name(k)).string();
  const CheckpointData ck = load_checkpoint(path);
  Step s;
  for (const auto& [name, t] : ck.model) s.weights[name] = values(t);
  for (const auto& [name, t] : train::ema_weights(ck, path)) s.average[name] = values(t);
  return s;
}

// Every step k of a 12-step run (a checkpoint each): average_k = average_{k-1} + (1 - d) (w_k -
// average_{k-1}). A NaN at step 10 rolls back to step 6 (rollback_steps 3), and steps 7-9 are
// trained again on other data: their checkpoints are rewritten, and the recurrence holds across
// step 7 only if the rollback took back step 6's average with its weights. AdamW's weights live
// in a flat buffer (the average is one too), LOMO's apart (an average a tensor).
class EmaOf : public ::testing::TestWithParam<const char*> {};

TEST_P(EmaOf, each_step_moves_the_average_a_share_of_the_way_through_a_rollback_too) {
  TempRun run;
  Config c = run.config(12);
  c.optim.name = GetParam();
  c.train.ema_decay = 0.75;
  c.checkpoint.interval = 1, c.checkpoint.keep = 20;
  c.spike.inject_steps = "10", c.spike.inject_kind = "nan", c.spike.rollback_steps = 3;
  std::ostringstream log;
  const train::TrainResult r = train::run_training(c, log);
  ASSERT_EQ(r.rollbacks, 1) << log.str();
  const fs::path dir = run.dir / "ckpt" / "run";
  std::ifstream metrics(dir / "metrics.jsonl");
  const std::string lines((std::istreambuf_iterator<char>(metrics)), {});
  EXPECT_CONTAINS(lines, "\"event\": \"rollback\", \"reason\"");
  EXPECT_CONTAINS(lines, "\"to_step\": 6");
  Step before = step_of(dir, 1);
  double moved = 0;  // how far the average lags the weights: it must, or the test proves nothing
  for (int64_t k = 2; k <= 12; ++k) {
    const Step now = step_of(dir, k);
    ASSERT_EQ(now.average.size(), now.weights.size());
    for (const auto& [name, w] : now.weights) {
      const std::vector<float>& a0 = before.average.at(name);
      const std::vector<float>& a1 = now.average.at(name);
      for (size_t j = 0; j < w.size(); ++j) {
        // f32 arithmetic on values below ~2: a few ulps.
        EXPECT_NEAR(a1[j], a0[j] + 0.25f * (w[j] - a0[j]), 1e-6) << name << " step " << k;
        moved = std::max(moved, double(std::fabs(w[j] - a1[j])));
      }
    }
    before = now;
  }
  EXPECT_GT(moved, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Ema, EmaOf, ::testing::Values("adamw", "lomo"));

// Each evaluation logs the average's validation loss: the loss of the checkpoint average --ema
// writes from that step (the binary's line, and the library's model), not the weights' own.
TEST(Ema, its_validation_loss_is_that_of_the_checkpoint_average_ema_writes) {
  TempRun run;
  Config c = run.config(6);
  c.train.ema_decay = 0.8;
  c.eval.interval = 3, c.checkpoint.interval = 3;
  std::ostringstream log;
  train::run_training(c, log);
  const fs::path dir = run.dir / "ckpt" / "run";
  const std::map<int64_t, std::string> ema = testing::metric(dir / "metrics.jsonl", "val_loss_ema");
  const std::map<int64_t, std::string> val = testing::metric(dir / "metrics.jsonl", "val_loss");
  ASSERT_EQ(ema.size(), 2u) << log.str();
  EXPECT_CONTAINS(log.str(), "step     6 | ema val loss ");
  EXPECT_NE(ema.at(6), val.at(6));
  const std::string out_dir = (run.dir / "ema").string();
  std::string out;
  ASSERT_EQ(run_command(testing::bin_dir() + "/average --ema " + (dir / "latest").string() +
                            " --output " + out_dir,
                        &out),
            0)
      << out;
  EXPECT_CONTAINS(out, "the moving average of the weights in " +
                           (dir / checkpoint_name(6)).string() + " (step 6) -> " + out_dir + "/" +
                           checkpoint_name(6));
  train::LoadedModel m = train::load_model(out_dir);
  EXPECT_EQ(m.step, 6);
  EXPECT_NEAR(train::evaluate_windows(*m.model, c, c.data.val, c.eval_windows()).loss,
              std::stod(ema.at(6)), 1e-5);  // the metrics line's 6 digits
  const train::Averaged a = train::ema_checkpoint((dir / checkpoint_name(6)).string());
  ASSERT_EQ(a.data.model.size(), m.model->parameters().size());
  for (size_t i = 0; i < a.data.model.size(); ++i)
    EXPECT_EQ(values(a.data.model[i].second), values(m.model->parameters()[i].second));
}

// Stopped at step 3 and resumed: the same average at step 6, bit for bit, and the same losses.
TEST(Ema, a_resumed_run_continues_the_average_bit_for_bit) {
  TempRun run;
  Config c = run.config(6);
  c.train.ema_decay = 0.9;
  c.model.dropout = 0.1;
  c.eval.interval = 3, c.checkpoint.interval = 3;
  std::ostringstream log;
  const train::TrainResult whole = train::run_training(c, log);
  const train::TrainResult split = testing::run_split(c, 3, log);
  const CheckpointData a = load_checkpoint(whole.last_checkpoint);
  const CheckpointData b = load_checkpoint(split.last_checkpoint);
  const auto ea = train::ema_weights(a, "whole"), eb = train::ema_weights(b, "split");
  ASSERT_EQ(ea.size(), eb.size());
  for (size_t i = 0; i < ea.size(); ++i) {
    EXPECT_EQ(ea[i].first, eb[i].first);
    EXPECT_EQ(std::memcmp(ea[i].second.data_ptr(), eb[i].second.data_ptr(), ea[i].second.nbytes()),
              0)
        << ea[i].first;
  }
  EXPECT_EQ(testing::metric(run.dir / "ckpt" / "run" / "metrics.jsonl", "val_loss_ema"),
            testing::metric(run.dir / "ckpt" / "split" / "metrics.jsonl", "val_loss_ema"));
}

// A run without an average resumed with one: the average starts at the checkpoint's weights (the
// log says so); average --ema refuses a checkpoint that holds none, naming it.
TEST(Ema, a_checkpoint_without_an_average_starts_it_at_its_weights) {
  TempRun run;
  Config c = run.config(3);
  c.checkpoint.interval = 3;
  std::ostringstream log;
  const train::TrainResult plain = train::run_training(c, log);
  std::string out;
  EXPECT_EQ(run_command(testing::bin_dir() + "/average --ema " + plain.last_checkpoint +
                            " --output " + (run.dir / "none").string(),
                        &out),
            1);
  EXPECT_CONTAINS(out, plain.last_checkpoint + " holds no average of the weights");
  EXPECT_FALSE(fs::exists(run.dir / "none" / checkpoint_name(3)));
  EXPECT_EQ(run_command(testing::bin_dir() + "/average --ema " + plain.last_checkpoint + " " +
                            plain.last_checkpoint + " --output " + (run.dir / "two").string(),
                        &out),
            1);
  EXPECT_CONTAINS(out, "--ema takes one checkpoint, got 2");

  c.train.ema_decay = 0.5, c.train.max_steps = 4, c.checkpoint.resume = "auto";
  c.checkpoint.interval = 1;
  std::ostringstream resumed;
  const train::TrainResult r = train::run_training(c, resumed);
  EXPECT_CONTAINS(resumed.str(), "train.ema_decay: " + plain.last_checkpoint +
                                     " holds no average of the weights; it starts at its weights");
  // Step 4's average: halfway from step 3's weights to step 4's.
  std::map<std::string, std::vector<float>> w3s;
  for (const auto& [name, t] : load_checkpoint(plain.last_checkpoint).model) w3s[name] = values(t);
  const Step s4 = step_of(run.dir / "ckpt" / "run", 4);
  for (const auto& [name, w4] : s4.weights) {
    const std::vector<float>& w3 = w3s.at(name);
    const std::vector<float>& a4 = s4.average.at(name);
    for (size_t j = 0; j < w4.size(); ++j)
      EXPECT_NEAR(a4[j], w3[j] + 0.5f * (w4[j] - w3[j]), 1e-6) << name;
  }
  EXPECT_EQ(r.steps, 4);
}

}  // namespace
}  // namespace tessera
