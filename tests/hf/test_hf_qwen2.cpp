// Qwen2ForCausalLM (Qwen2, Qwen2.5) through export and import: model.qkv_bias, biases on q, k and
// v alone, in config.json and back byte for byte; a config.json as Qwen2.5's published ones are
// written; what Qwen2 cannot express refused by key (the logits against an HF-structured Qwen2 are
// in test_hf.cpp's independent_reader_and_hf_structured_pytorch_agree).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "checkpoint/json.h"
#include "hf/hf_fixture.h"
#include "nn/gpt.h"
#include "nn/hf_names.h"
#include "test_util.h"
#include "train/hf_dir.h"
#include "train/options.h"

using namespace tessera;
using namespace tessera::testing::hf;
using tessera::testing::read_file;
using tessera::testing::TempDir;
namespace fs = std::filesystem;

TEST(HFQwen2, round_trip_is_byte_exact) {
  expect_round_trip_byte_exact(qwen2_config(), DType::F32);
  Config untied = qwen2_config();
  untied.model.tie_embeddings = false;
  expect_round_trip_byte_exact(untied, DType::BF16);
}

TEST(HFQwen2, the_biases_are_on_q_k_and_v_alone) {
  const Config c = qwen2_config();
  std::vector<std::string> biases;
  for (const nn::ParamSpec& s : nn::param_specs(train::model_config(c.model, c.train)))
    if (s.bias) biases.push_back(s.name);
  const std::vector<std::string> want = {
      "model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.k_proj.bias",
      "model.layers.0.self_attn.v_proj.bias", "model.layers.1.self_attn.q_proj.bias",
      "model.layers.1.self_attn.k_proj.bias", "model.layers.1.self_attn.v_proj.bias"};
  EXPECT_EQ(biases, want);
  // The parameter count the config computes (memory checks, MFU) counts them: 2 layers of
  // q (2 heads x 8) and k, v (1 head x 8).
  Config plain = c;
  plain.model.qkv_bias = false;
  EXPECT_EQ(c.model.parameter_count() - plain.model.parameter_count(), 2 * (16 + 8 + 8));
  Generator g(1);
  const nn::GPT model(train::model_config(c.model, c.train), g);
  double held = 0;
  for (const auto& [name, t] : model.parameters()) held += double(t.numel());
  EXPECT_EQ(held, c.model.parameter_count());
}

TEST(HFQwen2, config_json_names_qwen2_without_attention_bias) {
  TempDir tmp;
  const fs::path d = export_fresh(qwen2_config(), tmp.path / "hf");
  const Json c = parse_json(read_file(d / "config.json"), "config.json");
  EXPECT_EQ(c.get("model_type")->str(), "qwen2");
  EXPECT_EQ(c.get("architectures")->items()[0].str(), "Qwen2ForCausalLM");
  EXPECT_EQ(c.get("attention_bias"), nullptr);  // not a Qwen2Config key: its biases are fixed
  EXPECT_EQ(c.get("mlp_bias"), nullptr);
  EXPECT_FALSE(c.get("use_sliding_window")->boolean());
  EXPECT_TRUE(c.get("tie_word_embeddings")->boolean());
  std::string out;  // 2 layers of 12 tensors (9 and the 3 biases), the embedding, the final norm
  ASSERT_EQ(tessera::testing::run_command(
                kBin + "/import " + d.string() + " --output " + (tmp.path / "back").string(), &out),
            0)
      << out;
  EXPECT_TRUE(has(out, "(Qwen2ForCausalLM, 26 tensors)")) << out;
}

TEST(HFQwen2, a_config_json_as_qwen25s_published_ones_imports) {
  // Qwen2.5-0.5B's config.json's keys (its sizes made small): use_mrope and use_sliding_window
  // false, a sliding_window and max_window_layers that then change nothing, a tied head.
  TempDir tmp;
  const fs::path d = export_fresh(qwen2_config(), tmp.path / "hf");
  std::ofstream(d / "config.json", std::ios::binary | std::ios::trunc) << R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 16, "initializer_range": 0.02,
  "intermediate_size": 24, "max_position_embeddings": 32768, "max_window_layers": 24,
  "model_type": "qwen2", "num_attention_heads": 2, "num_hidden_layers": 2,
  "num_key_value_heads": 1, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1", "use_cache": true, "use_mrope": false,
  "use_sliding_window": false, "vocab_size": 259
})";
  const train::HFModel m = train::import_hf(d.string());
  const ModelConfig& c = m.config.model;
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.block_size, 32768);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.norm_eps, 1e-6);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(m.params.size(), nn::param_specs(train::model_config(c, m.config.train)).size());
}

TEST(HFQwen2, what_qwen2_cannot_express_is_refused_by_key) {
  TempDir tmp;
  int n = 0;
  auto edited = [&](const std::string& from, const std::string& to) {
    const fs::path d = export_fresh(qwen2_config(), tmp.path / ("hf" + std::to_string(n++)));
    replace_in(d / "config.json", from, to);
    return import_error(d);
  };
  std::string e = edited("\"use_sliding_window\": false", "\"use_sliding_window\": true");
  EXPECT_TRUE(has(e, "use_sliding_window") && has(e, "max_window_layers")) << e;
  e = edited("\"use_sliding_window\"", "\"use_mrope\": true, \"use_sliding_window\"");
  EXPECT_TRUE(has(e, "use_mrope") && has(e, "Qwen2-VL")) << e;
  e = edited("\"use_sliding_window\"", "\"attention_bias\": false, \"use_sliding_window\"");
  EXPECT_TRUE(has(e, "unsupported key \"attention_bias\"")) << e;
  // Read as Llama, the file's q, k and v biases belong to no parameter: refused, naming one.
  e = import_error(
      export_as_llama(qwen2_config(), tmp.path / "as-llama", "qwen2", "Qwen2ForCausalLM"));
  EXPECT_TRUE(has(e, "self_attn.q_proj.bias' is not a parameter")) << e;

  // Export: q, k and v biases go without q and k norms, and in a mixture with Qwen2-MoE's gated
  // shared expert (tests/hf/test_hf_qwen2_moe.cpp).
  struct Case {
    std::function<void(Config&)> change;
    std::string why;
  };
  for (const Case& k : std::vector<Case>{
           {[](Config& c) { c.model.qk_norm = true; }, "model.qkv_bias with model.qk_norm"},
           {[](Config& c) { c.model.n_expert = 2, c.model.expert_top_k = 1; },
            "needs a gated shared expert"}}) {
    Config cfg = qwen2_config();
    k.change(cfg);
    expect_export_refused(cfg, tmp.path / "refused", k.why);
  }
}
