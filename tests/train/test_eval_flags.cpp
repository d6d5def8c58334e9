// eval's own flags (train/eval_flags.h): --contexts lengths, and the RoPE scaling flags, where a
// factor without a scaling type, or a type without a factor, is an error naming the flags rather
// than an unscaled evaluation.
#include <gtest/gtest.h>

#include "test_util.h"
#include "train/eval_flags.h"

using namespace tessera;
using tessera::testing::error_of;

namespace {

bool has(const std::string& msg, const std::string& part) {
  return msg.find(part) != std::string::npos;
}

Config rope_config() {
  Config c;
  c.model.position = "rope", c.model.block_size = 64;
  return c;
}

}  // namespace

TEST(EvalFlags, contexts_are_lengths_of_at_least_one_named_by_the_flag) {
  EXPECT_EQ(train::parse_contexts("128, 256,512"), (std::vector<int64_t>{128, 256, 512}));
  for (const char* bad : {"0", "128,0", "-4", "", "128,", "12x", "a"}) {
    const std::string m = error_of([&] { train::parse_contexts(bad); });
    EXPECT_TRUE(has(m, "--contexts '" + std::string(bad) + "'") &&
                has(m, "is not a context length >= 1") && !has(m, "step"))
        << m;
  }
}

TEST(EvalFlags, a_factor_without_a_scaling_type_is_an_error_naming_both_flags) {
  Config c = rope_config();
  std::string m = error_of([&] { train::apply_rope_flags(c, {.factor = "4"}, "ck.h5"); });
  EXPECT_TRUE(has(m, "--rope-factor 4 needs --rope-scaling") && has(m, "none in ck.h5") &&
              has(m, "unscaled")) << m;
  c = rope_config();
  m = error_of([&] { train::apply_rope_flags(c, {.factor = "auto"}, "ck.h5"); });
  EXPECT_TRUE(has(m, "--rope-factor auto") && has(m, "--rope-scaling")) << m;
  c = rope_config();
  m = error_of([&] {
    train::apply_rope_flags(c, {.sets = {"model.rope_scaling.factor=4"}}, "ck.h5");
  });
  EXPECT_TRUE(has(m, "--set model.rope_scaling.factor=4") && has(m, "--rope-scaling")) << m;
  c = rope_config();
  m = error_of([&] { train::apply_rope_flags(c, {.type = "none", .factor = "4"}, "ck.h5"); });
  EXPECT_TRUE(has(m, "--rope-factor 4 needs --rope-scaling") && has(m, "not none")) << m;
}

TEST(EvalFlags, scaling_flags_apply_to_the_rope_scaling_section) {
  Config c = rope_config();
  EXPECT_FALSE(train::apply_rope_flags(c, {}, "ck.h5"));
  EXPECT_EQ(c.model.rope_scaling.type, "none");
  EXPECT_TRUE(train::apply_rope_flags(c, {.type = "yarn", .factor = "4"}, "ck.h5"));
  EXPECT_EQ(c.model.rope_scaling.type, "yarn");
  EXPECT_EQ(c.model.rope_scaling.factor, 4);
  EXPECT_EQ(c.model.rope_scaling.original_max_position, 64);  // the trained length
  // A checkpoint trained with scaling takes a new factor alone.
  Config scaled = rope_config();
  scaled.model.rope_scaling.type = "linear";
  EXPECT_TRUE(train::apply_rope_flags(scaled, {.factor = "8"}, "ck.h5"));
  EXPECT_EQ(scaled.model.rope_scaling.factor, 8);
  Config learned;
  const std::string m =
      error_of([&] { train::apply_rope_flags(learned, {.type = "linear"}, "ck.h5"); });
  EXPECT_TRUE(has(m, "ck.h5 has model.position 'learned'")) << m;
  Config other = rope_config();
  const std::string n =
      error_of([&] { train::apply_rope_flags(other, {.sets = {"model.n_layer=2"}}, "ck.h5"); });
  EXPECT_TRUE(has(n, "--set 'model.n_layer=2'")) << n;
}

TEST(EvalFlags, scaling_type_none_evaluates_plain_rope_also_for_a_scaled_checkpoint) {
  Config c = rope_config();
  EXPECT_TRUE(train::apply_rope_flags(c, {.type = "none"}, "ck.h5"));
  EXPECT_EQ(c.model.rope_scaling, RopeScalingConfig{});  // original_max_position stays 0
  // A checkpoint trained with YaRN: none drops its factor and length with its type.
  Config scaled = rope_config();
  RopeScalingConfig& rs = scaled.model.rope_scaling;
  rs.type = "yarn", rs.factor = 4, rs.original_max_position = 16, rs.beta_fast = 16;
  EXPECT_TRUE(train::apply_rope_flags(scaled, {.type = "none"}, "ck.h5"));
  EXPECT_EQ(scaled.model.rope_scaling, RopeScalingConfig{});
  scaled.model.rope_scaling.type = "linear", scaled.model.rope_scaling.factor = 4;
  EXPECT_TRUE(train::apply_rope_flags(scaled, {.sets = {"model.rope_scaling.type=none"}}, "ck.h5"));
  EXPECT_EQ(scaled.model.rope_scaling, RopeScalingConfig{});
}

TEST(EvalFlags, a_scaling_type_without_a_factor_is_an_error_where_factor_one_changes_nothing) {
  for (const char* type : {"linear", "yarn", "llama3"}) {
    Config c = rope_config();
    const std::string m = error_of([&] { train::apply_rope_flags(c, {.type = type}, "ck.h5"); });
    EXPECT_TRUE(has(m, "--rope-scaling " + std::string(type) + " needs --rope-factor") &&
                has(m, "ck.h5 is 1") && has(m, "unscaled"))
        << m;
  }
  Config c = rope_config();
  std::string m = error_of(
      [&] { train::apply_rope_flags(c, {.sets = {"model.rope_scaling.type=yarn"}}, "ck.h5"); });
  EXPECT_TRUE(has(m, "--set model.rope_scaling.type=yarn needs --rope-factor")) << m;
  // A factor from a flag, --set, auto, or the checkpoint's own scaling is enough.
  c = rope_config();
  EXPECT_TRUE(train::apply_rope_flags(c, {.type = "linear", .factor = "auto"}, "ck.h5"));
  c = rope_config();
  EXPECT_TRUE(train::apply_rope_flags(
      c, {.type = "linear", .sets = {"model.rope_scaling.factor=2"}}, "ck.h5"));
  EXPECT_EQ(c.model.rope_scaling.factor, 2);
  Config scaled = rope_config();
  scaled.model.rope_scaling.type = "linear", scaled.model.rope_scaling.factor = 4;
  EXPECT_TRUE(train::apply_rope_flags(scaled, {.type = "yarn"}, "ck.h5"));
  EXPECT_EQ(scaled.model.rope_scaling.factor, 4);
  // dynamic at factor 1 still raises the base past the trained length: it runs.
  c = rope_config();
  EXPECT_TRUE(train::apply_rope_flags(c, {.type = "dynamic"}, "ck.h5"));
}
