// Fuzzing fine-tuning example files (data/sft.h) and what writes them (data/chat.h): seeded
// mutations of a JSON Lines file holding every form (prompt / response, Alpaca, conversations
// with every role) — bytes flipped, cut short, spliced with JSON's punctuation and keywords, lines
// swapped — each parsed in process. A parse either returns examples or throws tessera::Error
// naming the file; never another exception, never a crash. Whatever parses is written in every
// chat template on a tokenizer with their markers, and plain where it can be: every id within the
// vocabulary, a scored flag for each, the first id of each example marked as its start.
//
//   TESSERA_FUZZ_MUTATIONS  number of mutations (default 5000: under a second)
//   TESSERA_FUZZ_SEED       seed (default 16); mutation i depends only on (seed, i)
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/chat.h"
#include "data/sft.h"
#include "data/shard.h"
#include "data/tiny_hf_tokenizer.h"

using namespace tessera;
using namespace tessera::data;

namespace {

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::stoll(v) : fallback;
}

const std::string kExamples =
    "{\"prompt\": \"2+2=\", \"response\": \"4\"}\n"
    "{\"instruction\": \"Add.\", \"input\": \"2 3\", \"output\": \"5\"}\n"
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
    "\"content\": \"Hi \\u00e9\"}, {\"role\": \"assistant\", \"content\": \"<think>\\nr\\n</think>"
    "\\n\\nHello\"}, {\"role\": \"user\", \"content\": \"<tool_response>1</tool_response>\"}, "
    "{\"role\": \"assistant\", \"content\": \"\\n ok \"}]}\n"
    "{\"response\": \"only\"}\n";

// Mutation i of text: one of five kinds, its places and bytes drawn from (seed, i).
std::string mutate(const std::string& text, uint64_t seed, uint64_t i) {
  std::mt19937_64 rng(seed * 1000003 + i);
  auto at = [&](size_t n) { return size_t(rng() % std::max<size_t>(n, 1)); };
  std::string s = text;
  static const char* kPieces[] = {"{",        "}",           "[",
                                  "]",        ",",           ":",
                                  "\"",       "\\",          "null",
                                  "true",     "1e999",       "\"messages\"",
                                  "\"role\"", "\"content\"", "\"assistant\"",
                                  "\\u0000",  "\\ud800",     "\n",
                                  "\xff",     "\xc3"};
  const int rounds = rng() % 4 == 0 ? 2 + int(rng() % 3) : 1;  // mostly one change
  for (int r = 0; r < rounds; ++r) {
    switch (rng() % 5) {
      case 0:  // a byte flipped
        if (!s.empty()) s[at(s.size())] ^= char(1 << (rng() % 8));
        break;
      case 1:  // cut short
        s.resize(at(s.size() + 1));
        break;
      case 2:  // a piece of JSON spliced in
        s.insert(at(s.size() + 1), kPieces[at(std::size(kPieces))]);
        break;
      case 3: {  // a run deleted
        const size_t from = at(s.size() + 1);
        s.erase(from, at(16) + 1);
        break;
      }
      default: {  // a run copied elsewhere
        const std::string run = s.substr(at(s.size() + 1), at(40) + 1);
        s.insert(at(s.size() + 1), run);
        break;
      }
    }
  }
  return s;
}

}  // namespace

TEST(FuzzExamples, a_mutated_file_parses_or_is_refused_and_what_parses_is_written) {
  const tessera::testing::TinyHf h{tessera::testing::chat_tokenizer()};
  const Tokenizer& tok = *h.tok;
  const int64_t n = env_int("TESSERA_FUZZ_MUTATIONS", 5000);
  const uint64_t seed = uint64_t(env_int("TESSERA_FUZZ_SEED", 16));
  int64_t parsed = 0, refused = 0;
  for (int64_t i = 0; i < n; ++i) {
    const std::string text = i == 0 ? kExamples : mutate(kExamples, seed, uint64_t(i));
    std::vector<SftExample> examples;
    try {
      examples = parse_sft_examples(text, "ex.jsonl");
    } catch (const Error& e) {
      ++refused;
      EXPECT_NE(std::string(e.what()).find("ex.jsonl"), std::string::npos)
          << "mutation " << i << ": " << e.what();
      continue;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "mutation " << i << ": not a tessera::Error: " << e.what();
      continue;
    }
    ++parsed;
    for (const ChatTemplate t : {ChatTemplate::ChatML, ChatTemplate::Qwen3, ChatTemplate::Llama3}) {
      std::vector<uint32_t> tokens;
      std::vector<uint8_t> mask;
      for (const SftExample& e : examples) {
        const size_t first = tokens.size();
        append_chat_example(tok, t, e, tokens, mask);
        ASSERT_GT(tokens.size(), first) << "mutation " << i;
        EXPECT_TRUE(mask[first] & kMaskExampleStart) << "mutation " << i;
      }
      ASSERT_EQ(mask.size(), tokens.size()) << "mutation " << i;
      for (const uint32_t id : tokens) ASSERT_LT(int64_t(id), tok.vocab_size()) << "mutation " << i;
    }
    std::vector<uint32_t> tokens;
    std::vector<uint8_t> mask;
    for (const SftExample& e : examples)
      if (!e.needs_chat_template()) append_sft_example(tok, e, tokens, mask);
    ASSERT_EQ(mask.size(), tokens.size()) << "mutation " << i;
  }
  // Both outcomes are exercised (the mutations are not all fatal, nor all harmless).
  EXPECT_GT(parsed, n / 50);
  EXPECT_GT(refused, n / 50);
  std::printf("%ld mutations: %ld parsed, %ld refused\n", long(n), long(parsed), long(refused));
}
