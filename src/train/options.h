// The config's model, lora, data and optim sections as the option structs of the layers they
// configure: what train, eval, generate, export, merge and the benchmarks build their models,
// adapters, loaders and LR schedules from.
//
//   nn::GPT model(model_config(cfg.model, cfg.train), gen);
//   peft::Lora lora(model, lora_options(cfg.lora), gen);
//   data::DataLoader val(loader_options(cfg, "data.val", cfg.data.val, false));
#pragma once

#include <string>

#include "config/config.h"
#include "data/loader.h"
#include "nn/gpt.h"
#include "optim/flat_adamw.h"
#include "optim/schedule.h"
#include "peft/lora.h"

namespace tessera::train {

// The model section of a config as the nn layer's struct (strings become enums).
nn::GPTConfig model_config(const ModelConfig& m, const TrainConfig& t);
// The same, with what the data section sets in the model: under data.windows: documents, the
// end-of-text id as its document_separator.
nn::GPTConfig model_config(const Config& cfg);
// The end-of-text id of data.tokenizer (byte 256, gpt2 50256, hf: its tokenizer.json, read), or
// -1 when it is not below model.vocab_size.
int64_t end_of_text_id(const Config& cfg);
// GPTConfig::document_separator for the config: the end-of-text id under data.windows: documents
// (an error naming both when it is not below model.vocab_size), else -1.
int64_t document_separator(const Config& cfg);
// The lora section as peft's options (targets parsed).
peft::LoraOptions lora_options(const LoraConfig& l);
// A loader of the files `pattern` matches (key names it in errors), with the run's batch size,
// sequence length, vocabulary and seed; shuffled for training.
data::LoaderOptions loader_options(const Config& cfg, const char* key, const std::string& pattern,
                                   bool shuffle);
// data.val's loader as evaluations read it: in order, one window a batch (a loader of
// train.batch_size windows would drop a last partial batch, and refuse files shorter than one).
data::LoaderOptions window_loader_options(const Config& cfg, const std::string& pattern);
// The LR schedule of the optim section, decaying until cfg.decay_steps().
ScheduleOptions schedule_options(const Config& cfg);
// The optim section (name adamw or muon) as the flat optimizer's options for a model of shape mc:
// AdamW's hyperparameters and clipping, ZeRO-1 when zero, and under muon the blocks' matrices
// (nn::muon_parameters) with Muon's settings, c_attn's q, k and v apart under muon_split_qkv.
FlatAdamWOptions flat_adamw_options(const OptimConfig& o, const nn::GPTConfig& mc, bool zero);

}  // namespace tessera::train
