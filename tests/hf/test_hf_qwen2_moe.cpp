// Qwen2MoeForCausalLM (Qwen1.5-MoE, Qwen2-57B-A14B) through export and import: a mixture of experts
// with Qwen2's biases on q, k and v and a shared expert behind a sigmoid gate
// (model.shared_expert_hidden, model.shared_expert_gate); every tensor back byte for byte, the
// config.json keys and tensor names HF's, a config.json as the published ones are written, the
// logits against PyTorch modules laid out as transformers' Qwen2MoeSparseMoeBlock
// (scripts/hf_logits.py), and what Qwen2-MoE cannot hold refused by name.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

#include "checkpoint/json.h"
#include "checkpoint/safetensors.h"
#include "hf/hf_fixture.h"
#include "nn/hf_names.h"
#include "test_util.h"
#include "train/hf_dir.h"
#include "train/options.h"

using namespace tessera;
using namespace tessera::testing::hf;
using tessera::testing::read_file;
using tessera::testing::run_command;
using tessera::testing::TempDir;
namespace fs = std::filesystem;

namespace {

// Qwen2-MoE's shape in small: Qwen2's (biases on q, k and v, a tied head) with 4 experts of 24, 2 a
// token weighed by their probabilities as they are (norm_topk_prob false), and a shared expert of
// 32 behind its gate.
Config qwen2_moe_config() {
  Config c = qwen2_config();
  c.model.n_expert = 4, c.model.expert_top_k = 2, c.model.router_renormalize = false;
  c.model.shared_expert_hidden = 32, c.model.shared_expert_gate = true;
  c.model.router_aux_loss = 0.001;
  return c;
}

}  // namespace

TEST(HFQwen2Moe, round_trip_is_byte_exact_with_the_shared_expert) {
  Config untied = qwen2_moe_config();
  untied.model.tie_embeddings = false, untied.model.router_renormalize = true;
  for (const auto& [cfg, dtype] : std::vector<std::pair<Config, DType>>{
           {qwen2_moe_config(), DType::F32}, {untied, DType::BF16}}) {
    expect_round_trip_byte_exact(cfg, dtype);
    TempDir tmp;
    const ModelConfig back =
        train::import_hf(export_fresh(cfg, tmp.path / "hf").string()).config.model;
    EXPECT_EQ(back.shared_expert_hidden, 32);
    EXPECT_TRUE(back.shared_expert_gate);
    EXPECT_TRUE(back.qkv_bias);
    EXPECT_EQ(back.router_renormalize, cfg.model.router_renormalize);
  }
}

TEST(HFQwen2Moe, config_json_and_tensors_carry_qwen2_moes_names) {
  TempDir tmp;
  const fs::path d = export_fresh(qwen2_moe_config(), tmp.path / "hf");
  const Json c = parse_json(read_file(d / "config.json"), "config.json");
  EXPECT_EQ(c.get("model_type")->str(), "qwen2_moe");
  EXPECT_EQ(c.get("architectures")->items()[0].str(), "Qwen2MoeForCausalLM");
  EXPECT_EQ(c.get("num_experts")->as_int(), 4);
  EXPECT_EQ(c.get("num_experts_per_tok")->as_int(), 2);
  EXPECT_EQ(c.get("moe_intermediate_size")->as_int(), 24);
  EXPECT_EQ(c.get("shared_expert_intermediate_size")->as_int(), 32);
  EXPECT_FALSE(c.get("norm_topk_prob")->boolean());
  EXPECT_TRUE(c.get("qkv_bias")->boolean());
  EXPECT_EQ(c.get("attention_bias"), nullptr);
  EXPECT_FALSE(c.get("use_sliding_window")->boolean());
  const SafetensorsFile st = read_safetensors((d / "model.safetensors").string());
  std::map<std::string, Shape> shapes;
  for (const auto& [name, t] : st.tensors) shapes[name] = t.shape();
  EXPECT_EQ(shapes["model.layers.1.mlp.gate.weight"], (Shape{4, 16}));
  EXPECT_EQ(shapes["model.layers.1.mlp.experts.3.gate_proj.weight"], (Shape{24, 16}));
  EXPECT_EQ(shapes["model.layers.1.mlp.shared_expert.gate_proj.weight"], (Shape{32, 16}));
  EXPECT_EQ(shapes["model.layers.1.mlp.shared_expert.up_proj.weight"], (Shape{32, 16}));
  EXPECT_EQ(shapes["model.layers.1.mlp.shared_expert.down_proj.weight"], (Shape{16, 32}));
  EXPECT_EQ(shapes["model.layers.1.mlp.shared_expert_gate.weight"], (Shape{1, 16}));
  EXPECT_EQ(shapes["model.layers.1.self_attn.k_proj.bias"], (Shape{8}));
  // Per layer 2 norms, q k v o and their 3 biases, the router, 4 x 3 expert matrices, the shared
  // expert's 3 and its gate; the embedding and the final norm (tied head).
  EXPECT_EQ(st.tensors.size(), size_t(2 * 26 + 2));
  std::string out;
  ASSERT_EQ(run_command(
                kBin + "/import " + d.string() + " --output " + (tmp.path / "back").string(), &out),
            0)
      << out;
  EXPECT_TRUE(has(out, "(Qwen2MoeForCausalLM, 54 tensors)")) << out;
}

TEST(HFQwen2Moe, a_config_json_as_qwen15_moes_published_one_imports) {
  // Qwen1.5-MoE-A2.7B's config.json keys (its sizes made small): intermediate_size a dense
  // layer's width apart from both experts', norm_topk_prob false, no qkv_bias key (older
  // transformers), sliding_window and max_window_layers while the window is off.
  TempDir tmp;
  const fs::path d = export_fresh(qwen2_moe_config(), tmp.path / "hf");
  std::ofstream(d / "config.json", std::ios::binary | std::ios::trunc) << R"({
  "architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "decoder_sparse_step": 1, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 16,
  "initializer_range": 0.02, "intermediate_size": 88, "max_position_embeddings": 8192,
  "max_window_layers": 21, "model_type": "qwen2_moe", "moe_intermediate_size": 24,
  "norm_topk_prob": false, "num_attention_heads": 2, "num_experts": 4, "num_experts_per_tok": 2,
  "num_hidden_layers": 2, "num_key_value_heads": 1, "output_router_logits": false,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
  "shared_expert_intermediate_size": 32, "sliding_window": 32768, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.39.0.dev0", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 259
})";
  const train::HFModel m = train::import_hf(d.string());
  const ModelConfig& c = m.config.model;
  EXPECT_EQ(m.architecture, "Qwen2MoeForCausalLM");
  EXPECT_EQ(c.n_expert, 4);
  EXPECT_EQ(c.expert_top_k, 2);
  EXPECT_FALSE(c.router_renormalize);
  EXPECT_EQ(c.mlp_hidden, 24);  // moe_intermediate_size, not intermediate_size
  EXPECT_EQ(c.shared_expert_hidden, 32);
  EXPECT_TRUE(c.shared_expert_gate);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.bias);
  EXPECT_EQ(c.block_size, 8192);
  EXPECT_EQ(m.params.size(), size_t(2 * 26 + 2));
}

TEST(HFQwen2Moe, what_qwen2_moe_cannot_express_is_refused_by_name) {
  TempDir tmp;
  int n = 0;
  auto edited = [&](const std::string& from, const std::string& to) {
    const fs::path d = export_fresh(qwen2_moe_config(), tmp.path / ("hf" + std::to_string(n++)));
    replace_in(d / "config.json", from, to);
    return import_error(d);
  };
  std::string e =
      edited("\"shared_expert_intermediate_size\": 32", "\"shared_expert_intermediate_size\": 0");
  EXPECT_TRUE(has(e, "shared_expert_intermediate_size: must be positive")) << e;
  e = edited("\"qkv_bias\": true", "\"qkv_bias\": false");
  EXPECT_TRUE(has(e, "qkv_bias: false")) << e;
  e = edited("\"decoder_sparse_step\": 1", "\"decoder_sparse_step\": 2");
  EXPECT_TRUE(has(e, "decoder_sparse_step: 2 makes some layers dense")) << e;
  e = edited("\"num_experts\": 4", "\"num_experts\": 0");
  EXPECT_TRUE(has(e, "num_experts: 0 makes every layer a dense Qwen2MoeMLP")) << e;

  // Export: Qwen2-MoE's shared expert is always there and gated; Mixtral and Qwen3-MoE have none.
  struct Case {
    std::function<void(Config&)> change;
    std::string why;
  };
  for (const Case& k : std::vector<Case>{
           {[](Config& c) { c.model.shared_expert_gate = false; }, "needs a gated shared expert"},
           {[](Config& c) { c.model.shared_expert_hidden = 0, c.model.shared_expert_gate = false; },
            "needs a gated shared expert"},
           {[](Config& c) { c.model.qkv_bias = false; },
            "neither Mixtral nor Qwen3-MoE has a shared expert"},
           {[](Config& c) { c.model.qkv_bias = false, c.model.qk_norm = true; },
            "neither Mixtral nor Qwen3-MoE has a shared expert"}}) {
    Config cfg = qwen2_moe_config();
    k.change(cfg);
    expect_export_refused(cfg, tmp.path / "refused", k.why);
  }
}

// The export against PyTorch modules laid out as transformers' Qwen2-MoE (scripts/hf_logits.py),
// loaded strictly: the shared expert and its gate are where Qwen2MoeSparseMoeBlock holds them, and
// the gate's sigmoid is applied; another routing (norm_topk_prob flipped) fails the comparison.
TEST(HFQwen2Moe, logits_agree_with_hf_structured_pytorch) {
  std::string out;
  if (run_command("/usr/bin/python3 -c 'import numpy, h5py, torch'", &out) != 0)
    GTEST_SKIP() << "/usr/bin/python3 lacks numpy, h5py or torch: " << out;
  TempDir tmp;
  const fs::path ck = save_random(qwen2_moe_config(), tmp.path / "ck");
  const std::string hf = (tmp.path / "hf").string(), ref = (tmp.path / "ref.safetensors").string();
  ASSERT_EQ(export_with_logits(ck, hf, ref, &out), 0) << out;
  EXPECT_EQ(run_script("check_export.py", hf + " " + ck.string(), &out), 0) << out;
  // 1e-4 of the largest logit, as for the other mixtures: tessera's f32 against float64.
  EXPECT_EQ(run_script("hf_logits.py", hf + " " + ref, &out), 0) << out;
  std::printf("qwen2-moe: %s", out.c_str());
  replace_in(fs::path(hf) / "config.json", "\"norm_topk_prob\": false", "\"norm_topk_prob\": true");
  EXPECT_EQ(run_script("hf_logits.py", hf + " " + ref, &out), 1) << "norm_topk_prob true: " << out;
}
