// checkpoint.init: the weights a run starts from instead of the seed's, read before the ranks
// compare what they start from (rank_agreement.h), so that a rank whose node holds another file at
// the same path, or none, stops every rank instead of training other weights.
//
//   const std::string path = load_init_weights(cfg, model.parameters());  // "init: weights from"
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "core/tensor.h"

namespace tessera::train {

// Copies cfg.checkpoint.init's weights into params in place: a tessera checkpoint (a file, a run
// directory's `latest`) holding the config's model, or a Hugging Face directory ("hf:DIR").
// Returns the file or directory read. Throws naming it when it holds LoRA adapters or another model
// than the config's (a fine-tune may change block_size, rope_theta, rope_scaling and dropout).
std::string load_init_weights(const Config& cfg,
                              const std::vector<std::pair<std::string, Tensor>>& params);

}  // namespace tessera::train
