// MixtralForCausalLM and Qwen3MoeForCausalLM through export and import: a Llama-style mixture of
// experts (model.n_expert) exports as Mixtral, one with model.qk_norm as Qwen3-MoE; the logits of
// the exported directory agree with PyTorch modules laid out as transformers' (scripts/
// hf_logits.py: MixtralSparseMoeBlock, Qwen3MoeSparseMoeBlock); export -> import gives back every
// tensor byte for byte and the mixture's keys; config.json files as the published ones are
// written import; and what neither class holds is refused by name.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

#include "checkpoint/json.h"
#include "checkpoint/safetensors.h"
#include "hf/hf_fixture.h"
#include "nn/gpt.h"
#include "nn/hf_names.h"
#include "test_util.h"
#include "train/hf_dir.h"
#include "train/hf_moe.h"
#include "train/options.h"

using namespace tessera;
using namespace tessera::testing::hf;
using tessera::testing::error_of;
using tessera::testing::read_file;
using tessera::testing::run_command;
using tessera::testing::TempDir;
namespace fs = std::filesystem;

namespace {

// Mixtral's shape in small: Llama's (grouped-query attention, untied head) with 4 experts of 24 a
// layer, each token to 2 of them.
Config mixtral_config() {
  Config c = llama_config();
  c.model.n_expert = 4, c.model.expert_top_k = 2;
  return c;
}

// Qwen3-MoE's: Qwen3's (heads of 12 on a width of 16, tied head) with 4 experts, each token to 3
// weighed by their probabilities as they are (Qwen3MoeConfig's default norm_topk_prob false), a
// balancing coefficient other than tessera's default.
Config qwen3_moe_config() {
  Config c = qwen3_config();
  c.model.n_expert = 4, c.model.expert_top_k = 3, c.model.router_renormalize = false;
  c.model.router_aux_loss = 0.001;
  return c;
}

Json config_of(const fs::path& d) {
  return parse_json(read_file(d / "config.json"), "config.json");
}

}  // namespace

TEST(HFMoe, round_trip_is_byte_exact_with_the_mixtures_keys) {
  // expect_round_trip_byte_exact compares every model key but router_aux_loss (a run may change
  // it): the coefficient is checked here.
  Config renormalised = qwen3_moe_config();
  renormalised.model.router_renormalize = true, renormalised.model.expert_top_k = 1;
  renormalised.model.tie_embeddings = false;
  for (const auto& [cfg, dtype] :
       std::vector<std::pair<Config, DType>>{{mixtral_config(), DType::F32},
                                             {qwen3_moe_config(), DType::BF16},
                                             {renormalised, DType::F32}}) {
    expect_round_trip_byte_exact(cfg, dtype);
    TempDir tmp;
    const ModelConfig back =
        train::import_hf(export_fresh(cfg, tmp.path / "hf").string()).config.model;
    EXPECT_EQ(back.n_expert, cfg.model.n_expert);
    EXPECT_EQ(back.expert_top_k, cfg.model.expert_top_k);
    EXPECT_EQ(back.router_renormalize, cfg.model.router_renormalize);
    EXPECT_EQ(back.router_aux_loss, cfg.model.router_aux_loss);
  }
}

TEST(HFMoe, config_json_and_tensors_carry_mixtrals_and_qwen3_moes_names) {
  TempDir tmp;
  const fs::path mx = export_fresh(mixtral_config(), tmp.path / "mixtral");
  const Json c = config_of(mx);
  EXPECT_EQ(c.get("model_type")->str(), "mixtral");
  EXPECT_EQ(c.get("architectures")->items()[0].str(), "MixtralForCausalLM");
  EXPECT_EQ(c.get("num_local_experts")->as_int(), 4);
  EXPECT_EQ(c.get("num_experts_per_tok")->as_int(), 2);
  EXPECT_EQ(c.get("intermediate_size")->as_int(), 24);  // each expert's width
  EXPECT_EQ(c.get("router_aux_loss_coef")->as_double(), 0.01);
  EXPECT_FALSE(c.get("output_router_logits")->boolean());
  EXPECT_TRUE(c.get("sliding_window")->is(Json::Kind::Null));
  EXPECT_EQ(c.get("attention_bias"), nullptr);  // not MixtralConfig keys
  EXPECT_EQ(c.get("mlp_bias"), nullptr);
  EXPECT_EQ(c.get("num_experts"), nullptr);
  bool noted = false;  // the balancing loss HF would train with is another
  for (const Json& n : c.get("tessera_notes")->items())
    noted |= has(n.str(), "router_aux_loss_coef");
  EXPECT_TRUE(noted);
  ModelConfig z = mixtral_config().model;  // a z-loss: transformers computes none
  z.router_z_loss = 1e-3;
  EXPECT_TRUE(has(train::hf_moe_notes(z).at(0), "router z-loss (model.router_z_loss 0.001)"));
  EXPECT_EQ(train::hf_moe_notes(mixtral_config().model).size(), 1u);
  const SafetensorsFile st = read_safetensors((mx / "model.safetensors").string());
  std::map<std::string, Shape> shapes;
  for (const auto& [name, t] : st.tensors) shapes[name] = t.shape();
  EXPECT_EQ(shapes["model.layers.1.block_sparse_moe.gate.weight"], (Shape{4, 16}));
  EXPECT_EQ(shapes["model.layers.1.block_sparse_moe.experts.3.w1.weight"], (Shape{24, 16}));
  EXPECT_EQ(shapes["model.layers.1.block_sparse_moe.experts.3.w3.weight"], (Shape{24, 16}));
  EXPECT_EQ(shapes["model.layers.1.block_sparse_moe.experts.3.w2.weight"], (Shape{16, 24}));
  // Per layer 2 norms, q k v o, the router and 4 x 3 expert matrices; embedding, norm, head.
  EXPECT_EQ(st.tensors.size(), size_t(2 * 19 + 3));
  std::string out;
  ASSERT_EQ(run_command(kBin + "/import " + mx.string() + " --output " +
                            (tmp.path / "mixtral-back").string(),
                        &out),
            0)
      << out;
  EXPECT_TRUE(has(out, "(MixtralForCausalLM, 41 tensors)")) << out;

  const fs::path qm = export_fresh(qwen3_moe_config(), tmp.path / "qwen3-moe");
  const Json q = config_of(qm);
  EXPECT_EQ(q.get("model_type")->str(), "qwen3_moe");
  EXPECT_EQ(q.get("architectures")->items()[0].str(), "Qwen3MoeForCausalLM");
  EXPECT_EQ(q.get("num_experts")->as_int(), 4);
  EXPECT_EQ(q.get("num_experts_per_tok")->as_int(), 3);
  EXPECT_EQ(q.get("moe_intermediate_size")->as_int(), 24);
  EXPECT_FALSE(q.get("norm_topk_prob")->boolean());
  EXPECT_EQ(q.get("decoder_sparse_step")->as_int(), 1);
  EXPECT_TRUE(q.get("mlp_only_layers")->items().empty());
  EXPECT_EQ(q.get("router_aux_loss_coef")->as_double(), 0.001);
  EXPECT_EQ(q.get("head_dim")->as_int(), 12);
  EXPECT_FALSE(q.get("use_sliding_window")->boolean());
  EXPECT_EQ(q.get("num_local_experts"), nullptr);
  const SafetensorsFile qs = read_safetensors((qm / "model.safetensors").string());
  shapes.clear();
  for (const auto& [name, t] : qs.tensors) shapes[name] = t.shape();
  EXPECT_EQ(shapes["model.layers.0.mlp.gate.weight"], (Shape{4, 16}));
  EXPECT_EQ(shapes["model.layers.0.mlp.experts.2.gate_proj.weight"], (Shape{24, 16}));
  EXPECT_EQ(shapes["model.layers.0.mlp.experts.2.up_proj.weight"], (Shape{24, 16}));
  EXPECT_EQ(shapes["model.layers.0.mlp.experts.2.down_proj.weight"], (Shape{16, 24}));
  EXPECT_EQ(shapes["model.layers.0.self_attn.q_norm.weight"], (Shape{12}));
  EXPECT_EQ(shapes.count("lm_head.weight"), 0u);  // tied
  ASSERT_EQ(run_command(kBin + "/import " + qm.string() + " --output " +
                            (tmp.path / "qwen3-moe-back").string(),
                        &out),
            0)
      << out;
  // Per layer 2 norms, q k v o, q_norm and k_norm, the router and 12 expert matrices.
  EXPECT_TRUE(has(out, "(Qwen3MoeForCausalLM, " + std::to_string(2 * 21 + 2) + " tensors)")) << out;
}

TEST(HFMoe, config_jsons_as_the_published_ones_import) {
  // Mixtral-8x7B-v0.1's config.json keys (no attention_bias, sliding_window null, its sizes made
  // small): rope_theta and rms_norm_eps left out take MixtralConfig's defaults, 1e6 and 1e-5, not
  // Llama's.
  TempDir tmp;
  const fs::path mx = export_fresh(mixtral_config(), tmp.path / "mixtral");
  std::ofstream(mx / "config.json", std::ios::binary | std::ios::trunc) << R"({
  "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
  "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 16, "initializer_range": 0.02,
  "intermediate_size": 24, "max_position_embeddings": 32768, "model_type": "mixtral",
  "num_attention_heads": 2, "num_experts_per_tok": 2, "num_hidden_layers": 2,
  "num_key_value_heads": 1, "num_local_experts": 4, "output_router_logits": false,
  "router_aux_loss_coef": 0.02, "sliding_window": null, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "transformers_version": "4.36.0.dev0", "use_cache": true,
  "vocab_size": 259
})";
  const train::HFModel m = train::import_hf(mx.string());
  const ModelConfig& c = m.config.model;
  EXPECT_EQ(m.architecture, "MixtralForCausalLM");
  EXPECT_EQ(c.n_expert, 4);
  EXPECT_EQ(c.expert_top_k, 2);
  EXPECT_TRUE(c.router_renormalize);
  EXPECT_EQ(c.router_aux_loss, 0.02);
  EXPECT_EQ(c.mlp_hidden, 24);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.norm_eps, 1e-5);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_FALSE(c.bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(m.params.size(), size_t(41));

  // Qwen3-30B-A3B's keys: intermediate_size (a dense layer's width, which no layer has) apart
  // from moe_intermediate_size, norm_topk_prob true, max_window_layers, no layer_types.
  const fs::path qm = export_fresh(qwen3_moe_config(), tmp.path / "qwen3-moe");
  std::ofstream(qm / "config.json", std::ios::binary | std::ios::trunc) << R"({
  "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 12,
  "hidden_act": "silu", "hidden_size": 16, "initializer_range": 0.02, "intermediate_size": 96,
  "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [],
  "model_type": "qwen3_moe", "moe_intermediate_size": 24, "norm_topk_prob": true,
  "num_attention_heads": 2, "num_experts": 4, "num_experts_per_tok": 3, "num_hidden_layers": 2,
  "num_key_value_heads": 1, "output_router_logits": false, "rms_norm_eps": 1e-06,
  "rope_scaling": null, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
  "sliding_window": null, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 259
})";
  const train::HFModel q = train::import_hf(qm.string());
  const ModelConfig& k = q.config.model;
  EXPECT_EQ(q.architecture, "Qwen3MoeForCausalLM");
  EXPECT_EQ(k.n_expert, 4);
  EXPECT_EQ(k.expert_top_k, 3);
  EXPECT_TRUE(k.router_renormalize);
  EXPECT_EQ(k.router_aux_loss, 0.001);
  EXPECT_EQ(k.mlp_hidden, 24);  // moe_intermediate_size, not intermediate_size
  EXPECT_TRUE(k.qk_norm);
  EXPECT_EQ(k.head_dim(), 12);
  EXPECT_EQ(k.block_size, 40960);
  EXPECT_EQ(q.params.size(), size_t(2 * 21 + 2));
}

TEST(HFMoe, what_mixtral_and_qwen3_moe_cannot_express_is_refused_by_name) {
  TempDir tmp;
  int n = 0;
  auto edited = [&](const Config& cfg, const std::string& from, const std::string& to) {
    const fs::path d = export_fresh(cfg, tmp.path / ("hf" + std::to_string(n++)));
    replace_in(d / "config.json", from, to);
    return import_error(d);
  };
  const Config qm = qwen3_moe_config(), mx = mixtral_config();
  std::string e = edited(qm, "\"decoder_sparse_step\": 1", "\"decoder_sparse_step\": 2");
  EXPECT_TRUE(has(e, "decoder_sparse_step: 2 makes some layers dense")) << e;
  e = edited(qm, "\"mlp_only_layers\": []", "\"mlp_only_layers\": [1]");
  EXPECT_TRUE(has(e, "mlp_only_layers: names dense layers")) << e;
  e = edited(qm, "\"num_experts\": 4", "\"num_experts\": 0");
  EXPECT_TRUE(has(e, "num_experts: 0 makes every layer a dense Qwen3MoeMLP")) << e;
  // Qwen2-MoE's shared expert in a Qwen3-MoE file: a key Qwen3MoeConfig has not.
  e = edited(qm, "\"decoder_sparse_step\"",
             "\"shared_expert_intermediate_size\": 24, \"decoder_sparse_step\"");
  EXPECT_TRUE(has(e, "unsupported key \"shared_expert_intermediate_size\"")) << e;
  e = edited(qm, "\"attention_bias\": false", "\"attention_bias\": true");
  EXPECT_TRUE(has(e, "attention_bias") && has(e, "no biases")) << e;
  e = edited(qm, "[\"Qwen3MoeForCausalLM\"]", "[\"Qwen3ForCausalLM\"]");
  EXPECT_TRUE(has(e, "expected [\"Qwen3MoeForCausalLM\"]")) << e;
  // More experts a token than there are: config validation, naming the config.json keys.
  e = edited(mx, "\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 5");
  EXPECT_TRUE(has(e, "model.expert_top_k") && has(e, "num_experts_per_tok")) << e;
  e = edited(mx, "\"sliding_window\": null", "\"sliding_window\": null, \"mlp_bias\": false");
  EXPECT_TRUE(has(e, "unsupported key \"mlp_bias\"")) << e;
  // Read as Mixtral, a Qwen3-MoE file's tensors are not Mixtral's: named.
  const fs::path d = export_fresh(mx, tmp.path / "as-qwen");
  replace_in(d / "config.json", "\"model_type\": \"mixtral\"", "\"model_type\": \"qwen3_moe\"");
  replace_in(d / "config.json", "[\"MixtralForCausalLM\"]", "[\"Qwen3MoeForCausalLM\"]");
  replace_in(d / "config.json", "\"num_local_experts\"", "\"num_experts\"");
  replace_in(d / "config.json", "\"router_jitter_noise\": 0.0", "\"norm_topk_prob\": true");
  replace_in(d / "config.json", "\"intermediate_size\": 24", "\"moe_intermediate_size\": 24");
  e = import_error(d);
  EXPECT_TRUE(has(e, "missing tensor 'model.layers.0.self_attn.q_norm.weight'")) << e;
  // Mixtral's router jitter changes HF's training only: read, with a note.
  const fs::path j = export_fresh(mx, tmp.path / "jitter");
  replace_in(j / "config.json", "\"router_jitter_noise\": 0.0", "\"router_jitter_noise\": 0.01");
  const train::HFModel jm = train::import_hf(j.string());
  ASSERT_EQ(jm.notes.size(), 1u);
  EXPECT_TRUE(has(jm.notes[0], "router_jitter_noise 0.01 ignored")) << jm.notes[0];

  // Export: what Mixtral cannot compute, and a GPT-2-style mixture (no HF class).
  struct Case {
    std::function<void(Config&)> change;
    std::string why;
  };
  for (const Case& k : std::vector<Case>{
           {[](Config& c) { c.model.router_renormalize = false; },
            "MixtralSparseMoeBlock always divides the top k probabilities by their sum"},
           {[](Config& c) { c.model.bias = true; },
            "Mixtral's attention and experts have no biases"},
           {[](Config& c) { c = qwen3_moe_config(), c.model.bias = true; },
            "Qwen3's MLP has no biases"},
           {[](Config& c) { c = gpt2_config(), c.model.n_expert = 4; },
            "transformers has no GPT-2 with a mixture of experts"}}) {
    Config cfg = mixtral_config();
    k.change(cfg);
    expect_export_refused(cfg, tmp.path / "refused", k.why);
  }
}

// The exported directories against PyTorch modules laid out as transformers' Mixtral and
// Qwen3-MoE (scripts/hf_logits.py), loaded strictly, so every name and shape is the one HF's
// modules hold and w1 / w3 (gate / up) in their places: swapped, the logits differ.
TEST(HFMoe, logits_agree_with_hf_structured_pytorch) {
  std::string out;
  if (run_command("/usr/bin/python3 -c 'import numpy, h5py, torch'", &out) != 0)
    GTEST_SKIP() << "/usr/bin/python3 lacks numpy, h5py or torch: " << out;
  TempDir tmp;
  Config renormalised = qwen3_moe_config();
  renormalised.model.router_renormalize = true, renormalised.model.expert_top_k = 2;
  renormalised.model.tie_embeddings = false;
  struct Case {
    std::string name;
    Config cfg;
    std::string from, to;  // a config.json edit that changes the routing: the check must fail
  };
  for (const Case& k :
       std::vector<Case>{{"mixtral", mixtral_config(), "\"num_experts_per_tok\": 2",
                          "\"num_experts_per_tok\": 1"},
                         {"qwen3-moe", qwen3_moe_config(), "\"norm_topk_prob\": false",
                          "\"norm_topk_prob\": true"},
                         {"qwen3-moe-renormalised", renormalised, "\"norm_topk_prob\": true",
                          "\"norm_topk_prob\": false"}}) {
    const fs::path ck = save_random(k.cfg, tmp.path / ("ck-" + k.name));
    const std::string hf = (tmp.path / ("hf-" + k.name)).string();
    const std::string ref = (tmp.path / ("ref-" + k.name + ".safetensors")).string();
    ASSERT_EQ(export_with_logits(ck, hf, ref, &out), 0) << out;
    EXPECT_EQ(run_script("check_export.py", hf + " " + ck.string(), &out), 0) << out;
    // Default tolerance 1e-4 of the largest logit, as for the dense models: the reference runs in
    // float64, so the difference is tessera's f32 rounding through two layers, the routing
    // weights' included. Measured: 9.5e-5 (Mixtral, largest logit 15.7; the same PyTorch modules
    // run in f32 are 3.7e-5 off their f64 logits: these random weights are that sensitive), 7.0e-6
    // and 9.8e-6 (Qwen3-MoE, 10.7 and 15.1). Both sides must choose the same experts: the
    // smallest gap between a token's k-th and (k+1)-th probabilities here is 1.4% of them, far
    // above f32 rounding, so a differing choice (an O(1) difference) means a real disagreement.
    EXPECT_EQ(run_script("hf_logits.py", hf + " " + ref, &out), 0) << out;
    std::printf("%s: %s", k.name.c_str(), out.c_str());
    replace_in(fs::path(hf) / "config.json", k.from, k.to);
    EXPECT_EQ(run_script("hf_logits.py", hf + " " + ref, &out), 1)
        << k.name << " with " << k.to << ": " << out;
  }
}
