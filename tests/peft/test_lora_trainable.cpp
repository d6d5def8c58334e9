// lora.trainable (LongLoRA's trainable embeddings and norms): those full tensors get gradients and
// updates beside the adapters while the other base weights stay frozen, and merging carries them
// into the merged model.
#include <gtest/gtest.h>

#include <map>

#include "autograd/autograd.h"
#include "nn/gpt.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "peft/lora.h"
#include "test_util.h"

namespace tessera::peft {
namespace {

using testing::bytes;
using testing::max_abs_diff;

nn::GPTConfig gpt2_style() {
  nn::GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.block_size = 8, c.vocab_size = 13;
  c.position = nn::PositionKind::RoPE;
  return c;
}

nn::GPTConfig llama_style() {
  nn::GPTConfig c = gpt2_style();
  c.norm = nn::NormKind::RMSNorm, c.mlp = nn::MlpKind::SwiGLU, c.bias = false;
  c.tie_embeddings = false, c.mlp_hidden = 32;
  return c;
}

TEST(LoraTrainable, parameter_kinds_follow_the_parts_of_both_layouts) {
  // Every parameter of both name tables, by its name: the part decides, whatever the spelling.
  const std::map<std::string, std::string> expected = {
      {"transformer.wte.weight", "embed"},
      {"transformer.wpe.weight", "embed"},
      {"model.embed_tokens.weight", "embed"},
      {"transformer.h.1.ln_2.bias", "norm"},
      {"transformer.ln_f.weight", "norm"},
      {"model.layers.0.input_layernorm.weight", "norm"},
      {"model.layers.0.post_attention_layernorm.weight", "norm"},
      {"model.norm.weight", "norm"},
      {"model.layers.1.self_attn.q_norm.weight", "norm"},  // qk_norm's
      {"transformer.h.0.attn.k_norm.weight", "norm"},
      {"transformer.h.0.attn.c_attn.weight", ""},
      {"model.layers.0.mlp.down_proj.weight", ""},
      {"lm_head.weight", ""},
  };
  nn::GPTConfig learned = gpt2_style();  // with transformer.wpe
  learned.position = nn::PositionKind::Learned, learned.qk_norm = true;
  nn::GPTConfig qwen3 = llama_style();
  qwen3.qk_norm = true;
  size_t seen = 0;
  for (const nn::GPTConfig& cfg : {learned, qwen3})
    for (const nn::ParamSpec& s : nn::param_specs(cfg)) {
      const auto it = expected.find(s.name);
      if (it == expected.end()) continue;
      EXPECT_EQ(parameter_kind(s.part), it->second) << s.name;
      ++seen;
    }
  EXPECT_EQ(seen, expected.size());  // every name above exists in one of the two layouts
  EXPECT_EQ(parse_trainable(" norm,embed ,norm"), (std::vector<std::string>{"norm", "embed"}));
  EXPECT_NE(testing::error_of([] { parse_trainable("embed,head"); }).find("unknown kind 'head'"),
            std::string::npos);
}

// The lora.trainable kind of the parameter called name in a model with this config.
std::string kind_of(const nn::GPTConfig& cfg, const std::string& name) {
  for (const nn::ParamSpec& s : nn::param_specs(cfg))
    if (s.name == name) return parameter_kind(s.part);
  ADD_FAILURE() << name << " is not in the name table";
  return "";
}

TEST(LoraTrainable, embeddings_and_norms_train_and_survive_merge) {
  for (const nn::GPTConfig& cfg : {gpt2_style(), llama_style()}) {
    SCOPED_TRACE(cfg.gpt2_names() ? "gpt2 names" : "llama names");
    Generator g(1);
    nn::GPT model(cfg, g);
    std::vector<std::vector<unsigned char>> before;
    for (const auto& [n, t] : model.parameters()) before.push_back(bytes(t));
    Generator ag(2);
    Lora lora(model, {.rank = 2, .targets = parse_targets("q,k,v,o"),
                      .trainable = parse_trainable("embed,norm")}, ag);
    // Every embedding and norm tensor is among the trainable ones, under the model's name.
    size_t full = 0;
    for (const auto& [n, t] : model.parameters()) {
      const bool listed = std::any_of(lora.parameters().begin(), lora.parameters().end(),
                                      [&](const nn::NamedTensor& p) { return p.first == n; });
      EXPECT_EQ(listed, !kind_of(cfg, n).empty()) << n;
      full += listed;
    }
    // embed: wte (+ nothing else with RoPE); norm: 2 per block and the final one (+ biases).
    EXPECT_EQ(full, cfg.gpt2_names() ? 1u + 2 * (2 * 2 + 1) : 1u + 2 * 2 + 1);

    AdamW opt(named_params(lora.parameters()), {.lr = 1e-2, .weight_decay = 0});
    const Tensor ids = from_vector<int32_t>({1, 5, 2, 9, 0, 3, 7, 4}, {1, 8});
    const Tensor targets = from_vector<int32_t>({5, 2, 9, 0, 3, 7, 4, 12}, {1, 8});
    for (int step = 0; step < 3; ++step) {
      model.loss(ids, targets).backward();
      for (const auto& [n, t] : model.parameters())
        EXPECT_EQ(t.grad().defined(), !kind_of(cfg, n).empty()) << n << " step " << step;
      opt.step();
      opt.zero_grad();
    }
    size_t i = 0;
    for (const auto& [n, t] : model.parameters()) {
      // Trained tensors moved (AdamW's first steps move each element by ~lr); the rest are frozen.
      if (kind_of(cfg, n).empty()) {
        EXPECT_EQ(bytes(t), before[i]) << n;
      } else {
        EXPECT_NE(bytes(t), before[i]) << n;
      }
      ++i;
    }

    Generator g2(9);
    nn::GPT merged(cfg, g2);
    lora.merge_into(merged);
    for (const auto& [n, t] : merged.parameters()) {
      if (kind_of(cfg, n).empty()) continue;
      EXPECT_EQ(bytes(t), bytes(model.parameter(n))) << n;
    }
    // The merged model computes what base + adapters + trained tensors compute: f32 logits of
    // size ~1 through two layers, (W + s B A) x vs W x + s B (A x): a few ulps per op.
    EXPECT_LT(max_abs_diff(model.forward(ids, false), merged.forward(ids, false)), 1e-4);
  }
}

}  // namespace
}  // namespace tessera::peft
