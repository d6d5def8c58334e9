// build/generate --prompts: every example's prompt of a file continued by a model loaded once,
// a JSON object a line in the file's order, the i-th as --prompt and --seed <seed + i> draw alone;
// a bad file or flag is refused, naming it, before the model loads.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/json.h"
#include "data/sft.h"
#include "data/utf8.h"
#include "test_util.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

using namespace tessera;
using tessera::testing::run_command;
using tessera::testing::TempRun;

namespace {

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Standard output alone (run_command hands stderr back too).
int stdout_of(const std::string& cmd, std::string* out) {
  return run_command("{ " + cmd + " 2>/dev/null; }", out);
}

}  // namespace

TEST(GeneratePrompts, each_line_is_what_its_prompt_and_seed_draw_alone) {
  TempRun run;
  std::ostringstream log;
  const std::string ck = train::run_training(run.config(1), log).last_checkpoint;
  // Lines 1 and 3 of 6 bytes, one batch at --batch-size 2 drawn before line 2 (longer than the
  // 16-byte window) and printed after it; line 4 of 6 bytes again (the batch after line 2's), an
  // Alpaca example, an example with a response and no prompt.
  const std::filesystem::path file = run.dir / "prompts.jsonl";
  write(file,
        "{\"prompt\": \"in the\", \"response\": \" word\"}\n"
        "{\"prompt\": \"in the beginning was the\"}\n"
        "{\"prompt\": \"was wi\"}\n"
        "\n"
        "{\"prompt\": \"the wo\"}\n"
        "{\"instruction\": \"name it\", \"output\": \"light\"}\n"
        "{\"response\": \"light\"}\n");
  const std::vector<data::SftExample> examples = data::read_sft_examples(file.string());
  ASSERT_EQ(examples.size(), 6u);
  const std::string generate = tessera::testing::bin_dir() + "/generate --checkpoint " + ck +
                               " --max-new-tokens 12 --temperature 1.5 --top-k 0";
  std::string all;
  ASSERT_EQ(stdout_of(generate + " --prompts " + file.string() + " --batch-size 2 --seed 7", &all),
            0)
      << all;
  std::vector<std::string> lines;
  std::istringstream in(all);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), examples.size()) << all;
  // Each alone: the prompt (plain, or as Alpaca's instruction), then what the model drew, then a
  // newline.
  const std::vector<std::string> alone_flags = {
      "--prompt 'in the'", "--prompt 'in the beginning was the'",      "--prompt 'was wi'",
      "--prompt 'the wo'", "--prompt-style alpaca --prompt 'name it'", "--prompt ''"};
  std::vector<std::string> completions;
  for (size_t i = 0; i < examples.size(); ++i) {
    const Json row = parse_json(lines[i], "line " + std::to_string(i + 1));
    EXPECT_EQ(row.at("prompt").str(), examples[i].prompt) << "line " << i + 1;
    const std::string completion = row.at("completion").str();
    completions.push_back(completion);
    const Json* response = row.get("response");
    if (examples[i].response.empty())
      EXPECT_EQ(response, nullptr) << "line " << i + 1;
    else
      EXPECT_EQ(response ? response->str() : "", examples[i].response) << "line " << i + 1;
    std::string alone;
    ASSERT_EQ(
        stdout_of(generate + " " + alone_flags[i] + " --seed " + std::to_string(7 + i), &alone), 0)
        << alone;
    // A model one step from its random start draws bytes of every kind: those that are not
    // UTF-8 come out as U+FFFD in the JSON, as they are alone.
    EXPECT_EQ(examples[i].prompt + completion + "\n", data::replace_invalid_utf8(alone))
        << "line " << i + 1;
  }
  EXPECT_NE(completions[0], completions[3]) << "the seeds must draw different texts";
  EXPECT_NE(all.find("\xef\xbf\xbd"), std::string::npos) << "the case must replace a byte";
}

TEST(GeneratePrompts, a_bad_file_or_flag_is_refused_before_the_model_loads) {
  TempRun run;
  // No checkpoint at all: every refusal below must come before the model is looked for.
  const std::string generate =
      tessera::testing::bin_dir() + "/generate --checkpoint " + (run.dir / "none").string();
  const std::filesystem::path bad = run.dir / "bad.jsonl", good = run.dir / "good.jsonl";
  write(bad, "{\"prompt\": \"a\"}\n{\"prompt\": 3}\n");
  write(good, "{\"prompt\": \"a\"}\n");
  const std::filesystem::path empty = run.dir / "empty.jsonl";
  write(empty, "\n\n");
  struct Case {
    std::string flags, message;
  };
  const std::vector<Case> cases = {
      {"--prompts " + (run.dir / "missing.jsonl").string(),
       "cannot read " + (run.dir / "missing.jsonl").string()},
      {"--prompts " + run.dir.string(), "cannot read " + run.dir.string() + ": it is a directory"},
      {"--prompts " + bad.string(), bad.string() + " line 2: \"prompt\" is a number, not a string"},
      {"--prompts " + empty.string(), empty.string() + ": no examples (JSON Lines"},
      {"--prompts " + good.string() + " --prompt x", "not with --prompt, --prompt-style alpaca or"},
      {"--prompts " + good.string() + " --num-samples 2", "not with --prompt, --prompt-style alpaca or"},
      {"--prompts " + good.string() + " --batch-size 0",
       "--batch-size must be in [1, 1024], got 0"},
      {"--prompt x --batch-size 4", "--batch-size goes with --prompts"},
  };
  for (const Case& c : cases) {
    std::string out;
    EXPECT_EQ(run_command(generate + " " + c.flags, &out), 1) << c.flags << ": " << out;
    EXPECT_NE(out.find(c.message), std::string::npos) << c.flags << ": " << out;
  }
}
