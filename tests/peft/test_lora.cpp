// LoRA adapters on the GPT (peft/lora.h): a frozen base, gradients only for adapters, merging that
// reproduces the adapted model, and gradient checks through LoRA and NF4 linears.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/autograd.h"
#include "gradcheck.h"
#include "nn/gpt.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "peft/adapter.h"
#include "peft/lora.h"
#include "test_util.h"

namespace tessera::peft {
namespace {

using testing::bytes;
using testing::max_abs_diff;

// GPT-2 style (fused c_attn, tied head) and Llama style (separate q/k/v with grouped-query heads,
// SwiGLU, untied head): the two layouts an adapter is attached to differently.
nn::GPTConfig gpt2_style() {
  nn::GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.block_size = 8, c.vocab_size = 19;
  return c;
}

nn::GPTConfig llama_style() {
  nn::GPTConfig c = gpt2_style();
  c.n_head = 4, c.n_kv_head = 2, c.norm = nn::NormKind::RMSNorm, c.mlp = nn::MlpKind::SwiGLU;
  c.position = nn::PositionKind::RoPE, c.tie_embeddings = false, c.bias = false;
  c.mlp_hidden = 64;
  return c;
}

Tensor tokens(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Generator g(seed);
  std::vector<int32_t> ids(size_t(B * T));
  for (auto& i : ids) i = int32_t(rand({1}, g).item() * double(V)) % int32_t(V);
  return from_vector(ids, {B, T});
}

// Gives every B random values (they start at zero, which would make merging trivially right).
void randomize_adapters(Lora& lora, uint64_t seed) {
  Generator g(seed);
  NoGradGuard ng;
  for (const auto& [name, t] : lora.parameters())
    if (name.find("lora_B") != std::string::npos)
      Tensor(t).copy_(ops::scale(randn(t.shape(), g, t.dtype()), 0.05));
}

TEST(Lora, adapters_start_as_a_zero_update) {
  Generator g(1);
  nn::GPT model(gpt2_style(), g);
  Tensor ids = tokens(2, 8, 19, 4);
  Tensor base = model.forward(ids, false);
  Generator ag(2);
  Lora lora(model, {.rank = 4, .targets = parse_targets("all")}, ag);
  EXPECT_EQ(bytes(model.forward(ids, false)), bytes(base));
  // q, k, v, o, up, down (no gate in a GELU MLP) on two layers, A and B each.
  EXPECT_EQ(lora.parameters().size(), 2u * 6u * 2u);
  EXPECT_EQ(lora.parameters()[0].first, "transformer.h.0.attn.c_attn.q.lora_A.weight");
  EXPECT_EQ(lora.parameters()[0].second.shape(), (Shape{4, 32}));
  EXPECT_EQ(lora.parameters()[1].second.shape(), (Shape{32, 4}));
}

TEST(Lora, only_adapters_get_gradients_and_the_base_is_byte_identical_after_training) {
  for (const char* quantize : {"none", "nf4-dq"}) {
    Generator g(1);
    nn::GPT model(llama_style(), g);
    std::vector<std::vector<unsigned char>> before;
    for (const auto& [n, t] : model.parameters()) before.push_back(bytes(t));
    Generator ag(2);
    Lora lora(model, {.rank = 4, .dropout = 0.1, .targets = parse_targets("all,head"),
                      .quantize = quantize}, ag);
    AdamW opt(named_params(lora.parameters()), {.lr = 1e-2});
    Tensor ids = tokens(2, 8, 19, 5), targets = tokens(2, 8, 19, 6);
    double first = 0, last = 0;
    for (int step = 0; step < 20; ++step) {
      Tensor loss = model.loss(ids, targets);
      (step == 0 ? first : last) = loss.item();
      loss.backward();
      for (const auto& [n, t] : model.parameters()) EXPECT_FALSE(t.grad().defined()) << n;
      opt.step();
      opt.zero_grad();
    }
    EXPECT_LT(last, first - 0.1) << quantize;  // the adapters alone fit the batch
    size_t i = 0;
    for (const auto& [n, t] : model.parameters()) {
      if (std::string(quantize) != "none") {  // the block Linears were released to NF4
        while (i < before.size() && before[i].size() != t.nbytes()) ++i;
      }
      ASSERT_LT(i, before.size());
      EXPECT_EQ(bytes(t), before[i]) << n << " (" << quantize << ")";
      ++i;
    }
  }
}

// quantize picks the codes' form: nf4 keeps f32 block constants, nf4-dq quantises them again
// (int8 codes per 256 blocks); either way the f32 weights leave the model.
TEST(Lora, quantize_picks_the_form_of_the_codes_and_releases_the_weights) {
  for (const char* quantize : {"none", "nf4", "nf4-dq"}) {
    Generator g(1);
    nn::GPT model(llama_style(), g);
    const std::vector<std::string> names = model.block_linear_weights();
    ASSERT_FALSE(names.empty());
    Generator ag(2);
    Lora lora(model, {.rank = 2, .targets = parse_targets("all"), .quantize = quantize}, ag);
    EXPECT_EQ(lora.quantized(), std::string(quantize) != "none");
    for (const std::string& n : names) {
      const NF4Tensor* q = lora.nf4(n);
      if (std::string(quantize) == "none") {
        EXPECT_EQ(q, nullptr) << n;
        EXPECT_NO_THROW(model.parameter(n)) << n;
        continue;
      }
      ASSERT_NE(q, nullptr) << n << " (" << quantize << ")";
      EXPECT_EQ(q->double_quantized(), std::string(quantize) == "nf4-dq") << n;
      EXPECT_ANY_THROW(model.parameter(n)) << n << " is still held (" << quantize << ")";
    }
  }
}

TEST(Lora, merged_model_computes_what_base_plus_adapters_compute) {
  for (const nn::GPTConfig& cfg : {gpt2_style(), llama_style()}) {
    for (const char* quantize : {"none", "nf4", "nf4-dq"}) {
      Generator g(1);
      nn::GPT model(cfg, g);
      Generator ag(2);
      const std::string targets = cfg.tie_embeddings ? "all" : "all,head";
      Lora lora(model, {.rank = 3, .alpha = 6, .targets = parse_targets(targets),
                        .quantize = quantize}, ag);
      randomize_adapters(lora, 3);
      Generator g2(7);
      nn::GPT merged(cfg, g2);
      lora.merge_into(merged);
      Tensor ids = tokens(2, 8, 19, 8);
      Tensor a = model.forward(ids, false), b = merged.forward(ids, false);
      // f32 logits of size ~1 through two layers computed in a different association order
      // ((W + s B A) x vs W x + s B (A x)): a few ulps per op.
      EXPECT_LT(max_abs_diff(a, b), 1e-4) << quantize;
      // ...and the adapters matter: the merged model is not the base.
      Generator g3(1);
      nn::GPT base(cfg, g3);
      EXPECT_GT(max_abs_diff(base.forward(ids, false), b), 1e-3) << quantize;
    }
  }
}

TEST(Lora, gradcheck_through_lora_and_nf4_linears) {
  for (const char* quantize : {"none", "nf4-dq"}) {
    nn::GPTConfig cfg = llama_style();
    cfg.n_layer = 1, cfg.n_embd = 16, cfg.mlp_hidden = 16;
    Generator g(1);
    nn::GPT model(cfg, g, DType::F64);
    Generator ag(2);
    Lora lora(model, {.rank = 2, .targets = parse_targets("all,head"), .quantize = quantize}, ag);
    randomize_adapters(lora, 4);
    Tensor ids = tokens(2, 4, 19, 9), targets = tokens(2, 4, 19, 10);
    std::vector<Tensor> inputs;
    for (const auto& [n, t] : lora.parameters()) inputs.push_back(t);
    EXPECT_TRUE(testing::gradcheck(
        [&](const std::vector<Tensor>& in) {
          lora.replace_parameters(in);
          return model.loss(ids, targets);
        },
        inputs))
        << quantize;
  }
}

TEST(Lora, scaling_targets_and_refusals) {
  EXPECT_DOUBLE_EQ((LoraOptions{.rank = 16, .alpha = 32}.scaling()), 2.0);
  EXPECT_DOUBLE_EQ((LoraOptions{.rank = 16, .alpha = 32, .rslora = true}.scaling()), 8.0);
  EXPECT_EQ(targets_string(parse_targets("v, q,q")), "q,v");
  EXPECT_EQ(targets_string(parse_targets("all")), "q,k,v,o,gate,up,down");
  EXPECT_EQ(targets_string(parse_targets("q,v,")), "q,v");  // a trailing comma ends the list
  {
    // q and v of 2 layers at C 32 (no GQA): A (4, 32) and B (32, 4) each.
    Generator g(1), ag(2);
    nn::GPT model(gpt2_style(), g);
    Lora lora(model, {.rank = 4, .targets = parse_targets("q,v")}, ag);
    EXPECT_EQ(lora.adapter_parameters(), 2 * 2 * (4 * 32 + 32 * 4));
  }
  EXPECT_NE(testing::error_of([] { parse_targets("q,query"); }).find("'query'"),
            std::string::npos);
  Generator g(1);
  nn::GPT model(gpt2_style(), g);
  // Options that reach Lora without a validated config (a library user's) are refused too.
  EXPECT_NE(testing::error_of([&] { Lora l(model, {.rank = 0}, g); })
                .find("lora.rank must be positive, got 0"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { Lora l(model, {.alpha = 0}, g); })
                .find("lora.alpha must be positive, got 0"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { Lora l(model, {.quantize = "nf8"}, g); })
                .find("lora.quantize must be none, nf4 or nf4-dq; got 'nf8'"), std::string::npos);
  EXPECT_NE(testing::error_of([&] {
              Lora l(model, {.targets = parse_targets("head")}, g);
            }).find("tie_embeddings"),
            std::string::npos);
  // A rank past the smaller side of a projection, even where no config was validated.
  const std::string big = testing::error_of([&] {
    Lora l(model, {.rank = 1000, .targets = parse_targets("q")}, g);
  });
  EXPECT_NE(big.find("lora rank 1000 exceeds min(in, out)"), std::string::npos) << big;
  // One set of adapters a model: a second would be bypassed by the first's hook.
  Lora first(model, {.targets = parse_targets("q")}, g);
  EXPECT_NE(testing::error_of([&] { Lora second(model, {}, g); }).find("already has a hook"),
            std::string::npos);
}

TEST(Lora, fingerprint_follows_content_not_identity) {
  Generator g(1), g2(1);
  nn::GPT a(gpt2_style(), g), b(gpt2_style(), g2);
  EXPECT_EQ(fingerprint(a.parameters()), fingerprint(b.parameters()));
  // One weight one ulp away is another model.
  Tensor w = b.parameters()[3].second;
  float* p = w.data<float>();
  p[0] = std::nextafter(p[0], 1.0f);
  EXPECT_NE(fingerprint(a.parameters()), fingerprint(b.parameters()));
  EXPECT_EQ(fingerprint(a.parameters()).size(), 16u);
}

}  // namespace
}  // namespace tessera::peft
