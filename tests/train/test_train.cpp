// The training loop end to end on a tiny model and a fixed small shard: the loss falls, a saved
// checkpoint reproduces the model's logits exactly, and a resumed run continues the same run.
#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "data/loader.h"
#include "data/shard.h"
#include "test_util.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

struct TempRun {
  fs::path dir;
  TempRun() {
    dir = fs::temp_directory_path() /
          ("tessera_train_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
           "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
    // A byte-level corpus with structure to learn: a short verse repeated with variations.
    std::vector<uint32_t> train, val;
    const std::string verse = "in the beginning was the word, and the word was with the light. ";
    for (int r = 0; r < 40; ++r)
      for (char c : verse) train.push_back(uint8_t(c == ' ' && r % 3 == 0 ? '_' : c));
    for (char c : verse + verse + verse) val.push_back(uint8_t(c));
    data::write_shard((dir / "train_000.bin").string(), train, 257);
    data::write_shard((dir / "val_000.bin").string(), val, 257);
  }
  ~TempRun() { fs::remove_all(dir); }

  Config config(int64_t steps) const {
    Config c;
    c.model.n_layer = 2, c.model.n_head = 2, c.model.n_embd = 32, c.model.block_size = 16;
    c.data.train = (dir / "train_*.bin").string();
    c.data.val = (dir / "val_*.bin").string();
    c.train.batch_size = 8, c.train.max_steps = steps, c.train.run_name = "run";
    c.optim.lr = 3e-3, c.optim.min_lr = 3e-4, c.optim.warmup_steps = 5;
    c.eval.interval = steps, c.eval.steps = 2;
    c.checkpoint.dir = (dir / "ckpt").string(), c.checkpoint.interval = 0;
    c.log.interval = 1000;
    return c;
  }
};

}  // namespace

TEST(Training, loss_falls_and_checkpoint_reproduces_logits) {
  TempRun run;
  Config cfg = run.config(60);
  std::ostringstream log;
  train::TrainResult r = train::run_training(cfg, log);
  EXPECT_EQ(r.steps, 60);
  // The untrained loss is ~ln 257 = 5.55; 60 steps on a repetitive corpus get far below half.
  EXPECT_LT(r.last_train_loss, 2.5) << log.str();
  EXPECT_LT(r.last_val_loss, 2.8) << log.str();
  ASSERT_TRUE(fs::exists(r.last_checkpoint));
  EXPECT_EQ(resolve_checkpoint((run.dir / "ckpt" / "run").string()), r.last_checkpoint);

  // Two fresh models loaded from the checkpoint give bit-identical logits, equal to the
  // evaluation the trainer reported.
  Generator g(0);
  nn::GPT a(train::model_config(cfg.model, cfg.train), g), b(train::model_config(cfg.model, cfg.train), g);
  load_model_into(r.last_checkpoint, a.parameters());
  load_model_into(r.last_checkpoint, b.parameters());
  EXPECT_EQ(train::evaluate(a, cfg, cfg.data.val, cfg.eval.steps), r.last_val_loss);
  Tensor x = from_vector<int32_t>(std::vector<int32_t>(16, 'a'), {1, 16});
  EXPECT_EQ(a.forward(x, false).to_vector<float>(), b.forward(x, false).to_vector<float>());
}

TEST(Training, resumed_run_matches_the_uninterrupted_run) {
  TempRun run;
  Config full = run.config(24);
  full.train.run_name = "full";
  full.checkpoint.interval = 12, full.checkpoint.keep = 2;
  std::ostringstream log;
  train::TrainResult whole = train::run_training(full, log);

  // Continue from the uninterrupted run's step-12 checkpoint in another run directory: parameters,
  // optimizer moments, step, RNG and data cursor come back, so the second half repeats exactly.
  Config second = full;
  second.train.run_name = "resumed";
  second.checkpoint.resume = (run.dir / "ckpt" / "full" / "step_00000012.h5").string();
  train::TrainResult resumed = train::run_training(second, log);
  EXPECT_EQ(resumed.steps, 24);
  EXPECT_EQ(resumed.last_train_loss, whole.last_train_loss) << log.str();
  EXPECT_EQ(resumed.last_val_loss, whole.last_val_loss);
}

TEST(Training, missing_data_is_a_clear_error) {
  TempRun run;
  Config cfg = run.config(5);
  cfg.data.train = (run.dir / "nothing_*.bin").string();
  std::ostringstream log;
  std::string msg = tessera::testing::error_of([&] { train::run_training(cfg, log); });
  EXPECT_NE(msg.find("nothing_*.bin"), std::string::npos) << msg;
}
