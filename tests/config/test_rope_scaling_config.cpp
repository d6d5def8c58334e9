// model.rope_scaling, a nested mapping in YAML and dotted keys for --set; lora.trainable; and the
// shipped context-extension config.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "config/config.h"
#include "config/expect_contains.h"
#include "nn/rope_scaling.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

const char* kRope = R"(
model:
  position: rope
  block_size: 128
  rope_scaling:
    type: yarn
    factor: 8
    beta_fast: 16
)";

TEST(RopeScalingConfig, nested_mapping_reads_into_model_rope_scaling) {
  const Config c = parse_config(kRope, "rope.yaml");
  EXPECT_EQ(c.model.rope_scaling.type, "yarn");
  EXPECT_EQ(c.model.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.model.rope_scaling.beta_fast, 16.0);
  EXPECT_EQ(c.model.rope_scaling.beta_slow, 1.0);  // untouched keys keep their defaults
  EXPECT_EQ(c.model.rope_scaling.original_max_position, 0);
}

TEST(RopeScalingConfig, set_reaches_the_nested_keys) {
  const Config c = parse_config(kRope, "rope.yaml",
                                {"model.rope_scaling.type=llama3", "model.rope_scaling.factor=4",
                                 "model.rope_scaling.original_max_position=64"});
  EXPECT_EQ(c.model.rope_scaling.type, "llama3");
  EXPECT_EQ(c.model.rope_scaling.factor, 4.0);
  EXPECT_EQ(c.model.rope_scaling.original_max_position, 64);
}

TEST(RopeScalingConfig, to_yaml_reads_back_equal) {
  const Config c = parse_config(kRope, "rope.yaml", {"lora.rank=4", "checkpoint.init=base",
                                                     "lora.trainable=embed,norm"});
  const std::string text = to_yaml(c);
  EXPECT_TRUE(has(text, "  rope_scaling.type: yarn\n")) << text;
  EXPECT_EQ(parse_config(text, "round trip"), c);
}

TEST(RopeScalingConfig, mistakes_are_named_by_their_full_path) {
  EXPECT_TRUE(has(error_of([] { parse_config("model:\n  rope_scaling:\n    typ: yarn\n", "x"); }),
                  "unknown key 'model.rope_scaling.typ' (did you mean 'model.rope_scaling.type'?)"));
  EXPECT_TRUE(has(error_of([] { parse_config("model:\n  rope_scaling: yarn\n", "x"); }),
                  "model.rope_scaling: expected a mapping of keys, got a scalar 'yarn'"));
  EXPECT_TRUE(has(error_of([] { parse_config(kRope, "x", {"model.rope_scaling.type=ntk"}); }),
                  "model.rope_scaling.type must be one of none, linear, dynamic, yarn, llama3"));
  EXPECT_TRUE(has(error_of([] { parse_config(kRope, "x", {"model.rope_scaling.factor=0.5"}); }),
                  "model.rope_scaling.factor must be >= 1"));
  // A scaling key without a type would change nothing.
  EXPECT_TRUE(has(error_of([] { parse_config("model:\n  position: rope\n  rope_scaling:\n"
                                             "    factor: 8\n", "x"); }),
                  "model.rope_scaling.factor: 8 vs 1 (the default): that key is set but "
                  "model.rope_scaling.type is none"));
  // Scaling needs rotary positions: stick-breaking and learned-position models have none.
  EXPECT_TRUE(has(error_of([] { parse_config(kRope, "x", {"model.position=none"}); }),
                  "model.rope_scaling.type 'yarn' scales rotary embeddings, but model.position is "
                  "'none'"));
}

// A dotted key and a nested mapping name the same key: whichever came last would win.
TEST(RopeScalingConfig, a_key_given_both_dotted_and_nested_is_a_duplicate) {
  const char* dotted_first =
      "model:\n  position: rope\n  rope_scaling.type: linear\n"
      "  rope_scaling.factor: 2\n  rope_scaling:\n    type: yarn\n"
      "    factor: 8\n";
  const char* nested_first =
      "model:\n  position: rope\n  rope_scaling:\n    type: yarn\n"
      "    factor: 8\n  rope_scaling.factor: 2\n";
  const std::string a = error_of([&] { parse_config(dotted_first, "a.yaml"); });
  EXPECT_TRUE(has(a, "a.yaml: duplicate key 'model.rope_scaling.type' (line 6)")) << a;
  const std::string b = error_of([&] { parse_config(nested_first, "b.yaml"); });
  EXPECT_TRUE(has(b, "b.yaml: duplicate key 'model.rope_scaling.factor' (line 6)")) << b;
  EXPECT_TRUE(has(error_of([] {
                    parse_config(
                        "model:\n  rope_scaling:\n    type: yarn\n  rope_scaling:\n"
                        "    factor: 8\n",
                        "c.yaml");
                  }),
                  "duplicate key 'model.rope_scaling'"));
}

// --init may extend the context (block_size, its RoPE scaling, a larger rope_theta) and change
// dropout; every other key decides what the weights compute.
TEST(RopeScalingConfig, an_init_may_change_the_context_length_and_its_positions_only) {
  const auto root = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
  const Config base = load_config((root / "configs/rope-small.yaml").string());
  const Config extended = load_config((root / "configs/extend-context.yaml").string());
  EXPECT_EQ(init_model_difference(base.model, extended.model), "");
  ModelConfig m = extended.model;
  m.rope_theta = 1e6;
  m.dropout = 0.1;
  EXPECT_EQ(init_model_difference(base.model, m), "");
  EXPECT_NE(model_difference(base.model, m), "");  // a resume allows neither
  m.n_head = 8;
  EXPECT_EQ(init_model_difference(base.model, m), "model.n_head: 4 vs 8");
}

// Defaults compare resolved: an original_max_position of 0 is the block size, an n_kv_head of 0
// is n_head, an mlp_hidden of 0 the rule's width, a head_dim of 0 n_embd / n_head.
TEST(RopeScalingConfig, model_keys_left_at_0_compare_as_the_values_they_stand_for) {
  ModelConfig a;
  a.position = "rope", a.rope_scaling.type = "linear", a.rope_scaling.factor = 2;
  ModelConfig b = a;
  b.rope_scaling.original_max_position = a.block_size;
  b.n_kv_head = a.n_head;
  b.mlp_hidden = 4 * a.n_embd;
  b.explicit_head_dim = a.n_embd / a.n_head;
  EXPECT_EQ(model_difference(a, b), "");
  b.explicit_head_dim = 64;
  EXPECT_EQ(model_difference(a, b), "model.head_dim: 32 vs 64");
  b.explicit_head_dim = 0;
  b.rope_scaling.original_max_position = a.block_size / 2;
  EXPECT_EQ(model_difference(a, b), "model.rope_scaling.original_max_position: 64 vs 32");
}

TEST(LoraTrainableConfig, kinds_are_checked_and_need_lora) {
  EXPECT_TRUE(has(error_of([] { parse_config("", "x", {"lora.trainable=norm"}); }),
                  "lora.trainable 'norm' needs lora.rank > 0"));
  EXPECT_TRUE(has(error_of([] {
                    parse_config("", "x", {"lora.rank=4", "checkpoint.init=base",
                                           "lora.trainable=embed,bias"});
                  }),
                  "lora.trainable: unknown kind 'bias'"));
  EXPECT_NO_THROW(parse_config("", "x", {"lora.rank=4", "checkpoint.init=base",
                                         "lora.trainable=embed, norm"}));
}

TEST(ShippedConfigs, extend_context_is_rope_small_at_four_times_the_length_by_longlora_with_yarn) {
  const auto root = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
  const Config base = load_config((root / "configs/rope-small.yaml").string());
  const Config c = load_config((root / "configs/extend-context.yaml").string());
  EXPECT_EQ(c.model.block_size, 4 * base.model.block_size);
  EXPECT_EQ(c.model.rope_scaling.type, "yarn");  // README: linear x4 loses to the base here
  EXPECT_EQ(c.model.rope_scaling.factor, 4.0);
  EXPECT_EQ(c.model.rope_scaling.original_max_position, base.model.block_size);
  EXPECT_TRUE(c.train.s2_attn);
  EXPECT_GT(c.lora.rank, 0);
  EXPECT_EQ(c.lora.targets, "q,k,v,o");
  EXPECT_EQ(c.lora.trainable, "embed,norm");
  // The architecture is the base's: only the length and its scaling differ.
  ModelConfig m = c.model;
  m.block_size = base.model.block_size;
  m.rope_scaling = base.model.rope_scaling;
  EXPECT_EQ(m, base.model);
}

// The model layer checks its RoPE scaling again (nn/rope_scaling.cpp: rope_scaled_freqs, reached by
// models built without a Config, e.g. from an imported HF config): each problem names its setting
// under the caller's prefix, several are joined, and a valid setting has none.
TEST(ConfigValidation, rope_scaling_problems_name_the_setting_under_the_prefix) {
  using nn::RopeScaling;
  using nn::RopeScalingType;
  const RopeScaling llama3{
      .type = RopeScalingType::Llama3, .factor = 8, .low_freq_factor = 4, .high_freq_factor = 2};
  EXPECT_EQ(nn::rope_scaling_problem(llama3, "rope_scaling"),
            "rope_scaling.high_freq_factor (2) must exceed low_freq_factor (4) > 0");
  const RopeScaling no_low{.type = RopeScalingType::Llama3, .low_freq_factor = 0};
  EXPECT_CONTAINS(nn::rope_scaling_problem(no_low, "m"),
                  "m.high_freq_factor (4) must exceed low_freq_factor (0) > 0");
  const RopeScaling negative_length{
      .type = RopeScalingType::Dynamic, .factor = 2, .original_max_position = -1};
  EXPECT_EQ(nn::rope_scaling_problem(negative_length, "rope_scaling"),
            "rope_scaling.original_max_position must be >= 0 (0 = model.block_size), got -1");
  for (double bad : {-0.5, double(INFINITY), double(NAN)}) {
    SCOPED_TRACE(bad);
    const RopeScaling yarn{.type = RopeScalingType::Yarn, .factor = 4, .attention_factor = bad};
    EXPECT_CONTAINS(nn::rope_scaling_problem(yarn, "rope_scaling"),
                    "rope_scaling.attention_factor must be >= 0 (0 = 0.1 ln factor + 1), got ");
  }
  // Two problems at once, joined; no prefix given: the bare setting names.
  const RopeScaling both{.type = RopeScalingType::Yarn, .factor = 0.5, .attention_factor = -1};
  EXPECT_EQ(nn::rope_scaling_problem(both, ""),
            "factor must be >= 1 (the new length over the trained one), got 0.5; attention_factor "
            "must be >= 0 (0 = 0.1 ln factor + 1), got -1");
  EXPECT_EQ(nn::rope_scaling_problem({.type = RopeScalingType::Yarn, .factor = 4}, "x"), "");
  EXPECT_EQ(nn::rope_scaling_problem(
                {.type = RopeScalingType::Yarn, .factor = 4, .attention_factor = 11}, "x"),
            "x.attention_factor must be at most 10 (it scales every attention logit by its "
            "square), got 11");
  EXPECT_EQ(nn::rope_scaling_problem({.type = RopeScalingType::Llama3, .factor = 8}, "x"), "");
  // rope_scaled_freqs refuses what rope_scaling_problem names.
  EXPECT_CONTAINS(error_of([&] { nn::rope_scaled_freqs(llama3, 16, 10000, 64, 128); }),
                  "rope_scaling.high_freq_factor (2) must exceed low_freq_factor (4) > 0");
}

}  // namespace
}  // namespace tessera
