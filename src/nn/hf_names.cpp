// The two name tables and the parameter list derived from them (hf_names.h).
#include "nn/hf_names.h"

#include "core/error.h"

namespace tessera::nn {

namespace {

constexpr const char* kPartNames[kParts] = {
    "embed", "pos",  "norm_f", "head", "norm1",  "qkv",    "q",      "k",      "v",          "o",
    "norm2", "gate", "up",     "down", "forget", "q_norm", "k_norm", "router", "shared_gate"};

// clang-format off
// transformers' modeling_gpt2.py: GPT2LMHeadModel(transformer = GPT2Model(wte, wpe, h[i] =
// GPT2Block(ln_1, attn = GPT2Attention(c_attn, c_proj), ln_2, mlp = GPT2MLP(c_fc, c_proj)), ln_f),
// lm_head); every block matrix is a Conv1D, weight [in, out].
const HFArch kGpt2 = {
    "gpt2", "GPT2LMHeadModel", "transformer.h.", true,
    {"transformer.wte", "transformer.wpe", "transformer.ln_f", "lm_head", "ln_1", "attn.c_attn",
     "", "", "", "attn.c_proj", "ln_2", "", "mlp.c_fc", "mlp.c_proj", "attn.fgate", "attn.q_norm",
     "attn.k_norm", "", ""}};

// transformers' modeling_llama.py: LlamaForCausalLM(model = LlamaModel(embed_tokens, layers[i] =
// LlamaDecoderLayer(input_layernorm, self_attn(q_proj, k_proj, v_proj, o_proj),
// post_attention_layernorm, mlp(gate_proj, up_proj, down_proj)), norm), lm_head); nn.Linear
// weights [out, in]. Llama has no learned positions: "model.embed_positions" is tessera's name
// for them in Llama-named models (which then have no HF counterpart). Neither has a forget gate:
// its names (the Forgetting Transformer's own "fgate_proj" for Llama's) are tessera's too, as are
// GPT-2's q_norm and k_norm.
const HFArch kLlama = {
    "llama", "LlamaForCausalLM", "model.layers.", false,
    {"model.embed_tokens", "model.embed_positions", "model.norm", "lm_head", "input_layernorm", "",
     "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
     "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
     "self_attn.fgate_proj", "self_attn.q_norm", "self_attn.k_norm", "", ""}};
// clang-format on

// transformers' modeling_qwen3.py: Llama's modules, and Qwen3Attention's q_norm and k_norm
// (Qwen3RMSNorm over head_dim, applied to each head's q and k before RoPE).
HFArch named(HFArch a, const char* model_type, const char* architecture) {
  a.model_type = model_type, a.architecture = architecture;
  return a;
}
const HFArch kQwen3 = named(kLlama, "qwen3", "Qwen3ForCausalLM");
// transformers' modeling_qwen2.py: Llama's modules, q_proj, k_proj and v_proj with biases (and no
// other Linear: GPTConfig::qkv_bias).
const HFArch kQwen2 = named(kLlama, "qwen2", "Qwen2ForCausalLM");

// A table's MLP as a mixture: the router's module, the experts' and the shared expert's prefixes,
// the shared expert's gate's module and each expert's three Linears' names. Mixtral and Qwen3-MoE
// have no shared expert: their shared names are tessera's own.
HFArch mixture(HFArch a, const char* model_type, const char* architecture, const char* router,
               const char* experts, const char* shared, const char* shared_gate, const char* gate,
               const char* up, const char* down) {
  a = named(a, model_type, architecture);
  a.module[int(Part::Router)] = router;
  a.module[int(Part::SharedGate)] = shared_gate;
  a.experts = experts, a.shared = shared;
  a.module[int(Part::Gate)] = gate, a.module[int(Part::Up)] = up, a.module[int(Part::Down)] = down;
  return a;
}
// transformers' modeling_mixtral.py: MixtralDecoderLayer's block_sparse_moe =
// MixtralSparseMoeBlock(gate, experts[j] = MixtralBlockSparseTop2MLP(w1, w2, w3)): w1 the gate,
// w3 the up projection, w2 the down, act(w1 x) * w3 x -> w2; no biases.
const HFArch kMixtral = mixture(kLlama, "mixtral", "MixtralForCausalLM", "block_sparse_moe.gate",
                                "block_sparse_moe.experts.", "block_sparse_moe.shared_expert.",
                                "block_sparse_moe.shared_expert_gate", "w1", "w3", "w2");
// transformers' modeling_qwen3_moe.py: Qwen3MoeSparseMoeBlock as mlp (gate, experts[j] =
// Qwen3MoeMLP(gate_proj, up_proj, down_proj)).
const HFArch kQwen3Moe =
    mixture(kQwen3, "qwen3_moe", "Qwen3MoeForCausalLM", "mlp.gate", "mlp.experts.",
            "mlp.shared_expert.", "mlp.shared_expert_gate", "gate_proj", "up_proj", "down_proj");
// transformers' modeling_qwen2_moe.py: Qwen2MoeSparseMoeBlock as mlp (gate, experts[j] and
// shared_expert = Qwen2MoeMLP(gate_proj, up_proj, down_proj), shared_expert_gate a Linear(C, 1)).
const HFArch kQwen2Moe =
    mixture(kQwen2, "qwen2_moe", "Qwen2MoeForCausalLM", "mlp.gate", "mlp.experts.",
            "mlp.shared_expert.", "mlp.shared_expert_gate", "gate_proj", "up_proj", "down_proj");
// tessera's own: GPT-2's Conv1D layout for the experts' c_fc and c_proj.
const HFArch kGpt2Moe =
    mixture(kGpt2, "gpt2", "GPT2LMHeadModel", "mlp.router", "mlp.experts.", "mlp.shared_expert.",
            "mlp.shared_expert_gate", "", "c_fc", "c_proj");

bool in_block(Part p) { return p >= Part::Norm1; }

}  // namespace

const HFArch& hf_gpt2() { return kGpt2; }
const HFArch& hf_llama() { return kLlama; }
const HFArch& hf_qwen3() { return kQwen3; }
const HFArch& hf_qwen2() { return kQwen2; }
const HFArch& hf_mixtral() { return kMixtral; }
const HFArch& hf_qwen3_moe() { return kQwen3Moe; }
const HFArch& hf_qwen2_moe() { return kQwen2Moe; }
const HFArch& hf_gpt2_moe() { return kGpt2Moe; }
const HFArch& hf_arch(const GPTConfig& cfg) {
  if (cfg.n_expert > 0)
    return cfg.gpt2_names()            ? kGpt2Moe
           : cfg.qk_norm               ? kQwen3Moe
           : cfg.qkv_bias && !cfg.bias ? kQwen2Moe
                                       : kMixtral;
  if (cfg.gpt2_names()) return kGpt2;
  return cfg.qk_norm ? kQwen3 : cfg.qkv_bias && !cfg.bias ? kQwen2 : kLlama;
}

bool is_block_linear(Part p) {
  return p == Part::QKV || p == Part::Q || p == Part::K || p == Part::V || p == Part::O ||
         p == Part::Gate || p == Part::Up || p == Part::Down;
}

std::vector<std::string> muon_parameters(const GPTConfig& cfg) {
  std::vector<std::string> out;
  for (const ParamSpec& s : param_specs(cfg))
    if (is_block_linear(s.part) && !s.bias) out.push_back(s.name);
  return out;
}

std::map<std::string, std::vector<int64_t>> muon_qkv_blocks(const GPTConfig& cfg) {
  std::map<std::string, std::vector<int64_t>> out;
  const int64_t q = cfg.n_head * cfg.head_dim(), kv = cfg.kv_heads() * cfg.head_dim();
  for (const ParamSpec& s : param_specs(cfg))
    if (s.part == Part::QKV && !s.bias) out[s.name] = {q, kv, kv};
  return out;
}

std::string hf_block_prefix(const GPTConfig& cfg, int64_t layer) {
  return hf_arch(cfg).block_prefix + std::to_string(layer) + ".";
}

std::string hf_module(const GPTConfig& cfg, Part part, int64_t layer, int64_t expert) {
  const HFArch& a = hf_arch(cfg);
  const std::string m = a.module[int(part)];
  TESSERA_CHECK(!m.empty(), "the ", a.model_type, " name table has no '", kPartNames[int(part)],
                "' module");
  if (expert == -1) return in_block(part) ? hf_block_prefix(cfg, layer) + m : m;
  const bool shared = expert == kSharedExpert;
  TESSERA_CHECK((part == Part::Gate || part == Part::Up || part == Part::Down) &&
                    (expert >= 0 || shared) && *(shared ? a.shared : a.experts),
                "the ", a.model_type, " name table has no ", shared ? "shared " : "", "expert '",
                kPartNames[int(part)], "' (expert ", expert, ")");
  if (shared) return hf_block_prefix(cfg, layer) + a.shared + m;
  return hf_block_prefix(cfg, layer) + a.experts + std::to_string(expert) + "." + m;
}

std::vector<ParamSpec> param_specs(const GPTConfig& cfg) {
  const int64_t C = cfg.n_embd, hd = cfg.head_dim(), F = cfg.hidden();
  const int64_t Hq = cfg.n_head * hd, Hkv = cfg.kv_heads() * hd;
  const HFArch& a = hf_arch(cfg);
  const bool ln = cfg.norm == NormKind::LayerNorm;
  std::vector<ParamSpec> out;
  auto param = [&](Part p, int64_t layer, bool bias, Shape shape, Init init, int64_t expert = -1) {
    const bool matrix = shape.size() == 2 && is_block_linear(p);
    out.push_back({hf_module(cfg, p, layer, expert) + (bias ? ".bias" : ".weight"), p, layer,
                   expert, bias, std::move(shape), init, a.conv1d && matrix && !bias});
  };
  auto norm = [&](Part p, int64_t layer) {
    param(p, layer, false, {C}, Init::Ones);
    if (ln && cfg.bias) param(p, layer, true, {C}, Init::Zeros);
  };
  auto linear = [&](Part p, int64_t layer, int64_t n_out, int64_t n_in, Init init,
                    int64_t expert = -1) {
    param(p, layer, false, {n_out, n_in}, init, expert);
    const bool qkv = p == Part::QKV || p == Part::Q || p == Part::K || p == Part::V;
    if (cfg.bias || (qkv && cfg.qkv_bias)) param(p, layer, true, {n_out}, Init::Zeros, expert);
  };
  // The MLP, or (expert >= 0) one expert of a mixture, or (kSharedExpert) its shared one, width W.
  auto mlp = [&](int64_t layer, int64_t expert, int64_t W) {
    if (cfg.mlp == MlpKind::SwiGLU) linear(Part::Gate, layer, W, C, Init::Normal, expert);
    linear(Part::Up, layer, W, C, Init::Normal, expert);
    linear(Part::Down, layer, C, W, Init::Residual, expert);
  };
  param(Part::Embed, -1, false, {cfg.vocab_size, C}, Init::Normal);
  if (cfg.position == PositionKind::Learned)
    param(Part::Pos, -1, false, {cfg.block_size, C}, Init::Normal);
  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    norm(Part::Norm1, i);
    if (cfg.gpt2_names()) {
      linear(Part::QKV, i, Hq + 2 * Hkv, C, Init::Normal);
    } else {
      linear(Part::Q, i, Hq, C, Init::Normal);
      linear(Part::K, i, Hkv, C, Init::Normal);
      linear(Part::V, i, Hkv, C, Init::Normal);
    }
    if (cfg.qk_norm) {  // ones: no draws, so the other parameters start as without them
      param(Part::QNorm, i, false, {hd}, Init::Ones);
      param(Part::KNorm, i, false, {hd}, Init::Ones);
    }
    if (cfg.attention.kind == ops::AttentionKind::Forgetting) {
      // One logit a token and query head, always with a bias (as the paper's gate projection):
      // N(0, 0.02) and zeros, so every gate starts near sigmoid(0) = 1/2.
      param(Part::Forget, i, false, {cfg.n_head, C}, Init::Normal);
      param(Part::Forget, i, true, {cfg.n_head}, Init::Zeros);
    }
    linear(Part::O, i, C, Hq, Init::Residual);
    norm(Part::Norm2, i);
    if (cfg.n_expert == 0) {
      mlp(i, -1, F);
    } else {  // the router has no bias (Mixtral's gate, Switch's router), nor the shared gate
      param(Part::Router, i, false, {cfg.n_expert, C}, Init::Normal);
      for (int64_t j = 0; j < cfg.n_expert; ++j) mlp(i, j, F);
      if (cfg.shared_expert_hidden > 0) mlp(i, kSharedExpert, cfg.shared_expert_hidden);
      if (cfg.shared_expert_hidden > 0 && cfg.shared_expert_gate)
        param(Part::SharedGate, i, false, {1, C}, Init::Normal);
    }
  }
  norm(Part::NormF, -1);
  if (!cfg.tie_embeddings) param(Part::Head, -1, false, {cfg.vocab_size, C}, Init::Normal);
  return out;
}

}  // namespace tessera::nn
