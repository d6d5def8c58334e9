// The rules a config must satisfy before anything is built from it, and the values derived from
// its keys. Every broken rule is collected (not just the first) so one run shows everything to
// fix, and each sentence names its keys by their full path and shows the values found.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "config/config.h"
#include "config/schema.h"
#include "config/validate_rules.h"
#include "core/error.h"
#include "core/text.h"
#include "nn/rope_scaling.h"
#include "ops/attention_spec.h"
#include "ops/packed_attention.h"

namespace tessera {

namespace {

using config_rules::Problems;

// Element counts derived from products of keys stay below 2^60, so that their byte counts (8-byte
// elements) and the sums and multiples of them the loop computes fit in an int64_t. The factors are
// multiplied in double first: the keys may be absurd (2^57 sequences of 64 tokens).
constexpr double kMaxElements = double(int64_t(1) << 60);
// model.head_dim's bound: far past any model's (256 is the widest published), and products of it
// with head counts stay in range.
constexpr int64_t kMaxHeadDim = int64_t(1) << 16;

// Where the head dimension comes from, for messages: "model.head_dim = 96", or
// "model.n_embd / model.n_head = 128 / 4".
std::string head_dim_text(const ModelConfig& m) {
  if (m.explicit_head_dim > 0) return "model.head_dim = " + std::to_string(m.explicit_head_dim);
  return "model.n_embd / model.n_head = " + std::to_string(m.n_embd) + " / " +
         std::to_string(m.n_head);
}

using config_rules::head_dim_valid;

// Tokens per micro-batch (train.batch_size x sequence length), when both are positive and the
// tokens and their logits fit kMaxElements; nullopt otherwise (reported by check_train).
std::optional<int64_t> micro_tokens(const Config& c) {
  const int64_t B = c.train.batch_size, T = c.sequence_length();
  if (B <= 0 || T <= 0) return std::nullopt;
  const double tokens = double(B) * double(T);
  if (tokens > kMaxElements ||
      tokens * double(std::max<int64_t>(c.model.vocab_size, 1)) > kMaxElements)
    return std::nullopt;
  return B * T;
}

// Smallest vocabulary each tokenizer needs: its largest token id + 1 (hf: its tokenizer.json's,
// known when the file is read: the loader checks token ids against model.vocab_size then).
int64_t tokenizer_vocab(const std::string& tokenizer) {
  if (tokenizer == "gpt2") return 50257;  // 50000 merges + 256 bytes + <|endoftext|>
  if (tokenizer == "hf") return 0;
  return 256;                             // byte: one token per byte value
}

// model.rope_scaling (nn/rope_scaling.h has the formulas these settings feed).
void check_rope_scaling(const ModelConfig& m, Problems& p) {
  const RopeScalingConfig& r = m.rope_scaling;
  p.one_of("model.rope_scaling.type", r.type, {"none", "linear", "dynamic", "yarn", "llama3"});
  if (r.type == "none") {
    // A factor or length given without a type would silently change nothing.
    ModelConfig unset = m;
    unset.rope_scaling = RopeScalingConfig{};
    if (!(m.rope_scaling == unset.rope_scaling))
      p.add("model.", config_schema::first_difference(m, unset), " (the default): that key is set "
            "but model.rope_scaling.type is none (no scaling); give a type (linear, dynamic, yarn, "
            "llama3) or drop the key");
    return;
  }
  if (m.position != "rope")
    p.add("model.rope_scaling.type '", r.type, "' scales rotary embeddings, but model.position is '",
          m.position, "' (not rope)");
  if (!(r.factor >= 1))
    p.add("model.rope_scaling.factor must be >= 1 (the new length over the trained one), got ",
          r.factor);
  p.non_negative("model.rope_scaling.original_max_position", r.original_max_position);
  if (r.type == "yarn") {
    if (!(r.beta_slow > 0 && r.beta_fast > r.beta_slow))
      p.add("model.rope_scaling.beta_fast (", r.beta_fast, ") must exceed model.rope_scaling."
            "beta_slow (", r.beta_slow, ") > 0");
    p.non_negative("model.rope_scaling.attention_factor", r.attention_factor);
    if (r.attention_factor > nn::kMaxAttentionFactor)
      p.add("model.rope_scaling.attention_factor must be at most ",
            nn::kMaxAttentionFactor,
            " (it scales every attention logit by its square; 0 = 0.1 ln factor + 1), got ",
            r.attention_factor);
  }
  if (r.type == "llama3" && !(r.low_freq_factor > 0 && r.high_freq_factor > r.low_freq_factor))
    p.add("model.rope_scaling.high_freq_factor (", r.high_freq_factor, ") must exceed "
          "model.rope_scaling.low_freq_factor (", r.low_freq_factor, ") > 0");
  if (r.type == "dynamic" && m.n_head > 0 && m.head_dim() <= 2)
    p.add("model.rope_scaling.type dynamic needs a head dimension > 2, got ", m.head_dim());
}

// The MLP's hidden width (ModelConfig::hidden), in double: the keys may be absurd. mlp_hidden, else
// 4 C for GELU; for SwiGLU Llama's rule, two thirds of 4 C (it has three matrices, not two) rounded
// up to a multiple of 64. (8 C / 3 itself is rounded up, not its integer part as in
// nn::GPTConfig::hidden: the same, as 8 C / 3 never lies strictly between a multiple of 64 and the
// next integer; 8 C = 192 k + 1 or 192 k + 2 would be no multiple of 8.)
double mlp_width(const ModelConfig& m) {
  const double C = double(m.n_embd);
  if (m.mlp_hidden > 0) return double(m.mlp_hidden);
  return m.mlp == "swiglu" ? std::ceil(8 * C / 3 / 64) * 64 : 4 * C;
}

// Every model is built on the host in f32 first (train/trainer.cpp, train/load.cpp), so one whose
// weights alone exceed the host's memory cannot be built: say so and name the sizes, rather than
// allocate layer after layer until the host runs out. Doubles: the sizes may be absurd.
void check_fits_host(const ModelConfig& m, Problems& p) {
  const double params = m.parameter_count();
  const double host = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (host > 0 && 4 * params > host) {
    char need[96];
    std::snprintf(need, sizeof need, "%.3g parameters need %.3g GiB", params,
                  4 * params / double(1 << 30));
    p.add("model: ", need, " for their f32 weights alone, more than this host's ",
          std::lround(host / double(1 << 30)), " GiB of memory (model.n_layer ", m.n_layer,
          ", model.n_embd ", m.n_embd, ", model.vocab_size ", m.vocab_size, ", MLP width ",
          int64_t(mlp_width(m)), ")");
  }
}

void check_model(const ModelConfig& m, Problems& p) {
  p.positive("model.n_layer", m.n_layer);
  p.positive("model.n_head", m.n_head);
  p.non_negative("model.n_kv_head", m.n_kv_head);
  p.positive("model.n_embd", m.n_embd);
  p.positive("model.block_size", m.block_size);
  p.positive("model.vocab_size", m.vocab_size);
  p.one_of("model.norm", m.norm, {"layernorm", "rmsnorm"});
  p.one_of("model.mlp", m.mlp, {"gelu", "swiglu"});
  p.non_negative("model.mlp_hidden", m.mlp_hidden);
  p.non_negative("model.n_expert", m.n_expert);
  if (m.n_expert == 1)
    p.add("model.n_expert 1 is a dense MLP behind a router of one choice: give 0 (dense) or >= 2");
  if (m.qkv_bias && m.bias)
    p.add(
        "model.qkv_bias puts biases on q, k and v alone, in a model without them (model.bias "
        "false); model.bias true has them everywhere already");
  if (m.n_expert >= 2 && (m.expert_top_k < 1 || m.expert_top_k > m.n_expert))
    p.add("model.expert_top_k must be in [1, model.n_expert ", m.n_expert, "], got ",
          m.expert_top_k);
  if (!(m.router_aux_loss >= 0 && std::isfinite(m.router_aux_loss)))
    p.add("model.router_aux_loss must be a finite number >= 0, got ", m.router_aux_loss);
  if (!(m.router_z_loss >= 0 && std::isfinite(m.router_z_loss)))
    p.add("model.router_z_loss must be a finite number >= 0, got ", m.router_z_loss);
  p.non_negative("model.shared_expert_hidden", m.shared_expert_hidden);
  if (m.shared_expert_hidden > 0 && m.n_expert == 0)
    p.add("model.shared_expert_hidden ", m.shared_expert_hidden,
          " is a shared expert beside routed ones: it needs model.n_expert >= 2");
  if (m.shared_expert_gate && m.shared_expert_hidden <= 0)
    p.add(
        "model.shared_expert_gate gates the shared expert: it needs model.shared_expert_hidden > "
        "0");
  p.one_of("model.position", m.position, {"learned", "rope", "alibi", "none"});
  p.positive("model.rope_theta", m.rope_theta);
  check_rope_scaling(m, p);
  if (!ops::find_attention_kind(m.attention))  // the kinds: ops/attention_spec.h
    p.add("model.attention must be one of ", ops::attention_kind_names(), "; got '", m.attention,
          "'");
  p.one_of("model.sb_remainder", m.sb_remainder, {"none", "current"});
  if (ops::find_attention_kind(m.attention) != ops::AttentionKind::StickBreaking &&
      (m.attend_current || m.sb_remainder != "none"))
    p.add("model.attend_current and model.sb_remainder apply to model.attention stick_breaking only "
          "(got attention '", m.attention, "')");
  p.non_negative("model.sliding_window", m.sliding_window);
  // The kernels add a tile to the window: a bound keeps that sum in range (and 2^40 tokens is past
  // any sequence: such a window attends to everything, as 0 does).
  if (m.sliding_window > (int64_t(1) << 40))
    p.add("model.sliding_window must be at most 2^40 (0 attends to every earlier token), got ",
          m.sliding_window);
  if (m.sliding_window > 0 && ops::find_attention_kind(m.attention) != ops::AttentionKind::Softmax)
    p.add("model.sliding_window applies to model.attention softmax only (got attention '",
          m.attention, "')");
  if (!(m.dropout >= 0 && m.dropout < 1)) p.add("model.dropout must be in [0, 1), got ", m.dropout);
  p.positive("model.norm_eps", m.norm_eps);

  p.non_negative("model.head_dim", m.explicit_head_dim);
  if (m.explicit_head_dim > kMaxHeadDim)
    p.add("model.head_dim must be at most ", kMaxHeadDim,
          " (0 = model.n_embd / model.n_head), got ", m.explicit_head_dim);
  if (m.n_head <= 0 || m.n_embd <= 0 || m.explicit_head_dim < 0 ||
      m.explicit_head_dim > kMaxHeadDim)
    return;  // the divisibility rules below need them
  if (m.explicit_head_dim == 0 && m.n_embd % m.n_head != 0) {
    p.add("model.n_embd (", m.n_embd, ") must be divisible by model.n_head (", m.n_head,
          "), or model.head_dim given");
    return;
  }
  if (m.n_kv_head > 0 && m.n_head % m.n_kv_head != 0) {
    // Grouped-query attention shares each key/value head among n_head / n_kv_head query heads.
    p.add("model.n_head (", m.n_head, ") must be divisible by model.n_kv_head (", m.n_kv_head, ")");
  }
  if (m.position == "rope" && m.head_dim() % 2 != 0) {
    // RoPE rotates pairs of channels (x_i, x_{i + d/2}) of each head.
    p.add("model.position 'rope' needs an even head dimension, got ", m.head_dim(), " (",
          head_dim_text(m), ")");
  }
  if (m.n_layer > 0 && m.vocab_size > 0 && m.block_size > 0 && m.mlp_hidden >= 0)
    check_fits_host(m, p);
}

void check_data(const Config& c, Problems& p) {
  const DataConfig& d = c.data;
  p.one_of("data.tokenizer", d.tokenizer, {"byte", "gpt2", "hf"});
  if (d.tokenizer != "byte") p.non_empty("data.tokenizer_dir", d.tokenizer_dir);
  p.non_empty("data.train", d.train);
  p.non_empty("data.val", d.val);
  p.one_of("data.windows", d.windows, {"packed", "documents", "example", "pairs"});
  if (!d.chat_template.empty())  // "" for none
    p.one_of("data.chat_template", d.chat_template,
             {"chatml", "qwen3", "llama3", "llama2", "mistral"});
  if (!d.chat_template.empty() && d.tokenizer != "hf")
    p.add("data.chat_template '", d.chat_template, "' writes its model's turn markers, which the ",
          d.tokenizer, " tokenizer does not have (data.tokenizer hf, the model's tokenizer.json)");
  const int64_t need = tokenizer_vocab(d.tokenizer);
  if (c.model.vocab_size > 0 && c.model.vocab_size < need) {
    p.add("model.vocab_size (", c.model.vocab_size, ") is smaller than the ", d.tokenizer,
          " tokenizer's ", need, " tokens (data.tokenizer)");
  }
}

// The attention kernels' limits on train.device, in its precision (train/device.h: bf16 on CUDA,
// f32 on the CPU), so that a config no kernel runs fails here with the reason rather than at the
// first forward.
void check_attention_on_device(const Config& c, Problems& p) {
  const ModelConfig& m = c.model;
  const std::optional<ops::AttentionKind> kind = ops::find_attention_kind(m.attention);
  const bool cuda = c.train.device == "cuda";
  if (!kind || (!cuda && c.train.device != "cpu") || !head_dim_valid(m))
    return;  // reported by check_model / check_train
  const bool sb_options = m.attend_current || m.sb_remainder != "none";
  if ((*kind != ops::AttentionKind::StickBreaking && sb_options) ||
      (*kind != ops::AttentionKind::Softmax && m.sliding_window != 0) || m.sliding_window < 0)
    return;  // reported by check_model
  const ops::AttentionSpec s = attention_spec(m, c.train);
  const int64_t T = c.sequence_length();
  const Device device = cuda ? Device::cuda(0) : Device::cpu();
  const std::string why =
      ops::attention_support(s, device, cuda ? DType::BF16 : DType::F32, m.head_dim(), T, T);
  if (!why.empty())
    p.add("model.attention '", m.attention, "' cannot run on train.device ", c.train.device, ": ",
          why, " (", head_dim_text(m), ")");
  if (c.data.windows != "documents" || !why.empty()) return;
  // Documents are attended one by one on views of the batch (ops/packed_attention.h).
  if (c.train.s2_attn)
    p.add(
        "data.windows 'documents' attends each document on its own; train.s2_attn's shifted "
        "groups would cross them: set one of the two");
  else if (*kind != ops::AttentionKind::Forgetting &&  // composed from views (causal_attention)
           !ops::packed_attention_runs(s, device, cuda ? DType::BF16 : DType::F32, m.head_dim(),
                                       true))
    p.add("data.windows 'documents' needs attention kernels that read strided heads, which ",
          m.attention, " on train.device ", c.train.device, " lacks at head dim ", m.head_dim(),
          " (", head_dim_text(m), "; softmax on CUDA has them at 64 and 128)");
}

void check_train(const Config& c, Problems& p) {
  const TrainConfig& t = c.train;
  p.positive("train.batch_size", t.batch_size);
  p.non_negative("train.seq_len", t.seq_len);
  if (t.seq_len > 0 && c.model.block_size > 0 && t.seq_len > c.model.block_size) {
    p.add("train.seq_len (", t.seq_len, ") must not exceed model.block_size (", c.model.block_size,
          ")");
  }
  p.non_negative("train.total_batch_size", t.total_batch_size);
  if (t.recompute && c.model.n_expert > 0 &&
      (c.model.router_aux_loss > 0 || c.model.router_z_loss > 0))
    p.add("train.recompute with model.n_expert ", c.model.n_expert,
          ": a recomputed block keeps its router's losses inside; set model.router_aux_loss and "
          "model.router_z_loss 0 or train.recompute false");
  // The sequence length's key: the one the user set (model.block_size when train.seq_len is 0).
  const char* T_key = t.seq_len > 0 ? "train.seq_len" : "model.block_size";
  const std::optional<int64_t> micro_or = micro_tokens(c);
  if (!micro_or && t.batch_size > 0 && c.sequence_length() > 0) {
    const bool tokens = double(t.batch_size) * double(c.sequence_length()) > kMaxElements;
    p.add("train.batch_size x ", T_key, tokens ? "" : " x model.vocab_size",
          " is too large: ", t.batch_size, " x ", c.sequence_length(),
          tokens ? "" : " x " + std::to_string(c.model.vocab_size), tokens ? " tokens" : " logits",
          " per micro-batch exceed 2^60");
  }
  const int64_t micro = micro_or.value_or(0);
  if (t.total_batch_size > 0 && micro > 0 && t.total_batch_size % micro != 0) {
    // With one process; grad_accum_steps() checks again with the real world size.
    p.add("train.total_batch_size (", t.total_batch_size,
          ") must be a multiple of train.batch_size * sequence length (", t.batch_size, " * ",
          c.sequence_length(), " = ", micro, ")");
  }
  p.positive("train.max_steps", t.max_steps);
  p.non_negative("train.seed", t.seed);
  p.one_of("train.device", t.device, {"cpu", "cuda"});
  p.non_negative("train.stop_after", t.stop_after);
  if (!(t.ema_decay >= 0 && t.ema_decay < 1))  // NaN too
    p.add("train.ema_decay must be in [0, 1) (0: no average of the weights), got ", t.ema_decay);
  if (t.ema_decay > 0 && c.lora.rank > 0)
    p.add(
        "train.ema_decay is for runs that train every weight: with lora.rank > 0 only the "
        "adapters train, and average --ema writes whole models (merge the adapters with "
        "build/merge and average merged checkpoints instead)");
  if (micro_or) check_attention_on_device(c, p);  // its lengths fit 64-bit sums
  if (t.s2_attn) {
    // S^2-Attn: groups of T / 4 tokens, half the heads shifted by half a group (LongLoRA).
    if (c.sequence_length() % 8 != 0)
      p.add("train.s2_attn needs a sequence length divisible by 8 (groups of T / 4, shifted by "
            "half a group), got ", c.sequence_length());
    if (c.model.n_head % 2 != 0 || c.model.kv_heads() % 2 != 0)
      p.add("train.s2_attn shifts half of the heads: model.n_head (", c.model.n_head,
            ") and the key/value heads (", c.model.kv_heads(), ") must be even");
  }
  // The run name is a directory under checkpoint.dir; it must stay inside it, and read the same
  // in a listing, a log line and a shell command (where a leading '-' is an option).
  const std::string& name = t.run_name;
  if (name.find_first_of("/\\") != std::string::npos || name == "." || name == "..") {
    p.add("train.run_name '", name, "' must be a plain directory name (no '/', '.' or '..')");
  } else if (std::any_of(name.begin(), name.end(),
                         [](unsigned char ch) { return ch < 0x20 || ch == 0x7f; })) {
    p.add("train.run_name '", printable(name), "' holds a control character");
  } else if (!name.empty() && (name.front() == ' ' || name.back() == ' ')) {
    p.add("train.run_name '", name, "' starts or ends with a blank");
  } else if (name.starts_with('-')) {
    p.add("train.run_name '", name, "' starts with '-' (a command line would read it as a flag)");
  }
}

void check_optim(const Config& c, Problems& p) {
  const OptimConfig& o = c.optim;
  p.one_of("optim.name", o.name, {"adamw", "muon", "lomo", "adalomo"});
  p.non_negative("optim.clip_value", o.clip_value);
  p.positive("optim.loss_scale", o.loss_scale);
  // AdamW (and Muon beside it) clips the global norm (optim.grad_clip) and has no loss scale:
  // these would be ignored.
  if (!o.updates_in_backward() && o.clip_value != 0)
    p.add("optim.clip_value (", o.clip_value, ") applies to lomo and adalomo only; ", o.name,
          " clips the global gradient norm (optim.grad_clip)");
  if (!o.updates_in_backward() && o.loss_scale != 1)
    p.add("optim.loss_scale (", o.loss_scale, ") applies to lomo and adalomo only");
  // LOMO and AdaLomo have no first moment and no epsilon of AdamW's kind (AdaLomo's second-moment
  // decay follows the step, Lv et al. 2023): these would be ignored. That they cannot accumulate
  // gradients is checked where the world size is known (Trainer::build_optimizer).
  if (o.updates_in_backward()) {
    const OptimConfig d;
    for (const auto& [key, value, fallback] :
         {std::tuple{"beta1", o.beta1, d.beta1}, {"beta2", o.beta2, d.beta2}, {"eps", o.eps, d.eps}})
      if (value != fallback)
        p.add("optim.", key, " (", value, ") applies to adamw only; optim.name '", o.name,
              "' would ignore it");
  }
  if (o.name == "muon") {
    if (!(o.muon_momentum >= 0 && o.muon_momentum < 1))
      p.add("optim.muon_momentum must be in [0, 1), got ", o.muon_momentum);
    if (o.muon_ns_steps < 1 || o.muon_ns_steps > 100)
      p.add("optim.muon_ns_steps must be in [1, 100], got ", o.muon_ns_steps);
  } else {
    const OptimConfig d;
    if (o.muon_momentum != d.muon_momentum || o.muon_nesterov != d.muon_nesterov ||
        o.muon_ns_steps != d.muon_ns_steps || o.muon_split_qkv != d.muon_split_qkv)
      p.add("optim.muon_* keys apply to optim.name muon only; optim.name '", o.name,
            "' would ignore them");
  }
  p.positive("optim.lr", o.lr);
  p.non_negative("optim.min_lr", o.min_lr);
  // min_lr is where a decay ends; a constant schedule has none and ignores it.
  if (o.min_lr > o.lr && o.schedule != "constant")
    p.add("optim.min_lr (", o.min_lr, ") must not exceed optim.lr (", o.lr, ") for a decaying "
          "schedule (", o.schedule, ")");
  p.non_negative("optim.weight_decay", o.weight_decay);
  if (!(o.beta1 >= 0 && o.beta1 < 1)) p.add("optim.beta1 must be in [0, 1), got ", o.beta1);
  if (!(o.beta2 >= 0 && o.beta2 < 1)) p.add("optim.beta2 must be in [0, 1), got ", o.beta2);
  p.positive("optim.eps", o.eps);
  p.non_negative("optim.grad_clip", o.grad_clip);
  p.non_negative("optim.warmup_steps", o.warmup_steps);
  p.non_negative("optim.decay_steps", o.decay_steps);
  p.one_of("optim.schedule", o.schedule, {"cosine", "linear", "constant", "wsd"});
  p.non_negative("optim.cooldown_steps", o.cooldown_steps);
  if (o.cooldown_steps != 0 && o.schedule != "wsd")
    p.add("optim.cooldown_steps (", o.cooldown_steps,
          ") applies to schedule wsd only; optim.schedule '", o.schedule, "' would ignore it");
  p.one_of("optim.cooldown_shape", o.cooldown_shape, {"sqrt", "linear", "cosine"});
  if (o.cooldown_shape != "sqrt" && o.schedule != "wsd")
    p.add("optim.cooldown_shape (", o.cooldown_shape,
          ") applies to schedule wsd only; optim.schedule '", o.schedule, "' would ignore it");
}

void check_spike(const SpikeConfig& s, int64_t max_steps, Problems& p) {
  p.positive("spike.window", s.window);
  p.positive("spike.threshold", s.threshold);
  p.non_negative("spike.rollback_steps", s.rollback_steps);
  p.non_negative("spike.skip_batches", s.skip_batches);
  p.non_negative("spike.max_rollbacks", s.max_rollbacks);
  if (!(s.lr_factor > 0 && s.lr_factor <= 1))
    p.add("spike.lr_factor must be in (0, 1] (it lowers the LR after a rollback), got ", s.lr_factor);
  p.positive("spike.inject_scale", s.inject_scale);
  p.non_negative("spike.lr_factor_steps", s.lr_factor_steps);
  p.one_of("spike.inject_kind", s.inject_kind, {"corrupt", "scale", "nan"});
  if (s.inject_rank < -1) p.add("spike.inject_rank must be -1 (every micro-batch) or a rank, got ", s.inject_rank);
  std::string problem;
  const std::vector<int64_t> steps = parse_step_list(s.inject_steps, &problem);
  if (!problem.empty()) p.add("spike.inject_steps: ", problem);
  for (int64_t n : steps)
    if (max_steps > 0 && n > max_steps) {
      p.add("spike.inject_steps: step ", n, " is past train.max_steps (", max_steps,
            "): it would never be injected");
      break;
    }
}

}  // namespace

bool config_rules::head_dim_valid(const ModelConfig& m) {
  return m.n_head > 0 && m.n_embd > 0 &&
         (m.explicit_head_dim > 0 ? m.explicit_head_dim <= kMaxHeadDim
                                  : m.explicit_head_dim == 0 && m.n_embd % m.n_head == 0);
}

std::vector<int64_t> parse_positive_list(const std::string& text, const char* noun,
                                         std::string* problem) {
  std::vector<int64_t> values;
  for (const std::string& item : split_trimmed(text)) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || item.empty() || v < 1) {
      const std::string why = "'" + item + "' is not a " + noun + " >= 1 in '" + text + "'";
      if (problem) {
        *problem = why;
        return {};
      }
      TESSERA_FAIL(why);
    }
    values.push_back(v);
  }
  return values;
}

int64_t ModelConfig::hidden() const { return int64_t(mlp_width(*this)); }

double ModelConfig::parameter_count() const {
  const double C = double(n_embd), L = double(n_layer), F = mlp_width(*this);
  // Query and key/value widths.
  const double hd = explicit_head_dim > 0 ? double(explicit_head_dim) : C / double(n_head);
  const double q = double(n_head) * hd, kv = double(kv_heads()) * hd;
  const double b = bias ? 1 : 0;
  auto linear = [&](double n_out, double n_in) { return n_out * (n_in + b); };
  const double qkv_b = !bias && qkv_bias ? q + 2 * kv : 0;  // Qwen2's biases on q, k and v
  const double one_norm = C * (norm == "layernorm" && bias ? 2 : 1);  // RMSNorm has no bias
  double n = double(vocab_size) * C * (tie_embeddings ? 1 : 2) + one_norm;  // + the final norm
  if (position == "learned") n += double(block_size) * C;
  const double mlp_in = mlp == "swiglu" ? 2 : 1;  // SwiGLU: a gate beside the up projection
  const double gates = attention == "forgetting" ? double(n_head) * (C + 1) : 0;
  const double qk_norms = qk_norm ? 2 * hd : 0;
  // A mixture: its router, and n_expert MLPs; a shared expert and its gate.
  const double mlps = n_expert > 0 ? double(n_expert) : 1, router = double(n_expert) * C;
  const double Fs = double(std::max<int64_t>(shared_expert_hidden, 0));
  const double shared =
      Fs > 0 ? mlp_in * linear(Fs, C) + linear(C, Fs) + (shared_expert_gate ? C : 0) : 0;
  return n + L * (2 * one_norm + linear(q + 2 * kv, C) + qkv_b + qk_norms + gates + linear(C, q) +
                  router + shared + mlps * (mlp_in * linear(F, C) + linear(C, F)));
}

double ModelConfig::active_parameter_count() const {
  if (n_expert <= 0) return parameter_count();
  ModelConfig met = *this;  // as many MLPs as a token meets, and the whole router (E scores)
  met.n_expert = expert_top_k;
  return met.parameter_count() + double(n_layer) * double(n_expert - expert_top_k) * double(n_embd);
}

std::string init_model_difference(const ModelConfig& base, const ModelConfig& run) {
  ModelConfig same = run;
  same.block_size = base.block_size;
  same.rope_theta = base.rope_theta;
  same.rope_scaling = base.rope_scaling;
  return model_difference(base, same);
}

std::string model_difference(const ModelConfig& a, const ModelConfig& b) {
  auto resolved = [](ModelConfig m) {
    m.n_kv_head = m.kv_heads();
    if (m.n_head > 0) m.explicit_head_dim = m.head_dim();  // head_dim 32 = n_embd 128 / 4 heads
    m.mlp_hidden = m.hidden();
    if (m.rope_scaling.original_max_position == 0) m.rope_scaling.original_max_position = m.block_size;
    if (m.n_expert == 0) {  // a dense MLP: the mixture's keys decide nothing
      const ModelConfig d;
      m.expert_top_k = d.expert_top_k, m.router_renormalize = d.router_renormalize;
    }
    return m;
  };
  // Dropout and the router losses' coefficients shape training only: a run may change them.
  const std::string d = config_schema::first_difference(
      resolved(a), resolved(b), {"dropout", "router_aux_loss", "router_z_loss"});
  return d.empty() ? d : "model." + d;
}

ops::AttentionSpec attention_spec(const ModelConfig& m, const TrainConfig& t) {
  ops::AttentionSpec s;
  s.kind = ops::parse_attention_kind(m.attention, "model.attention");
  s.attend_current = m.attend_current;
  s.sb_remainder = m.sb_remainder == "current";
  s.window = m.sliding_window;
  s.s2_attn = t.s2_attn;
  s.alibi = m.position == "alibi";
  return s;
}

void check_dist(const Config& c, Problems& p) {
  const DistConfig& d = c.dist;
  p.one_of("dist.backend", d.backend, {"auto", "single", "mpi", "nccl"});
  if (!d.init.empty() && d.init.rfind("file://", 0) != 0)
    p.add("dist.init must be file:///path/to/a/shared/dir, got '", d.init, "'");
  p.positive("dist.timeout", d.timeout);
  p.positive("dist.bucket_mb", d.bucket_mb);
  if (d.bucket_mb > 0 && d.bucket_mb * double(1 << 20) < 1)  // the buckets count whole bytes
    p.add("dist.bucket_mb must be at least one byte (", 1.0 / double(1 << 20), " MiB), got ",
          d.bucket_mb);
  if (d.bucket_mb > double(1 << 20))  // bytes as an int64_t, and beyond any model's gradients
    p.add("dist.bucket_mb must be at most 1048576 (1 TiB), got ", d.bucket_mb);
  if (d.zero != 0 && d.zero != 1) p.add("dist.zero must be 0 or 1, got ", d.zero);
  if (d.zero == 1 && c.optim.updates_in_backward())
    p.add("dist.zero 1 shards AdamW's state; optim.name '", c.optim.name, "' has none to shard");
}

std::vector<std::string> model_problems(const ModelConfig& m) {
  Problems p;
  check_model(m, p);
  return p.take();
}

void validate_model(const ModelConfig& model, const std::string& source) {
  const std::vector<std::string> problems = model_problems(model);
  if (problems.empty()) return;
  std::string text = source + ": invalid model:";
  for (const auto& s : problems) text += (problems.size() == 1 ? " " : "\n  - ") + s;
  throw Error(text);
}

std::vector<std::string> config_problems(const Config& c) {
  Problems p;
  check_model(c.model, p);
  check_data(c, p);
  check_train(c, p);
  config_rules::check_objective(c, p);
  check_optim(c, p);
  p.non_negative("eval.interval", c.eval.interval);
  p.positive("eval.steps", c.eval.steps);
  p.non_negative("eval.tokens", c.eval.tokens);
  if (c.eval.tokens > 0 && c.sequence_length() > 0 && c.eval.tokens % c.sequence_length() != 0)
    p.add("eval.tokens (", c.eval.tokens, ") must be a multiple of the sequence length (",
          c.train.seq_len > 0 ? "train.seq_len " : "model.block_size ", c.sequence_length(),
          "): evaluations score whole windows");
  for (const auto& [key, file] :
       {std::pair{"eval.choices", &c.eval.choices}, std::pair{"eval.answers", &c.eval.answers}})
    if (!file->empty() && c.eval.interval == 0)
      p.add(key, " (", *file,
            ") is scored at each evaluation, but eval.interval is 0: there are none");
  if (c.eval.answers_bos && !c.data.chat_template.empty())
    p.add("eval.answers_bos and data.chat_template '", c.data.chat_template,
          "': the template writes what starts an answer's prompt");
  p.non_empty("checkpoint.dir", c.checkpoint.dir);
  p.non_negative("checkpoint.interval", c.checkpoint.interval);
  // Two at least: one of them may be the file being replaced when a crash hits.
  if (c.checkpoint.keep < 2) p.add("checkpoint.keep must be >= 2, got ", c.checkpoint.keep);
  p.non_negative("checkpoint.milestone_interval", c.checkpoint.milestone_interval);
  check_spike(c.spike, c.train.max_steps, p);
  if (double(c.spike.skip_batches) * double(std::max<int64_t>(c.train.batch_size, 1)) >
      kMaxElements)
    p.add("spike.skip_batches x train.batch_size is too large: ", c.spike.skip_batches, " x ",
          c.train.batch_size, " windows exceed 2^60");
  config_rules::check_lora(c, p);
  p.positive("log.interval", c.log.interval);
  p.non_negative("log.sample_interval", c.log.sample_interval);
  if (c.log.sample_bos && !c.data.chat_template.empty())
    p.add("log.sample_bos and data.chat_template '", c.data.chat_template,
          "': the template writes what starts a sample's prompt");
  p.positive("log.sample_tokens", c.log.sample_tokens);
  if (c.log.sample_tokens > (int64_t(1) << 20))  // nn::kMaxNewTokens, generate's bound
    p.add("log.sample_tokens (", c.log.sample_tokens, ") must be at most 1048576");
  check_dist(c, p);
  return p.take();
}

void Config::validate() const {
  const auto problems = config_problems(*this);
  if (problems.empty()) return;
  std::string text = "invalid config:";
  if (problems.size() == 1) {
    text += " " + problems[0];
  } else {
    for (const auto& s : problems) text += "\n  - " + s;
  }
  TESSERA_FAIL(text);
}

namespace {

// train.batch_size x sequence length x world size: the tokens of one pass of every rank. A product
// that overflows is an error naming its factors (validate() bounds the first two, not the world).
int64_t tokens_per_pass(const Config& c, int64_t world_size) {
  TESSERA_CHECK(world_size > 0, "tokens_per_step: world size must be positive, got ", world_size);
  int64_t micro = 0, pass = 0;
  const bool overflow = __builtin_mul_overflow(c.train.batch_size, c.sequence_length(), &micro) ||
                        __builtin_mul_overflow(micro, world_size, &pass);
  TESSERA_CHECK(!overflow, "train.batch_size x ",
                c.train.seq_len > 0 ? "train.seq_len" : "model.block_size",
                " x world size is too large: ", c.train.batch_size, " x ", c.sequence_length(),
                " x ", world_size, " overflows a 64-bit integer");
  return pass;
}

}  // namespace

int64_t Config::tokens_per_step(int64_t world_size) const {
  const int64_t pass = tokens_per_pass(*this, world_size);
  return train.total_batch_size > 0 ? train.total_batch_size : pass;
}

int64_t Config::eval_windows() const {
  if (eval.tokens > 0) return eval.tokens / sequence_length();
  int64_t windows = 0;
  return __builtin_mul_overflow(eval.steps, train.batch_size, &windows) ? INT64_MAX : windows;
}

int64_t Config::grad_accum_steps(int64_t world_size) const {
  const int64_t total = tokens_per_step(world_size);
  const int64_t per_pass = tokens_per_pass(*this, world_size);
  TESSERA_CHECK(per_pass > 0 && total % per_pass == 0, "train.total_batch_size (", total,
                ") must be a multiple of train.batch_size * sequence length * world size (",
                train.batch_size, " * ", sequence_length(), " * ", world_size, " = ", per_pass,
                ")");
  return total / per_pass;
}

}  // namespace tessera
