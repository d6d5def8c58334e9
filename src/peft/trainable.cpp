// lora.trainable: full model tensors that train beside the LoRA adapters. LongLoRA (Chen et al.
// 2023, section 3.3) finds that extending a context with LoRA alone falls short of full fine-tuning,
// and that making the embedding and normalization layers trainable closes most of the gap at a
// small cost in parameters; `trainable: embed,norm` is that recipe.
//
// The tensors are the model's own (unfrozen, shared, under their model names), so an adapter
// checkpoint stores them, loading one writes them back into the model, and Lora::merge_into, which
// copies every model tensor before adding B A, carries them into the merged model.
#include <algorithm>

#include "peft/lora.h"

namespace tessera::peft {

std::vector<std::string> parse_trainable(const std::string& text) {
  std::vector<std::string> out;
  for (const std::string& item : split_list(text)) {
    if (item.empty()) continue;
    TESSERA_CHECK(item == "embed" || item == "norm", "lora.trainable: unknown kind '", item,
                  "' in '", text, "' (valid: embed, norm)");
    if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
  }
  return out;
}

std::string parameter_kind(const std::string& name) {
  // The module is the name without its last component (".weight", ".bias").
  const size_t dot = name.rfind('.');
  const std::string module = dot == std::string::npos ? name : name.substr(0, dot);
  const size_t last_dot = module.rfind('.');
  const std::string leaf = last_dot == std::string::npos ? module : module.substr(last_dot + 1);
  if (leaf == "wte" || leaf == "wpe" || leaf == "embed_tokens") return "embed";
  const bool ln = leaf.rfind("ln_", 0) == 0;  // GPT-2: ln_1, ln_2, ln_f
  const bool norm = leaf.size() >= 4 && leaf.compare(leaf.size() - 4, 4, "norm") == 0;
  return ln || norm ? "norm" : "";
}

void Lora::add_trainable() {
  if (opt_.trainable.empty()) return;
  size_t found = 0;
  for (const auto& [name, t] : model_.parameters()) {
    const std::string kind = parameter_kind(name);
    if (kind.empty() ||
        std::find(opt_.trainable.begin(), opt_.trainable.end(), kind) == opt_.trainable.end())
      continue;
    Tensor(t).requires_grad_(true);
    params_.emplace_back(name, t);
    ++found;
  }
  TESSERA_CHECK(found > 0, "lora.trainable: no model parameter is of the kinds named (",
                opt_.trainable.front(), ", ...)");
}

}  // namespace tessera::peft
