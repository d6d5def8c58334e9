// Mixtures of experts (model.n_expert > 0) in Hugging Face directories: what MixtralForCausalLM,
// Qwen3MoeForCausalLM and Qwen2MoeForCausalLM can hold, and their config.json keys in both directions (hf_dir.h writes
// and reads the rest of the file; nn/hf_names.h names the tensors).
//
//   auto why = hf_moe_unsupported(cfg.model, gpt2_names);    // empty: an HF class holds it
//   for (const auto& [key, json] : hf_moe_config(cfg.model))  // export: the keys it adds
//     object.set(key, json);
//   read_hf_moe_config(keys, "mixtral", cfg.model, notes);    // import
//
// A Llama-style mixture is Mixtral's (modeling_mixtral.py: MixtralSparseMoeBlock, the top k
// probabilities always renormalised, no biases); with model.qk_norm, Qwen3-MoE's
// (modeling_qwen3_moe.py: Qwen3MoeSparseMoeBlock, renormalised when norm_topk_prob, every layer
// sparse when decoder_sparse_step is 1 and mlp_only_layers empty); with model.qkv_bias and a gated
// shared expert, Qwen2-MoE's (modeling_qwen2_moe.py: Qwen2MoeSparseMoeBlock, Qwen3-MoE's routing
// and shared_expert times sigmoid(shared_expert_gate x)). All route as nn/moe.h does:
// softmax over the router's logits, the k most probable experts, their probabilities (divided by
// their sum) weighing the experts' outputs. A GPT-2-style mixture has no HF class.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/json.h"
#include "config/config.h"

namespace tessera::train {

// Why the mixture of m has no HF class, one sentence per reason; empty for a dense model or one
// that Mixtral, Qwen3-MoE or Qwen2-MoE computes. gpt2_names: the model takes GPT-2's names (LayerNorm + GELU).
std::vector<std::string> hf_moe_unsupported(const ModelConfig& m, bool gpt2_names);

// What an export of m cannot carry into HF's training (config.json's tessera_notes: the balancing
// loss measured otherwise there, a z-loss there is none of); empty for a dense model.
std::vector<std::string> hf_moe_notes(const ModelConfig& m);

// The keys a mixture adds to config.json, in order, each value already JSON text: MixtralConfig's
// (model.qk_norm false), Qwen3MoeConfig's or (model.qkv_bias) Qwen2MoeConfig's. Empty for a dense
// model.
std::vector<std::pair<std::string, std::string>> hf_moe_config(const ModelConfig& m);

// How the importer's config.json reader is asked for a key: get(key, field) returns its value, or
// nullptr when it is absent or null; the key counts as read either way, and field (where not
// null) is noted as read from key, for the messages of config validation.
struct HFConfigKeys {
  std::string file;  // config.json's path, for errors
  std::function<const Json*(const std::string& key, const void* field)> get;
};

// Reads the mixture keys of model_type type ("mixtral", "qwen3_moe" or "qwen2_moe") into m:
// n_expert, expert_top_k, router_renormalize, router_aux_loss, (the Qwens) mlp_hidden and
// (Qwen2-MoE) the gated shared expert's width. What tessera
// cannot compute is an error naming the key; what changes HF's training only is noted.
void read_hf_moe_config(const HFConfigKeys& keys, const std::string& type, ModelConfig& m,
                        std::vector<std::string>& notes);

}  // namespace tessera::train
