// Configuration: one plain struct per YAML section, with defaults, loaded from a file, overridden
// by `section.key=value` strings, validated once. No globals: the Config value is passed down.
//
//   Config cfg = load_config("configs/tiny.yaml", {"train.max_steps=100", "optim.lr=3e-4"});
//   cfg.model.n_layer;                  // 4, typed; every key of the file was known and well typed
//   int64_t T = cfg.sequence_length();  // train.seq_len, or model.block_size when it is 0
//   std::string text = to_yaml(cfg);    // every key, stable order; parse_config(text, ...) == cfg
//
// Errors (tessera::Error) name the file or override, the full key path and, for a bad value, the
// type expected and the text found:
//   configs/x.yaml: unknown key 'model.n_layers' (did you mean 'model.n_layer'?) (line 3)
//   configs/x.yaml: model.n_layer: expected an integer, got 'four' (line 3)
//   override 'optim.lr=fast': optim.lr: expected a number, got 'fast'
//   configs/x.yaml: invalid config: model.n_embd (100) must be divisible by model.n_head (3)
//
// A value of 0 (or "") keeps its documented meaning in the struct and in to_yaml ("0 = n_head"),
// so a stored config replays with the same rules; the accessors below resolve it.
// The command line (--config, --set, --resume, ...) is in config/cli.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"  // what every function here throws
#include "ops/attention_spec.h"

namespace tessera {

// model.rope_scaling: RoPE scaling at any length (nn/rope_scaling.h has the formulas), written as a
// nested mapping under model: (`rope_scaling: {type: yarn, factor: 8}`) or as dotted keys
// (--set model.rope_scaling.type=yarn; to_yaml writes `rope_scaling.type: yarn`).
struct RopeScalingConfig {
  std::string type = "none";          // none | linear | dynamic | yarn | llama3
  double factor = 1.0;                // s >= 1: the new length over the trained one
  int64_t original_max_position = 0;  // L0; 0 = model.block_size of the model being run
  double beta_fast = 32;              // yarn
  double beta_slow = 1;               // yarn
  double attention_factor = 0;        // yarn: cos/sin multiplier; 0 = 0.1 ln factor + 1
  double low_freq_factor = 1;         // llama3
  double high_freq_factor = 4;        // llama3

  // Not an aggregate: GCC 12 warns (-Wmaybe-uninitialized, a false positive) about `type` in
  // temporaries such as Config{} when this nested struct is aggregate-initialised.
  RopeScalingConfig() {}
  bool operator==(const RopeScalingConfig&) const = default;
};

struct ModelConfig {
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_kv_head = 0;  // key/value heads for grouped-query attention; 0 = n_head (plain MHA)
  int64_t n_embd = 128;
  // Key head_dim: each attention head's width; 0 = n_embd / n_head (Qwen3-0.6B: 16 heads of 128 on
  // a width of 1024). q and the attention's output are n_head x head_dim wide.
  int64_t explicit_head_dim = 0;
  int64_t block_size = 64;  // context length
  int64_t vocab_size = 257;
  std::string norm = "layernorm";    // layernorm | rmsnorm
  std::string mlp = "gelu";          // gelu | swiglu
  int64_t mlp_hidden = 0;            // 0 = 4 n_embd for gelu, round_up(8 n_embd / 3, 64) for swiglu
  // A mixture of experts in each block's place of the MLP (nn/moe.h): n_expert MLPs of mlp_hidden,
  // each token to its expert_top_k most probable under a router; 0 = a dense MLP.
  int64_t n_expert = 0;
  int64_t expert_top_k = 2;
  bool router_renormalize = true;    // the top k's weights divided by their sum (Mixtral)
  double router_aux_loss = 0.01;     // load-balancing loss coefficient (Switch Transformer's 1e-2)
  double router_z_loss = 0;          // router z-loss coefficient (ST-MoE's 1e-3; 0: none)
  // > 0 (with n_expert): a shared expert, an MLP of this width every token goes through beside its
  // routed ones (DeepSeekMoE, Dai et al. 2024; Qwen2-MoE); shared_expert_gate scales its output by
  // sigmoid(x . w), a learned gate of one logit a token (Qwen2-MoE's shared_expert_gate).
  int64_t shared_expert_hidden = 0;
  bool shared_expert_gate = false;
  std::string position = "learned";  // learned | rope | alibi (Press et al. 2022) | none
  double rope_theta = 10000.0;
  RopeScalingConfig rope_scaling;
  std::string attention = "softmax";  // a name of ops/attention_spec.h's kAttentionKinds
  bool attend_current = false;        // stick_breaking: a token may attend to itself
  std::string sb_remainder = "none";  // stick_breaking: none | current (leftover stick -> own value)
  int64_t sliding_window = 0;  // softmax: > 0 attends the last N keys only (itself included)
  bool qk_norm = false;        // RMSNorm over each head's q and k before RoPE (Qwen3, Gemma 3)
  bool tie_embeddings = true;  // lm head shares the token embedding matrix
  bool bias = true;            // biases in the linear layers and norms
  bool qkv_bias = false;  // with bias false: biases on the q, k and v projections alone (Qwen2)
  double dropout = 0.0;
  double norm_eps = 1e-5;

  int64_t kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  int64_t head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : n_embd / n_head; }
  int64_t hidden() const;  // mlp_hidden with its 0 resolved
  // How many weights the model holds, every one nn::param_specs makes (n_head > 0). In double: the
  // keys may be absurd, and config validation compares this to the host's memory.
  double parameter_count() const;
  // Those a token's forward uses: a mixture's expert_top_k experts of n_expert (every one for a
  // dense model). The 6 N of a training step's FLOPs per token (train/mfu.h).
  double active_parameter_count() const;

  bool operator==(const ModelConfig&) const = default;
};

// The model section's fields that decide the computation, compared with their defaults resolved
// (mlp_hidden 0 = the rule's size, n_kv_head 0 = n_head, ...) and dropout aside: "" when equal,
// else the first differing key with both values ("model.n_layer: 4 vs 6"). For resuming a
// checkpoint.
std::string model_difference(const ModelConfig& a, const ModelConfig& b);
// The same for a run that starts from the weights of another model (--init, a LoRA base), which
// may also change the context length and how positions are encoded at it (block_size, rope_theta,
// rope_scaling: context extension, configs/extend-context.yaml). base's values come first.
std::string init_model_difference(const ModelConfig& base, const ModelConfig& run);

struct DataConfig {
  std::string tokenizer = "byte";  // byte | gpt2 | hf
  // gpt2: encoder.json + vocab.bpe; hf: tokenizer.json (and tokenizer_config.json)
  std::string tokenizer_dir = "data/tokenizers/gpt2";
  std::string train = "data/kjv/byte/train_*.bin";     // shard glob
  std::string val = "data/kjv/byte/val_*.bin";
  // packed: windows of T + 1 tokens cut from the stream | documents: the same windows, attention
  // and learned positions restarting at each end-of-text (ops/documents.h) | example: one
  // window per example of a `tokenize --format sft` set, padded or its start cut (data/loader.h)
  std::string windows = "packed";
  // The chat template the fine-tuning examples were written in (tokenize --chat-template; data/
  // chat.h: chatml | qwen3 | llama3), "" for none: eval.answers and log.sample_prompt are sent in
  // it, and build/generate takes it as its default --prompt-style.
  std::string chat_template;

  bool operator==(const DataConfig&) const = default;
};

struct TrainConfig {
  int64_t batch_size = 12;       // micro-batch B: sequences per forward/backward on one process
  int64_t seq_len = 0;           // T; 0 = model.block_size
  int64_t total_batch_size = 0;  // tokens per optimizer step; 0 = B * T * world size
  int64_t max_steps = 2000;      // optimizer steps
  int64_t seed = 1337;
  std::string device = "cpu";  // cpu | cuda
  std::string run_name;        // "" = the config file's stem (load_config fills it in)
  bool recompute = false;      // activation checkpointing per block
  int64_t stop_after = 0;      // end this process after this step (a later --resume continues);
                               // 0 = max_steps. The LR schedule still spans max_steps.
  bool s2_attn = false;        // LongLoRA's shifted sparse attention while training (groups of a
                               // quarter of the sequence); full attention for evaluation
  // > 0: an exponential moving average of the weights with this decay, in [0, 1) (train/ema.h):
  // its validation loss at every evaluation, kept in checkpoints, written out by average --ema.
  double ema_decay = 0;
  // What the run minimises: lm, the next token's cross-entropy; dpo, Direct Preference
  // Optimization (Rafailov et al. 2023) on preference pairs (data.windows: pairs, train/dpo.h),
  // against the weights of checkpoint.init as the reference (under lora.rank > 0: the base, its
  // adapters off; dpo_loss simpo has none). Under dpo a window is a pair: train.batch_size counts
  // pairs, each two rows of the sequence length, and train.total_batch_size counts pairs x the
  // sequence length.
  std::string objective = "lm";
  double dpo_beta = 0.1;           // dpo: beta, the strength of the pull towards the reference
  double dpo_label_smoothing = 0;  // dpo: in [0, 0.5), the share of pairs taken as mislabelled
  double dpo_nll_weight = 0;       // dpo: >= 0, the chosen responses' NLL a token's weight (1: RPO)
  // dpo: sigmoid (DPO's) | ipo (Azar et al. 2023) | simpo (Meng et al. 2024: no reference, the
  // mean log-probability a token; its beta is larger, 2 to 2.5 in the paper) | orpo (Hong et al.
  // 2024: no reference, the chosen NLL plus beta x the log odds ratio's loss; beta 0.1 as TRL's)
  std::string dpo_loss = "sigmoid";
  double simpo_gamma = 0.5;  // dpo_loss simpo: >= 0, the target reward margin gamma (TRL's 0.5)

  bool operator==(const TrainConfig&) const = default;
};

struct OptimConfig {
  std::string name = "adamw";
  double lr = 1e-3;      // peak learning rate, reached at the end of warmup
  double min_lr = 1e-4;  // where the decay ends at max_steps
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // max global gradient norm; 0 = no clipping
  int64_t warmup_steps = 100;
  std::string schedule = "cosine";  // cosine | linear | constant | wsd
  int64_t decay_steps = 0;  // the step where the decay reaches min_lr (then stays); 0 = max_steps
  int64_t cooldown_steps = 0;  // wsd: the steps before decay_steps that decay; 0 = a fifth of them
  std::string cooldown_shape = "sqrt";  // wsd: sqrt (1 - sqrt) | linear | cosine
  double clip_value = 0;   // lomo/adalomo: clamp each gradient element to +-clip_value; 0 = off
  double loss_scale = 1;   // lomo/adalomo: gradients are divided by it before the update
  // muon (optim/muon.h): the blocks' matrices take Muon's update, scaled to AdamW's RMS, the rest
  // AdamW's: one lr and weight_decay serve both (beta1, beta2, eps are AdamW's)
  double muon_momentum = 0.95;
  bool muon_nesterov = true;
  int64_t muon_ns_steps = 5;  // Newton-Schulz iterations
  bool muon_split_qkv = true;  // GPT-2's fused c_attn orthogonalised as its q, k and v rows

  // LOMO and AdaLomo update each parameter inside backward: no gradient accumulation, no fused
  // classifier (the backward runs twice with norm clipping).
  bool updates_in_backward() const { return name == "lomo" || name == "adalomo"; }

  bool operator==(const OptimConfig&) const = default;
};

struct EvalConfig {
  int64_t interval = 250;  // optimizer steps between validation runs; 0 = never during training
  int64_t steps = 20;      // validation batches of train.batch_size windows per run
  // Validation tokens per run (whole windows of the sequence length), the same set on any
  // batch size and world size; 0 = steps x train.batch_size windows.
  int64_t tokens = 0;
  // Multiple-choice items (HellaSwag's JSON Lines, eval --choices; train/choices.h) scored at
  // every evaluation: their accuracy in the log and metrics.jsonl. "" = none.
  std::string choices;
  // Prompt / response examples (data/sft.h's forms, eval --answers; train/answers.h) whose
  // prompts are continued greedily at every evaluation: the share answered exactly in the log and
  // metrics.jsonl. "" = none.
  std::string answers;
  // Their prompts after the tokenizer's beginning-of-text id, as `tokenize --format sft --bos`
  // starts examples (eval --answers --bos).
  bool answers_bos = false;

  bool operator==(const EvalConfig&) const = default;
};

struct CheckpointConfig {
  std::string dir = "checkpoints";  // a run writes to <dir>/<train.run_name>/
  int64_t interval = 500;           // steps between saves; 0 = only at the end
  int64_t keep = 3;                 // newest checkpoints kept on disk (>= 2)
  int64_t milestone_interval = 0;   // checkpoints at multiples of it are never pruned; 0 = none
  bool async = false;  // write on a thread of its own while training goes on, from a host copy
                       // taken at the save step (checkpoint/async_save.h)
  std::string resume;  // "" = start fresh, "auto" = newest in the run dir if any, else a path
  std::string init;    // a checkpoint to take weights from (not optimizer or data state), or
                       // hf:DIR, a Hugging Face directory (train/hf_dir.h)

  bool operator==(const CheckpointConfig&) const = default;
};

// Loss-spike detection and automatic rollback (train/spike.h). A step is a spike when its loss or
// gradient norm is NaN/Inf, or (once `window` clean steps are seen) lies more than `threshold`
// standard deviations above the mean of the last `window` clean steps.
struct SpikeConfig {
  bool enabled = true;
  int64_t window = 128;       // clean steps the z-scores are computed against
  double threshold = 7.0;     // z-score above which a loss or gradient norm is a spike
  int64_t rollback_steps = 0;  // roll back to the newest checkpoint at least this many steps
                               // before the spike (PaLM went back ~100); 0 = newest before it
  int64_t skip_batches = 0;    // global batches (optimizer steps) skipped from the spike's
                               // position; 0 = auto: max(1, max_steps / 1000)
  int64_t max_rollbacks = 5;   // stop with an error after this many spikes
  double lr_factor = 1.0;      // LR multiplier in (0, 1] after a rollback ...
  int64_t lr_factor_steps = 0;  // ... for this many steps
  // Fault injection (tests, drills): the batches a clean run reads at these (1-based) steps are
  // poisoned wherever they come up: "corrupt" replaces their tokens with random ids, "scale"
  // multiplies their loss by inject_scale, "nan" makes their loss NaN.
  std::string inject_steps;    // comma-separated, e.g. "300,700"; "" = none
  std::string inject_kind = "corrupt";  // corrupt | scale | nan
  double inject_scale = 1000.0;  // > 0
  int64_t inject_rank = -1;  // -1: every micro-batch of an injected step; r: only the one rank r
                             // reads first (the same windows on any world size)

  bool operator==(const SpikeConfig&) const = default;
};

// LoRA / QLoRA fine-tuning (peft/lora.h): the model from checkpoint.init is frozen and low-rank
// adapters on the projections in `targets` train. rank 0 = off (every weight trains).
struct LoraConfig {
  int64_t rank = 0;
  double alpha = 16;           // the update is scaled by alpha / rank (rslora: alpha / sqrt(rank))
  double dropout = 0.05;       // on the adapter's input
  std::string targets = "q,v";  // comma-separated: q, k, v, o, gate, up, down, head, or all
  bool rslora = false;
  std::string quantize = "none";  // none | nf4 | nf4-dq: the frozen block Linears in 4-bit (QLoRA)
  std::string trainable;          // full tensors that train beside the adapters: "embed,norm"
                                  // (LongLoRA's context extension); "" = none

  bool operator==(const LoraConfig&) const = default;
};

struct LogConfig {
  int64_t interval = 10;  // steps between log lines
  bool metrics = true;    // write <run dir>/metrics.jsonl
  // A sample every sample_interval steps and after the last (0 = never), printed and written to
  // metrics.jsonl: sample_tokens tokens after sample_prompt ("": from the end-of-text id), drawn
  // as build/generate draws them (train/samples.h; the run's losses are the same without).
  int64_t sample_interval = 0;
  int64_t sample_tokens = 64;
  std::string sample_prompt;
  bool sample_bos = false;  // the tokenizer's beginning-of-text id first, as tokenize --bos writes

  bool operator==(const LogConfig&) const = default;
};

// Data parallelism over the ranks a launcher started (mpirun, srun, or RANK/WORLD_SIZE); a
// single process ignores everything here but the checks.
struct DistConfig {
  std::string backend = "auto";  // auto | single | mpi | nccl (auto: mpi on the CPU, nccl on CUDA)
  std::string init;              // nccl without MPI: file:///shared/dir for the unique id
  double timeout = 300;          // seconds a collective may make no progress before it is an error
  double bucket_mb = 25;         // gradient bucket size (the first bucket is 1 MiB)
  int64_t zero = 0;              // 1: ZeRO-1, AdamW state sharded over ranks

  bool operator==(const DistConfig&) const = default;
};

struct Config {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  OptimConfig optim;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  SpikeConfig spike;
  LoraConfig lora;
  LogConfig log;
  DistConfig dist;

  // Throws one Error listing every problem config_problems() finds.
  void validate() const;

  int64_t sequence_length() const { return train.seq_len > 0 ? train.seq_len : model.block_size; }
  // Where the LR decay ends: optim.decay_steps, or train.max_steps when that is 0.
  int64_t decay_steps() const { return optim.decay_steps > 0 ? optim.decay_steps : train.max_steps; }
  // Tokens per optimizer step and the micro-batches each process accumulates to reach it;
  // grad_accum_steps throws (naming the keys) unless total_batch_size is a multiple of B*T*world.
  int64_t tokens_per_step(int64_t world_size = 1) const;
  int64_t grad_accum_steps(int64_t world_size = 1) const;
  // The windows each validation run scores (before data.val's length caps them): eval.tokens / T,
  // or eval.steps x train.batch_size (saturating).
  int64_t eval_windows() const;

  bool operator==(const Config&) const = default;
};

// Every rule the config breaks (bad enumeration, non-positive size, n_embd not divisible by
// n_head, ...), one sentence each naming its keys and values; empty when the config is valid.
std::vector<std::string> config_problems(const Config& cfg);
// The same for the model section alone.
std::vector<std::string> model_problems(const ModelConfig& model);
// Throws one Error "SOURCE: invalid model: ..." listing model_problems(), if any: a trained model's
// config, whose other sections no longer matter (eval, generate, export).
void validate_model(const ModelConfig& model, const std::string& source);

// Reads a YAML file, applies the overrides in order, fills train.run_name from the file's stem
// when it is empty, and validates.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The same from YAML text (e.g. the resolved config stored in a checkpoint); `source` names it in
// errors. train.run_name is left as the text has it.
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});

// A config stored in a checkpoint, for loading its weights: read like parse_config, but only its
// model section is validated. The rest passed the rules of the tessera that wrote it, and a rule
// added since about starting a run (a run name, a key unused at lora.rank 0, a LoRA rank above
// the layers' size) must not make a trained checkpoint unreadable.
Config parse_stored_config(const std::string& yaml_text, const std::string& source);

// Applies one `section.key=value` override (no validation of the whole config: call validate()).
void apply_override(Config& cfg, const std::string& assignment);

// Every key, in struct order, as YAML that parse_config reads back into an equal Config.
std::string to_yaml(const Config& cfg);

// What the model's attention computes (ops::causal_attention's spec) under these keys:
// model.attention, attend_current, sb_remainder, sliding_window and train.s2_attn. The one mapping
// from config keys to the spec, for validation and for the model. An unknown kind throws.
ops::AttentionSpec attention_spec(const ModelConfig& m, const TrainConfig& t);

// "300, 700" -> {300, 700}: a comma-separated list of integers >= 1 ("" -> none), each a `noun`
// in messages. A bad or empty item is an error, or, when problem is given, a sentence stored there
// (and an empty result).
std::vector<int64_t> parse_positive_list(const std::string& text, const char* noun,
                                         std::string* problem = nullptr);
// The step lists of spike.inject_steps.
inline std::vector<int64_t> parse_step_list(const std::string& text, std::string* problem = nullptr) {
  return parse_positive_list(text, "step number", problem);
}

// All key paths ("model.n_layer", ...), in to_yaml's order.
std::vector<std::string> config_keys();

}  // namespace tessera
