// RoPE scaling (nn/rope_scaling.h): the inverse frequencies of every type against values worked out
// by hand, the cases that must reduce to plain RoPE, gradients through the scaled rotation, and a
// model that scales at evaluation.
//
// The hand-worked case: head dimension d = 8, base b = 10000, factor s = 4, original length L0 = 16.
// Plain inverse frequencies inv_i = b^(-2i/d) = 10000^(-i/4), i = 0..3:
//   inv = (1, 0.1, 0.01, 0.001).
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "gradcheck.h"
#include "nn/gpt.h"
#include "nn/rope_scaling.h"
#include "ops/ops.h"
#include "test_util.h"

namespace tessera::nn {
namespace {

using testing::error_of;
using testing::gradcheck;

// The message of the error f throws contains part.
#define EXPECT_THROW_MSG(expr, part) \
  EXPECT_NE(error_of([&] { (void)(expr); }).find(part), std::string::npos) << #expr

constexpr int64_t kD = 8;
constexpr double kBase = 10000, kFactor = 4;
constexpr int64_t kL0 = 16;

RopeScaling scaling(RopeScalingType type) {
  RopeScaling s;
  s.type = type, s.factor = kFactor;
  return s;
}

// Every value below is a handful of double operations (pow, log, a blend) from the exact number,
// a few ulps each: relative 1e-14 is ~50 ulps, while a wrong branch or ramp is off by >= 1e-3.
constexpr double kTol = 1e-14;

void expect_table(const std::vector<double>& got, const std::vector<double>& want,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(got[i], want[i], kTol * std::abs(want[i])) << what << " i " << i;
}

TEST(RopeScaling, none_is_the_plain_table_bit_for_bit) {
  const ops::RopeFreqs f = rope_scaled_freqs(RopeScaling{}, kD, kBase, kL0, 1000);
  EXPECT_EQ(f.inv_freq, ops::rope_freqs(kD, kBase).inv_freq);
  EXPECT_EQ(f.scale, 1.0);
  expect_table(f.inv_freq, {1, 0.1, 0.01, 0.001}, "none");
}

TEST(RopeScaling, linear_divides_every_frequency_by_the_factor) {
  // inv_i / s = (1, 0.1, 0.01, 0.001) / 4.
  const ops::RopeFreqs f = rope_scaled_freqs(scaling(RopeScalingType::Linear), kD, kBase, kL0, 16);
  expect_table(f.inv_freq, {0.25, 0.025, 0.0025, 0.00025}, "linear");
  EXPECT_EQ(f.scale, 1.0);
}

TEST(RopeScaling, dynamic_raises_the_base_from_the_current_length) {
  // seq_len L = 32 > L0: s L / L0 - (s - 1) = 4 * 2 - 3 = 5, d / (d - 2) = 4/3,
  // b' = 10000 * 5^(4/3), inv_i = b'^(-i/4) = 10000^(-i/4) * 5^(-i/3):
  //   i = 1: 0.1 * 5^(-1/3) = 0.1 * 0.5848035476425733 = 0.05848035476425733
  //   i = 2: 0.01 * 5^(-2/3) = 0.01 * 0.3419951893353394 = 0.003419951893353394
  //   i = 3: 0.001 * 5^(-1) = 0.0002
  const ops::RopeFreqs f = rope_scaled_freqs(scaling(RopeScalingType::Dynamic), kD, kBase, kL0, 32);
  expect_table(f.inv_freq, {1, 0.05848035476425733, 0.003419951893353394, 0.0002}, "dynamic");
  EXPECT_EQ(f.scale, 1.0);
}

TEST(RopeScaling, dynamic_equals_none_up_to_the_original_length) {
  const ops::RopeFreqs plain = ops::rope_freqs(kD, kBase);
  for (int64_t L : {1, 15, 16}) {
    const ops::RopeFreqs f =
        rope_scaled_freqs(scaling(RopeScalingType::Dynamic), kD, kBase, kL0, L);
    EXPECT_EQ(f.inv_freq, plain.inv_freq) << "L = " << L;  // bit for bit: the same table
  }
  // ...and a model with dynamic scaling computes exactly what the plain one does within L0.
  GPTConfig c;
  c.n_layer = 1, c.n_head = 2, c.n_embd = 16, c.block_size = 8, c.vocab_size = 11;
  c.position = PositionKind::RoPE;
  Generator g1(3), g2(3);
  GPT plain_model(c, g1);
  c.rope_scaling = {.type = RopeScalingType::Dynamic, .factor = 4};
  GPT dynamic_model(c, g2);
  const Tensor ids = from_vector<int32_t>({1, 5, 2, 9, 0, 3, 7, 4}, {1, 8});
  EXPECT_EQ(plain_model.forward(ids, false).to_vector<float>(),
            dynamic_model.forward(ids, false).to_vector<float>());
}

TEST(RopeScaling, yarn_blends_by_the_ramp_and_scales_cos_and_sin) {
  // corr_dim(r) = d ln(L0 / (2 pi r)) / (2 ln b) = 4 ln(16 / (2 pi r)) / ln 10000:
  //   corr_dim(32) = 4 ln(0.0795775) / 9.2103404 = -1.0992 -> floor -2 -> clamped low = 0
  //   corr_dim(1)  = 4 ln(2.5464791) / 9.2103404 =  0.4059 -> ceil 1       -> high = 1
  // ramp_i = clamp((i - 0) / (1 - 0), 0, 1) = (0, 1, 1, 1): pair 0 (the fastest, ~2.5 turns over
  // L0) keeps inv_0 = 1; the rest are divided by s. attention factor 0.1 ln 4 + 1 = 1.1386294361119891.
  const ops::RopeFreqs f = rope_scaled_freqs(scaling(RopeScalingType::Yarn), kD, kBase, kL0, 16);
  expect_table(f.inv_freq, {1, 0.025, 0.0025, 0.00025}, "yarn L0 16");
  EXPECT_NEAR(f.scale, 1.1386294361119891, 1e-15);

  // L0 = 4096 puts the ramp inside the table:
  //   corr_dim(32) = 4 ln(4096 / (64 pi)) / ln 10000 = 4 ln(20.371833) / 9.2103404 = 1.3090 -> low 1
  //   corr_dim(1)  = 4 ln(4096 / (2 pi)) / ln 10000  = 4 ln(651.89865) / 9.2103404 = 2.8142 -> high 3
  // ramp = clamp((i - 1) / 2, 0, 1) = (0, 0, 0.5, 1):
  //   inv_2 = 0.01 / 4 * 0.5 + 0.01 * 0.5 = 0.00625,  inv_3 = 0.001 / 4 = 0.00025.
  const ops::RopeFreqs g =
      rope_scaled_freqs(scaling(RopeScalingType::Yarn), kD, kBase, 4096, 4096);
  expect_table(g.inv_freq, {1, 0.1, 0.00625, 0.00025}, "yarn L0 4096");

  // An explicit attention factor replaces the default.
  RopeScaling s = scaling(RopeScalingType::Yarn);
  s.attention_factor = 1.5;
  EXPECT_EQ(rope_scaled_freqs(s, kD, kBase, kL0, 16).scale, 1.5);
}

TEST(RopeScaling, llama3_keeps_short_wavelengths_divides_long_ones_and_blends_between) {
  // L0 / low_freq_factor = 16, L0 / high_freq_factor = 4. wavelen_i = 2 pi / inv_i:
  //   i = 0: 6.2832, in [4, 16]: t = (16 / (2 pi) - 1) / (4 - 1) = (8 / pi - 1) / 3 = 0.5154930,
  //          inv = (1 - t) / 4 + t = 1/4 + 3t/4 = 1/4 + (8 / pi - 1) / 4 = 2 / pi = 0.6366197723675814
  //   i = 1..3: 62.8, 628, 6283 > 16: divided by 4 -> 0.025, 0.0025, 0.00025.
  const ops::RopeFreqs f = rope_scaled_freqs(scaling(RopeScalingType::Llama3), kD, kBase, kL0, 16);
  expect_table(f.inv_freq, {2 / std::numbers::pi, 0.025, 0.0025, 0.00025}, "llama3");
  // L0 = 64: pair 0 (6.28 < 64 / 4 = 16) is kept, pair 1 (62.8 in [16, 64]) blends with
  // t = (64 / 62.831853 - 1) / 3 = 0.0061974, inv = 0.025 + 0.075 t = 0.02546481.
  const ops::RopeFreqs h = rope_scaled_freqs(scaling(RopeScalingType::Llama3), kD, kBase, 64, 64);
  const double t = (64 / (20 * std::numbers::pi) - 1) / 3;
  expect_table(h.inv_freq, {1, 0.025 + 0.075 * t, 0.0025, 0.00025}, "llama3 L0 64");
}

TEST(RopeScaling, linear_at_twice_the_position_is_plain_rope_exactly) {
  // (2 m) (inv / 2) == m inv in floating point (halving and doubling are exact): the rotation of
  // position 2m under linear factor 2 is the plain one of position m, bit for bit.
  Generator g(5);
  const Tensor x = randn({1, 2, 1, kD}, g, DType::F64);
  RopeScaling s;
  s.type = RopeScalingType::Linear, s.factor = 2;
  const ops::RopeFreqs f = rope_scaled_freqs(s, kD, kBase, kL0, 64);
  for (int64_t m : {1, 7, 30})
    EXPECT_EQ(ops::rope(x, f, 2 * m).to_vector<double>(),
              ops::rope(x, kBase, m).to_vector<double>()) << "m = " << m;
}

TEST(RopeScaling, gradients_through_every_scaled_rotation) {
  Generator g(9);
  const Tensor x = randn({2, 2, 5, kD}, g, DType::F64);
  for (RopeScalingType type : {RopeScalingType::Linear, RopeScalingType::Dynamic,
                               RopeScalingType::Yarn, RopeScalingType::Llama3}) {
    // seq_len 40 > L0 so dynamic scales; yarn's cos/sin factor 1.139 must reach the backward too.
    const ops::RopeFreqs f = rope_scaled_freqs(scaling(type), kD, kBase, kL0, 40);
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return ops::rope(in[0], f, 35); },
                          {x}))
        << rope_scaling_name(type);
  }
}

TEST(RopeScaling, bad_settings_are_refused_by_name) {
  RopeScaling s = scaling(RopeScalingType::Yarn);
  s.factor = 0.5;
  EXPECT_THROW_MSG(rope_scaled_freqs(s, kD, kBase, kL0, 16), "rope_scaling.factor must be >= 1");
  s = scaling(RopeScalingType::Yarn);
  s.beta_fast = 0.5;
  EXPECT_THROW_MSG(rope_scaled_freqs(s, kD, kBase, kL0, 16), "beta_fast (0.5) must exceed");
  s = scaling(RopeScalingType::Llama3);
  s.high_freq_factor = 1;
  EXPECT_THROW_MSG(rope_scaled_freqs(s, kD, kBase, kL0, 16), "high_freq_factor (1) must exceed");
  EXPECT_THROW_MSG(parse_rope_scaling_type("ntk", "model.rope_scaling.type"),
                   "unknown RoPE scaling type 'ntk'");
  Generator g(1);
  const Tensor x = randn({1, 1, 2, kD}, g);
  EXPECT_THROW_MSG(ops::rope(x, ops::RopeFreqs{{1.0, 0.5}}),
                   "2 inverse frequencies for head dimension 8");
}

}  // namespace
}  // namespace tessera::nn
