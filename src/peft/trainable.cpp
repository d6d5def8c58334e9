// lora.trainable: full model tensors that train beside the LoRA adapters. LongLoRA (Chen et al.
// 2023, section 3.3) finds that extending a context with LoRA alone falls short of full fine-tuning,
// and that making the embedding and normalization layers trainable closes most of the gap at a
// small cost in parameters; `trainable: embed,norm` is that recipe.
//
// The tensors are the model's own (unfrozen, shared, under their model names), so an adapter
// checkpoint stores them, loading one writes them back into the model, and Lora::merge_into, which
// copies every model tensor before adding B A, carries them into the merged model.
#include <algorithm>
#include <map>

#include "core/text.h"
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

std::string parameter_kind(nn::Part part) {
  switch (part) {
    case nn::Part::Embed:
    case nn::Part::Pos: return "embed";
    case nn::Part::NormF:
    case nn::Part::Norm1:
    case nn::Part::Norm2:
    case nn::Part::QNorm:  // GPTConfig::qk_norm's
    case nn::Part::KNorm:
      return "norm";
    default: return "";
  }
}

void Lora::add_trainable() {
  if (opt_.trainable.empty()) return;
  // The model names its parameters from the architecture's table, so its specs give each name's
  // part (a tied head has no spec of its own and is the embedding's tensor).
  std::map<std::string, nn::Part> part_of;
  for (const nn::ParamSpec& s : nn::param_specs(model_.config())) part_of.emplace(s.name, s.part);
  size_t found = 0;
  for (const auto& [name, t] : model_.parameters()) {
    const auto it = part_of.find(name);
    TESSERA_CHECK(it != part_of.end(), "lora.trainable: model parameter '", name,
                  "' is not in the architecture's name table");
    const std::string kind = parameter_kind(it->second);
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
