// Each numeric key's bound, from both sides: the first value past it is refused with exactly one
// problem naming the key and the value, and the bound itself is accepted. A rule that assumes a
// valid key (a division by n_head, a product of sizes) stays quiet while that key is refused.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "test_util.h"

namespace tessera {
namespace {

// The defaults with the overrides applied (';' separates several).
Config with(const std::string& overrides) {
  Config cfg;
  std::stringstream in(overrides);
  for (std::string o; std::getline(in, o, ';');) apply_override(cfg, o);
  return cfg;
}

struct Bound {
  std::string refused;   // overrides past the bound
  std::string problem;   // the one problem they make
  std::string accepted;  // overrides at the bound: no problem
};

const std::vector<Bound> kModelBounds = {
    {"model.n_layer=0", "model.n_layer must be positive, got 0", "model.n_layer=1"},
    {"model.n_head=0", "model.n_head must be positive, got 0", "model.n_head=1"},
    {"model.n_kv_head=-1", "model.n_kv_head must be >= 0, got -1", "model.n_kv_head=0"},
    {"model.n_embd=0", "model.n_embd must be positive, got 0", "model.n_embd=4"},
    {"model.block_size=0", "model.block_size must be positive, got 0", "model.block_size=1"},
    {"model.vocab_size=0", "model.vocab_size must be positive, got 0", "model.vocab_size=256"},
    {"model.vocab_size=255",
     "model.vocab_size (255) is smaller than the byte tokenizer's 256 tokens (data.tokenizer)",
     "model.vocab_size=256"},
    {"model.mlp_hidden=-1", "model.mlp_hidden must be >= 0, got -1", "model.mlp_hidden=1"},
    {"model.n_expert=-1", "model.n_expert must be >= 0, got -1", "model.n_expert=0"},
    {"model.qkv_bias=true",
     "model.qkv_bias puts biases on q, k and v alone, in a model without them (model.bias false); "
     "model.bias true has them everywhere already",
     "model.qkv_bias=true;model.bias=false"},
    {"model.n_expert=1",
     "model.n_expert 1 is a dense MLP behind a router of one choice: give 0 (dense) or >= 2",
     "model.n_expert=2"},
    {"model.n_expert=4;model.expert_top_k=5",
     "model.expert_top_k must be in [1, model.n_expert 4], got 5",
     "model.n_expert=4;model.expert_top_k=4"},
    {"model.n_expert=4;model.expert_top_k=0",
     "model.expert_top_k must be in [1, model.n_expert 4], got 0",
     "model.n_expert=4;model.expert_top_k=1"},
    {"model.router_aux_loss=-0.01", "model.router_aux_loss must be a finite number >= 0, got -0.01",
     "model.router_aux_loss=0"},
    {"model.n_expert=4;train.recompute=true",
     "train.recompute with model.n_expert 4: a recomputed block keeps its router's losses inside; "
     "set model.router_aux_loss and model.router_z_loss 0 or train.recompute false",
     "model.n_expert=4;train.recompute=true;model.router_aux_loss=0"},
    {"model.router_z_loss=-1", "model.router_z_loss must be a finite number >= 0, got -1",
     "model.router_z_loss=0"},
    {"model.head_dim=-1", "model.head_dim must be >= 0, got -1", "model.head_dim=0"},
    {"model.head_dim=65537",
     "model.head_dim must be at most 65536 (0 = model.n_embd / model.n_head), got 65537",
     "model.head_dim=256"},
    // A set head_dim frees n_embd from being a multiple of n_head.
    {"model.n_embd=130",
     "model.n_embd (130) must be divisible by model.n_head (4), or model.head_dim given",
     "model.n_embd=130;model.head_dim=32"},
    {"model.position=rope;model.head_dim=33",
     "model.position 'rope' needs an even head dimension, got 33 (model.head_dim = 33)",
     "model.position=rope;model.head_dim=34"},
    {"model.rope_theta=0", "model.rope_theta must be positive, got 0", "model.rope_theta=0.5"},
    {"model.dropout=-0.1", "model.dropout must be in [0, 1), got -0.1", "model.dropout=0"},
    {"model.sliding_window=-1", "model.sliding_window must be >= 0, got -1",
     "model.sliding_window=1099511627776"},
    {"model.sliding_window=1099511627777",
     "model.sliding_window must be at most 2^40 (0 attends to every earlier token), got "
     "1099511627777",
     "model.sliding_window=1099511627776"},
    {"model.position=rope;model.rope_scaling.type=linear;model.rope_scaling.factor=0.5",
     "model.rope_scaling.factor must be >= 1 (the new length over the trained one), got 0.5",
     "model.position=rope;model.rope_scaling.type=linear;model.rope_scaling.factor=1"},
    {"model.position=rope;model.rope_scaling.type=yarn;model.rope_scaling.attention_factor=10.5",
     "model.rope_scaling.attention_factor must be at most 10 (it scales every attention logit by "
     "its square; 0 = 0.1 ln factor + 1), got 10.5",
     "model.position=rope;model.rope_scaling.type=yarn;model.rope_scaling.attention_factor=10"},
    {"model.position=rope;model.rope_scaling.type=llama3;model.rope_scaling.high_freq_factor=1",
     "model.rope_scaling.high_freq_factor (1) must exceed model.rope_scaling.low_freq_factor (1) > "
     "0",
     "model.position=rope;model.rope_scaling.type=llama3;model.rope_scaling.high_freq_factor=1.5"},
    // dynamic needs a head dimension > 2; the other types do not.
    {"model.position=rope;model.rope_scaling.type=dynamic;model.n_embd=8",
     "model.rope_scaling.type dynamic needs a head dimension > 2, got 2",
     "model.position=rope;model.rope_scaling.type=linear;model.n_embd=8"},
};

const std::vector<Bound> kTrainBounds = {
    {"train.batch_size=0", "train.batch_size must be positive, got 0", "train.batch_size=1"},
    {"train.seq_len=-1", "train.seq_len must be >= 0, got -1", "train.seq_len=0"},
    {"train.seq_len=65", "train.seq_len (65) must not exceed model.block_size (64)",
     "train.seq_len=64"},
    {"train.total_batch_size=-1", "train.total_batch_size must be >= 0, got -1",
     "train.total_batch_size=0"},
    {"train.total_batch_size=1000",
     "train.total_batch_size (1000) must be a multiple of train.batch_size * sequence length (12 "
     "* 64 = 768)",
     "train.total_batch_size=1536"},
    // Tokens x vocabulary at 2^60 exactly is allowed; the tokens alone at 2^60 are not, and the
    // message names the product past the limit.
    {"train.batch_size=18014398509481984",
     "train.batch_size x model.block_size x model.vocab_size is too large: 18014398509481984 x 64 "
     "x 257 logits per micro-batch exceed 2^60",
     "model.vocab_size=256;train.batch_size=70368744177664"},
    {"train.max_steps=0", "train.max_steps must be positive, got 0", "train.max_steps=1"},
    {"train.seed=-1", "train.seed must be >= 0, got -1", "train.seed=0"},
    {"train.stop_after=-1", "train.stop_after must be >= 0, got -1", "train.stop_after=0"},
    {"train.ema_decay=1", "train.ema_decay must be in [0, 1) (0: no average of the weights), got 1",
     "train.ema_decay=0.999"},
    {"train.ema_decay=-0.5",
     "train.ema_decay must be in [0, 1) (0: no average of the weights), got -0.5",
     "train.ema_decay=0"},
    {"lora.rank=8;checkpoint.init=x;train.ema_decay=0.9",
     "train.ema_decay is for runs that train every weight: with lora.rank > 0 only the adapters "
     "train, and average --ema writes whole models (merge the adapters with build/merge and "
     "average merged checkpoints instead)",
     "lora.rank=8;checkpoint.init=x;train.ema_decay=0"},
    {"train.s2_attn=true;model.n_kv_head=1",
     "train.s2_attn shifts half of the heads: model.n_head (4) and the key/value heads (1) must "
     "be even",
     "train.s2_attn=true;model.n_kv_head=2"},
    {"train.run_name=.", "train.run_name '.' must be a plain directory name (no '/', '.' or '..')",
     "train.run_name=.a"},
    {"train.run_name=..",
     "train.run_name '..' must be a plain directory name (no '/', '.' or '..')",
     "train.run_name=..."},
};

const std::vector<Bound> kOptimBounds = {
    {"optim.name=lomo;optim.clip_value=-1", "optim.clip_value must be >= 0, got -1",
     "optim.name=lomo;optim.clip_value=0"},
    {"optim.name=lomo;optim.loss_scale=0", "optim.loss_scale must be positive, got 0",
     "optim.name=lomo;optim.loss_scale=0.5"},
    {"optim.lr=0;optim.min_lr=0", "optim.lr must be positive, got 0",
     "optim.lr=1e-9;optim.min_lr=0"},
    {"optim.min_lr=0.0011",
     "optim.min_lr (0.0011) must not exceed optim.lr (0.001) for a decaying schedule (cosine)",
     "optim.min_lr=0.001"},
    {"optim.min_lr=-1", "optim.min_lr must be >= 0, got -1", "optim.min_lr=0"},
    {"optim.weight_decay=-0.1", "optim.weight_decay must be >= 0, got -0.1",
     "optim.weight_decay=0"},
    {"optim.beta1=-0.1", "optim.beta1 must be in [0, 1), got -0.1", "optim.beta1=0"},
    {"optim.beta2=-0.1", "optim.beta2 must be in [0, 1), got -0.1", "optim.beta2=0"},
    {"optim.eps=0", "optim.eps must be positive, got 0", "optim.eps=1e-30"},
    {"optim.grad_clip=-1", "optim.grad_clip must be >= 0, got -1", "optim.grad_clip=0"},
};

const std::vector<Bound> kSpikeBounds = {
    {"spike.window=0", "spike.window must be positive, got 0", "spike.window=1"},
    {"spike.threshold=0", "spike.threshold must be positive, got 0", "spike.threshold=0.5"},
    {"spike.rollback_steps=-1", "spike.rollback_steps must be >= 0, got -1",
     "spike.rollback_steps=0"},
    {"spike.skip_batches=-1", "spike.skip_batches must be >= 0, got -1", "spike.skip_batches=0"},
    {"spike.max_rollbacks=-1", "spike.max_rollbacks must be >= 0, got -1",
     "spike.max_rollbacks=0"},
    {"spike.lr_factor=0", "spike.lr_factor must be in (0, 1] (it lowers the LR after a rollback), "
     "got 0",
     "spike.lr_factor=1"},
    {"spike.lr_factor_steps=-1", "spike.lr_factor_steps must be >= 0, got -1",
     "spike.lr_factor_steps=0"},
    // Windows skipped after a rollback x windows a batch stay within 2^60 (12 a batch here; 4 at
    // the bound, 2^58 x 4 = 2^60).
    {"spike.skip_batches=144115188075855872",
     "spike.skip_batches x train.batch_size is too large: 144115188075855872 x 12 windows exceed "
     "2^60",
     "train.batch_size=4;spike.skip_batches=288230376151711744"},
    {"spike.inject_steps=5x", "spike.inject_steps: '5x' is not a step number >= 1 in '5x'",
     "spike.inject_steps=1"},
    {"spike.inject_steps=0", "spike.inject_steps: '0' is not a step number >= 1 in '0'",
     "spike.inject_steps=1,2"},
    // Only the first step past the run is named.
    {"train.max_steps=500;spike.inject_steps=600,700",
     "spike.inject_steps: step 600 is past train.max_steps (500): it would never be injected",
     "train.max_steps=500;spike.inject_steps=499"},
    {"train.max_steps=500;spike.inject_steps=501",
     "spike.inject_steps: step 501 is past train.max_steps (500): it would never be injected",
     "train.max_steps=500;spike.inject_steps=500"},
};

const std::vector<Bound> kOtherBounds = {
    {"data.val=", "data.val must not be empty", "data.val=v.bin"},
    // The byte tokenizer needs no files; gpt2 reads its vocabulary from data.tokenizer_dir.
    {"data.tokenizer=gpt2;model.vocab_size=50257;data.tokenizer_dir=",
     "data.tokenizer_dir must not be empty", "data.tokenizer_dir="},
    {"eval.interval=-1", "eval.interval must be >= 0, got -1", "eval.interval=0"},
    {"eval.tokens=-1", "eval.tokens must be >= 0, got -1", "eval.tokens=0"},
    {"eval.tokens=100",
     "eval.tokens (100) must be a multiple of the sequence length (model.block_size 64): "
     "evaluations score whole windows",
     "eval.tokens=128"},
    {"eval.choices=c.jsonl;eval.interval=0",
     "eval.choices (c.jsonl) is scored at each evaluation, but eval.interval is 0: there are none",
     "eval.choices=c.jsonl;eval.interval=1"},
    {"eval.answers=a.jsonl;eval.interval=0",
     "eval.answers (a.jsonl) is scored at each evaluation, but eval.interval is 0: there are none",
     "eval.answers=a.jsonl;eval.interval=1"},
    {"checkpoint.dir=", "checkpoint.dir must not be empty", "checkpoint.dir=d"},
    {"checkpoint.interval=-1", "checkpoint.interval must be >= 0, got -1", "checkpoint.interval=0"},
    {"checkpoint.keep=1", "checkpoint.keep must be >= 2, got 1", "checkpoint.keep=2"},
    {"checkpoint.milestone_interval=-1", "checkpoint.milestone_interval must be >= 0, got -1",
     "checkpoint.milestone_interval=0"},
    {"lora.rank=8;checkpoint.init=x;lora.alpha=0", "lora.alpha must be positive, got 0",
     "lora.rank=8;checkpoint.init=x;lora.alpha=0.5"},
    {"dist.backend=gloo", "dist.backend must be one of auto, single, mpi, nccl; got 'gloo'",
     "dist.backend=mpi"},
    {"dist.timeout=0", "dist.timeout must be positive, got 0", "dist.timeout=0.5"},
    {"dist.bucket_mb=0", "dist.bucket_mb must be positive, got 0", "dist.bucket_mb=1e-6"},
    // The buckets count whole bytes, at least one and at most 2^40.
    {"dist.bucket_mb=4.76837158203125e-07",
     "dist.bucket_mb must be at least one byte (9.53674e-07 MiB), got 4.76837e-07",
     "dist.bucket_mb=9.5367431640625e-07"},
    {"dist.bucket_mb=1048577", "dist.bucket_mb must be at most 1048576 (1 TiB), got 1.04858e+06",
     "dist.bucket_mb=1048576"},
};

void check_bounds(const std::vector<Bound>& bounds) {
  for (const Bound& b : bounds) {
    EXPECT_EQ(config_problems(with(b.refused)), std::vector<std::string>{b.problem}) << b.refused;
    EXPECT_EQ(config_problems(with(b.accepted)), std::vector<std::string>{}) << b.accepted;
  }
}

TEST(ConfigBounds, model_keys) { check_bounds(kModelBounds); }
TEST(ConfigBounds, train_keys) { check_bounds(kTrainBounds); }
TEST(ConfigBounds, optim_keys) { check_bounds(kOptimBounds); }
TEST(ConfigBounds, spike_keys) { check_bounds(kSpikeBounds); }
TEST(ConfigBounds, eval_checkpoint_lora_and_dist_keys) { check_bounds(kOtherBounds); }

// A value quoted in a problem is cut after 64 characters, with its length said.
TEST(ConfigBounds, a_quoted_value_is_cut_after_64_characters) {
  EXPECT_EQ(config_problems(with("model.norm=" + std::string(64, 'x'))),
            std::vector<std::string>{"model.norm must be one of layernorm, rmsnorm; got '" +
                                     std::string(64, 'x') + "'"});
  EXPECT_EQ(config_problems(with("model.norm=" + std::string(65, 'x'))),
            std::vector<std::string>{"model.norm must be one of layernorm, rmsnorm; got '" +
                                     std::string(64, 'x') + "...' (65 characters)"});
}

// The tokens of a step for a world size: a world below one, or a config never validated whose
// batch holds no tokens, is an error naming the figures, never a division by zero.
TEST(ConfigBounds, tokens_per_step_and_accumulation_refuse_what_would_divide_by_zero) {
  Config cfg;
  for (int64_t world : {0, -2}) {
    const std::string msg = testing::error_of([&] { cfg.tokens_per_step(world); });
    EXPECT_NE(msg.find("tokens_per_step: world size must be positive, got " +
                       std::to_string(world)),
              std::string::npos)
        << msg;
  }
  Config empty = with("train.batch_size=0;train.total_batch_size=768");
  const std::string msg = testing::error_of([&] { empty.grad_accum_steps(2); });
  EXPECT_NE(msg.find("train.total_batch_size (768) must be a multiple of train.batch_size * "
                     "sequence length * world size (0 * 64 * 2 = 0)"),
            std::string::npos)
      << msg;
  EXPECT_EQ(with("train.total_batch_size=3072").grad_accum_steps(2), 2);  // 12 x 64 x 2 = 1536
}

// The step lists' parser throws where no problem string is given (the trainer's use).
TEST(ConfigBounds, a_step_list_without_a_problem_string_throws_naming_the_item) {
  EXPECT_EQ(parse_step_list(" 3, 7 "), (std::vector<int64_t>{3, 7}));
  const std::string msg = testing::error_of([] { parse_step_list("3,seven"); });
  EXPECT_NE(msg.find("'seven' is not a step number >= 1 in '3,seven'"), std::string::npos) << msg;
}

// A key refused outright is reported alone: the rules that would divide by it, multiply it or
// build an attention spec from it wait until it is valid (n_head 0 would divide by zero).
TEST(ConfigBounds, rules_that_assume_a_valid_key_stay_quiet_while_it_is_refused) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"model.position=rope;model.rope_scaling.type=dynamic;model.n_head=0",
       "model.n_head must be positive, got 0"},
      {"train.s2_attn=true;model.n_head=0", "model.n_head must be positive, got 0"},
      {"model.block_size=0;train.seq_len=5", "model.block_size must be positive, got 0"},
      {"model.block_size=0;eval.tokens=100", "model.block_size must be positive, got 0"},
      {"train.max_steps=0;spike.inject_steps=3", "train.max_steps must be positive, got 0"},
      // lora.rank is held to the projections' sizes only once the model's sizes are valid.
      {"lora.rank=8;checkpoint.init=x;model.n_head=0", "model.n_head must be positive, got 0"},
      {"lora.rank=8;checkpoint.init=x;model.n_embd=0", "model.n_embd must be positive, got 0"},
      {"lora.rank=129;checkpoint.init=x;model.n_embd=130",
       "model.n_embd (130) must be divisible by model.n_head (4), or model.head_dim given"},
      {"lora.rank=8;checkpoint.init=x;lora.targets=head;model.tie_embeddings=false;"
       "model.vocab_size=0",
       "model.vocab_size must be positive, got 0"},
      {"train.batch_size=0;train.total_batch_size=1000",
       "train.batch_size must be positive, got 0"},
      {"model.attention=linear",
       "model.attention must be one of softmax, stick_breaking, forgetting; got 'linear'"},
      {"train.device=tpu", "train.device must be one of cpu, cuda; got 'tpu'"},
      {"model.attend_current=true",
       "model.attend_current and model.sb_remainder apply to model.attention stick_breaking only "
       "(got attention 'softmax')"},
      {"model.attention=stick_breaking;model.sliding_window=8",
       "model.sliding_window applies to model.attention softmax only (got attention "
       "'stick_breaking')"},
  };
  for (const auto& [overrides, problem] : cases)
    EXPECT_EQ(config_problems(with(overrides)), std::vector<std::string>{problem}) << overrides;
}

}  // namespace
}  // namespace tessera
