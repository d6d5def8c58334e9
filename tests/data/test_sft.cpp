// Supervised fine-tuning data (data/sft.h): the two example forms and their errors, the token
// stream and mask an example makes, and `build/tokenize --format sft` end to end.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "config/expect_contains.h"
#include "data/sft.h"
#include "data/shard.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::data;
using tessera::testing::error_of;
using tessera::testing::run_command;
using tessera::testing::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kTokenize = tessera::testing::bin_dir() + "/tokenize --tokenizer byte";

std::vector<uint8_t> all_mask(const Shard& s) {
  std::vector<uint8_t> m(size_t(s.size()));
  s.read_mask(0, s.size(), m.data());
  return m;
}

}  // namespace

TEST(Sft, json_lines_and_a_json_array_give_the_same_examples) {
  const std::vector<SftExample> want = {{"2+2=", "4"}, {"", "only a response"}, {"q\n", ""}};
  const std::string lines =
      "{\"prompt\": \"2+2=\", \"response\": \"4\"}\n"
      "\n  \r\n"  // blank lines are skipped
      "{\"response\": \"only a response\"}\r\n"
      "{\"prompt\": \"q\\n\"}";  // no newline at the end
  EXPECT_EQ(parse_sft_examples(lines, "a.jsonl"), want);
  const std::string array =
      " [{\"prompt\": \"2+2=\", \"response\": \"4\"}, {\"response\": \"only a response\"},\n"
      "{\"prompt\": \"q\\n\", \"response\": \"\"}]\n";
  EXPECT_EQ(parse_sft_examples(array, "a.json"), want);
}

// Stanford Alpaca's templates (Taori et al. 2023), with an input and without (an empty one counts
// as none), as its alpaca_data.json gives examples.
TEST(Sft, alpaca_examples_are_set_in_its_template) {
  const std::vector<SftExample> ex = parse_sft_examples(
      "[{\"instruction\": \"Add them.\", \"input\": \"2, 3\", \"output\": \"5\"},"
      " {\"instruction\": \"Say hi.\", \"input\": \"\", \"output\": \"hi\"},"
      " {\"output\": \"yes\", \"instruction\": \"Agree.\"}]",
      "alpaca_data.json");
  ASSERT_EQ(ex.size(), 3u);
  EXPECT_EQ(ex[0].prompt,
            "Below is an instruction that describes a task, paired with an input that provides "
            "further context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nAdd them.\n\n### Input:\n2, 3\n\n### Response:\n");
  EXPECT_EQ(ex[0].response, "5");
  EXPECT_EQ(ex[1].prompt,
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n");
  EXPECT_EQ(ex[2].prompt, alpaca_prompt("Agree.", ""));
  EXPECT_EQ(ex[2].response, "yes");
}

TEST(Sft, a_bad_example_names_the_file_the_line_or_element_and_the_key) {
  const auto msg = [](const std::string& text) {
    return error_of([&] { parse_sft_examples(text, "d.jsonl"); });
  };
  EXPECT_CONTAINS(msg("{\"prompt\": \"a\"}\n{\"prompt\": \"a\", \"answer\": \"b\"}\n"),
                  "d.jsonl line 2: unknown key \"answer\"");
  EXPECT_CONTAINS(msg("\n\n{\"prompt\": 3}"),
                  "d.jsonl line 3: \"prompt\" is a number, not a string");
  EXPECT_CONTAINS(msg("{\"prompt\": \"a\", \"output\": \"b\"}"),
                  "line 1: prompt/response, Alpaca's instruction/input/output and messages are "
                  "three forms");
  EXPECT_CONTAINS(msg("{\"instruction\": \"a\"}"), "line 1: an Alpaca example needs \"output\"");
  EXPECT_CONTAINS(msg("{\"output\": \"a\"}"), "line 1: an Alpaca example needs \"instruction\"");
  EXPECT_CONTAINS(msg("{}"), "line 1: an empty example");
  EXPECT_CONTAINS(msg("{\"prompt\": \"\", \"response\": \"\"}"), "an empty example");
  EXPECT_CONTAINS(msg("[\"text\"]"),
                  "d.jsonl element 0: an example is a JSON object, not a string");
  EXPECT_CONTAINS(msg("{\"prompt\": \"a\",\n\"response\": \"b\"}"), "d.jsonl line 1: JSON error");
  EXPECT_CONTAINS(msg("{\"prompt\": \"a\", \"prompt\": \"b\"}"), "d.jsonl line 1");
  EXPECT_CONTAINS(msg(" \n\n"), "d.jsonl: no examples");
  EXPECT_CONTAINS(msg("[]"), "d.jsonl: no examples");
}

// Prompt tokens unscored, the response's and the end of text scored; examples follow each other,
// each one's first token marked (2: kMaskExampleStart; 3 where it is scored too).
TEST(Sft, an_example_is_its_prompt_unscored_then_its_response_and_end_of_text_scored) {
  const auto tok = make_tokenizer("byte");
  std::vector<uint32_t> tokens;
  std::vector<uint8_t> mask;
  append_sft_example(*tok, {"ab", "c"}, tokens, mask);
  append_sft_example(*tok, {"", "de"}, tokens, mask);
  append_sft_example(*tok, {"f", ""}, tokens, mask);
  EXPECT_EQ(tokens, (std::vector<uint32_t>{'a', 'b', 'c', 256, 'd', 'e', 256, 'f', 256}));
  EXPECT_EQ(mask, (std::vector<uint8_t>{2, 0, 1, 1, 3, 1, 1, 2, 1}));
}

// Validation takes the last examples whole: 10 examples of 12 tokens ("prompt N:" 9, "rN" 2,
// the end of text), 20% asked: the last 2. The masks sit beside their shards; a shard holds whole
// examples, 4 (48 tokens) within --shard-tokens 50, its mask cut at the same token.
TEST(Sft, tokenize_writes_masks_beside_the_shards_and_splits_between_examples) {
  TempDir tmp;
  std::string lines;
  for (int i = 0; i < 10; ++i)
    lines += "{\"prompt\": \"prompt " + std::to_string(i) + ":\", \"response\": \"r" +
             std::to_string(i) + "\"}\n";
  const std::string in = tmp.write("ex.jsonl", lines);
  const std::string out = tmp.file("out");
  std::string log;
  ASSERT_EQ(run_command(kTokenize + " --format sft --input " + in + " --output " + out +
                            " --val-fraction 0.2 --shard-tokens 50",
                        &log),
            0)
      << log;
  EXPECT_CONTAINS(log, "10 examples");
  EXPECT_CONTAINS(log, "24 of the 96 train tokens and 6 of the 24 val tokens are scored");
  const Shard t0(out + "/train_000.bin", 257), t1(out + "/train_001.bin", 257);
  const Shard v0(out + "/val_000.bin", 257);
  ASSERT_TRUE(t0.has_loss_mask() && t1.has_loss_mask() && v0.has_loss_mask());
  EXPECT_EQ(t0.size(), 48);
  EXPECT_EQ(t1.size(), 48);
  EXPECT_EQ(t1.example_starts(), (std::vector<int64_t>{0, 12, 24, 36}));
  std::vector<uint32_t> tokens = t0.read(0, 48), rest = t1.read(0, 48);
  tokens.insert(tokens.end(), rest.begin(), rest.end());
  std::vector<uint8_t> mask = all_mask(t0), more = all_mask(t1);
  mask.insert(mask.end(), more.begin(), more.end());
  ASSERT_EQ(mask.size(), 96u);
  for (size_t i = 0; i < 96; ++i) {
    EXPECT_EQ(mask[i], i % 12 >= 9 ? 1 : 0) << i;
    if (i % 12 == 11) {
      EXPECT_EQ(tokens[i], 256u) << i;
    }
  }
  EXPECT_EQ(v0.read(0, 9), (std::vector<uint32_t>{'p', 'r', 'o', 'm', 'p', 't', ' ', '8', ':'}));
  EXPECT_EQ(v0.mask_scored(), 6);

  // Its output directory, holding masks, is refused as one holding shards is; so is a bad form.
  fs::remove(out + "/train_000.bin"), fs::remove(out + "/train_001.bin"),
      fs::remove(out + "/val_000.bin");
  EXPECT_EQ(run_command(kTokenize + " --format sft --input " + in + " --output " + out, &log), 1);
  EXPECT_CONTAINS(log, "already holds shards (train_000.mask");
  EXPECT_EQ(
      run_command(kTokenize + " --format chat --input " + in + " --output " + tmp.file("o2"), &log),
      1);
  EXPECT_CONTAINS(log, "--format must be text, sft or pairs, got 'chat'");
  const std::string bad = tmp.write("bad.jsonl", "{\"prompt\": \"a\"}\n{\"promt\": \"b\"}\n");
  EXPECT_EQ(
      run_command(kTokenize + " --format sft --input " + bad + " --output " + tmp.file("o3"), &log),
      1);
  EXPECT_CONTAINS(log, bad + " line 2: unknown key \"promt\"");
  EXPECT_FALSE(fs::exists(tmp.file("o3")));
}
