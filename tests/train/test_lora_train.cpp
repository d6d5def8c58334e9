// LoRA and QLoRA inside the training loop: the run trains adapters on a frozen --init base, writes
// adapter-only checkpoints tied to that base, resumes bit for bit, and its checkpoints load for
// inference (train/load.h) and merge into a model that computes the same logits.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "checkpoint/sidecar.h"
#include "test_util.h"
#include "train/load.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

using namespace tessera;
using tessera::testing::bytes;
using tessera::testing::error_of;
using tessera::testing::TempRun;

namespace {

// A base trained for 30 steps, then a LoRA config on top of it.
struct LoraRun : TempRun {
  std::string base;
  LoraRun() {
    Config c = config(30);
    c.train.run_name = "base";
    std::ostringstream log;
    base = train::run_training(c, log).last_checkpoint;
  }
  Config lora(const std::string& name, int64_t steps, const std::string& quantize = "none") const {
    Config c = config(steps);
    c.train.run_name = name;
    c.checkpoint.init = base;
    c.lora.rank = 4, c.lora.alpha = 8, c.lora.dropout = 0.1, c.lora.targets = "all";
    c.lora.quantize = quantize;
    c.optim.lr = 1e-2, c.optim.min_lr = 1e-3;
    return c;
  }
};

}  // namespace

TEST(LoraTraining, adapters_train_alone_and_the_checkpoint_holds_only_them) {
  LoraRun run;
  const std::vector<unsigned char> base_file_before = [&] {
    std::ifstream in(run.base, std::ios::binary);
    return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), {});
  }();
  for (const char* quantize : {"none", "nf4-dq"}) {
    SCOPED_TRACE(quantize);
    std::ostringstream log;
    Config c = run.lora(std::string("lora_") + quantize, 20, quantize);
    train::TrainResult r = train::run_training(c, log);
    EXPECT_NE(log.str().find("memory: weights"), std::string::npos) << log.str();
    EXPECT_NE(log.str().find("memory: peak"), std::string::npos);
    const CheckpointData ck = load_checkpoint(r.last_checkpoint);
    ASSERT_FALSE(ck.model.empty());
    for (const auto& [name, t] : ck.model) EXPECT_NE(name.find(".lora_"), std::string::npos) << name;
    EXPECT_EQ(ck.adapter.at("quantize"), quantize);
    EXPECT_EQ(ck.adapter.at("targets"), "q,k,v,o,up,down");
    EXPECT_EQ(ck.adapter.at("base_checkpoint"), run.base);

    // The adapted model (base + adapters, loaded as generate/eval load it) beats the base on the
    // training data, and the merged model computes the same logits.
    // Each file is verified once per load (one CheckpointReader for its attributes and weights):
    // the adapter checkpoint and its base, then the base alone.
    const int64_t hashes = checkpoint_hashes();
    train::LoadedModel m = train::load_model(r.last_checkpoint);
    EXPECT_EQ(checkpoint_hashes() - hashes, 2);
    train::LoadedModel b = train::load_model(run.base);
    EXPECT_EQ(checkpoint_hashes() - hashes, 3);
    ASSERT_TRUE(m.lora);
    const double adapted = train::evaluate(*m.model, c, c.data.train, 4);
    const double plain = train::evaluate(*b.model, c, c.data.train, 4);
    EXPECT_LT(adapted, plain);
    Generator g(0);
    nn::GPT merged(train::model_config(c.model, c.train), g);
    m.lora->merge_into(merged);
    std::vector<int32_t> ids = {1, 5, 9, 100, 32, 101, 116, 104};
    Tensor x = from_vector(ids, {1, 8});
    // f32 logits through two layers in a different association order: a few ulps each.
    EXPECT_LT(tessera::testing::max_abs_diff(m.model->forward(x, false), merged.forward(x, false)), 1e-4);
  }
  std::ifstream in(run.base, std::ios::binary);
  EXPECT_EQ(std::vector<unsigned char>(std::istreambuf_iterator<char>(in), {}), base_file_before);
}

TEST(LoraTraining, interrupted_qlora_run_resumes_bit_exactly) {
  LoraRun run;
  std::ostringstream log;
  Config full = run.lora("full", 16, "nf4-dq");
  full.checkpoint.interval = 4;
  train::TrainResult a = train::run_training(full, log);
  Config split = full;
  split.checkpoint.async = true;  // the adapter checkpoints written in the background
  train::TrainResult b = tessera::testing::run_split(split, 8, log);
  EXPECT_NE(log.str().find("written in the background"), std::string::npos) << log.str();
  EXPECT_EQ(a.last_train_loss, b.last_train_loss);
  EXPECT_EQ(a.last_val_loss, b.last_val_loss);
  const CheckpointData x = load_checkpoint(a.last_checkpoint), y = load_checkpoint(b.last_checkpoint);
  ASSERT_EQ(x.model.size(), y.model.size());
  for (size_t i = 0; i < x.model.size(); ++i)
    EXPECT_EQ(bytes(x.model[i].second), bytes(y.model[i].second)) << x.model[i].first;
  ASSERT_EQ(x.optimizer.size(), y.optimizer.size());
  for (size_t i = 0; i < x.optimizer.size(); ++i)
    EXPECT_EQ(bytes(x.optimizer[i].second), bytes(y.optimizer[i].second)) << x.optimizer[i].first;
}

TEST(LoraTraining, mismatched_base_and_mixed_checkpoints_are_refused) {
  LoraRun run;
  std::ostringstream log;
  train::TrainResult r = train::run_training(run.lora("a", 4), log);
  // Another base: the same config trained for fewer steps.
  Config other = run.config(10);
  other.train.run_name = "other";
  const std::string other_base = train::run_training(other, log).last_checkpoint;

  std::string msg = error_of([&] { train::load_model(r.last_checkpoint, other_base); });
  EXPECT_NE(msg.find(other_base), std::string::npos) << msg;
  EXPECT_NE(msg.find("fingerprint"), std::string::npos) << msg;
  // A LoRA checkpoint given as the base, and a recorded base that has moved.
  msg = error_of([&] { train::load_model(r.last_checkpoint, r.last_checkpoint); });
  EXPECT_NE(msg.find("the base " + r.last_checkpoint + " of LoRA checkpoint " + r.last_checkpoint +
                     " is itself a LoRA checkpoint"),
            std::string::npos)
      << msg;
  std::filesystem::rename(run.base, run.base + ".moved");
  std::filesystem::rename(run.base + ".sha256", run.base + ".moved.sha256");
  msg = error_of([&] { train::load_model(r.last_checkpoint); });
  EXPECT_NE(msg.find("recorded its base as " + run.base + ", which cannot be opened"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("pass the base with --base"), std::string::npos) << msg;
  std::filesystem::rename(run.base + ".moved", run.base);
  std::filesystem::rename(run.base + ".moved.sha256", run.base + ".sha256");

  Config resume = run.lora("a", 8);
  resume.checkpoint.init = other_base;
  resume.checkpoint.resume = "auto";
  msg = error_of([&] { train::run_training(resume, log); });
  EXPECT_NE(msg.find("fingerprint"), std::string::npos) << msg;

  Config init_from_adapter = run.lora("b", 4);
  init_from_adapter.checkpoint.init = r.last_checkpoint;
  msg = error_of([&] { train::run_training(init_from_adapter, log); });
  EXPECT_NE(msg.find("holds LoRA adapters"), std::string::npos) << msg;

  Config full_resume = run.config(40);
  full_resume.train.run_name = "a";
  full_resume.checkpoint.resume = r.last_checkpoint;
  msg = error_of([&] { train::run_training(full_resume, log); });
  EXPECT_NE(msg.find("holds LoRA adapters"), std::string::npos) << msg;
}

// Adapters resume only under their own lora section: a changed alpha or a quantised base keeps
// every adapter's shape, and would silently train another model.
TEST(LoraTraining, a_resume_with_another_lora_section_names_the_first_difference) {
  LoraRun run;
  std::ostringstream log;
  Config c = run.lora("lora_resume", 4);
  c.checkpoint.interval = 2;
  train::run_training(c, log);
  c.checkpoint.resume = "auto";
  c.train.max_steps = 6;
  Config alpha = c;
  alpha.lora.alpha = 64;
  EXPECT_NE(error_of([&] { train::run_training(alpha, log); }).find("lora.alpha: 8 vs 64"),
            std::string::npos);
  Config nf4 = c;
  nf4.lora.quantize = "nf4";
  EXPECT_NE(error_of([&] { train::run_training(nf4, log); }).find("lora.quantize: none vs nf4"),
            std::string::npos);
  c.lora.dropout = 0;  // dropout may change
  EXPECT_EQ(train::run_training(c, log).steps, 6);
}

// build/merge end to end: the adapters of a LoRA run (a QLoRA one: NF4 weights are dequantised
// before the update is added) folded into their base give a plain checkpoint, with `latest`, that
// load_model reads as a full model computing the adapted model's logits. An --output that already
// holds a run, and a checkpoint without adapters, are refused without writing anything.
TEST(LoraTraining, the_merge_binary_writes_a_full_checkpoint_with_the_adapted_logits) {
  LoraRun run;
  std::ostringstream log;
  const train::TrainResult r = train::run_training(run.lora("lora", 6, "nf4-dq"), log);
  const std::string merge = tessera::testing::bin_dir() + "/merge";
  ASSERT_TRUE(std::filesystem::exists(merge)) << merge << " is not built";
  const std::filesystem::path out = run.dir / "merged";
  std::string output;
  ASSERT_EQ(tessera::testing::run_command(
                merge + " --adapter " + r.last_checkpoint + " --output " + out.string(), &output),
            0)
      << output;
  const std::string merged_file = (out / "step_00000006.h5").string();
  EXPECT_NE(output.find("merged " + r.last_checkpoint), std::string::npos) << output;
  EXPECT_NE(output.find("-> " + merged_file), std::string::npos) << output;
  EXPECT_EQ(resolve_checkpoint(out.string()), merged_file);

  train::LoadedModel merged = train::load_model(out.string());
  EXPECT_FALSE(merged.lora);
  EXPECT_EQ(merged.step, 6);
  EXPECT_EQ(merged.config.lora.rank, 0);  // a plain model's config
  EXPECT_TRUE(load_checkpoint(merged_file).adapter.empty());
  train::LoadedModel adapted = train::load_model(r.last_checkpoint);
  ASSERT_TRUE(adapted.lora);
  const std::vector<int32_t> ids = {1, 5, 9, 100, 32, 101, 116, 104, 33, 7};
  Tensor x = from_vector(ids, {1, 10});
  // Base + (alpha / r) B A summed into one f32 weight instead of applied as two products: a few
  // ulps of the logits (4.8e-7 measured); without the adapters they are ~2 apart.
  const Tensor want = adapted.model->forward(x, false), got = merged.model->forward(x, false);
  const double diff = tessera::testing::max_abs_diff(got, want);
  std::printf("[ merged ] max logit difference %.3g\n", diff);
  EXPECT_LT(diff, 1e-4);
  // The trained adapters (and the NF4 rounding of the base) moved the logits well past that bound:
  // a merge that wrote the base back unchanged fails the check above.
  train::LoadedModel base = train::load_model(run.base);
  EXPECT_GT(tessera::testing::max_abs_diff(base.model->forward(x, false), want), 1e-3);

  const std::string before = tessera::testing::read_file(merged_file);
  EXPECT_NE(tessera::testing::run_command(
                merge + " --adapter " + r.last_checkpoint + " --output " + out.string(), &output),
            0);
  EXPECT_NE(output.find("--output " + out.string() + " already holds a run"), std::string::npos)
      << output;
  EXPECT_EQ(tessera::testing::read_file(merged_file), before);  // nothing was written

  const std::filesystem::path other = run.dir / "from_base";
  EXPECT_NE(tessera::testing::run_command(
                merge + " --adapter " + run.base + " --output " + other.string(), &output),
            0);
  EXPECT_NE(output.find(run.base + " holds no LoRA adapters (nothing to merge)"), std::string::npos)
      << output;
  EXPECT_TRUE(list_checkpoints(other.string()).empty());
}
