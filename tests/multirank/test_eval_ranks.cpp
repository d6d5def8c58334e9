// Validation loss across ranks (train/evaluate.cpp): batch i of the validation set is rank
// i mod world's, each rank sums its own and the sums are added over ranks, so 2 ranks report the
// loss one process computes over the same batches, also of the weights' moving average under
// ZeRO-1. build/train under OpenMPI's mpirun on the CPU.
//
// Tolerance: the 2-rank run's weights may differ from the 1-rank run's by a few f32 ulps (its
// gradients are summed in another order; test_data_parallel.cpp measures ~1e-7), which would move
// the validation loss by ~1e-6 relative (here the two agree in all 6 digits logged); 1e-4 is far
// below what a wrong split shows (eval.steps 3 over 2 ranks: rank 0's batches alone read 33% low,
// every batch on every rank 2x).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "core/build.h"
#include "multirank/mpirun.h"
#include "test_util.h"
#include "train/train_fixture.h"

using namespace tessera;
using namespace tessera::testing;
namespace fs = std::filesystem;

namespace {

// Trains config c as `np` ranks under mpirun; returns the exit status, the output in *out.
int mpirun_train(int np, const Config& c, const fs::path& cfg, std::string* out) {
  std::ofstream(cfg) << to_yaml(c);
  const std::string cmd = mpirun_command() + " -np " + std::to_string(np) + " " + kTrain +
                          " --config " + cfg.string();
  return run_command(cmd, out);
}

// c trained as 1 rank and as 2 (two_ranks applied to the second config); the values of `key` in
// each run's metrics.jsonl, by rank count and step.
std::map<int, std::map<int64_t, std::string>> one_and_two_ranks(
    const TempRun& run, Config c, const std::string& key,
    const std::function<void(Config&)>& two_ranks = {}) {
  std::map<int, std::map<int64_t, std::string>> out;
  for (int np : {1, 2}) {
    SCOPED_TRACE(np);
    if (np == 2 && two_ranks) two_ranks(c);
    c.train.run_name = "np" + std::to_string(np);
    std::string text;
    EXPECT_EQ(mpirun_train(np, c, run.dir / (c.train.run_name + ".yaml"), &text), 0) << text;
    out[np] = metric(run.dir / "ckpt" / c.train.run_name / "metrics.jsonl", key);
  }
  return out;
}

// The two runs' `what` at steps 3 and 6, equal within the tolerance above.
void expect_one_and_two_ranks_agree(const std::map<int, std::map<int64_t, std::string>>& v,
                                    const char* what) {
  ASSERT_EQ(v.at(1).size(), 2u);
  ASSERT_EQ(v.at(2).size(), 2u);
  for (int64_t step : {3, 6}) {
    const double one = std::stod(v.at(1).at(step)), two = std::stod(v.at(2).at(step));
    std::printf("[ %s ] step %ld: 1 rank %.6f, 2 ranks %.6f\n", what, long(step), one, two);
    EXPECT_NEAR(two, one, 1e-4 * one) << what << " at step " << step;
  }
}

}  // namespace

TEST(EvalRanks, two_ranks_report_the_validation_loss_of_one_process) {
  if (!built_with::mpi()) GTEST_SKIP() << "tessera was built without MPI";
  ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
  TempRun run;
  // A global batch of 8 sequences: 1 rank x 4 micro-batches of 2 or 2 ranks x 2. Evaluations at
  // steps 3 and 6 over 3 validation batches of 2: an odd count, so rank 0 scores batches 0 and 2,
  // rank 1 batch 1.
  Config c = run.config(6);
  c.train.batch_size = 2;
  c.train.total_batch_size = 8 * 16;
  c.eval.interval = 3, c.eval.steps = 3;
  expect_one_and_two_ranks_agree(one_and_two_ranks(run, c, "val_loss"), "val loss");
}

// The recipe for more ranks, a smaller train.batch_size for the same train.total_batch_size, keeps
// the validation set when eval.tokens fixes it: 1 rank x batches of 4 and 2 ranks x batches of 1
// (4 micro-batches each) score the same 6 windows and report the same loss (tolerance as above).
// eval.steps alone counts batches of train.batch_size: 6 windows at B 2, 3 at B 1.
TEST(EvalRanks, eval_tokens_keeps_the_validation_set_when_the_batch_size_changes_with_the_world) {
  if (!built_with::mpi()) GTEST_SKIP() << "tessera was built without MPI";
  ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
  TempRun run;
  Config c = run.config(4);
  c.train.total_batch_size = 8 * 16;
  c.eval.interval = 4, c.eval.steps = 3, c.eval.tokens = 6 * 16;
  std::map<std::string, std::string> val, tokens;
  for (const auto& [np, B] : {std::pair{1, 4}, std::pair{2, 1}}) {
    c.train.batch_size = B;
    c.train.run_name = "np" + std::to_string(np);
    std::string out;
    ASSERT_EQ(mpirun_train(np, c, run.dir / (c.train.run_name + ".yaml"), &out), 0) << out;
    const fs::path m = run.dir / "ckpt" / c.train.run_name / "metrics.jsonl";
    val[c.train.run_name] = metric(m, "val_loss").at(4);
    tokens[c.train.run_name] = metric(m, "val_tokens").at(4);
  }
  EXPECT_EQ(tokens["np1"], "96");
  EXPECT_EQ(tokens["np2"], "96");
  const double one = std::stod(val["np1"]), two = std::stod(val["np2"]);
  std::printf("[ val loss ] 1 rank (B 4) %.6f, 2 ranks (B 1) %.6f\n", one, two);
  EXPECT_NEAR(two, one, 1e-4 * one);
}

// The weights' moving average (train.ema_decay) on 2 ranks with ZeRO-1: every rank updates its
// shard of the flat buffer, the all-gather gives each the whole, and each rank's average follows
// those weights, so its validation loss is one process's (tolerance as above).
TEST(EvalRanks, two_ranks_with_zero_keep_one_processs_moving_average) {
  if (!built_with::mpi()) GTEST_SKIP() << "tessera was built without MPI";
  ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
  TempRun run;
  Config c = run.config(6);
  c.train.batch_size = 2;
  c.train.total_batch_size = 8 * 16;
  c.train.ema_decay = 0.5;
  c.eval.interval = 3, c.eval.steps = 3;
  expect_one_and_two_ranks_agree(
      one_and_two_ranks(run, c, "val_loss_ema", [](Config& two) { two.dist.zero = 1; }),
      "ema val loss");
}
