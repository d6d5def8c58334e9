// A mixture of experts with a gated shared expert through train (model.n_expert,
// shared_expert_hidden, shared_expert_gate; nn/moe.h): the model line counts the shared expert
// among what a token meets, the loss falls, and a run stopped and resumed is the run in one piece.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "train/trainer.h"
#include "train_fixture.h"

using namespace tessera;
using tessera::testing::TempRun;

TEST(MoeTraining, a_shared_expert_trains_and_resumes_bit_for_bit) {
  TempRun run;
  Config c = run.config(24);
  c.model.norm = "rmsnorm", c.model.mlp = "swiglu", c.model.position = "rope";
  c.model.bias = false, c.model.qkv_bias = true, c.model.mlp_hidden = 32;
  c.model.n_expert = 4, c.model.expert_top_k = 1;
  c.model.shared_expert_hidden = 32, c.model.shared_expert_gate = true;
  c.checkpoint.interval = 8, c.log.interval = 1;
  std::ostringstream log;
  const train::TrainResult whole = train::run_training(c, log);
  // A token meets the embeddings, attention, the router, 1 of 4 experts and the shared expert.
  const std::string line = "(" + std::to_string(std::llround(c.model.active_parameter_count())) +
                           " a token meets: 1 of 4 experts and the shared one)";
  EXPECT_NE(log.str().find(line), std::string::npos) << log.str();
  const double first =
      std::stod(tessera::testing::metric(
                    std::filesystem::path(c.checkpoint.dir) / "run" / "metrics.jsonl", "loss")
                    .at(1));
  EXPECT_LT(whole.last_train_loss, first - 1.0) << "step 1 " << first;
  const train::TrainResult split = tessera::testing::run_split(c, 12, log);
  EXPECT_EQ(whole.last_train_loss, split.last_train_loss);
  EXPECT_EQ(whole.last_val_loss, split.last_val_loss);
}
