// Multiple-choice evaluation (train/choices.h, eval --choices): HellaSwag's JSON Lines read
// strictly where it matters (ctx, endings, label), each ending's log-likelihood equal to the one
// its sequence alone gives under the model (the batch's padding, the left cut of a long context
// and the seam's space all checked against a row scored by itself), acc and acc_norm as defined.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "config/expect_contains.h"
#include "data/tokenizer.h"
#include "nn/gpt.h"
#include "ops/elementwise.h"
#include "test_util.h"
#include "train/choices.h"
#include "train/load.h"
#include "train/trainer.h"
#include "train_fixture.h"

namespace tessera {
namespace {

using testing::error_of;
using testing::run_command;
using testing::TempDir;
namespace fs = std::filesystem;

TEST(Choices, hellaswag_lines_are_read_and_bad_ones_named_by_line_and_key) {
  const std::string text =
      R"({"ind": 4, "ctx": "A man", "ctx_a": "A man", "endings": ["sits.", "runs.", "eats."], "label": 2})"
      "\n\n"
      R"({"ctx": "", "endings": ["a", "b"], "label": "1", "split": "val"})"
      "\n";
  const std::vector<train::ChoiceItem> items = train::parse_choice_items(text, "h.jsonl");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].context, "A man");
  EXPECT_EQ(items[0].endings, (std::vector<std::string>{"sits.", "runs.", "eats."}));
  EXPECT_EQ(items[0].label, 2);
  EXPECT_EQ(items[0].where, "h.jsonl line 1");
  EXPECT_EQ(items[1].label, 1);  // a label written as a string of digits
  EXPECT_EQ(items[1].where, "h.jsonl line 3");

  auto error = [](const std::string& line) {
    return error_of([&] { train::parse_choice_items("\n" + line + "\n", "h.jsonl"); });
  };
  EXPECT_CONTAINS(error(R"({"endings": ["a", "b"], "label": 0})"),
                  "h.jsonl line 2: an item needs \"ctx\"");
  EXPECT_CONTAINS(error(R"({"ctx": "x", "label": 0})"), "an item needs \"endings\"");
  EXPECT_CONTAINS(error(R"({"ctx": "x", "endings": ["a", "b"]})"), "an item needs \"label\"");
  EXPECT_CONTAINS(error(R"({"ctx": 3, "endings": ["a", "b"], "label": 0})"),
                  "\"ctx\" is a number, not a string");
  EXPECT_CONTAINS(error(R"({"ctx": "x", "endings": "a", "label": 0})"),
                  "\"endings\" is a string, not an array of strings");
  EXPECT_CONTAINS(error(R"({"ctx": "x", "endings": ["a", 2], "label": 0})"),
                  "ending 1 is a number, not a string");
  EXPECT_CONTAINS(error(R"({"ctx": "x", "endings": ["a", ""], "label": 0})"), "ending 1 is empty");
  EXPECT_CONTAINS(error(R"({"ctx": "x", "endings": ["a"], "label": 0})"),
                  "1 ending(s); a choice needs two or more");
  EXPECT_CONTAINS(error(R"({"ctx": "x", "endings": ["a", "b"], "label": 2})"),
                  "\"label\" 2 is not the index of one of its 2 endings (0 to 1)");
  EXPECT_CONTAINS(error(R"({"ctx": "x", "endings": ["a", "b"], "label": -1})"),
                  "\"label\" -1 is not");
  EXPECT_CONTAINS(error(R"({"ctx": "x", "endings": ["a", "b"], "label": 0.5})"), "label");
  EXPECT_CONTAINS(error(R"({"ctx": "x", "endings": ["a", "b"], "label": "b"})"),
                  "\"label\" 'b' is not an integer");
  EXPECT_CONTAINS(error(R"({"ctx": "x", "endings": ["a", "b"], "label": true})"),
                  "\"label\" is a boolean, not an integer");
  EXPECT_CONTAINS(error(R"(["x"])"), "h.jsonl line 2: an item is a JSON object, not an array");
  EXPECT_CONTAINS(error(R"({"ctx": "x",)"), "h.jsonl line 2: JSON error");
  EXPECT_CONTAINS(error_of([] { train::parse_choice_items(" \n\n", "e.jsonl"); }),
                  "e.jsonl: no items");
}

// A small byte-level model of context 16, random weights large enough that the endings differ.
struct Model {
  nn::GPTConfig cfg;
  Generator gen{11};
  std::unique_ptr<nn::GPT> gpt;
  std::unique_ptr<data::Tokenizer> tok = data::make_tokenizer("byte");
  explicit Model(nn::PositionKind position = nn::PositionKind::Learned) {
    cfg.n_layer = 2, cfg.n_head = 2, cfg.n_embd = 32, cfg.block_size = 16, cfg.vocab_size = 257;
    cfg.position = position;
    gpt = std::make_unique<nn::GPT>(cfg, gen);
    for (const auto& [name, p] : gpt->parameters())
      Tensor(p).copy_(ops::scale(randn(p.shape(), gen), 0.3));
  }
  // The reference: the sequence alone (one row, no padding), log-softmax in double.
  double alone(const std::vector<uint32_t>& seq, size_t scored) const {
    std::vector<int32_t> in(seq.begin(), seq.end() - 1);
    const Tensor logits = gpt->forward(from_vector(in, {1, int64_t(in.size())}), false);
    const std::vector<float> l = logits.contiguous().to_vector<float>();
    const size_t V = size_t(logits.size(2));
    double sum = 0;
    for (size_t i = seq.size() - scored; i < seq.size(); ++i) {
      const float* row = &l[(i - 1) * V];
      double m = row[0], z = 0;
      for (size_t v = 0; v < V; ++v) m = std::max(m, double(row[v]));
      for (size_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - m);
      sum += double(row[seq[i]]) - m - std::log(z);
    }
    return sum;
  }
  std::vector<uint32_t> bytes(const std::string& s) const { return tok->encode(s); }
};

std::vector<uint32_t> cat(std::vector<uint32_t> a, const std::vector<uint32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(Choices, each_endings_score_is_its_sequence_scored_alone) {
  for (const nn::PositionKind position : {nn::PositionKind::Learned, nn::PositionKind::RoPE}) {
    Model m(position);
    // Endings of 1, 3, 7 and 16 tokens with their space: rows of unequal length in one padded
    // batch; the longest fills the context, so the context is cut to its last byte for it.
    train::ChoiceItem item{
        "In the beginning", {"a", "the", "created", "God made light."}, 0, "t line 1"};
    const train::EndingScores s = train::score_endings(*m.gpt, *m.tok, item);
    ASSERT_EQ(s.logprob.size(), 4u);
    EXPECT_EQ(s.bytes, (std::vector<int64_t>{2, 4, 8, 16}));
    for (size_t k = 0; k < 4; ++k) {
      const std::vector<uint32_t> ending = m.bytes(" " + item.endings[k]);
      std::vector<uint32_t> seq = cat(m.bytes(item.context), ending);
      seq.erase(seq.begin(), seq.end() - std::min<ptrdiff_t>(seq.size(), 17));  // 16 inputs + 1
      // Tolerance: the same f32 model on one row or in a batch of four, summed over up to 16
      // log-probabilities of magnitude ~10: a few f32 roundings of each.
      EXPECT_NEAR(s.logprob[k], m.alone(seq, ending.size()), 1e-4)
          << int(position) << " ending " << k;
    }
    // The 16-token ending keeps one byte of context: the 'g' of "beginning".
    EXPECT_NE(s.logprob[3], 0.0);
  }
}

TEST(Choices, the_seam_gets_one_space_and_an_empty_context_starts_from_end_of_text) {
  Model m;
  // The context ends in a space, or the ending starts with one: no space added.
  const train::EndingScores s =
      train::score_endings(*m.gpt, *m.tok, {"He said ", {"yes", " no"}, 0, "t line 1"});
  EXPECT_EQ(s.bytes, (std::vector<int64_t>{3, 3}));
  EXPECT_NEAR(s.logprob[0], m.alone(m.bytes("He said yes"), 3), 1e-4);
  EXPECT_NEAR(s.logprob[1], m.alone(m.bytes("He said  no"), 3), 1e-4);
  const train::EndingScores t =
      train::score_endings(*m.gpt, *m.tok, {"He said", {" yes", "no"}, 0, "t line 2"});
  EXPECT_EQ(t.bytes, (std::vector<int64_t>{4, 3}));
  EXPECT_NEAR(t.logprob[0], m.alone(m.bytes("He said yes"), 4), 1e-4);
  EXPECT_NEAR(t.logprob[1], m.alone(m.bytes("He said no"), 3), 1e-4);
  const train::EndingScores e = train::score_endings(*m.gpt, *m.tok, {"", {"ab", "c"}, 1, "t"});
  EXPECT_NEAR(e.logprob[0], m.alone(cat({m.tok->eot_id()}, m.bytes(" ab")), 3), 1e-4);
  EXPECT_NEAR(e.logprob[1], m.alone(cat({m.tok->eot_id()}, m.bytes(" c")), 2), 1e-4);
  // An ending that leaves no token of context is refused, naming the item.
  EXPECT_CONTAINS(
      error_of([&] {
        train::score_endings(*m.gpt, *m.tok, {"x", {"a", "0123456789abcdef"}, 0, "f.jsonl line 7"});
      }),
      "f.jsonl line 7: ending 1 is 17 tokens; the model's context of 16 scores at most 16 "
      "after a token of context");
}

TEST(Choices, acc_takes_the_highest_likelihood_and_acc_norm_the_highest_per_byte) {
  EXPECT_EQ(train::best_choice({-3, -1, -1, -2}), 1);  // ties: the first
  EXPECT_EQ(train::best_choice({-0.5}), 0);
  Model m;
  train::ChoiceItem a{"And God said", {"Let", "there be light", "it", "was good"}, 0, "t line 1"};
  train::ChoiceItem b{"the earth", {"was", "without form"}, 0, "t line 2"};
  const train::EndingScores sa = train::score_endings(*m.gpt, *m.tok, a);
  const train::EndingScores sb = train::score_endings(*m.gpt, *m.tok, b);
  auto per_byte = [](const train::EndingScores& s) {
    std::vector<double> out;
    for (size_t k = 0; k < s.logprob.size(); ++k) out.push_back(s.logprob[k] / double(s.bytes[k]));
    return out;
  };
  // a's label the model's choice, b's the other one: acc 1/2 whatever the weights.
  a.label = train::best_choice(sa.logprob);
  b.label = 1 - train::best_choice(sb.logprob);
  const train::ChoiceResult r = train::evaluate_choices(*m.gpt, *m.tok, {a, b});
  EXPECT_EQ(r.items, 2);
  EXPECT_DOUBLE_EQ(r.acc, 0.5);
  const int norm_right =
      (train::best_choice(per_byte(sa)) == a.label) + (train::best_choice(per_byte(sb)) == b.label);
  EXPECT_DOUBLE_EQ(r.acc_norm, norm_right / 2.0);
  EXPECT_DOUBLE_EQ(r.chance, (0.25 + 0.5) / 2);
}

// build/eval --choices on a saved checkpoint: the result line, and its refusals.
TEST(Choices, eval_prints_accuracy_and_refuses_the_window_flags) {
  TempDir tmp("tessera_choices");
  Config cfg;
  cfg.model.n_layer = 1, cfg.model.n_head = 2, cfg.model.n_embd = 16, cfg.model.block_size = 16;
  Generator g(5);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  const std::string file = testing::save_weights(model, cfg, tmp.path / "run");
  const std::string items = tmp.file("items.jsonl");
  tmp.write("items.jsonl", R"({"ctx": "In the", "endings": ["beginning", "end"], "label": 0})"
                           "\n"
                           R"({"ctx": "God", "endings": ["said", "saw", "made"], "label": 2})"
                           "\n");
  const std::string eval = testing::bin_dir() + "/eval --checkpoint " + file + " --choices ";
  std::string out;
  ASSERT_EQ(run_command(eval + items, &out), 0) << out;
  EXPECT_CONTAINS(out, file + ": acc ");
  EXPECT_CONTAINS(out, " items of " + items + "; chance 0.4167)");
  EXPECT_CONTAINS(out, "(2 items");
  EXPECT_EQ(run_command(eval + items + " --contexts 8", &out), 1);
  EXPECT_CONTAINS(out, "--contexts applies to the loss over token windows, not to --choices");
  tmp.write("bad.jsonl", R"({"ctx": "x", "endings": ["a"], "label": 0})");
  EXPECT_EQ(run_command(eval + tmp.file("bad.jsonl"), &out), 1);
  EXPECT_CONTAINS(out, tmp.file("bad.jsonl") + " line 1: 1 ending(s)");
  EXPECT_EQ(run_command(eval + tmp.file("none.jsonl"), &out), 1);
  EXPECT_CONTAINS(out, "cannot read " + tmp.file("none.jsonl"));
  EXPECT_EQ(run_command(eval + tmp.path.string(), &out), 1);
  EXPECT_CONTAINS(out, "it is a directory");
}

// eval.choices during training: scored at each evaluation on the model of that step, written to
// the log and metrics.jsonl, the run's losses untouched; a file the run cannot use stops it first.
TEST(Choices, scored_at_each_evaluation_of_a_training_run_without_changing_it) {
  testing::TempRun run;
  Config cfg = run.config(6);
  cfg.eval.interval = 3;
  cfg.checkpoint.interval = 3;
  std::ostringstream plain_log;
  const train::TrainResult plain = train::run_training(cfg, plain_log);
  cfg.eval.choices = run.tmp.write(
      "items.jsonl", R"({"ctx": "in the", "endings": ["beginning", "word"], "label": 0})"
                     "\n"
                     R"({"ctx": "the word was", "endings": ["with", "in"], "label": 0})"
                     "\n"
                     R"({"ctx": "and the", "endings": ["light", "word"], "label": 1})"
                     "\n");
  cfg.train.run_name = "choices";
  std::ostringstream log;
  const train::TrainResult with = train::run_training(cfg, log);
  EXPECT_EQ(with.last_val_loss, plain.last_val_loss);
  const fs::path dir = fs::path(cfg.checkpoint.dir) / "choices";
  const std::map<int64_t, std::string> acc = testing::metric(dir / "metrics.jsonl", "choices_acc");
  ASSERT_EQ(acc.size(), 2u) << log.str();
  EXPECT_CONTAINS(log.str(), "step     3 | choices acc ");
  EXPECT_CONTAINS(log.str(), "(3 items)");
  // Step 6's figure is the saved model's.
  train::LoadedModel m = train::load_model((dir / checkpoint_name(6)).string());
  const auto tok = data::make_tokenizer("byte");
  const train::ChoiceResult r =
      train::evaluate_choices(*m.model, *tok, train::read_choice_items(cfg.eval.choices));
  EXPECT_NEAR(std::stod(acc.at(6)), r.acc, 1e-6);

  cfg.train.run_name = "bad";
  cfg.eval.choices = run.tmp.file("missing.jsonl");
  std::ostringstream bad_log;
  EXPECT_CONTAINS(error_of([&] { train::run_training(cfg, bad_log); }),
                  "eval.choices: cannot read " + cfg.eval.choices);
  cfg.eval.choices = run.tmp.write(
      "long.jsonl", R"({"ctx": "a", "endings": ["b", "0123456789abcdefg"], "label": 0})");
  EXPECT_CONTAINS(error_of([&] { train::run_training(cfg, bad_log); }),
                  "eval.choices: " + cfg.eval.choices + " line 1: ending 1 is 18 tokens");
  EXPECT_FALSE(fs::exists(fs::path(cfg.checkpoint.dir) / "bad" / checkpoint_name(1)));
}

}  // namespace
}  // namespace tessera
