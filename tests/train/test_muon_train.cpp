// optim.name: muon in the training loop: the blocks' matrices take Muon's update and keep its
// momentum in the checkpoint (/optimizer/<name>/momentum, no v), every other parameter AdamW's;
// with gradient accumulation, a run stopped and resumed repeats the one in one piece bit for bit,
// and a checkpoint of the other optimizer is refused naming the file and the parameter.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "nn/hf_names.h"
#include "train/options.h"
#include "train/trainer.h"
#include "train_fixture.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using testing::metric;
using testing::TempRun;

Config muon_config(const TempRun& run, const char* name) {
  Config c = run.config(12);
  c.optim.name = "muon";
  c.train.total_batch_size = 2 * 8 * 16;  // two micro-batches a step
  c.log.interval = 1;
  c.checkpoint.interval = 6;
  c.train.run_name = name;
  return c;
}

TEST(MuonTraining, resumes_bit_for_bit_and_keeps_momentum_for_the_block_matrices_only) {
  TempRun run;
  std::ostringstream log;
  const train::TrainResult whole = train::run_training(muon_config(run, "whole"), log);
  EXPECT_EQ(whole.steps, 12) << log.str();
  const train::TrainResult split = testing::run_split(muon_config(run, "whole"), 6, log);
  EXPECT_EQ(split.steps, 12) << log.str();
  const fs::path a = run.dir / "ckpt" / "whole" / "metrics.jsonl";
  const fs::path b = run.dir / "ckpt" / "split" / "metrics.jsonl";
  EXPECT_EQ(metric(a, "loss"), metric(b, "loss"));
  EXPECT_EQ(metric(a, "val_loss"), metric(b, "val_loss"));
  EXPECT_EQ(metric(a, "loss").size(), 12u);
  EXPECT_NE(log.str().find("muon: 8 block matrices (24576 parameters) orthogonalised; AdamW for "
                           "the other 20 tensors (9632 parameters: embeddings, head, norms, "
                           "biases); c_attn orthogonalised as its q, k and v rows\n"),
            std::string::npos)
      << log.str();
  // It learns: 4.47 after 12 steps (AdamW alone: 4.40; the uniform guess is ln 257 = 5.55).
  EXPECT_LT(whole.last_train_loss, 4.8) << log.str();

  // The state: momentum for the 2 x 4 block matrices (c_attn, c_proj, c_fc, mlp.c_proj), m and v
  // for the rest.
  const Config c = muon_config(run, "whole");
  const std::vector<std::string> matrices = nn::muon_parameters(train::model_config(c));
  ASSERT_EQ(matrices.size(), 8u);
  EXPECT_EQ(matrices[0], "transformer.h.0.attn.c_attn.weight");
  const CheckpointData ck = load_checkpoint(whole.last_checkpoint);
  std::set<std::string> keys;
  for (const auto& [key, t] : ck.optimizer) keys.insert(key);
  for (const std::string& m : matrices) {
    EXPECT_TRUE(keys.count(m + "/momentum")) << m;
    EXPECT_FALSE(keys.count(m + "/v")) << m;
  }
  EXPECT_TRUE(keys.count("transformer.wte.weight/v"));
  EXPECT_TRUE(keys.count("transformer.h.0.attn.c_attn.bias/m"));
  EXPECT_FALSE(keys.count("transformer.wte.weight/momentum"));

  // Resumed under the other optimizer: refused, naming the file and a parameter.
  Config adamw = muon_config(run, "whole");
  adamw.optim.name = "adamw";
  adamw.train.max_steps = 14;
  adamw.checkpoint.resume = whole.last_checkpoint;
  std::ostringstream refused;
  const std::string msg = error_of([&] { train::run_training(adamw, refused); });
  EXPECT_NE(msg.find(whole.last_checkpoint), std::string::npos) << msg;
  // (the first parameter of the flat buffer's order: the last block's MLP projection)
  EXPECT_NE(msg.find("no AdamW state for transformer.h.1.mlp.c_proj.weight (resume with the "
                     "optimizer it was saved with"),
            std::string::npos)
      << msg;
}

// optim.muon_split_qkv (on by default): GPT-2's fused c_attn orthogonalised as its q, k and v rows
// (H, Hkv, Hkv) x head_dim, each at its own lr ratio (test_muon.cpp checks the formula), or whole;
// a model with separate q, k and v has no fused matrix to split. The runs part after the first
// update.
TEST(MuonTraining, split_qkv_orthogonalises_the_fused_projection_as_three_maps) {
  TempRun run;
  Config c = muon_config(run, "fused");
  c.model.n_head = 4;
  c.model.n_kv_head = 2;  // k and v have half q's 32 rows
  const std::map<std::string, std::vector<int64_t>> blocks =
      nn::muon_qkv_blocks(train::model_config(c));
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_EQ(blocks.at("transformer.h.1.attn.c_attn.weight"), (std::vector<int64_t>{32, 16, 16}));
  Config llama = c;
  llama.model.norm = "rmsnorm";
  llama.model.mlp = "swiglu";
  llama.model.position = "rope";
  llama.model.bias = false;
  EXPECT_TRUE(nn::muon_qkv_blocks(train::model_config(llama)).empty());

  c.train.max_steps = 3;
  c.checkpoint.interval = 0;
  c.optim.muon_split_qkv = false;
  std::ostringstream fused_log, log;
  train::run_training(c, fused_log);
  EXPECT_EQ(fused_log.str().find("c_attn orthogonalised"), std::string::npos) << fused_log.str();
  Config split = c;
  split.optim.muon_split_qkv = true;
  split.train.run_name = "split";
  train::run_training(split, log);
  EXPECT_NE(log.str().find("; c_attn orthogonalised as its q, k and v rows"), std::string::npos)
      << log.str();
  const auto a = metric(run.dir / "ckpt" / "fused" / "metrics.jsonl", "loss");
  const auto b = metric(run.dir / "ckpt" / "split" / "metrics.jsonl", "loss");
  ASSERT_TRUE(a.count(1) && a.count(3) && b.count(1) && b.count(3)) << log.str();
  EXPECT_EQ(a.at(1), b.at(1));
  EXPECT_NE(a.at(3), b.at(3));
}

}  // namespace
}  // namespace tessera
