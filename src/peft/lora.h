// LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") and QLoRA (Dettmers
// et al. 2023): a frozen model plus trainable low-rank updates on chosen projections,
//   h = W x + s B A dropout(x),   A (r, in), B (out, r),   s = alpha / r (rsLoRA: alpha / sqrt(r)),
// with A Kaiming-uniform (a = sqrt 5, PyTorch's Linear init: U(-1/sqrt(in), 1/sqrt(in))) and B zero,
// so training starts from the base model exactly. With quantize nf4 / nf4-dq the frozen weights of
// every Linear in the blocks are replaced by NF4 codes (peft/nf4.h) and released from the model.
//
//   Lora lora(model, {.rank = 8, .alpha = 16, .targets = parse_targets("q,v")}, gen);
//   AdamW opt(named_params(lora.parameters()));        // the adapters are all that train
//   model.loss(x, y).backward();                       // no gradient exists for the base
//   lora.merge_into(plain_model);                      // W + s B A, dequantised where quantised
//
// On CUDA (train.device cuda) the Lora is built on the host model in f32, so the NF4 codes come
// from the f32 weights exactly as on the CPU, then train::place_model puts the frozen base on the
// device in bf16 and place() moves the codes and the adapters there. The adapters stay f32 (so do
// their AdamW m and v): they are tiny (rank x (in + out) per projection), an f32 adapter needs no
// separate master copy, and small updates to it are not lost to bf16 rounding. The adapter branch
// computes in the activations' dtype: A and B are cast to bf16 for its two matmuls (a cast the
// gradient flows back through, arriving in f32), like PyTorch autocast around f32 LoRA weights.
//
// Adapter names follow the module they adapt, PEFT-style: "<module>.lora_A.weight" (r, in) and
// "<module>.lora_B.weight" (out, r), module as nn::GPT::module_name gives it
// ("model.layers.0.self_attn.q_proj", "transformer.h.0.attn.c_attn.q", "lm_head").
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/gpt.h"
#include "nn/hf_names.h"  // nn::Part
#include "peft/nf4.h"

namespace tessera::peft {

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16;
  double dropout = 0;  // on the adapter's input only
  std::vector<nn::Proj> targets{nn::Proj::Q, nn::Proj::V};  // gate is skipped in a GELU MLP
  bool rslora = false;
  std::string quantize = "none";  // none | nf4 | nf4-dq: the frozen Linear weights of the blocks
  // Kinds of full model tensors that train beside the adapters ("embed": token and position
  // embeddings, "norm": every norm's weight and bias), as LongLoRA does to extend a context (Chen et
  // al. 2023, "LongLoRA", section 3.3: trainable embedding and normalization layers).
  std::vector<std::string> trainable{};

  double scaling() const;
};

// "embed,norm" -> {"embed", "norm"}; "" -> {}. Errors name the unknown item.
std::vector<std::string> parse_trainable(const std::string& text);
// The lora.trainable kind of a model part (nn/hf_names.h): "embed" (token and position
// embeddings), "norm" (the blocks' two norms and the final one), or "" (not selectable).
std::string parameter_kind(nn::Part part);

// "q,v" -> {Q, V}; "all" = every projection the architecture has but the head. Errors name the
// unknown item and list the valid ones.
std::vector<nn::Proj> parse_targets(const std::string& text);
std::string targets_string(const std::vector<nn::Proj>& targets);  // "q,v"

class Lora : public nn::LinearHook {
 public:
  // Freezes every parameter of model, quantises its block Linears when asked, creates the adapters
  // (A from gen) on the model's device, in its dtype (f32 for a bf16 model: the policy above), and
  // installs itself as the model's hook.
  Lora(nn::GPT& model, const LoraOptions& opt, Generator& gen);
  ~Lora() override;  // uninstalls itself
  Lora(const Lora&) = delete;
  Lora& operator=(const Lora&) = delete;

  const LoraOptions& options() const { return opt_; }
  // The trainable tensors: the adapters, (A, B) per adapted module in model order, then the model's
  // own tensors of the options' trainable kinds (shared with the model, under its names), so an
  // adapter checkpoint holds them and merge_into writes them into the merged model.
  const std::vector<nn::NamedTensor>& parameters() const { return params_; }
  // Swaps in new adapter tensors (same order and shapes as parameters()): gradient checks use it.
  void replace_parameters(const std::vector<Tensor>& tensors);
  // Moves the NF4 codes and the adapters to device (dtypes kept: f32 adapters stay f32), after
  // train::place_model moved the base. The adapters become fresh leaves with the same names: build
  // the optimizer afterwards. Nothing happens for what is there already.
  void place(Device device);
  // The NF4 form of a quantised weight (by its parameter name), or null.
  const NF4Tensor* nf4(const std::string& weight) const;
  // Bytes of the frozen base as held now (quantised weights at their packed size) and of adapters.
  int64_t base_bytes() const;
  int64_t adapter_bytes() const;
  bool quantized() const { return !nf4_.empty(); }
  int64_t base_parameters() const { return base_parameters_; }  // counted before quantisation
  int64_t adapter_parameters() const;

  // Writes W + s B A into every weight of dst, a model of the same architecture without a hook:
  // quantised weights are dequantised (never added into NF4 codes), everything else is copied from
  // the base. dst then computes what this model computes, as a plain checkpoint.
  void merge_into(nn::GPT& dst) const;

  Tensor base(const std::string& weight, const Tensor& x, const Tensor& w,
              const Tensor& b) const override;
  Tensor adapt(nn::Proj p, int64_t layer, const Tensor& x, const Tensor& y,
               bool training) const override;
  bool adapts(nn::Proj p, int64_t layer) const override;

 private:
  struct Adapter {
    size_t a, b;  // indices of A and B in params_
  };
  static std::string key(nn::Proj p, int64_t layer);
  void add_trainable();  // the model tensors of opt_.trainable, unfrozen, appended to params_

  nn::GPT& model_;
  LoraOptions opt_;
  double scaling_;
  int64_t base_parameters_;
  std::map<std::string, Adapter> adapters_;  // by key(p, layer)
  std::vector<nn::NamedTensor> params_;
  std::map<std::string, NF4Tensor> nf4_;     // weight name -> codes (quantised, released)
};

}  // namespace tessera::peft
