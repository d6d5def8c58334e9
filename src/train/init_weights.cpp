// checkpoint.init: see init_weights.h.
#include "train/init_weights.h"

#include "checkpoint/checkpoint.h"
#include "train/load.h"

namespace tessera::train {

std::string load_init_weights(const Config& cfg,
                              const std::vector<std::pair<std::string, Tensor>>& params) {
  std::string path = cfg.checkpoint.init;
  if (is_hf_source(path)) {  // a Hugging Face directory (build/export's output, or transformers')
    load_hf_into(path, cfg.model, params);
    return path;
  }
  path = resolve_checkpoint(path);
  CheckpointReader reader(path);  // verified once for both reads
  TESSERA_CHECK(reader.attributes().adapter.empty(), "checkpoint.init: ", path,
                " holds LoRA adapters, not a model; merge them into their base first "
                "(build/merge --adapter ",
                path, ")");
  // Tensors of the same shapes may belong to another model (n_head, norm_eps, attention, ...).
  const Config stored =
      parse_stored_config(reader.attributes().config_yaml, path + " (stored config)");
  const std::string diff = init_model_difference(stored.model, cfg.model);
  TESSERA_CHECK(diff.empty(), "checkpoint.init: ", path, " holds another model than the config's (",
                diff,
                ", the checkpoint's first); a fine-tune may change model.block_size, "
                "rope_theta, rope_scaling and dropout, no other model key");
  reader.load_model_into(params);  // /model alone: no optimizer state needed
  return path;
}

}  // namespace tessera::train
