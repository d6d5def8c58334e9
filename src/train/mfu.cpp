// Model FLOPs utilisation: see mfu.h.
#include "train/mfu.h"

#include <cmath>
#include <set>

#include "nn/hf_names.h"

namespace tessera::train {

int64_t flop_parameters(const nn::GPT& model) {
  // A mixture's experts count for the share of them a token meets, expert_top_k of n_expert.
  const nn::GPTConfig& c = model.config();
  std::set<std::string> experts;
  for (const nn::ParamSpec& s : nn::param_specs(c))
    if (s.expert >= 0) experts.insert(s.name);
  double n = 0;
  for (const auto& [name, t] : model.parameters())
    if (name.find("wpe") == std::string::npos && name.find("embed_positions") == std::string::npos)
      n += double(t.numel()) *
           (experts.count(name) ? double(c.expert_top_k) / double(c.n_expert) : 1.0);
  return int64_t(std::llround(n));
}

double training_flops_per_token(const nn::GPT& model, int64_t T) {
  const nn::GPTConfig& c = model.config();
  return 6.0 * double(flop_parameters(model)) +
         12.0 * double(c.n_layer * c.n_head * c.head_dim() * T);
}

double peak_bf16_flops(const std::string& name) {
  auto has = [&](const char* part) { return name.find(part) != std::string::npos; };
  // Datasheet figures are given with 2:4 sparsity ("1,979 teraFLOPS*"): half of them, dense.
  if (has("H100 PCIe")) return 756e12;                              // 1,513 with sparsity
  if (has("H100 NVL") || has("H200 NVL")) return 835.5e12;          // 1,671
  if (has("H100") || has("H200") || has("GH200")) return 989.5e12;  // SXM: 1,979
  if (has("A100")) return 312e12;                                   // 624
  if (has("L40S")) return 362e12;                                   // 733
  return 0;
}

}  // namespace tessera::train
