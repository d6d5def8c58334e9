// The config sections as layer options: see options.h.
#include "train/options.h"

#include "data/tokenizer.h"
#include "nn/hf_names.h"

namespace tessera::train {

nn::GPTConfig model_config(const ModelConfig& m, const TrainConfig& t) {
  nn::GPTConfig g;
  // ModelConfig::hidden() and GPTConfig::hidden() resolve mlp_hidden == 0 the same way; pass the
  // raw value so there is one rule in force (the model's).
  g.n_layer = m.n_layer, g.n_head = m.n_head, g.n_kv_head = m.n_kv_head, g.n_embd = m.n_embd;
  g.explicit_head_dim = m.explicit_head_dim, g.qk_norm = m.qk_norm;
  g.block_size = m.block_size, g.vocab_size = m.vocab_size;
  g.norm = m.norm == "rmsnorm" ? nn::NormKind::RMSNorm : nn::NormKind::LayerNorm;
  g.mlp = m.mlp == "swiglu" ? nn::MlpKind::SwiGLU : nn::MlpKind::GELU;
  g.position = m.position == "rope"    ? nn::PositionKind::RoPE
               : m.position == "alibi" ? nn::PositionKind::ALiBi
               : m.position == "none"  ? nn::PositionKind::None
                                       : nn::PositionKind::Learned;
  g.rope_theta = m.rope_theta, g.tie_embeddings = m.tie_embeddings, g.bias = m.bias;
  g.qkv_bias = m.qkv_bias;
  const RopeScalingConfig& rs = m.rope_scaling;
  g.rope_scaling = {.type = nn::parse_rope_scaling_type(rs.type, "model.rope_scaling.type"),
                    .factor = rs.factor,
                    .original_max_position = rs.original_max_position,
                    .beta_fast = rs.beta_fast,
                    .beta_slow = rs.beta_slow,
                    .attention_factor = rs.attention_factor,
                    .low_freq_factor = rs.low_freq_factor,
                    .high_freq_factor = rs.high_freq_factor};
  g.dropout = m.dropout, g.norm_eps = m.norm_eps, g.mlp_hidden = m.mlp_hidden;
  g.n_expert = m.n_expert, g.expert_top_k = m.expert_top_k;
  g.router_renormalize = m.router_renormalize, g.router_aux_loss = m.router_aux_loss;
  g.router_z_loss = m.router_z_loss;
  g.shared_expert_hidden = m.shared_expert_hidden, g.shared_expert_gate = m.shared_expert_gate;
  g.recompute = t.recompute;
  g.attention = attention_spec(m, t);
  return g;
}

nn::GPTConfig model_config(const Config& cfg) {
  nn::GPTConfig g = model_config(cfg.model, cfg.train);
  g.document_separator = document_separator(cfg);
  return g;
}

int64_t end_of_text_id(const Config& cfg) {
  const int64_t id = cfg.data.tokenizer == "hf"
                         ? data::make_tokenizer("hf", cfg.data.tokenizer_dir)->eot_id()
                     : cfg.data.tokenizer == "gpt2" ? 50256
                                                    : 256;
  return id < cfg.model.vocab_size ? id : -1;
}

int64_t document_separator(const Config& cfg) {
  if (cfg.data.windows != "documents") return -1;
  const int64_t id = end_of_text_id(cfg);
  TESSERA_CHECK(id >= 0, "data.windows is documents, which start at data.tokenizer ",
                cfg.data.tokenizer, "'s end-of-text id, but model.vocab_size ",
                cfg.model.vocab_size, " does not hold it");
  return id;
}

peft::LoraOptions lora_options(const LoraConfig& l) {
  return {.rank = l.rank,
          .alpha = l.alpha,
          .dropout = l.dropout,
          .targets = peft::parse_targets(l.targets),
          .rslora = l.rslora,
          .quantize = l.quantize,
          .trainable = peft::parse_trainable(l.trainable)};
}

data::LoaderOptions loader_options(const Config& cfg, const char* key, const std::string& pattern,
                                   bool shuffle) {
  data::LoaderOptions o;
  o.files = data::expand_glob(pattern, key);
  o.batch_size = cfg.train.batch_size;
  o.seq_len = cfg.sequence_length();
  o.vocab_size = cfg.model.vocab_size;
  o.tokenizer = cfg.data.tokenizer;
  o.seed = uint64_t(cfg.train.seed);
  o.shuffle = shuffle;
  o.windows = data::parse_window_mode(cfg.data.windows, "data.windows");
  return o;
}

data::LoaderOptions window_loader_options(const Config& cfg, const std::string& pattern) {
  data::LoaderOptions o = loader_options(cfg, "data.val", pattern, false);
  o.batch_size = 1;
  return o;
}

ScheduleOptions schedule_options(const Config& cfg) {
  return {.name = cfg.optim.schedule,
          .lr = cfg.optim.lr,
          .min_lr = cfg.optim.min_lr,
          .warmup_steps = cfg.optim.warmup_steps,
          .max_steps = cfg.decay_steps(),
          .cooldown_steps = cfg.optim.cooldown_steps,
          .cooldown_shape = cfg.optim.cooldown_shape};
}

FlatAdamWOptions flat_adamw_options(const OptimConfig& o, const nn::GPTConfig& mc, bool zero) {
  FlatAdamWOptions options{.adam = {.lr = o.lr,
                                    .beta1 = o.beta1,
                                    .beta2 = o.beta2,
                                    .eps = o.eps,
                                    .weight_decay = o.weight_decay},
                           .max_norm = o.grad_clip,
                           .zero = zero};
  if (o.name != "muon") return options;
  options.muon = nn::muon_parameters(mc);
  options.muon_options.momentum = o.muon_momentum;
  options.muon_options.nesterov = o.muon_nesterov;
  options.muon_options.ns_steps = o.muon_ns_steps;
  if (o.muon_split_qkv) options.muon_blocks = nn::muon_qkv_blocks(mc);
  return options;
}

}  // namespace tessera::train
