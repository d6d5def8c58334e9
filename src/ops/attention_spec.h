// What a causal attention computes, independent of where it runs: the one description that config
// parsing, validation, YAML writing, the model and ops::causal_attention (ops/causal_attention.h)
// share.
//
//   AttentionSpec s;
//   s.kind = parse_attention_kind("stick_breaking");      // the names of kAttentionKinds
//   s.attend_current = true;
//   std::string why = attention_support(s, Device::cuda(0), DType::BF16, 32);  // "" when it runs
//
// A new attention variant adds its kind here, its limits to attention_support
// (ops/attention_spec.cpp) and its kernel choice to ops/causal_attention.cpp; nothing else names
// the kinds. The model holds this spec whole (nn::GPTConfig::attention). A new option adds its
// field here and, to be set from a config, its key (config/config.h, config/schema.h) and one line
// in attention_spec(ModelConfig, TrainConfig) (config/validate.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "backend/attention_mask.h"
#include "core/dtype.h"

namespace tessera::ops {

enum class AttentionKind { Softmax, StickBreaking, Forgetting };

// Every kind with its config name (model.attention), in the order messages list them.
struct AttentionKindName {
  AttentionKind kind;
  const char* name;
};
inline constexpr AttentionKindName kAttentionKinds[] = {
    {AttentionKind::Softmax, "softmax"},
    {AttentionKind::StickBreaking, "stick_breaking"},  // Tan et al. 2024, arXiv:2410.17980
    // Softmax attention with a forget gate (Lin et al. 2025, arXiv:2503.02130): the model computes
    // the gate from each block's input (ops/forget_gate.h) and hands its sums to causal_attention.
    {AttentionKind::Forgetting, "forgetting"},
};

const char* attention_kind_name(AttentionKind kind);
std::optional<AttentionKind> find_attention_kind(const std::string& name);  // nullopt if unknown
// The kind called name; an unknown name throws, naming `key` and the allowed names.
AttentionKind parse_attention_kind(const std::string& name, const char* key = "model.attention");
std::string attention_kind_names();  // "softmax, stick_breaking, forgetting": for error messages

struct AttentionSpec {
  AttentionKind kind = AttentionKind::Softmax;
  bool attend_current = false;  // stick-breaking: query j attends keys i <= j instead of i < j
  bool sb_remainder = false;    // stick-breaking: out_j += rem_j v_j (the paper's correction)
  int64_t window = 0;           // softmax: > 0 attends only the last `window` keys (itself included)
  bool s2_attn = false;  // training forwards use S^2-Attn (LongLoRA), groups of T / 4; inference
                         // attends fully
  double scale = 0.0;    // <= 0: 1 / sqrt(head_dim)
  // softmax: ALiBi's linear bias on the scores, -m_h (i - j) (Press et al. 2022; the slopes m_h:
  // backend/attention_mask.h). A model sets it for model.position alibi, which has no other
  // position information.
  bool alibi = false;

  AttentionMask mask() const { return {window, alibi}; }  // what the flash kernels take
};

// Why this attention cannot run with these tensors, or "" when it can: the kernels' own limits
// (backend/attention_shapes.h; the CUDA tensor-core kernels take bf16 head dims 64 and 128 only;
// stick-breaking has no sliding window). q_len and k_len are the query and key lengths where known
// (0: not known, and the limits that depend on them are not checked); q_len < k_len is KV-cached
// decoding. Config validation asks it with the training length before a model is built;
// causal_attention asks it again with the tensors' own.
std::string attention_support(const AttentionSpec& spec, Device device, DType dtype,
                              int64_t head_dim, int64_t q_len = 0, int64_t k_len = 0);

}  // namespace tessera::ops
