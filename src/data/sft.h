// Supervised fine-tuning data: prompt / response examples, tokenized into one stream with a loss
// mask that scores the responses only (shard.h's .mask files; `tokenize --format sft`).
//
//   std::vector<SftExample> ex = parse_sft_examples(read_file("chat.jsonl"), "chat.jsonl");
//   std::vector<uint32_t> tokens;  std::vector<uint8_t> mask;
//   for (const SftExample& e : ex) append_sft_example(*tok, e, tokens, mask);
//
// Input: JSON Lines (one object a line; blank lines skipped), or one JSON array of objects when
// the text's first non-blank character is '[' (as Stanford Alpaca's alpaca_data.json is). An
// object is either
//   {"prompt": "...", "response": "..."}                 the prompt used as it is, or
//   {"instruction": "...", "input": "...", "output": "..."}  ("input" optional, may be "")
// set in Alpaca's prompt template (Taori et al. 2023, Stanford Alpaca): the preamble, then
// "### Instruction:", "### Input:" when the input is not empty, and "### Response:" sections, the
// prompt ending with the newline after "### Response:". Any other key, a value that is not a
// string, a mix of the two forms, or an example with neither prompt nor response is an error
// naming the file, the line (or the array's element) and the key.
//
// In the stream an example is its prompt's tokens (mask 0), its response's (mask 1) and the
// end-of-text id (mask 1: the model learns to stop), so examples follow each other with an
// end-of-text between them. The example's first token also has the mask's example-start bit
// (shard.h: kMaskExampleStart), so a loader can window each example alone. The prompt and the
// response are encoded apart (the tokens at their seam are those of the response's start, whatever
// the prompt's end).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace tessera::data {

struct SftExample {
  std::string prompt, response;
  bool operator==(const SftExample&) const = default;
};

std::vector<SftExample> parse_sft_examples(const std::string& text, const std::string& path);
// The file at path, parsed so (errors name it).
std::vector<SftExample> read_sft_examples(const std::string& path);

// The Alpaca template's prompt for an instruction and an input ("" for none).
std::string alpaca_prompt(const std::string& instruction, const std::string& input);

// bos: an id the example starts with (the tokenizer's beginning-of-text, require_bos), unscored
// as the prompt is.
void append_sft_example(const Tokenizer& tok, const SftExample& example,
                        std::vector<uint32_t>& tokens, std::vector<uint8_t>& mask,
                        std::optional<uint32_t> bos = std::nullopt);

}  // namespace tessera::data
