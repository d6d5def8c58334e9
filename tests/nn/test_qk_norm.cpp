// GPTConfig::qk_norm (each head's q and k RMS-normalised before RoPE, Qwen3's attention) and
// GPTConfig::explicit_head_dim (heads whose width is not n_embd / n_head, Qwen3-0.6B's 16 x 128 on
// a width of 1024): parameters, gradients, what the norm makes the scores independent of, and
// decoding through the cache.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "autograd/autograd.h"
#include "nn/gpt.h"
#include "nn/gpt_fixture.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using nn::GPT;
using nn::GPTConfig;
using tessera::testing::ids;
using tessera::testing::max_abs_diff;
using tessera::testing::model_gradcheck;
using tessera::testing::tiny_gpt2;
using tessera::testing::tiny_llama;

namespace {

// Llama style with 2 query heads of 6 over one key/value head on a width of 8: q is 12 wide.
GPTConfig qwen3_like() {
  GPTConfig c = tiny_llama();
  c.qk_norm = true, c.explicit_head_dim = 6;
  return c;
}

std::string layer(int64_t l) { return "model.layers." + std::to_string(l) + ".self_attn."; }

}  // namespace

TEST(QkNorm, norm_weights_are_per_head_and_named_as_qwen3s) {
  Generator g(1);
  const GPTConfig c = qwen3_like();
  GPT m(c, g);
  EXPECT_EQ(m.parameter(layer(1) + "q_proj.weight").shape(), (Shape{12, 8}));
  EXPECT_EQ(m.parameter(layer(1) + "k_proj.weight").shape(), (Shape{6, 8}));
  EXPECT_EQ(m.parameter(layer(1) + "o_proj.weight").shape(), (Shape{8, 12}));
  EXPECT_EQ(m.parameter(layer(1) + "q_norm.weight").shape(), (Shape{6}));
  EXPECT_EQ(m.parameter(layer(1) + "k_norm.weight").shape(), (Shape{6}));
  EXPECT_EQ(m.parameter(layer(0) + "k_norm.weight").to_vector<float>(),
            std::vector<float>(6, 1.0f));
  // The norms start at one and draw nothing: every other parameter starts as without them.
  GPTConfig plain = c;
  plain.qk_norm = false;
  Generator g2(1), g3(1);
  GPT a(c, g2), b(plain, g3);
  EXPECT_EQ(a.parameters().size(), b.parameters().size() + 2 * size_t(c.n_layer));
  for (const auto& [name, t] : b.parameters())
    EXPECT_EQ(a.parameter(name).to_vector<float>(), t.to_vector<float>()) << name;
  // GPT-2 names: tessera's own, beside the fused c_attn ((2 + 2 + 2) heads of 6).
  GPTConfig gpt2 = tiny_gpt2();
  gpt2.qk_norm = true, gpt2.explicit_head_dim = 6;
  Generator g4(1);
  GPT m2(gpt2, g4);
  EXPECT_EQ(m2.parameter("transformer.h.0.attn.c_attn.weight").shape(), (Shape{36, 8}));
  EXPECT_EQ(m2.parameter("transformer.h.0.attn.q_norm.weight").shape(), (Shape{6}));
  EXPECT_EQ(m2.parameter("transformer.h.0.attn.c_proj.weight").shape(), (Shape{8, 12}));
}

TEST(QkNorm, gradcheck_whole_model) {
  // Llama style (RoPE after the norm, grouped-query heads), GPT-2 style (learned positions, fused
  // projection with biases), and heads of another width without the norm.
  GPTConfig gpt2 = tiny_gpt2();
  gpt2.qk_norm = true;
  GPTConfig wide = tiny_llama();
  wide.explicit_head_dim = 10;
  for (const GPTConfig& c : {qwen3_like(), gpt2, wide}) EXPECT_TRUE(model_gradcheck(c));
}

TEST(QkNorm, scores_do_not_depend_on_the_scale_of_q_and_k) {
  // RMSNorm divides out each head's scale: q_proj and k_proj scaled by 64 and 1/2 leave the logits
  // as they were (norm_eps 1e-30 keeps the epsilon out of it; f64: equal to rounding). Without
  // the norm the same scaling multiplies every score by 32, so the test sees a norm left out.
  auto change = [](bool qk_norm) {
    GPTConfig c = qwen3_like();
    c.qk_norm = qk_norm, c.norm_eps = 1e-30;
    Generator g(5);
    GPT m(c, g, DType::F64);
    NoGradGuard no_grad;
    const Tensor x = ids({1, 5, 9, 2, 0, 10, 3, 3}, {2, 4});
    const Tensor want = m.forward(x, false);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      Tensor q = m.parameter(layer(l) + "q_proj.weight"),
             k = m.parameter(layer(l) + "k_proj.weight");
      q.copy_(ops::scale(q.clone(), 64.0));
      k.copy_(ops::scale(k.clone(), 0.5));
    }
    return max_abs_diff(m.forward(x, false), want);
  };
  const double with = change(true), without = change(false);
  std::printf("logit change: with qk_norm %.3g, without %.3g\n", with, without);
  EXPECT_LT(with, 1e-12);
  EXPECT_GT(without, 1e-4);
}

TEST(QkNorm, norm_weights_scale_each_channel_of_q_and_k) {
  // q_norm's weight doubled and k_norm's halved: every score q.k is the same (RoPE mixes a pair
  // of channels, both scaled alike), the logits too. Doubling q_norm's alone doubles the scores,
  // which changes them: the weights multiply the normalised heads.
  Generator g(6);
  GPT m(qwen3_like(), g, DType::F64);
  NoGradGuard no_grad;
  const Tensor x = ids({1, 5, 9, 2, 0, 10, 3, 3}, {2, 4});
  const Tensor want = m.forward(x, false);
  for (int64_t l = 0; l < 2; ++l) m.parameter(layer(l) + "q_norm.weight").fill_(2.0);
  const double q_alone = max_abs_diff(m.forward(x, false), want);
  for (int64_t l = 0; l < 2; ++l) m.parameter(layer(l) + "k_norm.weight").fill_(0.5);
  const double both = max_abs_diff(m.forward(x, false), want);
  EXPECT_GT(q_alone, 1e-4);
  EXPECT_LT(both, 1e-12);
}

TEST(QkNorm, cached_decoding_gives_the_full_forwards_logits) {
  // The cache holds the normalised, rotated keys: a prompt of 3 then one token at a time gives the
  // last rows of forward() over all 8 (f64: equal to rounding).
  for (GPTConfig c : {qwen3_like(), tiny_gpt2()}) {
    c.qk_norm = true, c.block_size = 8;
    Generator g(9);
    GPT m(c, g, DType::F64);
    const Tensor x = ids({1, 5, 9, 2, 0, 10, 3, 3, 4, 7, 7, 1, 2, 8, 6, 5}, {2, 8});
    const Tensor full = m.forward(x, false);
    nn::KVCache cache = m.make_cache(2, 8);
    double worst =
        max_abs_diff(m.forward_cached(x.narrow(1, 0, 3).contiguous(), cache), full.narrow(1, 0, 3));
    for (int64_t t = 3; t < 8; ++t)
      worst = std::max(worst, max_abs_diff(m.forward_cached(x.narrow(1, t, 1).contiguous(), cache),
                                           full.narrow(1, t, 1)));
    EXPECT_LT(worst, 1e-12) << (c.gpt2_names() ? "gpt2" : "llama");
  }
}

TEST(QkNorm, a_head_dim_apart_from_the_width_is_checked) {
  GPTConfig c = tiny_llama();
  c.n_embd = 10, c.n_head = 4, c.n_kv_head = 2;  // 10 is not a multiple of 4 heads
  EXPECT_NE(tessera::testing::error_of([&] { c.validate(); }).find("or give head_dim"),
            std::string::npos);
  c.explicit_head_dim = 4;
  EXPECT_NO_THROW(c.validate());
  c.explicit_head_dim = 5;  // RoPE rotates pairs
  EXPECT_NE(tessera::testing::error_of([&] { c.validate(); }).find("even head dimension, got 5"),
            std::string::npos);
  c.explicit_head_dim = -1;
  EXPECT_NE(tessera::testing::error_of([&] { c.validate(); }).find("head_dim must be >= 0"),
            std::string::npos);
}
