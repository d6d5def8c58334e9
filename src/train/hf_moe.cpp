// Mixtral's, Qwen3-MoE's and Qwen2-MoE's config.json keys and what they cannot hold (hf_moe.h).
// Field names and defaults are transformers' MixtralConfig, Qwen3MoeConfig and Qwen2MoeConfig
// (configuration_mixtral.py, configuration_qwen3_moe.py, configuration_qwen2_moe.py).
#include "train/hf_moe.h"

#include "core/error.h"

namespace tessera::train {

std::vector<std::string> hf_moe_unsupported(const ModelConfig& m, bool gpt2_names) {
  std::vector<std::string> why;
  if (m.n_expert <= 0) return why;
  const std::string E = "model.n_expert " + std::to_string(m.n_expert);
  if (gpt2_names) {
    why.push_back(E +
                  " in a GPT-2-style model (layernorm + gelu): transformers has no GPT-2 "
                  "with a mixture of experts (its mlp.router and mlp.experts are tessera's "
                  "names)");
    return why;
  }
  const bool shared = m.shared_expert_hidden > 0;
  if (m.qkv_bias && !m.bias && !m.qk_norm) {  // Qwen2-MoE: norm_topk_prob says either
    if (!shared || !m.shared_expert_gate)
      why.push_back(E +
                    " with model.qkv_bias (Qwen2MoeForCausalLM) needs a gated shared expert "
                    "(model.shared_expert_hidden > 0, model.shared_expert_gate true): every "
                    "Qwen2MoeSparseMoeBlock has one");
    return why;
  }
  if (shared)
    why.push_back("model.shared_expert_hidden " + std::to_string(m.shared_expert_hidden) + " (" +
                  (m.qk_norm ? "Qwen3MoeForCausalLM" : "MixtralForCausalLM") +
                  "): neither Mixtral nor Qwen3-MoE has a shared expert (Qwen2-MoE, "
                  "model.qkv_bias, has a gated one)");
  if (m.qk_norm) return why;  // Qwen3-MoE: norm_topk_prob says either; biases hf_unsupported's
  if (!m.router_renormalize)
    why.push_back("model.router_renormalize is false with " + E +
                  " (MixtralForCausalLM): MixtralSparseMoeBlock always divides the top k "
                  "probabilities by their sum (Qwen3-MoE, model.qk_norm, has norm_topk_prob)");
  if (m.bias)
    why.push_back("model.bias is true with " + E +
                  " (MixtralForCausalLM): Mixtral's attention and experts have no biases");
  return why;
}

std::vector<std::string> hf_moe_notes(const ModelConfig& m) {
  std::vector<std::string> notes;
  if (m.n_expert > 0 && m.router_z_loss > 0)  // ST-MoE's; neither config class has one
    notes.push_back("trained with a router z-loss (model.router_z_loss " +
                    json_exact(m.router_z_loss) +
                    "), which transformers' Mixtral and Qwen3-MoE do not compute; inference is "
                    "unaffected");
  if (m.n_expert <= 0 || m.router_aux_loss <= 0) return notes;
  // transformers' load_balancing_loss_func (modeling_mixtral.py, modeling_qwen3_moe.py):
  // num_experts x sum_e tokens_per_expert_e x router_prob_per_expert_e, both means over the
  // tokens of every layer concatenated, tokens_per_expert summed over a token's k choices.
  notes.push_back("router_aux_loss_coef is model.router_aux_loss " + json_exact(m.router_aux_loss) +
                  ", the weight of tessera's load-balancing loss: E / (N k) sum_e count_e P_e in "
                  "each layer, summed over the layers; transformers' (with output_router_logits) "
                  "is E / N sum_e count_e P_e over every layer's tokens pooled, so training there "
                  "balances by another measure; inference is unaffected");
  return notes;
}

std::vector<std::pair<std::string, std::string>> hf_moe_config(const ModelConfig& m) {
  if (m.n_expert <= 0) return {};
  const std::string E = std::to_string(m.n_expert), k = std::to_string(m.expert_top_k);
  const std::string coef = json_exact(m.router_aux_loss);
  const bool qwen2 = m.qkv_bias && !m.bias && !m.qk_norm;
  if (!m.qk_norm && !qwen2)  // MixtralConfig: intermediate_size (Llama's key) is each expert's
    return {{"num_local_experts", E},
            {"num_experts_per_tok", k},
            {"router_aux_loss_coef", coef},
            {"router_jitter_noise", "0.0"},
            {"output_router_logits", "false"}};
  // Qwen3MoeConfig and Qwen2MoeConfig: every layer sparse (decoder_sparse_step 1, no
  // mlp_only_layers), its experts moe_intermediate_size wide; intermediate_size, the width of a
  // dense layer, then goes unused. Qwen2-MoE's shared expert is shared_expert_intermediate_size
  // wide and always gated; transformers 5's Qwen2MoeConfig has qkv_bias (true by default; the
  // published files, older, lack the key).
  std::vector<std::pair<std::string, std::string>> keys = {
      {"num_experts", E},
      {"num_experts_per_tok", k},
      {"moe_intermediate_size", std::to_string(m.hidden())}};
  if (qwen2)
    keys.push_back({"shared_expert_intermediate_size", std::to_string(m.shared_expert_hidden)});
  for (const auto& kv : std::vector<std::pair<std::string, std::string>>{
           {"norm_topk_prob", m.router_renormalize ? "true" : "false"},
           {"decoder_sparse_step", "1"},
           {"mlp_only_layers", "[]"},
           {"router_aux_loss_coef", coef},
           {"output_router_logits", "false"}})
    keys.push_back(kv);
  if (qwen2) keys.push_back({"qkv_bias", "true"});
  return keys;
}

void read_hf_moe_config(const HFConfigKeys& keys, const std::string& type, ModelConfig& m,
                        std::vector<std::string>& notes) {
  TESSERA_CHECK(type == "mixtral" || type == "qwen3_moe" || type == "qwen2_moe",
                "read_hf_moe_config: model_type '", type, "' is not a mixture of experts");
  const bool qwen2 = type == "qwen2_moe", qwen = type == "qwen3_moe" || qwen2;
  auto where = [&](const std::string& key) { return keys.file + ": " + key; };
  auto require = [&](bool ok, const std::string& key, const std::string& why) {
    TESSERA_CHECK(ok, keys.file, ": ", key, ": ", why);
  };
  auto integer = [&](int64_t& field, const std::string& key, int64_t dflt) {
    const Json* v = keys.get(key, &field);
    field = v ? v->as_int(where(key)) : dflt;
  };
  auto number = [&](double& field, const std::string& key, double dflt) {
    const Json* v = keys.get(key, &field);
    field = v ? v->as_double(where(key)) : dflt;
  };
  // Defaults are the config classes' (Mixtral 8 experts, 2 a token; Qwen3-MoE 128, 8; Qwen2-MoE
  // 60, 4).
  integer(m.n_expert, qwen ? "num_experts" : "num_local_experts", qwen2 ? 60 : qwen ? 128 : 8);
  integer(m.expert_top_k, "num_experts_per_tok", qwen2 ? 4 : qwen ? 8 : 2);
  number(m.router_aux_loss, "router_aux_loss_coef", 0.001);
  keys.get("output_router_logits", nullptr);  // what forward returns, not what it computes
  if (!qwen) {
    m.router_renormalize = true;  // MixtralSparseMoeBlock: routing_weights /= their sum, always
    // Mixtral multiplies the router's input by U(1 - j, 1 + j) noise while training only.
    double jitter = 0;
    if (const Json* v = keys.get("router_jitter_noise", nullptr))
      jitter = v->as_double(where("router_jitter_noise"));
    if (jitter != 0)
      notes.push_back("router_jitter_noise " + json_exact(jitter) +
                      " ignored: tessera's router has no noise (Mixtral's is a training-time "
                      "one; inference is unaffected)");
    return;
  }
  require(
      m.n_expert > 0, "num_experts",
      qwen2 ? "0 makes every layer a dense Qwen2MoeMLP; such a file is a Qwen2 (model_type qwen2)"
            : "0 makes every layer a dense Qwen3MoeMLP; such a file is a Qwen3 (model_type qwen3)");
  const Json* norm = keys.get("norm_topk_prob", &m.router_renormalize);
  m.router_renormalize = norm ? norm->boolean(where("norm_topk_prob")) : false;
  integer(m.mlp_hidden, "moe_intermediate_size", qwen2 ? 1408 : 768);  // each expert's width
  if (qwen2) {  // Qwen2MoeSparseMoeBlock: a shared expert, gated by sigmoid(shared_expert_gate x)
    integer(m.shared_expert_hidden, "shared_expert_intermediate_size", 5632);
    require(m.shared_expert_hidden > 0, "shared_expert_intermediate_size",
            "must be positive: every Qwen2MoeSparseMoeBlock has a shared expert");
    m.shared_expert_gate = true;
    if (const Json* b = keys.get("qkv_bias", nullptr))
      require(b->boolean(where("qkv_bias")), "qkv_bias",
              "false: tessera's Qwen2-MoE has biases on q, k and v (Qwen2MoeConfig's default)");
  }
  // Qwen3MoeDecoderLayer: layer i is sparse when i is not in mlp_only_layers and (i + 1) %
  // decoder_sparse_step == 0, else a dense Qwen3MoeMLP of intermediate_size; tessera's mixture is
  // in every layer, so every layer must be sparse.
  const Json* sparse_step = keys.get("decoder_sparse_step", nullptr);
  const int64_t step = sparse_step ? sparse_step->as_int(where("decoder_sparse_step")) : 1;
  require(step == 1, "decoder_sparse_step",
          std::to_string(step) +
              " makes some layers dense; tessera's mixture of experts is in "
              "every layer (decoder_sparse_step 1)");
  if (const Json* only = keys.get("mlp_only_layers", nullptr))
    require(only->items(where("mlp_only_layers")).empty(), "mlp_only_layers",
            "names dense layers; tessera's mixture of experts is in every layer");
}

}  // namespace tessera::train
