// Config refusals kept apart from test_config.cpp's table: YAML anchors and aliases, refused when
// a file is read (config.cpp; a few hundred bytes of nested aliases would otherwise make reading
// the config take exponential time), a value refused outright reported alone, not with the rules
// that assume a valid one, AdamW's keys under the fused optimizers, blanks around --set values, and
// min_lr above lr, refused only where a schedule decays to it; where a malformed YAML text goes
// wrong (line and column), open quotes anywhere in the tree, and which strings to_yaml quotes.
#include <gtest/gtest.h>

#include <string>

#include "config/config.h"
#include "config/expect_contains.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;
using testing::TempDir;

// An alias shares its node, so nested aliases ("billion laughs": 9 levels of 9 in 600 bytes stand
// for 9^9 scalars) would make every walk over the config exponentially long: refused when read.
TEST(ConfigAnchors, yaml_anchors_and_aliases_are_refused_naming_the_file_and_line) {
  std::string lol = "lol0: &l0 [a, a, a, a, a, a, a, a, a]\n";
  for (int i = 1; i < 10; ++i) {
    lol += "lol" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int j = 0; j < 9; ++j) lol += (j ? ", *l" : "*l") + std::to_string(i - 1);
    lol += "]\n";
  }
  TempDir tmp;
  const std::string laughs = tmp.write("lol.yaml", lol);
  EXPECT_CONTAINS(error_of([&] { load_config(laughs); }),
                  laughs + ": YAML anchors and aliases are not allowed in a config, found an " +
                      "anchor (&name) at line 1");
  const std::string alias = tmp.write("alias.yaml", "model:\n  n_layer: 4\n  n_head: *n\n");
  EXPECT_CONTAINS(error_of([&] { load_config(alias); }), alias + ": malformed YAML at line 3");
  const std::string both = tmp.write("both.yaml", "model:\n  n_layer: &n 4\n  n_head: *n\n");
  EXPECT_CONTAINS(error_of([&] { load_config(both); }),
                  both + ": YAML anchors and aliases are not allowed in a config, found an " +
                      "anchor (&name) at line 2");
  const std::string merge = tmp.write("merge.yaml", "base: &b {n_layer: 2}\nmodel:\n  <<: *b\n");
  EXPECT_CONTAINS(error_of([&] { load_config(merge); }),
                  "YAML anchors and aliases are not allowed");
}

// A negative lora.rank is named alone: the rules for adapters (a base, adamw) do not apply to it.
TEST(ConfigValidation, a_negative_lora_rank_is_reported_without_the_adapter_rules) {
  Config cfg;
  apply_override(cfg, "lora.rank=-1");
  const std::string e = error_of([&] { cfg.validate(); });
  EXPECT_CONTAINS(e, "lora.rank must be >= 0, got -1");
  EXPECT_EQ(e.find("checkpoint.init"), std::string::npos) << e;
}

// An override's value is trimmed as YAML trims a plain scalar: `--set "checkpoint.dir=/x "` is the
// directory /x, as `dir: /x ` is. A quoted YAML value keeps its blanks, and a run name that starts
// or ends with one is refused (a directory name nobody can type back).
TEST(ConfigValidation, override_values_are_trimmed_as_yaml_values_are) {
  Config cfg;
  apply_override(cfg, "checkpoint.dir= /tmp/x ");
  apply_override(cfg, "train.run_name=run\t");
  apply_override(cfg, "optim.name= adalomo");
  EXPECT_EQ(cfg.checkpoint.dir, "/tmp/x");
  EXPECT_EQ(cfg.train.run_name, "run");
  EXPECT_EQ(cfg.optim.name, "adalomo");
  const Config yaml = parse_config("checkpoint:\n  dir: /tmp/x   \n", "plain.yaml");
  EXPECT_EQ(yaml.checkpoint.dir, cfg.checkpoint.dir);
  for (const char* name : {"\" \"", "\"run \"", "\" run\""}) {
    SCOPED_TRACE(name);
    EXPECT_CONTAINS(error_of([&] {
                      parse_config(std::string("train:\n  run_name: ") + name + "\n",
                                   "quoted.yaml");
                    }),
                    "starts or ends with a blank");
  }
}

// AdamW's moments and epsilon mean nothing to LOMO (SGD) or AdaLomo (its own second-moment
// decay). Whether a fused optimizer accumulates depends on the world size: the trainer checks it
// (tests/train/test_fused.cpp), the config alone accepts two ranks' micro-batches.
TEST(ConfigValidation, fused_optimizers_refuse_adamws_keys) {
  Config cfg;
  apply_override(cfg, "optim.name=lomo");
  apply_override(cfg, "train.total_batch_size=1536");  // 12 x 64 on each of 2 ranks
  EXPECT_NO_THROW(cfg.validate());
  apply_override(cfg, "optim.beta1=0.5");
  EXPECT_CONTAINS(error_of([&] { cfg.validate(); }),
                  "optim.beta1 (0.5) applies to adamw only; optim.name 'lomo' would ignore it");
  apply_override(cfg, "optim.name=adalomo");
  apply_override(cfg, "optim.beta1=0.9");
  apply_override(cfg, "optim.eps=0.001");
  apply_override(cfg, "optim.beta2=0.9");
  const std::string msg = error_of([&] { cfg.validate(); });
  EXPECT_CONTAINS(msg, "optim.beta2 (0.9) applies to adamw only; optim.name 'adalomo'");
  EXPECT_CONTAINS(msg, "optim.eps (0.001) applies to adamw only");
  EXPECT_EQ(msg.find("beta1"), std::string::npos) << msg;
  apply_override(cfg, "optim.name=adamw");
  EXPECT_NO_THROW(cfg.validate());
}

// Muon's keys belong to optim.name muon, which keeps AdamW's (its embeddings, head and vectors
// take AdamW's update), ZeRO-1 shards that AdamW state beside Muon's matrices; Muon needs a
// model's own matrices (no LoRA).
TEST(ConfigValidation, muon_keys_apply_to_muon_alone_and_muon_refuses_lora) {
  Config cfg;
  apply_override(cfg, "optim.muon_momentum=0.9");
  EXPECT_CONTAINS(error_of([&] { cfg.validate(); }),
                  "optim.muon_* keys apply to optim.name muon only; optim.name 'adamw' would "
                  "ignore them");
  apply_override(cfg, "optim.name=muon");
  apply_override(cfg, "optim.beta2=0.99");
  apply_override(cfg, "train.total_batch_size=1536");  // accumulates, as AdamW does
  EXPECT_NO_THROW(cfg.validate());
  Config zero = cfg;
  apply_override(zero, "dist.zero=1");
  EXPECT_NO_THROW(zero.validate());
  for (const auto& [set, says] : std::vector<std::pair<std::string, std::string>>{
           {"optim.muon_momentum=1", "optim.muon_momentum must be in [0, 1), got 1"},
           {"optim.muon_ns_steps=0", "optim.muon_ns_steps must be in [1, 100], got 0"},
           {"optim.clip_value=0.5",
            "optim.clip_value (0.5) applies to lomo and adalomo only; "
            "muon clips the global gradient norm"},
           {"lora.rank=8;checkpoint.init=base.h5",
            "lora.rank > 0 trains adapters with optim.name adamw; got 'muon' (Muon "
            "orthogonalises the model's own matrices)"}}) {
    Config bad = cfg;
    std::string rest = set;
    for (size_t cut; (cut = rest.find(';')) != std::string::npos; rest = rest.substr(cut + 1))
      apply_override(bad, rest.substr(0, cut));
    apply_override(bad, rest);
    EXPECT_CONTAINS(error_of([&] { bad.validate(); }), says);
  }
  Config split;  // a key of muon's under adamw
  apply_override(split, "optim.muon_split_qkv=false");
  EXPECT_CONTAINS(error_of([&] { split.validate(); }),
                  "optim.muon_* keys apply to optim.name muon only");
  apply_override(cfg, "optim.name=lomo");
  apply_override(cfg, "optim.beta2=0.95");
  apply_override(cfg, "train.total_batch_size=0");
  EXPECT_CONTAINS(error_of([&] { cfg.validate(); }),
                  "optim.muon_* keys apply to optim.name muon only; optim.name 'lomo'");
}

// min_lr is where a decay ends: a constant schedule ignores it, so a fine-tuning --lr below the
// default min_lr needs no min_lr of its own there; cosine and linear still refuse it.
TEST(ConfigValidation, min_lr_above_lr_is_refused_only_for_a_decaying_schedule) {
  Config cfg;
  apply_override(cfg, "optim.lr=5e-5");
  EXPECT_CONTAINS(error_of([&] { cfg.validate(); }), "optim.min_lr (0.0001) must not exceed");
  apply_override(cfg, "optim.schedule=constant");
  EXPECT_NO_THROW(cfg.validate());
  apply_override(cfg, "optim.schedule=linear");
  EXPECT_CONTAINS(error_of([&] { cfg.validate(); }), "for a decaying schedule (linear)");
}

// eval.tokens counts whole windows: a count that is not a multiple of the sequence length is
// refused naming both; 0 leaves the windows to eval.steps x train.batch_size.
TEST(ConfigValidation, eval_tokens_must_be_whole_windows) {
  Config cfg;
  apply_override(cfg, "model.block_size=64");
  apply_override(cfg, "eval.tokens=100");
  EXPECT_CONTAINS(error_of([&] { cfg.validate(); }),
                  "eval.tokens (100) must be a multiple of the sequence length (model.block_size "
                  "64): evaluations score whole windows");
  apply_override(cfg, "eval.tokens=-64");
  EXPECT_CONTAINS(error_of([&] { cfg.validate(); }), "eval.tokens must be >= 0, got -64");
  apply_override(cfg, "eval.tokens=640");
  EXPECT_NO_THROW(cfg.validate());
  EXPECT_EQ(cfg.eval_windows(), 10);
  apply_override(cfg, "eval.tokens=0");
  EXPECT_EQ(cfg.eval_windows(), cfg.eval.steps * cfg.train.batch_size);
}

// Where a YAML text goes wrong is named by line and column, both counted from 1 (yaml-cpp's marks
// count from 0): the quote left open, the anchor, the token the parser stopped at.
TEST(ConfigYamlErrors, malformed_yaml_names_the_line_and_column_counted_from_one) {
  EXPECT_CONTAINS(error_of([] { parse_config("model:\n  n_layer: \"2\n", "q.yaml"); }),
                  "q.yaml: malformed YAML at line 2, column 12: the value quoted with \" here has "
                  "no closing \"");
  EXPECT_CONTAINS(error_of([] { parse_config("model:\n  n_layer: &n 4\n", "a.yaml"); }),
                  "a.yaml: YAML anchors and aliases are not allowed in a config, found an anchor "
                  "(&name) at line 2, column 12; write the value out");
  EXPECT_CONTAINS(error_of([] { parse_config("model:\n  n_layer: 4\n n_head: [4\n", "m.yaml"); }),
                  "m.yaml: malformed YAML at line 3, column 2: ");
}

// The open quote is looked for in every scalar: an explicit key (`? "...`), an item of a sequence,
// a document that is one scalar starting at the file's first byte.
TEST(ConfigYamlErrors, a_quote_left_open_anywhere_in_the_tree_is_malformed_yaml) {
  for (const char* text :
       {"model:\n  ? \"n_layer\n", "model:\n  n_layer:\n    - \"2\n", "\"model\n"}) {
    SCOPED_TRACE(text);
    EXPECT_CONTAINS(error_of([&] { parse_config(text, "open.yaml"); }), "has no closing");
  }
}

// A string is written plain only where every YAML reader reads it back as that string: one that
// starts with a digit, a dot or a dash could be taken for a number (123, .5, 1e5) or syntax.
TEST(ConfigYaml, strings_that_could_read_as_numbers_are_quoted) {
  for (const char* value : {"123", ".5", "1e5", "-x", "_x", "x1"}) {
    SCOPED_TRACE(value);
    Config c;
    c.checkpoint.dir = value;
    const bool plain = value[0] == '_' || value[0] == 'x';
    EXPECT_CONTAINS(to_yaml(c), std::string("  dir: ") +
                                    (plain ? value : "\"" + std::string(value) + "\"") + "\n");
    EXPECT_EQ(parse_config(to_yaml(c), "round trip").checkpoint.dir, value);
  }
}

// data.chat_template: one of the templates data/chat.h writes, and only with an hf tokenizer (the
// byte and gpt2 vocabularies have no turn markers).
TEST(ConfigValidation, a_chat_template_is_a_known_one_on_an_hf_tokenizer) {
  Config cfg;
  apply_override(cfg, "data.chat_template=vicuna");
  EXPECT_CONTAINS(
      error_of([&] { cfg.validate(); }),
      "data.chat_template must be one of chatml, qwen3, llama3, llama2, mistral; got 'vicuna'");
  apply_override(cfg, "data.chat_template=qwen3");
  EXPECT_CONTAINS(error_of([&] { cfg.validate(); }),
                  "data.chat_template 'qwen3' writes its model's turn markers, which the byte "
                  "tokenizer does not have");
  apply_override(cfg, "data.tokenizer=hf");
  apply_override(cfg, "data.tokenizer_dir=data/tokenizers/qwen3");
  apply_override(cfg, "model.vocab_size=151669");
  EXPECT_NO_THROW(cfg.validate());
  EXPECT_CONTAINS(to_yaml(cfg), "  chat_template: qwen3\n");  // and read back, as every key
}

}  // namespace
}  // namespace tessera
