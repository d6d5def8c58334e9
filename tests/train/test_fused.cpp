// LOMO and AdaLomo inside the training loop: the loss falls, an interrupted AdaLomo run resumes
// bit for bit (its factored second moments travel in the checkpoint), and spikes are caught before
// the fused update runs.
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "test_util.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

using namespace tessera;
using tessera::testing::TempRun;

namespace {

Config fused_config(const TempRun& run, const std::string& name, int64_t steps) {
  Config c = run.config(steps);
  c.optim.name = name;
  // LOMO is SGD: it needs a larger step than Adam's; AdaLomo's relative step is Adam-like.
  c.optim.lr = name == "lomo" ? 0.3 : 0.1;
  c.optim.min_lr = c.optim.lr / 10;
  c.optim.weight_decay = 0.0;
  c.train.run_name = name;
  return c;
}

}  // namespace

TEST(Fused, lomo_and_adalomo_lower_the_loss_with_and_without_norm_clipping) {
  TempRun run;
  for (const char* name : {"lomo", "adalomo"}) {
    for (double clip : {0.0, 1.0}) {
      SCOPED_TRACE(std::string(name) + " grad_clip " + std::to_string(clip));
      Config c = fused_config(run, name, 60);
      c.optim.grad_clip = clip;
      c.train.run_name = std::string(name) + (clip > 0 ? "_clip" : "");
      std::ostringstream log;
      train::TrainResult r = train::run_training(c, log);
      EXPECT_EQ(r.steps, 60);
      EXPECT_EQ(r.rollbacks, 0) << log.str();
      // Untrained: ln 257 = 5.55. AdamW reaches < 2.5 in the same 60 steps (test_train.cpp).
      std::printf("[ %s clip %.0f ] train %.3f val %.3f\n", name, clip, r.last_train_loss,
                  r.last_val_loss);
      EXPECT_LT(r.last_val_loss, 3.5) << log.str();
    }
  }
}

TEST(Fused, adalomo_run_resumes_bit_exactly) {
  TempRun run;
  std::ostringstream log;
  Config full = fused_config(run, "adalomo", 20);
  full.train.run_name = "full";
  full.checkpoint.interval = 5;
  full.model.dropout = 0.1;
  train::TrainResult a = train::run_training(full, log);

  train::TrainResult b = tessera::testing::run_split(full, 10, log);

  EXPECT_EQ(a.last_train_loss, b.last_train_loss);
  const CheckpointData x = load_checkpoint(a.last_checkpoint), y = load_checkpoint(b.last_checkpoint);
  ASSERT_EQ(x.optimizer.size(), y.optimizer.size());
  EXPECT_GT(x.optimizer.size(), 0u);  // the row/col/v moments are in the file
  auto same = [](const Tensor& p, const Tensor& q) {
    return p.nbytes() == q.nbytes() && std::memcmp(p.data_ptr(), q.data_ptr(), p.nbytes()) == 0;
  };
  for (size_t i = 0; i < x.model.size(); ++i)
    EXPECT_TRUE(same(x.model[i].second, y.model[i].second)) << x.model[i].first;
  for (size_t i = 0; i < x.optimizer.size(); ++i)
    EXPECT_TRUE(same(x.optimizer[i].second, y.optimizer[i].second)) << x.optimizer[i].first;
}

TEST(Fused, a_spike_is_caught_before_the_fused_update) {
  TempRun run;
  for (double clip : {0.0, 1.0}) {
    SCOPED_TRACE(clip);
    Config c = fused_config(run, "lomo", 30);
    c.optim.grad_clip = clip;
    c.train.run_name = clip > 0 ? "clip" : "noclip";
    c.checkpoint.interval = 5;
    c.spike.inject_steps = "12";
    c.spike.inject_kind = "nan";
    std::ostringstream log;
    train::TrainResult r = train::run_training(c, log);
    EXPECT_EQ(r.steps, 30);
    EXPECT_EQ(r.rollbacks, 1) << log.str();
    EXPECT_TRUE(std::isfinite(r.last_train_loss)) << log.str();
  }
}

TEST(Fused, resuming_an_adamw_checkpoint_with_lomo_names_the_problem) {
  TempRun run;
  Config c = run.config(5);
  std::ostringstream log;
  train::TrainResult r = train::run_training(c, log);
  Config l = fused_config(run, "adalomo", 10);
  l.checkpoint.resume = r.last_checkpoint;
  const std::string msg = tessera::testing::error_of([&] { train::run_training(l, log); });
  EXPECT_NE(msg.find(r.last_checkpoint), std::string::npos) << msg;
  EXPECT_NE(msg.find("--init takes the weights alone"), std::string::npos) << msg;
}

// LOMO cannot accumulate: the tokens of a step must be one micro-batch per rank. On one process a
// total of two micro-batches is refused before the run directory is made; over 2 ranks the same
// total is one micro-batch each (tests/multirank/test_data_parallel.cpp).
TEST(Fused, lomo_refuses_gradient_accumulation_before_writing_anything) {
  TempRun run;
  Config c = fused_config(run, "lomo", 4);
  c.train.total_batch_size = 2 * c.train.batch_size * c.sequence_length();
  std::ostringstream log;
  const std::string msg = tessera::testing::error_of([&] { train::run_training(c, log); });
  EXPECT_NE(msg.find("optim.name 'lomo' updates during backward and cannot accumulate gradients"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("must be 0 or train.batch_size x sequence length x world = "),
            std::string::npos)
      << msg;
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(c.checkpoint.dir) / c.train.run_name))
      << log.str();
  c.train.total_batch_size /= 2;
  EXPECT_EQ(train::run_training(c, log).steps, 4);
}

// A resume keeps the checkpoint's tokens per step (train.total_batch_size 0): a batch size that
// cannot make them up is an error that says the figure came from the checkpoint and names the
// batch size that fits, not one about a total_batch_size the config never set. LOMO takes exactly
// one micro-batch per step; AdamW any divisor (accumulating).
TEST(Fused, a_resume_whose_batch_size_cannot_make_up_the_checkpoints_step_names_one_that_can) {
  TempRun run;
  Config c = fused_config(run, "lomo", 4);
  std::ostringstream log;
  const train::TrainResult r = train::run_training(c, log);  // 8 x 16 = 128 tokens a step
  Config resumed = c;
  resumed.checkpoint.resume = r.last_checkpoint;
  resumed.train.max_steps = 6;
  resumed.train.batch_size = 4;
  std::string msg = tessera::testing::error_of([&] { train::run_training(resumed, log); });
  EXPECT_NE(msg.find("resume: checkpoint " + r.last_checkpoint + " was trained with 128 tokens "
                     "per step, which this run keeps (its train.total_batch_size is 0)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("optim.name 'lomo' cannot accumulate micro-batches, so a step must be "
                     "exactly train.batch_size x sequence length x world = 4 x 16 x 1 = 64 "
                     "tokens; set train.batch_size: 8"),
            std::string::npos)
      << msg;
  // AdamW accumulates: 3 does not divide the 8 windows a step holds, 4 would.
  Config adam = c;
  adam.optim = Config().optim;
  adam.train.run_name = "adam";
  const train::TrainResult a = train::run_training(adam, log);
  adam.checkpoint.resume = a.last_checkpoint;
  adam.train.max_steps = 6;
  adam.train.batch_size = 3;
  msg = tessera::testing::error_of([&] { train::run_training(adam, log); });
  EXPECT_NE(msg.find("a step must be whole micro-batches of train.batch_size x sequence length x "
                     "world = 3 x 16 x 1 = 48 tokens; set train.batch_size: 2 (or another divisor "
                     "of 8)"),
            std::string::npos)
      << msg;
  adam.train.batch_size = 4;
  EXPECT_EQ(train::run_training(adam, log).steps, 6);
}
