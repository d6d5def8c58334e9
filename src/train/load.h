// A model for inference from a checkpoint: a full one, or a LoRA one together with its base.
//
//   LoadedModel m = load_model("checkpoints/finetune-lora");   // adapters + the base they name
//   m.model->forward(ids, false);                              // base + adapters (hook installed)
//   LoadedModel b = load_model("checkpoints/finetune-lora", "/elsewhere/base.h5");  // moved base
//
// A LoRA checkpoint records the base it was trained on (peft/adapter.h); the base given, or else the
// one recorded, must have the recorded fingerprint, or loading fails naming both. The model is built
// from the config stored in the checkpoint, quantised the same way as in training (lora.quantize).
#pragma once

#include <cxxopts.hpp>
#include <memory>
#include <string>

#include "config/config.h"
#include "nn/gpt.h"
#include "peft/lora.h"

namespace tessera::train {

struct LoadedModel {
  Config config;                     // as stored in the checkpoint
  std::string path;                  // the checkpoint file read
  std::string base_path;             // LoRA: the base checkpoint file read; "" otherwise
  int64_t step = 0;                  // /trainer step of the checkpoint
  std::unique_ptr<nn::GPT> model;
  std::unique_ptr<peft::Lora> lora;  // LoRA: the adapters, installed as model's hook
};

LoadedModel load_model(const std::string& checkpoint, const std::string& base = "");

// checkpoint.init "hf:DIR" (and a LoRA checkpoint's recorded base of that form): a Hugging Face
// directory (train/hf_dir.h) instead of a tessera checkpoint.
bool is_hf_source(const std::string& path);  // starts with "hf:"
// Copies the weights of the HF directory named by source ("hf:DIR") into params in place, as
// load_model_into does for a checkpoint. Its config.json must describe the model of `model`, else
// an error names the first differing key; dropout and the context length with its position
// encoding may differ (init_model_difference, config/config.h).
void load_hf_into(const std::string& source, const ModelConfig& model,
                  const std::vector<std::pair<std::string, Tensor>>& params);

// The flags of the binaries that load a model (eval, generate, merge): --<flag> (required) names
// the checkpoint, --base the base of a LoRA one; load_model(args, flag) reads them.
void add_model_options(cxxopts::Options& options, const std::string& flag = "checkpoint");
LoadedModel load_model(const cxxopts::ParseResult& args, const std::string& flag = "checkpoint");

// --device cpu|cuda for the binaries that run a loaded model (eval, generate). place_loaded puts
// the model (and a LoRA's adapters and NF4 base) where --device says: cuda is cuda:0 in bf16, as
// train.device cuda trains; cpu leaves it as loaded (f32). The checks and errors are training's
// (train/device.h placement: a build without CUDA, no device visible).
void add_device_option(cxxopts::Options& options);
void place_loaded(LoadedModel& m, const cxxopts::ParseResult& args);

}  // namespace tessera::train
