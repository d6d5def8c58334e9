// Hugging Face parameter names: one table per architecture (GPT-2 style, Llama style). The model
// names its parameters and Linear modules from it, and the exporter and importer map tensors with
// it, so a name is spelt in exactly one place.
//
//   for (const ParamSpec& s : param_specs(cfg))      // every parameter, in creation order
//     s.name;            // "transformer.h.0.attn.c_attn.weight"
//     s.shape;           // tessera's layout: matrices [out, in], like a PyTorch Linear
//     s.hf_transposed;   // HF stores it [in, out] (GPT-2's Conv1D): transpose on export/import
//   hf_module(cfg, Part::O, 0);                       // "model.layers.0.self_attn.o_proj"
//
// The table follows GPTConfig::gpt2_names(): LayerNorm + GELU models take GPT-2's names
// (transformers' GPT2LMHeadModel), every other model Llama's (LlamaForCausalLM), or with qk_norm
// Qwen3's (Qwen3ForCausalLM: Llama's and the two norms), or with qkv_bias alone Qwen2's
// (Qwen2ForCausalLM: Llama's, q, k and v with biases). Names are those
// of the PyTorch state dict, root included ("transformer.", "model."), as save_pretrained writes.
// GPT-2's fused c_attn holds q, k and v one after the other along its output dimension, the order
// in which HF's GPT2Attention splits it, so it needs no reordering, only the Conv1D transpose.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/gpt.h"

namespace tessera::nn {

// What a parameter (or Linear module) is, whatever the architecture calls it.
// clang-format off
enum class Part {
  Embed, Pos, NormF, Head,                        // outside the blocks
  Norm1, QKV, Q, K, V, O, Norm2, Gate, Up, Down,  // inside block i
  Forget,  // inside block i: Forgetting Attention's gate, (H, C) and (H), for that attention only
  QNorm, KNorm,  // inside block i: GPTConfig::qk_norm's RMSNorm weights, (hd) each
  Router,        // inside block i: a mixture of experts' router (E, C) (GPTConfig::n_expert)
  SharedGate     // inside block i: the shared expert's gate (1, C) (GPTConfig::shared_expert_gate)
};
// clang-format on
constexpr int kParts = int(Part::SharedGate) + 1;
// ParamSpec::expert of the shared expert's Gate, Up and Down (GPTConfig::shared_expert_hidden).
constexpr int64_t kSharedExpert = -2;

// One architecture's names. Module names of the parts outside the blocks are full; those inside a
// block follow block_prefix + i + ".", and an expert's Gate, Up and Down (a mixture of experts,
// GPTConfig::n_expert) block_prefix + i + "." + experts + j + ".". "" = the architecture has no
// such module.
struct HFArch {
  const char* model_type;      // config.json "model_type": "gpt2" | "llama"
  const char* architecture;    // config.json "architectures": "GPT2LMHeadModel" | ...
  const char* block_prefix;    // "transformer.h." | "model.layers."
  bool conv1d;                 // block matrices stored [in, out] by HF (GPT-2's Conv1D)
  const char* module[kParts];  // indexed by Part
  const char* experts = "";    // "block_sparse_moe.experts." (Mixtral) | "mlp.experts." | ""
  const char* shared = "";     // the shared expert's prefix: "mlp.shared_expert." (Qwen2-MoE) | ""
};

const HFArch& hf_gpt2();
const HFArch& hf_llama();
const HFArch& hf_qwen3();  // Llama's names with q_norm and k_norm: Qwen3ForCausalLM
const HFArch& hf_qwen2();  // Llama's names, q, k and v with biases (qkv_bias): Qwen2ForCausalLM
// Mixtures of experts (GPTConfig::n_expert > 0): Llama's names with Mixtral's block_sparse_moe
// (MixtralForCausalLM), Qwen3's with Qwen3-MoE's mlp.gate and mlp.experts (Qwen3MoeForCausalLM),
// GPT-2's with tessera's mlp.router and mlp.experts (no Hugging Face counterpart).
const HFArch& hf_mixtral();
const HFArch& hf_qwen3_moe();
// Qwen2's names with Qwen2-MoE's mlp.gate, mlp.experts, mlp.shared_expert and
// mlp.shared_expert_gate (Qwen2MoeForCausalLM).
const HFArch& hf_qwen2_moe();
const HFArch& hf_gpt2_moe();
// gpt2_names() ? hf_gpt2() : qk_norm ? hf_qwen3() : qkv_bias alone ? hf_qwen2() : hf_llama(), or
// their mixtures' tables
const HFArch& hf_arch(const GPTConfig& cfg);

// The full module name of a part: "transformer.wte", "transformer.h.3.attn.c_attn", "lm_head",
// expert >= 0: "model.layers.3.block_sparse_moe.experts.5.w1" (Gate, Up, Down only);
// kSharedExpert: "model.layers.3.mlp.shared_expert.up_proj".
// layer is ignored outside the blocks. An error names the part when the architecture lacks it.
std::string hf_module(const GPTConfig& cfg, Part part, int64_t layer = -1, int64_t expert = -1);
// "transformer.h.3." / "model.layers.3."
std::string hf_block_prefix(const GPTConfig& cfg, int64_t layer);

// How a parameter starts (GPT-2's initialisation; gpt.h): N(0, 0.02), N(0, 0.02 / sqrt(2 L)) for
// the projections that write into the residual stream, zeros (biases), ones (norm weights).
enum class Init { Normal, Residual, Zeros, Ones };

struct ParamSpec {
  std::string name;     // full HF name: module + ".weight" / ".bias"
  Part part;
  int64_t layer;        // -1 outside the blocks
  int64_t
      expert;  // an expert's Gate, Up or Down: its index (kSharedExpert: the shared one); else -1
  bool bias;            // the module's bias (else its weight)
  Shape shape;          // tessera's layout
  Init init;
  bool hf_transposed;   // HF stores this matrix [in, out]
};

// Every parameter of a model with this config, in the order the model creates them (which fixes
// the order random initial values are drawn in). A tied head has no entry of its own.
std::vector<ParamSpec> param_specs(const GPTConfig& cfg);

// Whether a part is one of the Linear layers inside a block (attention and MLP projections, an
// expert's too; a mixture's router is not: it keeps AdamW under Muon and full precision under
// QLoRA, as its scores decide the routing).
bool is_block_linear(Part part);

// The parameters Muon updates (optim/muon.h): the weight of every Linear inside a block, in
// creation order. The embeddings, the head, the norms and the biases keep AdamW.
std::vector<std::string> muon_parameters(const GPTConfig& cfg);
// The fused attention projections (GPT-2's c_attn, (H + 2 Hkv) hd x C) as Muon's row blocks: its
// q, k and v rows, (H, Hkv, Hkv) x hd, each a map of its own (FlatAdamWOptions::muon_blocks).
// Empty where q, k and v are separate matrices.
std::map<std::string, std::vector<int64_t>> muon_qkv_blocks(const GPTConfig& cfg);

}  // namespace tessera::nn
