// Exact-match answers (train/answers.h, eval --answers, eval.answers): each answer the model's
// greedy continuation of its prompt as generate gives it alone, counted exact against its own
// response and formed against the file's; a model whose answers are known by construction
// (answer_fixture.h) makes both counts nonzero and different.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "config/expect_contains.h"
#include "data/tokenizer.h"
#include "nn/generate.h"
#include "test_util.h"
#include "train/answer_fixture.h"
#include "train/answers.h"
#include "train/load.h"
#include "train/trainer.h"
#include "train_fixture.h"

namespace tessera {
namespace {

using testing::error_of;
using testing::run_command;
using testing::TempDir;
namespace fs = std::filesystem;

// "xa" and "ya" end in 'a': answered "b!" by construction, so "xa" is exact and "ya" formed
// (another example's response); the others go where the model's chain takes them.
std::vector<data::SftExample> examples() {
  return {{"xa", "b!"}, {"ya", "zz"}, {"q", "b!"}, {"", "b!"}, {"hello", "no"}};
}

TEST(Answers, each_answer_is_what_generate_gives_alone_counted_exact_and_formed) {
  const Config cfg = testing::chain_model_config();
  const nn::GPT model = testing::chain_model(cfg);
  const auto tok = data::make_tokenizer("byte");
  const train::AnswerSet set(examples(), *tok, "t.jsonl");
  EXPECT_EQ(set.longest, 2);
  EXPECT_DOUBLE_EQ(set.majority, 3.0 / 5);
  double exact = 0, formed = 0;
  std::vector<std::string> answers;
  for (size_t i = 0; i < set.examples.size(); ++i) {
    const std::vector<uint32_t>& ids = set.prompts[i].ids;
    Generator unused(0);
    const std::vector<int32_t> out = nn::generate(
        model, std::vector<int32_t>(ids.begin(), ids.end()),
        {.max_new_tokens = 3, .temperature = 0, .stop_tokens = {256}, .vocab = 257}, unused);
    answers.push_back(data::decode_completion(*tok, set.prompts[i], out));
    exact += answers.back() == set.examples[i].response;
    formed += set.responses.count(answers.back());
  }
  ASSERT_EQ(answers[0], "b!") << "the chain model's construction";
  ASSERT_EQ(answers[1], "b!");
  const train::AnswerResult r = train::evaluate_answers(model, *tok, set);
  EXPECT_EQ(r.items, 5);
  EXPECT_DOUBLE_EQ(r.exact, exact / 5);
  EXPECT_DOUBLE_EQ(r.formed, formed / 5);
  EXPECT_GT(r.formed, r.exact);
  EXPECT_DOUBLE_EQ(r.majority, 3.0 / 5);
  // An answer is read one token past the longest response: "b!" does not pass for "b".
  const train::AnswerSet prefix({{"xa", "b"}}, *tok, "t.jsonl");
  EXPECT_EQ(train::evaluate_answers(model, *tok, prefix).exact, 0.0);
}

TEST(Answers, an_example_without_a_response_is_refused_naming_it) {
  const auto tok = data::make_tokenizer("byte");
  EXPECT_CONTAINS(error_of([&] {
                    train::AnswerSet({{"p", "r"}, {"q", ""}}, *tok, "t.jsonl");
                  }),
                  "t.jsonl: example 2 has no response to compare an answer with");
}

// build/eval --answers on a saved checkpoint: the line, equal to the library's result, and the
// refusals.
TEST(Answers, eval_prints_the_shares_and_refuses_the_window_flags) {
  TempDir tmp("tessera_answers");
  const Config cfg = testing::chain_model_config();
  const nn::GPT model = testing::chain_model(cfg);
  const std::string file = testing::save_weights(model, cfg, tmp.path / "run");
  std::string text;
  for (const data::SftExample& e : examples())
    text += "{\"prompt\": \"" + e.prompt + "\", \"response\": \"" + e.response + "\"}\n";
  const std::string items = tmp.write("answers.jsonl", text);
  const auto tok = data::make_tokenizer("byte");
  const train::AnswerResult r =
      train::evaluate_answers(model, *tok, train::AnswerSet(examples(), *tok, items));
  char line[256];
  std::snprintf(line, sizeof line,
                ": exact %.4f | formed %.4f (5 items of %s; the commonest response 0.6000)",
                r.exact, r.formed, items.c_str());
  const std::string eval = testing::bin_dir() + "/eval --checkpoint " + file + " --answers ";
  std::string out;
  ASSERT_EQ(run_command(eval + items, &out), 0) << out;
  EXPECT_CONTAINS(out, file + line);
  EXPECT_EQ(run_command(eval + items + " --contexts 8", &out), 1);
  EXPECT_CONTAINS(out, "--contexts applies to the loss over token windows, not to --answers");
  EXPECT_EQ(run_command(eval + items + " --choices " + items, &out), 1);
  EXPECT_CONTAINS(out, "--choices, --answers and --pairs are three evaluations; give one");
  EXPECT_EQ(run_command(eval + tmp.file("none.jsonl"), &out), 1);
  EXPECT_CONTAINS(out, "cannot read " + tmp.file("none.jsonl"));
}

// eval.answers during training: answered at each evaluation on the model of that step, written to
// the log and metrics.jsonl, the run's losses untouched; a file the run cannot use stops it first.
TEST(Answers, answered_at_each_evaluation_of_a_training_run_without_changing_it) {
  testing::TempRun run;
  Config cfg = run.config(6);
  cfg.eval.interval = 3;
  cfg.checkpoint.interval = 3;
  std::ostringstream plain_log;
  const train::TrainResult plain = train::run_training(cfg, plain_log);
  cfg.eval.answers = run.tmp.write("answers.jsonl",
                                   "{\"prompt\": \"in the\", \"response\": \" beginning\"}\n"
                                   "{\"prompt\": \"the word was\", \"response\": \" with\"}\n"
                                   "{\"prompt\": \"and the\", \"response\": \" word\"}\n");
  cfg.train.run_name = "answers";
  std::ostringstream log;
  const train::TrainResult with = train::run_training(cfg, log);
  EXPECT_EQ(with.last_val_loss, plain.last_val_loss);
  const fs::path dir = fs::path(cfg.checkpoint.dir) / "answers";
  const std::map<int64_t, std::string> formed =
      testing::metric(dir / "metrics.jsonl", "answers_formed");
  ASSERT_EQ(formed.size(), 2u) << log.str();
  EXPECT_EQ(testing::metric(dir / "metrics.jsonl", "answers_exact").size(), 2u);
  EXPECT_CONTAINS(log.str(), "step     3 | answers exact ");
  EXPECT_CONTAINS(log.str(), "(3 items)");
  // Step 6's figure is the saved model's.
  train::LoadedModel m = train::load_model((dir / checkpoint_name(6)).string());
  const auto tok = data::make_tokenizer("byte");
  const train::AnswerResult r = train::evaluate_answers(
      *m.model, *tok, train::AnswerSet(data::read_sft_examples(cfg.eval.answers), *tok, "f"));
  EXPECT_NEAR(std::stod(formed.at(6)), r.formed, 1e-6);

  cfg.train.run_name = "bad";
  cfg.eval.answers = run.tmp.file("missing.jsonl");
  std::ostringstream bad_log;
  EXPECT_CONTAINS(error_of([&] { train::run_training(cfg, bad_log); }),
                  "eval.answers: cannot read " + cfg.eval.answers);
  cfg.eval.answers = run.tmp.write("prompt_only.jsonl", "{\"prompt\": \"in\"}\n");
  EXPECT_CONTAINS(error_of([&] { train::run_training(cfg, bad_log); }),
                  "eval.answers: " + cfg.eval.answers + ": example 1 has no response");
  EXPECT_FALSE(fs::exists(fs::path(cfg.checkpoint.dir) / "bad" / checkpoint_name(1)));
}

}  // namespace
}  // namespace tessera
