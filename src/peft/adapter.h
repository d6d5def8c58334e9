// Adapters on disk: what a LoRA checkpoint says about its adapters and about the base they were
// trained on. A LoRA checkpoint is an ordinary tessera checkpoint (checkpoint/checkpoint.h) whose
// /model holds only the adapters and whose /adapter group holds these string attributes:
//   format "tessera-lora", rank, alpha, scaling, dropout, targets ("q,v"), rslora, quantize,
//   base_checkpoint (the path it was read from), base_fingerprint (see below), base_parameters.
// The base is identified by content, not by path: a checkpoint copied elsewhere still matches, and
// a different one at the same path does not.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "nn/gpt.h"
#include "peft/lora.h"

namespace tessera::peft {

// 64-bit FNV-1a over every parameter's name, dtype, shape and bytes, in order, as 16 hex digits.
std::string fingerprint(const std::vector<nn::NamedTensor>& params);

std::map<std::string, std::string> adapter_attrs(const Lora& lora, const std::string& base_path,
                                                 const std::string& base_fingerprint);

// Throws unless `attrs` (from the adapter checkpoint at adapter_path) were written for a base with
// this fingerprint; the error names both checkpoints and both fingerprints.
void check_base(const std::map<std::string, std::string>& attrs, const std::string& adapter_path,
                const std::string& base_path, const std::string& base_fingerprint);

}  // namespace tessera::peft
