// A mixture of experts' keys (model.n_expert, expert_top_k, router_renormalize,
// router_aux_loss): configs/moe-small.yaml as the model it describes, what a resume compares, and
// what LoRA and recompute refuse beside it.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "config/config.h"
#include "core/rng.h"
#include "nn/gpt.h"
#include "test_util.h"
#include "train/options.h"

namespace tessera {
namespace {

Config moe_small() {
  const auto root = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
  return load_config((root / "configs/moe-small.yaml").string());
}

TEST(MoeConfig, moe_small_is_llama_small_with_8_experts_of_half_its_width) {
  const Config c = moe_small();
  const nn::GPTConfig g = train::model_config(c);
  EXPECT_EQ(g.n_expert, 8);
  EXPECT_EQ(g.expert_top_k, 2);
  EXPECT_TRUE(g.router_renormalize);
  EXPECT_EQ(g.router_aux_loss, 0.01);
  EXPECT_EQ(g.hidden(), 192);
  // A token meets 2 experts of 192, as many MLP weights as llama-small's one of 384 (plus the
  // router's 8 x 128 a layer).
  ModelConfig dense = c.model;
  dense.n_expert = 0, dense.mlp_hidden = 384;
  EXPECT_EQ(c.model.active_parameter_count(), dense.parameter_count() + 4 * 8 * 128);
}

// A resume keeps the model: the experts and how they are chosen must match; the balancing loss's
// coefficient shapes training only, as dropout does; a dense model's mixture keys decide nothing.
TEST(MoeConfig, a_resume_compares_the_experts_but_not_the_balancing_coefficient) {
  const ModelConfig m = moe_small().model;
  ModelConfig other = m;
  other.router_aux_loss = 0.1;
  EXPECT_EQ(model_difference(m, other), "");
  other.expert_top_k = 1;
  EXPECT_EQ(model_difference(m, other), "model.expert_top_k: 2 vs 1");
  other = m;
  other.router_renormalize = false;
  EXPECT_EQ(model_difference(m, other), "model.router_renormalize: true vs false");
  ModelConfig a, b;
  b.expert_top_k = 4, b.router_renormalize = false;
  EXPECT_EQ(model_difference(a, b), "");
  b.n_expert = 4;
  EXPECT_EQ(model_difference(a, b), "model.n_expert: 0 vs 4");
}

// A shared expert (model.shared_expert_hidden, shared_expert_gate): the count the config computes
// (memory checks, the log, MFU's active parameters) is the model's, and it goes with a mixture.
TEST(MoeConfig, a_shared_expert_counts_and_needs_a_mixture) {
  Config c = moe_small();
  c.model.shared_expert_hidden = 256, c.model.shared_expert_gate = true;
  EXPECT_TRUE(config_problems(c).empty());
  Generator g(1);
  const nn::GPT model(train::model_config(c), g);
  double held = 0;
  for (const auto& [name, t] : model.parameters()) held += double(t.numel());
  EXPECT_EQ(held, c.model.parameter_count());
  ModelConfig none = c.model;
  none.shared_expert_hidden = 0, none.shared_expert_gate = false;
  // Every token meets the shared expert: 4 layers of 3 x 128 x 256 and the gate's 128.
  EXPECT_EQ(c.model.active_parameter_count() - none.active_parameter_count(),
            4.0 * (3 * 128 * 256 + 128));
  auto problem = [&](auto edit) {
    Config bad = c;
    edit(bad.model);
    const std::vector<std::string> p = config_problems(bad);
    return p.empty() ? std::string() : p[0];
  };
  EXPECT_EQ(problem([](ModelConfig& m) { m.n_expert = 0; }),
            "model.shared_expert_hidden 256 is a shared expert beside routed ones: it needs "
            "model.n_expert >= 2");
  EXPECT_EQ(problem([](ModelConfig& m) { m.shared_expert_hidden = 0; }),
            "model.shared_expert_gate gates the shared expert: it needs "
            "model.shared_expert_hidden > 0");
  EXPECT_EQ(problem([](ModelConfig& m) { m.shared_expert_hidden = -1; }),
            "model.shared_expert_hidden must be >= 0, got -1");
}

TEST(MoeConfig, lora_on_the_experts_is_refused_by_name) {
  Config c = moe_small();
  c.lora.rank = 4, c.checkpoint.init = "base.h5";
  c.lora.targets = "q,v";
  EXPECT_TRUE(config_problems(c).empty());
  c.lora.targets = "q,up";
  const std::vector<std::string> p = config_problems(c);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0],
            "lora.targets: 'up' adapts the MLP, which model.n_expert 8 makes a mixture of experts: "
            "adapters on experts are not built (q, k, v, o, head)");
}

}  // namespace
}  // namespace tessera
