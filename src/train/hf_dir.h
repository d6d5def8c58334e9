// Hugging Face model directories: config.json + model.safetensors (+ generation_config.json and,
// for the GPT-2 tokenizer, vocab.json + merges.txt), as transformers' save_pretrained writes them
// and from_pretrained reads them.
//
//   std::string why = hf_unsupported(cfg);                 // "" when HF can express the model
//   export_hf(cfg, model.parameters(), "out/hf");          // writes out/hf, all or nothing
//   HFModel m = import_hf("out/hf");                       // config + tensors, tessera layout
//
// The parameter names and layouts come from nn/hf_names.h. GPT-2-style models (LayerNorm + GELU)
// become GPT2LMHeadModel, with the block matrices transposed to Conv1D's [in, out]; Llama-style
// models (RMSNorm + SwiGLU + RoPE) become LlamaForCausalLM, or with model.qk_norm (and no biases)
// Qwen3ForCausalLM, or with model.qkv_bias Qwen2ForCausalLM; with model.n_expert,
// MixtralForCausalLM and (model.qk_norm) Qwen3MoeForCausalLM (train/hf_moe.h). Import reads all
// six, and MistralForCausalLM (Llama's
// tensors, its sliding_window as model.sliding_window). A tied head is not written: HF ties
// lm_head to the token embedding (tie_word_embeddings). Anything HF cannot compute exactly is
// refused by name with the reason, before anything is written (hf_unsupported); things that change
// training only (dropout, S^2-Attn) export with a note in config.json's "tessera_notes".
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "core/tensor.h"

namespace tessera::train {

// Why the model of cfg has no exact HF counterpart, one sentence per reason; "" when it has one.
std::string hf_unsupported(const Config& cfg);

// The notes an export of cfg records in config.json ("tessera_notes"): what HF will not reproduce
// of training, and which tokenizer files are absent.
std::vector<std::string> hf_export_notes(const Config& cfg);

// Writes the directory dir (which must not exist, or be empty): config.json,
// generation_config.json, model.safetensors (tensors in their stored dtype) and, when
// data.tokenizer is gpt2, vocab.json and merges.txt copied from data.tokenizer_dir (hf: its
// tokenizer.json, and tokenizer_config.json where there is one). Everything is
// written into a temporary sibling directory first and renamed into place at the end, so a
// failure leaves no half-written dir; folders above dir that are missing are made first, and
// taken back on a failure. params: the model's (name, tensor) pairs. then, where given, runs once
// dir is in place (export's --reference-logits puts its file beside dir there): if it throws, dir
// goes too (an empty one that was there before is left as it was), the folders made are taken
// back, and its error passes on.
void export_hf(const Config& cfg, const std::vector<std::pair<std::string, Tensor>>& params,
               const std::string& dir, const std::function<void()>& then = {});

struct HFModel {
  Config config;  // the model section from config.json; data.tokenizer from it too; the rest default
  std::vector<std::pair<std::string, Tensor>> params;  // tessera names and layout, model order
  std::vector<std::string> notes;                      // what was ignored or assumed
  bool gpt2_tokenizer_files = false;                   // vocab.json + merges.txt present
  bool hf_tokenizer_json = false;  // tokenizer.json present (and no GPT-2 files): data.tokenizer hf
  std::string architecture;        // the class config.json names: "MistralForCausalLM" ...
};

// Reads an HF directory. config.json values tessera cannot reproduce (another activation, a RoPE
// scaling type it lacks, an unknown key), missing or surplus tensors and shape mismatches are
// errors naming the key or tensor and the file.
HFModel import_hf(const std::string& dir);

}  // namespace tessera::train
