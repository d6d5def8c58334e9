// The config schema as code: for_each_field(cfg, f) calls f(section, key, field) for every key in
// struct order. Reading YAML, applying overrides, writing YAML and listing keys all walk this one
// list, so a new key is added in exactly two places: its struct and its line below.
//
//   for_each_field(cfg, [](const char* section, const char* key, auto& value) { ... });
//   // value is int64_t&, double&, bool& or std::string& (const when cfg is const)
#pragma once

#include <concepts>
#include <initializer_list>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "config/config.h"

namespace tessera::config_schema {

template <typename S, typename T>
concept Section = std::same_as<std::remove_const_t<S>, T>;

template <Section<ModelConfig> S, typename F>
void visit_section(S& s, F&& f) {
  f("n_layer", s.n_layer);
  f("n_head", s.n_head);
  f("n_kv_head", s.n_kv_head);
  f("n_embd", s.n_embd);
  f("block_size", s.block_size);
  f("vocab_size", s.vocab_size);
  f("head_dim", s.explicit_head_dim);
  f("norm", s.norm);
  f("mlp", s.mlp);
  f("mlp_hidden", s.mlp_hidden);
  f("n_expert", s.n_expert);
  f("expert_top_k", s.expert_top_k);
  f("router_renormalize", s.router_renormalize);
  f("router_aux_loss", s.router_aux_loss);
  f("router_z_loss", s.router_z_loss);
  f("shared_expert_hidden", s.shared_expert_hidden);
  f("shared_expert_gate", s.shared_expert_gate);
  f("position", s.position);
  f("rope_theta", s.rope_theta);
  // A nested section: its keys are "rope_scaling.<key>" (config.cpp reads the nested mapping).
  f("rope_scaling.type", s.rope_scaling.type);
  f("rope_scaling.factor", s.rope_scaling.factor);
  f("rope_scaling.original_max_position", s.rope_scaling.original_max_position);
  f("rope_scaling.beta_fast", s.rope_scaling.beta_fast);
  f("rope_scaling.beta_slow", s.rope_scaling.beta_slow);
  f("rope_scaling.attention_factor", s.rope_scaling.attention_factor);
  f("rope_scaling.low_freq_factor", s.rope_scaling.low_freq_factor);
  f("rope_scaling.high_freq_factor", s.rope_scaling.high_freq_factor);
  f("attention", s.attention);
  f("attend_current", s.attend_current);
  f("sb_remainder", s.sb_remainder);
  f("sliding_window", s.sliding_window);
  f("qk_norm", s.qk_norm);
  f("tie_embeddings", s.tie_embeddings);
  f("bias", s.bias);
  f("qkv_bias", s.qkv_bias);
  f("dropout", s.dropout);
  f("norm_eps", s.norm_eps);
}

template <Section<DataConfig> S, typename F>
void visit_section(S& s, F&& f) {
  f("tokenizer", s.tokenizer);
  f("tokenizer_dir", s.tokenizer_dir);
  f("train", s.train);
  f("val", s.val);
  f("windows", s.windows);
  f("chat_template", s.chat_template);
}

template <Section<TrainConfig> S, typename F>
void visit_section(S& s, F&& f) {
  f("batch_size", s.batch_size);
  f("seq_len", s.seq_len);
  f("total_batch_size", s.total_batch_size);
  f("max_steps", s.max_steps);
  f("seed", s.seed);
  f("device", s.device);
  f("run_name", s.run_name);
  f("recompute", s.recompute);
  f("stop_after", s.stop_after);
  f("s2_attn", s.s2_attn);
  f("ema_decay", s.ema_decay);
  f("objective", s.objective);
  f("dpo_beta", s.dpo_beta);
  f("dpo_label_smoothing", s.dpo_label_smoothing);
  f("dpo_nll_weight", s.dpo_nll_weight);
  f("dpo_loss", s.dpo_loss);
  f("simpo_gamma", s.simpo_gamma);
}

template <Section<OptimConfig> S, typename F>
void visit_section(S& s, F&& f) {
  f("name", s.name);
  f("lr", s.lr);
  f("min_lr", s.min_lr);
  f("weight_decay", s.weight_decay);
  f("beta1", s.beta1);
  f("beta2", s.beta2);
  f("eps", s.eps);
  f("grad_clip", s.grad_clip);
  f("warmup_steps", s.warmup_steps);
  f("schedule", s.schedule);
  f("decay_steps", s.decay_steps);
  f("cooldown_steps", s.cooldown_steps);
  f("cooldown_shape", s.cooldown_shape);
  f("clip_value", s.clip_value);
  f("loss_scale", s.loss_scale);
  f("muon_momentum", s.muon_momentum);
  f("muon_nesterov", s.muon_nesterov);
  f("muon_ns_steps", s.muon_ns_steps);
  f("muon_split_qkv", s.muon_split_qkv);
}

template <Section<EvalConfig> S, typename F>
void visit_section(S& s, F&& f) {
  f("interval", s.interval);
  f("steps", s.steps);
  f("tokens", s.tokens);
  f("choices", s.choices);
  f("answers", s.answers);
  f("answers_bos", s.answers_bos);
}

template <Section<CheckpointConfig> S, typename F>
void visit_section(S& s, F&& f) {
  f("dir", s.dir);
  f("interval", s.interval);
  f("keep", s.keep);
  f("milestone_interval", s.milestone_interval);
  f("async", s.async);
  f("resume", s.resume);
  f("init", s.init);
}

template <Section<SpikeConfig> S, typename F>
void visit_section(S& s, F&& f) {
  f("enabled", s.enabled);
  f("window", s.window);
  f("threshold", s.threshold);
  f("rollback_steps", s.rollback_steps);
  f("skip_batches", s.skip_batches);
  f("max_rollbacks", s.max_rollbacks);
  f("lr_factor", s.lr_factor);
  f("lr_factor_steps", s.lr_factor_steps);
  f("inject_steps", s.inject_steps);
  f("inject_kind", s.inject_kind);
  f("inject_scale", s.inject_scale);
  f("inject_rank", s.inject_rank);
}

template <Section<LoraConfig> S, typename F>
void visit_section(S& s, F&& f) {
  f("rank", s.rank);
  f("alpha", s.alpha);
  f("dropout", s.dropout);
  f("targets", s.targets);
  f("rslora", s.rslora);
  f("quantize", s.quantize);
  f("trainable", s.trainable);
}

template <Section<LogConfig> S, typename F>
void visit_section(S& s, F&& f) {
  f("interval", s.interval);
  f("metrics", s.metrics);
  f("sample_interval", s.sample_interval);
  f("sample_tokens", s.sample_tokens);
  f("sample_prompt", s.sample_prompt);
  f("sample_bos", s.sample_bos);
}

template <Section<DistConfig> S, typename F>
void visit_section(S& s, F&& f) {
  f("backend", s.backend);
  f("init", s.init);
  f("timeout", s.timeout);
  f("bucket_mb", s.bucket_mb);
  f("zero", s.zero);
}

// f(section name, section struct&) for each section, in Config's order.
template <Section<Config> C, typename F>
void for_each_section(C& cfg, F&& f) {
  f("model", cfg.model);
  f("data", cfg.data);
  f("train", cfg.train);
  f("optim", cfg.optim);
  f("eval", cfg.eval);
  f("checkpoint", cfg.checkpoint);
  f("spike", cfg.spike);
  f("lora", cfg.lora);
  f("log", cfg.log);
  f("dist", cfg.dist);
}

template <Section<Config> C, typename F>
void for_each_field(C& cfg, F&& f) {
  for_each_section(cfg, [&](const char* section, auto& s) {
    visit_section(s, [&](const char* key, auto& value) { f(section, key, value); });
  });
}

// The first key, in struct order, whose value differs between two sections of one type, as
// "KEY: A vs B" (a's value first); "" when every key not in `skip` is equal.
template <typename S>
std::string first_difference(const S& a, const S& b,
                             std::initializer_list<std::string_view> skip = {}) {
  auto values = [](const S& s) {
    std::vector<std::pair<std::string, std::string>> out;
    visit_section(s, [&](const char* key, const auto& v) {
      std::ostringstream os;
      os << std::boolalpha << v;
      out.emplace_back(key, os.str());
    });
    return out;
  };
  const auto va = values(a), vb = values(b);
  for (size_t i = 0; i < va.size(); ++i) {
    bool skipped = false;
    for (std::string_view k : skip) skipped = skipped || va[i].first == k;
    if (!skipped && va[i].second != vb[i].second)
      return va[i].first + ": " + va[i].second + " vs " + vb[i].second;
  }
  return "";
}

}  // namespace tessera::config_schema
