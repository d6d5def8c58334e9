// The config's model and lora sections as the option structs of the layers they configure: what
// train, eval, generate, export, merge and the benchmarks build their models and adapters from.
//
//   nn::GPT model(model_config(cfg.model, cfg.train), gen);
//   peft::Lora lora(model, lora_options(cfg.lora), gen);
#pragma once

#include "config/config.h"
#include "nn/gpt.h"
#include "peft/lora.h"

namespace tessera::train {

// The model section of a config as the nn layer's struct (strings become enums).
nn::GPTConfig model_config(const ModelConfig& m, const TrainConfig& t);
// The lora section as peft's options (targets parsed).
peft::LoraOptions lora_options(const LoraConfig& l);

}  // namespace tessera::train
