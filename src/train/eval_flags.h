// eval's flags beyond the checkpoint (src/apps/eval.cpp): the context lengths to evaluate and the
// RoPE scaling applied for the evaluation only.
//
//   std::vector<int64_t> T = parse_contexts("128,256,512");                       // --contexts
//   RopeFlags f{.type = "yarn", .factor = "auto"};                 // --rope-scaling, --rope-factor
//   bool scaled = apply_rope_flags(cfg, f, "checkpoints/x/step_00000100.h5");
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"

namespace tessera::train {

// --contexts: comma-separated lengths >= 1 ("128, 256"); errors name the flag and the item.
std::vector<int64_t> parse_contexts(const std::string& text);

struct RopeFlags {
  std::string type{};               // --rope-scaling; "" = not given
  std::string factor{};             // --rope-factor: a number or "auto"; "" = not given
  std::vector<std::string> sets{};  // --set model.rope_scaling.KEY=VALUE, in order
};

// Applies the flags to cfg.model.rope_scaling, cfg being the config stored in the checkpoint at
// path, and validates the result; original_max_position 0 becomes the stored block_size. Type none
// resets the whole section: plain RoPE, also for a checkpoint trained with scaling. Returns whether
// any flag was given. Errors: --set outside model.rope_scaling.*, scaling a model without rotary
// positions, and the combinations that would evaluate unscaled: a factor or other scaling key
// (--rope-factor, --set) where the type is none after the flags, and a type linear, yarn or llama3
// at factor 1 with no factor given (no flag, nor a stored one). A factor "auto" is left to the
// caller.
bool apply_rope_flags(Config& cfg, const RopeFlags& flags, const std::string& path);

}  // namespace tessera::train
