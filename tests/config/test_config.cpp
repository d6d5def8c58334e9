// Config loading, overrides, validation, YAML round trip and the shared command line. Error tests
// check that the message names what a user needs to find the mistake: file, key path, line, value.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "config/cli.h"
#include "config/config.h"
#include "config/expect_contains.h"
#include "test_util.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using testing::error_of;

// The repository's configs/ folder, found from this file's path (tests run from the build tree).
fs::path configs_dir() {
  return fs::path(__FILE__).parent_path().parent_path().parent_path() / "configs";
}

// Writes YAML files into a fresh directory per test.
class ConfigFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / (std::string("tessera_config_") + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }

  fs::path dir_;
};

// ---- shipped configs ----------------------------------------------------------------------------

TEST(ShippedConfigs, every_config_in_the_repository_loads_and_validates) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(configs_dir())) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    Config c;
    EXPECT_NO_THROW(c = load_config(entry.path().string()));
    EXPECT_EQ(c.train.run_name, entry.path().stem().string());
    ++n;
  }
  EXPECT_GE(n, 3);
}

TEST(ShippedConfigs, tiny_is_the_byte_level_gpt2_style_cpu_run) {
  const Config c = load_config((configs_dir() / "tiny.yaml").string());
  EXPECT_EQ(c.model.n_layer, 4);
  EXPECT_EQ(c.model.n_head, 4);
  EXPECT_EQ(c.model.n_embd, 128);
  EXPECT_EQ(c.model.block_size, 64);
  EXPECT_EQ(c.model.vocab_size, 257);
  EXPECT_EQ(c.model.norm, "layernorm");
  EXPECT_EQ(c.model.mlp, "gelu");
  EXPECT_EQ(c.model.position, "learned");
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_EQ(c.model.dropout, 0.0);
  EXPECT_EQ(c.data.tokenizer, "byte");
  EXPECT_EQ(c.data.train, "data/kjv/byte/train_*.bin");
  EXPECT_EQ(c.data.val, "data/kjv/byte/val_*.bin");
  EXPECT_EQ(c.train.batch_size, 12);
  EXPECT_EQ(c.sequence_length(), 64);
  EXPECT_EQ(c.train.max_steps, 2000);
  EXPECT_EQ(c.train.device, "cpu");
  EXPECT_EQ(c.optim.name, "adamw");
  EXPECT_EQ(c.optim.lr, 1e-3);
  EXPECT_EQ(c.optim.min_lr, 1e-4);
  EXPECT_EQ(c.optim.warmup_steps, 100);
  EXPECT_EQ(c.optim.schedule, "cosine");
  EXPECT_EQ(c.eval.interval, 250);
  EXPECT_EQ(c.checkpoint.interval, 500);
  EXPECT_EQ(c.grad_accum_steps(1), 1);
}

TEST(ShippedConfigs, gpt2_124m_accumulates_to_half_a_million_tokens) {
  const Config c = load_config((configs_dir() / "gpt2-124m.yaml").string());
  EXPECT_EQ(c.model.n_layer, 12);
  EXPECT_EQ(c.model.n_head, 12);
  EXPECT_EQ(c.model.n_embd, 768);
  EXPECT_EQ(c.model.block_size, 1024);
  EXPECT_EQ(c.model.vocab_size, 50257);
  EXPECT_EQ(c.data.tokenizer, "gpt2");
  EXPECT_EQ(c.train.device, "cuda");
  EXPECT_EQ(c.optim.lr, 6e-4);
  EXPECT_EQ(c.optim.min_lr, 6e-5);
  EXPECT_EQ(c.optim.warmup_steps, 700);
  EXPECT_EQ(c.tokens_per_step(1), 524288);
  EXPECT_EQ(c.grad_accum_steps(1) * c.train.batch_size * c.sequence_length(), 524288);
  EXPECT_EQ(c.grad_accum_steps(8) * 8 * c.train.batch_size * c.sequence_length(), 524288);
}

TEST(ShippedConfigs, llama_small_uses_the_llama_architecture) {
  const Config c = load_config((configs_dir() / "llama-small.yaml").string());
  EXPECT_EQ(c.model.norm, "rmsnorm");
  EXPECT_EQ(c.model.mlp, "swiglu");
  EXPECT_EQ(c.model.position, "rope");
  EXPECT_LT(c.model.kv_heads(), c.model.n_head);
  EXPECT_EQ(c.model.n_head % c.model.kv_heads(), 0);
  EXPECT_FALSE(c.model.tie_embeddings);
  EXPECT_FALSE(c.model.bias);
  EXPECT_EQ(c.data.tokenizer, "byte");
  EXPECT_EQ(c.train.device, "cpu");
  EXPECT_EQ(c.model.hidden(), 384);  // round_up(8 * 128 / 3 = 341, 64)
}

// ---- defaults -----------------------------------------------------------------------------------

TEST(ConfigDefaults, match_the_documented_values) {
  const Config c;
  EXPECT_EQ(c.model.n_layer, 4);
  EXPECT_EQ(c.model.n_kv_head, 0);
  EXPECT_EQ(c.model.kv_heads(), 4);
  EXPECT_EQ(c.model.hidden(), 512);
  EXPECT_EQ(c.model.rope_theta, 10000.0);
  EXPECT_EQ(c.model.attention, "softmax");
  EXPECT_EQ(c.model.norm_eps, 1e-5);
  EXPECT_EQ(c.data.tokenizer_dir, "data/tokenizers/gpt2");
  EXPECT_EQ(c.train.batch_size, 12);
  EXPECT_EQ(c.train.seed, 1337);
  EXPECT_FALSE(c.train.recompute);
  EXPECT_EQ(c.optim.beta2, 0.95);
  EXPECT_EQ(c.optim.eps, 1e-8);
  EXPECT_EQ(c.optim.grad_clip, 1.0);
  EXPECT_EQ(c.eval.steps, 20);
  EXPECT_EQ(c.checkpoint.dir, "checkpoints");
  EXPECT_EQ(c.checkpoint.keep, 3);
  EXPECT_EQ(c.checkpoint.resume, "");
  EXPECT_EQ(c.log.interval, 10);
  EXPECT_TRUE(c.log.metrics);
  EXPECT_NO_THROW(c.validate());
  // 0 means "derive it": T from the context, one full batch per step.
  EXPECT_EQ(c.sequence_length(), 64);
  EXPECT_EQ(c.tokens_per_step(2), 12 * 64 * 2);
  EXPECT_EQ(c.grad_accum_steps(2), 1);
}

TEST(ConfigDefaults, swiglu_hidden_follows_the_llama_rule_unless_set) {
  ModelConfig m;
  m.mlp = "swiglu";
  m.n_embd = 768;
  EXPECT_EQ(m.hidden(), 2048);  // 8 * 768 / 3 = 2048 exactly
  m.n_embd = 100;
  EXPECT_EQ(m.hidden(), 320);  // 8 * 100 / 3 = 266, rounded up to a multiple of 64
  m.mlp_hidden = 100;
  EXPECT_EQ(m.hidden(), 100);
}

TEST_F(ConfigFiles, an_empty_file_gives_defaults_named_after_the_file) {
  const Config c = load_config(write("empty-run.yaml", "# nothing but a comment\n"));
  Config expected;
  expected.train.run_name = "empty-run";
  EXPECT_EQ(c, expected);
}

TEST_F(ConfigFiles, keys_not_in_the_file_keep_their_defaults) {
  const Config c = load_config(write("a.yaml", "model:\n  n_layer: 6\ntrain:\n  run_name: mine\n"));
  EXPECT_EQ(c.model.n_layer, 6);
  EXPECT_EQ(c.model.n_head, 4);
  EXPECT_EQ(c.train.run_name, "mine");
  EXPECT_EQ(c.optim, OptimConfig{});
}

// ---- overrides ----------------------------------------------------------------------------------

TEST_F(ConfigFiles, overrides_set_ints_floats_bools_and_strings) {
  const std::string path = write("a.yaml", "model:\n  n_layer: 2\n");
  const Config c = load_config(
      path, {"model.n_layer=6", "optim.lr=3e-4", "model.bias=false", "train.recompute=yes",
             "data.train=x/train_*.bin", "checkpoint.resume=auto", "model.dropout=0.25"});
  EXPECT_EQ(c.model.n_layer, 6);
  EXPECT_EQ(c.optim.lr, 3e-4);
  EXPECT_FALSE(c.model.bias);
  EXPECT_TRUE(c.train.recompute);
  EXPECT_EQ(c.data.train, "x/train_*.bin");
  EXPECT_EQ(c.checkpoint.resume, "auto");
  EXPECT_EQ(c.model.dropout, 0.25);
}

TEST_F(ConfigFiles, the_last_override_of_a_key_wins) {
  const Config c = load_config(write("a.yaml", ""), {"train.max_steps=5", "train.max_steps=7"});
  EXPECT_EQ(c.train.max_steps, 7);
}

TEST_F(ConfigFiles, a_string_override_keeps_its_value_verbatim) {
  // Commas, '=' and spaces are part of the value; an empty value is the empty string.
  const Config c = load_config(write("a.yaml", ""), {"data.val=a,b=c d", "checkpoint.init="});
  EXPECT_EQ(c.data.val, "a,b=c d");
  EXPECT_EQ(c.checkpoint.init, "");
}

TEST_F(ConfigFiles, an_override_of_an_unknown_key_names_the_override_and_suggests) {
  const std::string path = write("a.yaml", "");
  const std::string e = error_of([&] { load_config(path, {"model.n_layers=4"}); });
  EXPECT_CONTAINS(e, "override 'model.n_layers=4'");
  EXPECT_CONTAINS(e, "unknown key 'model.n_layers'");
  EXPECT_CONTAINS(e, "did you mean 'model.n_layer'?");
  // A misspelt section and a key in the wrong section are caught the same way.
  EXPECT_CONTAINS(error_of([&] { load_config(path, {"optimizer.lr=1"}); }),
                  "did you mean 'optim.lr'?");
  EXPECT_CONTAINS(error_of([&] { load_config(path, {"model.lr=1"}); }), "did you mean 'optim.lr'?");
  EXPECT_CONTAINS(error_of([&] { load_config(path, {"model=1"}); }), "'model' is a section");
}

TEST_F(ConfigFiles, an_override_with_a_bad_value_names_key_type_and_value) {
  const std::string path = write("a.yaml", "");
  std::string e = error_of([&] { load_config(path, {"optim.lr=fast"}); });
  EXPECT_CONTAINS(e, "override 'optim.lr=fast': optim.lr: expected a number, got 'fast'");
  e = error_of([&] { load_config(path, {"model.bias=maybe"}); });
  EXPECT_CONTAINS(e, "model.bias: expected a boolean");
  e = error_of([&] { load_config(path, {"train.max_steps"}); });
  EXPECT_CONTAINS(e, "override 'train.max_steps': expected section.key=value");
}

// ---- file errors --------------------------------------------------------------------------------

TEST_F(ConfigFiles, an_unknown_key_names_file_key_path_line_and_suggestion) {
  const std::string path = write("x.yaml", "model:\n  n_head: 4\n  n_layers: 4\n");
  const std::string e = error_of([&] { load_config(path); });
  EXPECT_CONTAINS(e, path + ": unknown key 'model.n_layers' (did you mean 'model.n_layer'?)");
  EXPECT_CONTAINS(e, "line 3");
}

TEST_F(ConfigFiles, an_unknown_section_is_an_error_with_suggestion) {
  const std::string path = write("x.yaml", "optimizer:\n  lr: 0.1\n");
  EXPECT_CONTAINS(error_of([&] { load_config(path); }),
                  path + ": unknown key 'optimizer' (did you mean 'optim'?)");
  // A key written at the top level instead of inside its section.
  const std::string flat = write("flat.yaml", "n_layer: 4\n");
  EXPECT_CONTAINS(error_of([&] { load_config(flat); }),
                  "unknown key 'n_layer' (did you mean 'model.n_layer'?)");
}

TEST_F(ConfigFiles, an_unknown_key_far_from_every_name_gets_no_guess) {
  const std::string path = write("x.yaml", "train:\n  zzzzzz: 1\n");
  const std::string e = error_of([&] { load_config(path); });
  EXPECT_CONTAINS(e, "unknown key 'train.zzzzzz'");
  EXPECT_EQ(e.find("did you mean"), std::string::npos) << e;
}

TEST_F(ConfigFiles, a_wrong_type_names_key_file_expected_type_and_value) {
  const std::string path = write("x.yaml", "model:\n  n_layer: four\n");
  std::string e = error_of([&] { load_config(path); });
  EXPECT_CONTAINS(e, path + ": model.n_layer: expected an integer, got 'four' (line 2)");
  // A fraction is not an integer, even a whole one: 4.0 layers is a typo for something.
  e = error_of([&] { load_config(write("y.yaml", "train:\n  batch_size: 4.0\n")); });
  EXPECT_CONTAINS(e, "train.batch_size: expected an integer, got '4.0'");
  e = error_of([&] { load_config(write("z.yaml", "optim:\n  lr: [1, 2]\n")); });
  EXPECT_CONTAINS(e, "optim.lr: expected a number, got a list");
  e = error_of([&] { load_config(write("w.yaml", "optim:\n  lr: .inf\n")); });
  EXPECT_CONTAINS(e, "optim.lr: expected a number, got '.inf'");
  e = error_of([&] { load_config(write("v.yaml", "model: 4\n")); });
  EXPECT_CONTAINS(e, "model: expected a mapping of keys, got a scalar '4'");
}

TEST_F(ConfigFiles, an_empty_value_for_a_string_says_how_to_write_one) {
  const std::string path = write("x.yaml", "checkpoint:\n  resume:\n");
  const std::string e = error_of([&] { load_config(path); });
  EXPECT_CONTAINS(e, "checkpoint.resume: expected a string, got nothing");
  EXPECT_CONTAINS(e, "write \"\"");
  EXPECT_EQ(load_config(write("y.yaml", "checkpoint:\n  resume: \"\"\n")).checkpoint.resume, "");
}

TEST_F(ConfigFiles, a_repeated_key_is_an_error_not_a_silent_choice) {
  const std::string path = write("x.yaml", "model:\n  n_layer: 4\n  n_layer: 6\n");
  EXPECT_CONTAINS(error_of([&] { load_config(path); }), "duplicate key 'model.n_layer'");
}

TEST_F(ConfigFiles, malformed_yaml_names_the_file_and_line) {
  const std::string path = write("bad.yaml", "model:\n  n_layer: 4\n n_head: [4\n");
  const std::string e = error_of([&] { load_config(path); });
  EXPECT_CONTAINS(e, path + ": malformed YAML at line 3");
}

// yaml-cpp reads an unclosed quote to the end of the file as if it closed there, with a space
// for the last line break: the directory "/tmp/x/ckpt " or a silent n_layer 2.
TEST_F(ConfigFiles, a_quote_left_open_at_the_end_of_the_file_is_malformed_yaml) {
  for (const char* text :
       {"checkpoint:\n  dir: \"/tmp/x/ckpt\n", "model:\n  n_layer: \"2\n",
        "model:\n  norm: 'rmsnorm\n", "model:\n  norm: !!str \"rmsnorm\n",
        "data:\n  train: \"a\\\"\n", "data:\n  train: 'it''s\n", "model:\n  \"n_layer\n"}) {
    SCOPED_TRACE(text);
    const std::string path = write("open.yaml", text);
    const std::string e = error_of([&] { load_config(path); });
    EXPECT_CONTAINS(e, path + ": malformed YAML at line 2");
    EXPECT_CONTAINS(e, "has no closing");
  }
  // Closed quotes, with escaped quotes inside and across lines, read as before.
  const Config c = load_config(write("closed.yaml",
                                     "data:\n  train: \"a\\\"b\"\n  val: 'it''s'\n"
                                     "checkpoint:\n  dir: \"two\n    lines\"\n"));
  EXPECT_EQ(c.data.train, "a\"b");
  EXPECT_EQ(c.data.val, "it's");
  EXPECT_EQ(c.checkpoint.dir, "two lines");
  // A byte-order mark does not shift where a quote is looked for.
  EXPECT_EQ(load_config(write("bom.yaml",
                              "\xef\xbb\xbf"
                              "checkpoint:\n  dir: \"x\"\n"))
                .checkpoint.dir,
            "x");
  EXPECT_CONTAINS(error_of([&] {
                    load_config(write("bom2.yaml",
                                      "\xef\xbb\xbf"
                                      "checkpoint:\n  dir: \"x\n"));
                  }),
                  "has no closing");
}

TEST_F(ConfigFiles, a_config_file_must_be_a_small_text_file) {
  EXPECT_CONTAINS(error_of([] { load_config("/dev/zero"); }), "/dev/zero: is not a regular file");
  const std::string big = write("big.yaml", "# " + std::string(size_t(1) << 20, 'x') + "\n");
  EXPECT_CONTAINS(error_of([&] { load_config(big); }), big + ": is larger than 1 MiB");
  // yaml-cpp would read up to the NUL and judge the file by what came before it.
  const std::string nul =
      write("nul.yaml", std::string("model:\n  n_layer: 2\n") + '\0' + "binary");
  EXPECT_CONTAINS(error_of([&] { load_config(nul); }), nul + ": holds a NUL byte (line 3)");
}

TEST_F(ConfigFiles, a_missing_file_is_named) {
  const std::string path = (dir_ / "nope.yaml").string();
  EXPECT_CONTAINS(error_of([&] { load_config(path); }), path + ": no such config file");
}

TEST_F(ConfigFiles, a_second_yaml_document_is_an_error) {
  const std::string path = write("x.yaml", "model:\n  n_layer: 4\n---\nmodel:\n  n_layer: 6\n");
  EXPECT_CONTAINS(error_of([&] { load_config(path); }), "holds 2 YAML documents");
}

// ---- validation ---------------------------------------------------------------------------------

TEST_F(ConfigFiles, n_embd_not_divisible_by_n_head_names_both_keys) {
  const std::string path = write("x.yaml", "model:\n  n_embd: 100\n  n_head: 3\n");
  const std::string e = error_of([&] { load_config(path); });
  EXPECT_CONTAINS(e, path + ": invalid config");
  EXPECT_CONTAINS(e, "model.n_embd (100) must be divisible by model.n_head (3)");
}

TEST(ConfigValidation, each_rule_names_its_key) {
  struct Case {
    std::string override;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"model.n_layer=0", "model.n_layer must be positive, got 0"},
      {"model.n_kv_head=3", "model.n_head (4) must be divisible by model.n_kv_head (3)"},
      {"model.norm=batchnorm", "model.norm must be one of layernorm, rmsnorm; got 'batchnorm'"},
      {"model.mlp=relu", "model.mlp must be one of gelu, swiglu"},
      {"model.position=sinusoidal", "model.position must be one of learned, rope, alibi, none"},
      {"model.attention=linear",
       "model.attention must be one of softmax, stick_breaking, forgetting"},
      {"model.sb_remainder=first", "model.sb_remainder must be one of none, current"},
      {"model.attend_current=true", "apply to model.attention stick_breaking only"},
      {"train.s2_attn=true;model.block_size=60",
       "train.s2_attn needs a sequence length divisible by 8"},
      {"train.s2_attn=true;model.n_head=3;model.n_embd=96",
       "model.n_head (3) and the key/value heads (3) must be even"},
      {"model.dropout=1", "model.dropout must be in [0, 1), got 1"},
      {"model.norm_eps=0", "model.norm_eps must be positive"},
      {"data.tokenizer=sentencepiece", "data.tokenizer must be one of byte, gpt2, hf"},
      {"data.tokenizer=hf;data.tokenizer_dir=", "data.tokenizer_dir must not be empty"},
      {"data.train=", "data.train must not be empty"},
      {"data.tokenizer=gpt2", "model.vocab_size (257) is smaller than the gpt2 tokenizer's 50257"},
      {"train.batch_size=-1", "train.batch_size must be positive, got -1"},
      {"train.seq_len=65", "train.seq_len (65) must not exceed model.block_size (64)"},
      {"train.total_batch_size=1000", "train.total_batch_size (1000) must be a multiple of"},
      {"train.device=tpu", "train.device must be one of cpu, cuda; got 'tpu'"},
      {"train.run_name=a/b", "train.run_name 'a/b' must be a plain directory name"},
      {"train.run_name=a\nb", "train.run_name 'a\\nb' holds a control character"},
      {"train.run_name=-x", "train.run_name '-x' starts with '-'"},
      // Products of sizes are checked before they are computed, naming the keys multiplied.
      {"train.batch_size=144115188075855872",
       "train.batch_size x model.block_size is too large: 144115188075855872 x 64 tokens"},
      {"train.batch_size=9223372036854775807", "train.batch_size x model.block_size is too large"},
      {"model.position=rope;model.block_size=4611686018427387904;train.batch_size=4",
       "train.batch_size x model.block_size is too large: 4 x 4611686018427387904 tokens"},
      {"model.block_size=4096;train.seq_len=4096;train.batch_size=1099511627776",
       "train.batch_size x train.seq_len x model.vocab_size is too large: 1099511627776 x 4096 "
       "x 257 logits"},
      {"spike.skip_batches=9223372036854775807",
       "spike.skip_batches x train.batch_size is too large"},
      {"dist.bucket_mb=1e300", "dist.bucket_mb must be at most 1048576"},
      {"dist.bucket_mb=1e-9", "dist.bucket_mb must be at least one byte"},
      {"optim.min_lr=0.01",
       "optim.min_lr (0.01) must not exceed optim.lr (0.001) for a decaying "
       "schedule (cosine)"},
      {"optim.decay_steps=-1", "optim.decay_steps must be >= 0, got -1"},
      {"optim.beta1=1", "optim.beta1 must be in [0, 1), got 1"},
      {"optim.beta2=1", "optim.beta2 must be in [0, 1)"},
      {"optim.schedule=step", "optim.schedule must be one of cosine, linear, constant, wsd"},
      {"optim.warmup_steps=-5", "optim.warmup_steps must be >= 0, got -5"},
      {"optim.schedule=wsd;optim.cooldown_steps=-1", "optim.cooldown_steps must be >= 0, got -1"},
      {"optim.cooldown_steps=400", "optim.cooldown_steps (400) applies to schedule wsd only"},
      {"optim.schedule=wsd;optim.cooldown_shape=exp",
       "optim.cooldown_shape must be one of sqrt, linear, cosine"},
      {"optim.cooldown_shape=linear", "optim.cooldown_shape (linear) applies to schedule wsd only"},
      {"eval.steps=0", "eval.steps must be positive"},
      {"checkpoint.keep=1", "checkpoint.keep must be >= 2"},
      {"spike.inject_steps=3,x", "spike.inject_steps: 'x' is not a step number"},
      {"spike.inject_kind=melt", "spike.inject_kind must be one of corrupt, scale, nan"},
      {"spike.inject_scale=-1", "spike.inject_scale must be positive, got -1"},
      {"spike.lr_factor=2", "spike.lr_factor must be in (0, 1]"},
      {"spike.inject_rank=-2",
       "spike.inject_rank must be -1 (every micro-batch) or a rank, got -2"},
      {"dist.zero=2", "dist.zero must be 0 or 1, got 2"},
      {"train.max_steps=500;spike.inject_steps=300,700",
       "spike.inject_steps: step 700 is past train.max_steps (500)"},
      {"optim.clip_value=0.5", "optim.clip_value (0.5) applies to lomo and adalomo only"},
      {"optim.loss_scale=1024", "optim.loss_scale (1024) applies to lomo and adalomo only"},
      // Sizes whose weights no host holds: named before the first layer is allocated.
      {"model.n_layer=4294967300", "for their f32 weights alone, more than this host's"},
      {"model.norm=" + std::string(300, 'x'),
       "got '" + std::string(64, 'x') + "...' (300 characters)"},
      {"optim.name=sgd", "optim.name must be one of adamw, muon, lomo, adalomo"},
      {"log.interval=0", "log.interval must be positive"},
      {"optim.name=lomo;dist.zero=1",
       "dist.zero 1 shards AdamW's state; optim.name 'lomo' has none to shard"},
      {"dist.init=tcp://10.0.0.1:29500",
       "dist.init must be file:///path/to/a/shared/dir, got 'tcp://10.0.0.1:29500'"},
      {"dist.init=/shared/dir",
       "dist.init must be file:///path/to/a/shared/dir, got '/shared/dir'"},
      // model.rope_scaling: each type's own settings (nn/rope_scaling.h has the formulas).
      {"model.position=rope;model.rope_scaling.type=llama3;model.rope_scaling.low_freq_factor=4;"
       "model.rope_scaling.high_freq_factor=2",
       "model.rope_scaling.high_freq_factor (2) must exceed model.rope_scaling.low_freq_factor (4) "
       "> 0"},
      {"model.position=rope;model.rope_scaling.type=llama3;model.rope_scaling.low_freq_factor=0",
       "model.rope_scaling.high_freq_factor (4) must exceed model.rope_scaling.low_freq_factor "
       "(0)"},
      {"model.position=rope;model.rope_scaling.type=dynamic;model.n_head=4;model.n_embd=8",
       "model.rope_scaling.type dynamic needs a head dimension > 2, got 2"},
      {"model.position=rope;model.rope_scaling.type=linear;"
       "model.rope_scaling.original_max_position=-1",
       "model.rope_scaling.original_max_position must be >= 0, got -1"},
      {"model.position=rope;model.rope_scaling.type=yarn;model.rope_scaling.beta_fast=1",
       "model.rope_scaling.beta_fast (1) must exceed model.rope_scaling.beta_slow (1) > 0"},
      {"model.position=rope;model.rope_scaling.type=yarn;model.rope_scaling.beta_slow=0",
       "model.rope_scaling.beta_fast (32) must exceed model.rope_scaling.beta_slow (0) > 0"},
      {"model.position=rope;model.rope_scaling.type=yarn;model.rope_scaling.attention_factor=-0.5",
       "model.rope_scaling.attention_factor must be >= 0, got -0.5"},
      // Its square scales every logit: 1e20 made the first loss NaN ("lower optim.lr").
      {"model.position=rope;model.rope_scaling.type=yarn;model.rope_scaling.attention_factor=1e20",
       "model.rope_scaling.attention_factor must be at most 10"},
      // The kernels add a tile to the window: 2^63 - 1 overflowed (UBSan).
      {"model.sliding_window=9223372036854775807", "model.sliding_window must be at most 2^40"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.override);
    Config cfg;
    std::stringstream overrides(c.override);  // ';' separates several
    for (std::string o; std::getline(overrides, o, ';');) apply_override(cfg, o);
    const std::string e = error_of([&] { cfg.validate(); });
    EXPECT_CONTAINS(e, c.expected);
    if (c.expected.find("too large") != std::string::npos) {  // no key the case left alone
      EXPECT_EQ(e.find("total_batch_size"), std::string::npos) << e;
    }
  }
}

TEST(ConfigValidation, lora_rules_name_their_keys) {
  struct Case {
    std::vector<std::string> overrides;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{"lora.quantize=nf4"}, "lora.quantize 'nf4' needs lora.rank > 0"},
      {{"lora.rank=8"}, "lora.rank > 0 needs checkpoint.init"},
      {{"lora.rank=8", "checkpoint.init=x", "lora.targets=q,qq"}, "unknown projection 'qq'"},
      {{"lora.rank=8", "checkpoint.init=x", "lora.targets=gate"}, "'gate' needs model.mlp swiglu"},
      {{"lora.rank=8", "checkpoint.init=x", "lora.targets=head"},
       "'head' needs model.tie_embeddings"},
      {{"lora.rank=8", "checkpoint.init=x", "optim.name=lomo"}, "with optim.name adamw"},
      {{"lora.rank=8", "checkpoint.init=x", "lora.dropout=1"}, "lora.dropout must be in [0, 1)"},
      {{"lora.rank=8", "checkpoint.init=x", "lora.quantize=int4"}, "lora.quantize must be one of"},
      // Without a rank the adapters' settings would change nothing: a full fine-tune would run.
      {{"lora.alpha=64"}, "lora.alpha: 64 vs 16 (the default): that key is set but lora.rank is 0"},
      {{"lora.targets=all"},
       "lora.targets: all vs q,v (the default): that key is set but "
       "lora.rank is 0"},
      {{"lora.dropout=0.5"}, "lora.dropout: 0.5 vs 0.05 (the default)"},
      {{"lora.rslora=true"}, "lora.rslora: true vs false (the default)"},
      // A rank above min(in, out) of a projection: its update's rank cannot exceed that.
      {{"lora.rank=200", "checkpoint.init=x"},
       "lora.rank (200) exceeds min(in, out) = 128 of the adapted projection q (128 x 128)"},
      {{"lora.rank=100000", "checkpoint.init=x", "lora.targets=all"}, "lora.rank (100000) exceeds"},
      {{"lora.rank=64", "checkpoint.init=x", "lora.targets=q,k", "model.n_kv_head=1"},
       "exceeds min(in, out) = 32 of the adapted projection k (128 x 32)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.expected);
    Config cfg;
    for (const auto& o : c.overrides) apply_override(cfg, o);
    EXPECT_CONTAINS(error_of([&] { cfg.validate(); }), c.expected);
  }
  Config ok;
  for (const char* o : {"lora.rank=8", "checkpoint.init=x", "lora.targets=q, v,o", "lora.quantize=nf4-dq"})
    apply_override(ok, o);
  EXPECT_NO_THROW(ok.validate());
  apply_override(ok, "lora.rank=128");  // full rank: min(in, out) of every projection
  EXPECT_NO_THROW(ok.validate());
}

// A checkpoint's config passed the rules of the tessera that wrote it: a rule about starting a run
// added since must not make its weights unreadable; its model is still checked.
TEST(ConfigValidation, a_stored_config_is_checked_for_its_model_only) {
  Config old;
  old.lora.alpha = 64;          // a full fine-tune that set an adapter key without a rank
  old.train.run_name = "-run";  // a name now refused for new runs
  const std::string text = to_yaml(old);
  EXPECT_CONTAINS(error_of([&] { parse_config(text, "ck.h5"); }), "lora.alpha: 64 vs 16");
  EXPECT_EQ(parse_stored_config(text, "ck.h5"), old);
  old.model.n_head = 3;
  EXPECT_CONTAINS(error_of([&] { parse_stored_config(to_yaml(old), "ck.h5"); }),
                  "ck.h5: invalid model: model.n_embd (128) must be divisible by model.n_head (3)");
}

TEST(ConfigValidation, rope_needs_an_even_head_dimension) {
  Config c;
  c.model.position = "rope";
  c.model.n_embd = 30;
  c.model.n_head = 2;
  EXPECT_CONTAINS(error_of([&] { c.validate(); }),
                  "model.position 'rope' needs an even head dimension, got 15 (model.n_embd / "
                  "model.n_head = 30 / 2)");
  c.model.position = "learned";
  EXPECT_NO_THROW(c.validate());
}

TEST(ConfigValidation, every_problem_is_reported_at_once) {
  Config c;
  c.model.n_layer = 0;
  c.optim.lr = -1;
  c.train.device = "gpu";
  EXPECT_EQ(config_problems(c).size(), 4u);  // n_layer, lr, min_lr > lr, device
  const std::string e = error_of([&] { c.validate(); });
  EXPECT_CONTAINS(e, "model.n_layer");
  EXPECT_CONTAINS(e, "optim.lr");
  EXPECT_CONTAINS(e, "train.device");
}

TEST(ConfigValidation, grad_accum_steps_checks_the_world_size) {
  Config c;
  c.train.total_batch_size = 12 * 64 * 4;
  EXPECT_EQ(c.grad_accum_steps(1), 4);
  EXPECT_EQ(c.grad_accum_steps(2), 2);
  EXPECT_EQ(c.grad_accum_steps(4), 1);
  EXPECT_CONTAINS(error_of([&] { c.grad_accum_steps(3); }),
                  "train.total_batch_size (3072) must be a multiple of train.batch_size * "
                  "sequence length * world size (12 * 64 * 3 = 2304)");
  // Validation bounds B x T; the world size comes at run time.
  c.train.total_batch_size = 0;
  c.train.batch_size = int64_t(1) << 40;
  EXPECT_NO_THROW(c.validate());
  EXPECT_CONTAINS(error_of([&] { c.tokens_per_step(int64_t(1) << 20); }),
                  "train.batch_size x model.block_size x world size is too large: 1099511627776 x "
                  "64 x 1048576 overflows");
}

// ---- YAML round trip ----------------------------------------------------------------------------

Config unusual_config() {
  Config c;
  c.model.n_layer = 7;
  c.model.n_kv_head = 2;
  c.model.norm = "rmsnorm";
  c.model.mlp = "swiglu";
  c.model.position = "rope";
  c.model.rope_theta = 500000;
  c.model.tie_embeddings = false;
  c.model.dropout = 0.1;
  c.model.norm_eps = 1e-6;
  c.data.train = "dir with space/it's \"quoted\"\\train_*.bin";
  c.data.val = "#not a comment: {x}";
  c.data.tokenizer_dir = "tab\there\nnewline\x01 \u00e9";
  c.train.run_name = "";  // the empty string must survive, not become null
  c.train.seed = 123456789012345;
  c.optim.lr = 0.1 + 0.2;  // not exactly 0.3: needs all 17 digits
  c.optim.min_lr = 1.0 / 30.0;
  c.optim.eps = 1e-12;
  c.checkpoint.resume = "yes";  // a string that looks like a bool stays a string
  c.checkpoint.dir = "123";
  c.checkpoint.init = "NULL";  // must not come back as YAML's null
  c.log.metrics = false;
  return c;
}

TEST(ConfigYaml, to_yaml_reads_back_to_an_equal_config) {
  const Config c = unusual_config();
  const std::string text = to_yaml(c);
  EXPECT_EQ(parse_config(text, "round trip"), c) << text;
  EXPECT_EQ(parse_config(to_yaml(Config{}), "defaults"), Config{});
}

TEST(ConfigYaml, to_yaml_writes_every_key_once_in_schema_order) {
  const std::string text = to_yaml(Config{});
  size_t last = 0;
  for (const auto& key : config_keys()) {
    const std::string leaf = "\n  " + key.substr(key.find('.') + 1) + ": ";
    const std::string section = key.substr(0, key.find('.')) + ":\n";
    const size_t s = text.find(section);
    ASSERT_NE(s, std::string::npos) << section;
    const size_t at = text.find(leaf, s);
    ASSERT_NE(at, std::string::npos) << key;
    EXPECT_GE(at, last) << key;
    last = at;
  }
  const auto keys = config_keys();
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size());
  EXPECT_CONTAINS(text, "  eps: 1.0e-08\n");  // a float to any YAML reader
  EXPECT_CONTAINS(text, "  rope_theta: 10000.0\n");
  EXPECT_CONTAINS(text, "  train: data/kjv/byte/train_*.bin\n");  // names and paths plain
  EXPECT_CONTAINS(text, "  resume: \"\"\n");
  EXPECT_CONTAINS(to_yaml(unusual_config()), "  resume: \"yes\"\n");
}

TEST_F(ConfigFiles, a_written_config_loads_back_from_a_file) {
  for (const auto& name : {"tiny.yaml", "gpt2-124m.yaml", "llama-small.yaml"}) {
    SCOPED_TRACE(name);
    const Config c = load_config((configs_dir() / name).string());
    EXPECT_EQ(load_config(write("resolved.yaml", to_yaml(c))), c);
  }
}

// ---- command line -------------------------------------------------------------------------------

CommandLine parse(std::vector<std::string> args, cxxopts::Options* options = nullptr,
                  bool config_required = true) {
  cxxopts::Options local("train", "test");
  args.insert(args.begin(), "train");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_command_line(int(argv.size()), argv.data(), options ? *options : local,
                            config_required);
}

TEST_F(ConfigFiles, command_line_applies_repeated_set_and_shorthands_in_order) {
  const std::string path = write("run.yaml", "model:\n  n_layer: 2\n");
  const CommandLine cl = parse({"--config",
                                path,
                                "--set",
                                "model.n_layer=6",
                                "--set=optim.min_lr=1e-5",
                                "--max-steps",
                                "50",
                                "--lr",
                                "2e-4",
                                "--device",
                                "cpu",
                                "--batch-size=4",
                                "--resume",
                                "auto",
                                "--init",
                                "ckpt/base",
                                "--run-name",
                                "exp1",
                                "--set",
                                "train.max_steps=60"});
  EXPECT_EQ(cl.config_path, path);
  EXPECT_EQ(cl.config.model.n_layer, 6);
  EXPECT_EQ(cl.config.optim.min_lr, 1e-5);
  EXPECT_EQ(cl.config.train.max_steps, 60);  // the later --set wins over --max-steps
  EXPECT_EQ(cl.config.optim.lr, 2e-4);
  EXPECT_EQ(cl.config.train.device, "cpu");
  EXPECT_EQ(cl.config.train.batch_size, 4);
  EXPECT_EQ(cl.config.checkpoint.resume, "auto");
  EXPECT_EQ(cl.config.checkpoint.init, "ckpt/base");
  EXPECT_EQ(cl.config.train.run_name, "exp1");
  const std::vector<std::string> expected = {"model.n_layer=6",        "optim.min_lr=1e-5",
                                             "train.max_steps=50",     "optim.lr=2e-4",
                                             "train.device=cpu",       "train.batch_size=4",
                                             "checkpoint.resume=auto", "checkpoint.init=ckpt/base",
                                             "train.run_name=exp1",    "train.max_steps=60"};
  EXPECT_EQ(cl.overrides, expected);
}

TEST_F(ConfigFiles, command_line_lora_flags_fill_the_lora_section) {
  const std::string path = write("ft.yaml", "checkpoint:\n  init: ckpt/base\n");
  const CommandLine cl = parse({"--config", path, "--lora.rank", "16", "--lora.alpha=32",
                                "--lora.dropout", "0.1", "--lora.targets", "q,k,v,o",
                                "--quantize", "nf4-dq"});
  EXPECT_EQ(cl.config.lora.rank, 16);
  EXPECT_EQ(cl.config.lora.alpha, 32);
  EXPECT_EQ(cl.config.lora.dropout, 0.1);
  EXPECT_EQ(cl.config.lora.targets, "q,k,v,o");  // a comma inside a value stays in it
  EXPECT_EQ(cl.config.lora.quantize, "nf4-dq");
  EXPECT_CONTAINS(error_of([&] { parse({"--config", path, "--lora.rank", "x"}); }),
                  "lora.rank: expected an integer, got 'x'");
}

TEST_F(ConfigFiles, command_line_run_name_defaults_to_the_config_stem) {
  EXPECT_EQ(parse({"--config", write("my-run.yaml", "")}).config.train.run_name, "my-run");
}

TEST_F(ConfigFiles, command_line_returns_the_binarys_own_flags) {
  cxxopts::Options options("eval", "test");
  options.add_options()("contexts", "context lengths", cxxopts::value<std::string>())("dry-run",
                                                                                      "do nothing");
  const CommandLine cl =
      parse({"--config", write("a.yaml", ""), "--contexts", "256,512", "--dry-run"}, &options);
  EXPECT_EQ(cl.args["contexts"].as<std::string>(), "256,512");
  EXPECT_EQ(cl.args.count("dry-run"), 1u);
}

TEST_F(ConfigFiles, command_line_rejects_unknown_flags_and_stray_arguments) {
  const std::string path = write("a.yaml", "");
  EXPECT_CONTAINS(error_of([&] { parse({"--config", path, "--max-step", "5"}); }), "command line:");
  EXPECT_CONTAINS(error_of([&] {
                    parse({"--config", path, "extra"});
                  }),
                  "command line: unexpected argument 'extra'");
  EXPECT_CONTAINS(error_of([&] {
                    parse({"--config", path, "--config", path});
                  }),
                  "--config given twice");
  EXPECT_CONTAINS(error_of([&] {
                    parse({"--config", path, "--max-steps", "5", "--max-steps", "6"});
                  }),
                  "command line: --max-steps given twice ('5' and '6')");
}

TEST_F(ConfigFiles, command_line_checks_shorthand_values_like_any_override) {
  const std::string path = write("a.yaml", "");
  EXPECT_CONTAINS(error_of([&] {
                    parse({"--config", path, "--max-steps", "many"});
                  }),
                  "train.max_steps: expected an integer, got 'many'");
  EXPECT_CONTAINS(error_of([&] {
                    parse({"--config", path, "--device", "tpu"});
                  }),
                  "train.device must be one of cpu, cuda");
  EXPECT_CONTAINS(error_of([&] {
                    parse({"--config", path, "--set", "model.n_layerz=1"});
                  }),
                  "did you mean 'model.n_layer'?");
}

TEST(CommandLine, config_is_required_unless_the_binary_says_otherwise) {
  EXPECT_CONTAINS(error_of([] { parse({"--max-steps", "5"}); }), "--config FILE is required");
  const CommandLine cl = parse({"--max-steps", "5"}, nullptr, /*config_required=*/false);
  EXPECT_TRUE(cl.config_path.empty());
  EXPECT_EQ(cl.config.train.max_steps, 5);
  EXPECT_EQ(cl.config.model, ModelConfig{});
  EXPECT_CONTAINS(error_of([] {
                    parse({"--lr", "-1"}, nullptr, false);
                  }),
                  "command line with overrides 'optim.lr=-1': invalid config");
}

TEST(CommandLine, help_stops_before_loading_anything) {
  cxxopts::Options options("train", "test");
  const CommandLine cl = parse({"--help", "--config", "does/not/exist.yaml"}, &options);
  EXPECT_TRUE(cl.help);
  EXPECT_CONTAINS(options.help(), "--set KEY=VALUE");
  EXPECT_CONTAINS(options.help(), "--resume");
}

}  // namespace
}  // namespace tessera
