// Supervised fine-tuning data: prompt / response examples, tokenized into one stream with a loss
// mask that scores the responses only (shard.h's .mask files; `tokenize --format sft`).
//
//   std::vector<SftExample> ex = parse_sft_examples(read_file("chat.jsonl"), "chat.jsonl");
//   std::vector<uint32_t> tokens;  std::vector<uint8_t> mask;
//   for (const SftExample& e : ex) append_sft_example(*tok, e, tokens, mask);
//
// Input: JSON Lines (one object a line; blank lines skipped), or one JSON array of objects when
// the text's first non-blank character is '[' (as Stanford Alpaca's alpaca_data.json is). An
// object is one of
//   {"prompt": "...", "response": "..."}                 the prompt used as it is,
//   {"instruction": "...", "input": "...", "output": "..."}  ("input" optional, may be "")
// set in Alpaca's prompt template (Taori et al. 2023, Stanford Alpaca): the preamble, then
// "### Instruction:", "### Input:" when the input is not empty, and "### Response:" sections, the
// prompt ending with the newline after "### Response:", or
//   {"messages": [{"role": "system", "content": "..."}, {"role": "user", ...},
//                 {"role": "assistant", ...}, ...]}
// a conversation (the chat format of Hugging Face's datasets and OpenAI's API; roles system, user
// and assistant), which only a chat template (data/chat.h) writes. Any other key, a value that is
// not a string, a mix of the forms, or an example with neither prompt nor response (no messages)
// is an error naming the file, the line (or the array's element) and the key.
//
// Under a chat template every example is a conversation: a prompt / response one is the user's
// prompt and the assistant's response (each only where it is not empty), an Alpaca one the user's
// instruction (followed by a blank line and the input, when there is one) and the assistant's
// output; append_chat_example writes it (chat.h scores the assistant's turns).
//
// Without a chat template, in the stream an example is its prompt's tokens (mask 0), its response's
// (mask 1) and the end-of-text id (mask 1: the model learns to stop), so examples follow each other
// with an end-of-text between them. The example's first token also has the mask's example-start bit
// (shard.h: kMaskExampleStart), so a loader can window each example alone. The prompt and the
// response are encoded apart (the tokens at their seam are those of the response's start, whatever
// the prompt's end).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/chat.h"
#include "data/tokenizer.h"

namespace tessera {
class Json;
}

namespace tessera::data {

struct SftExample {
  // Without a chat template: the prompt (an Alpaca example's set in its template) and the
  // response; both empty for a conversation given as messages.
  std::string prompt, response;
  // Under one: the messages given, or an Alpaca example's; empty for a prompt / response example
  // (conversation() makes its messages).
  std::vector<ChatMessage> messages = {};
  bool operator==(const SftExample&) const = default;

  // Given as messages: only a chat template writes it.
  bool needs_chat_template() const { return prompt.empty() && response.empty(); }
};

// The example as a conversation (the header comment: how each form becomes one).
std::vector<ChatMessage> conversation(const SftExample& e);

// What generation continues from the example under a chat template, and what it should write:
// the conversation less a final assistant message, whose content is the reply.
struct ChatTurn {
  std::vector<ChatMessage> context;
  std::string reply;
};
ChatTurn last_turn(const SftExample& e);

std::vector<SftExample> parse_sft_examples(const std::string& text, const std::string& path);
// The file at path, parsed so (errors name it).
std::vector<SftExample> read_sft_examples(const std::string& path);

// What the parsers of example files share (this one, preference.h's). f(value, where) for each
// element of a JSON array, when text's first non-blank character is '[' (where = "<path> element
// <i>"), else for each JSON line (where = "<path> line <n>").
void for_each_example_json(const std::string& text, const std::string& path,
                           const std::function<void(const Json&, const std::string&)>& f);
// The conversation `list` holds, the value of `field` in the object at `where`: a non-empty array
// of {"role", "content"} objects, roles kChatRoles. Errors name where, the field and the message.
std::vector<ChatMessage> chat_messages_of(const Json& list, const std::string& where,
                                          const std::string& field);

// The Alpaca template's prompt for an instruction and an input ("" for none).
std::string alpaca_prompt(const std::string& instruction, const std::string& input);

// bos: an id the example starts with (the tokenizer's beginning-of-text, require_bos), unscored
// as the prompt is. An example that needs a chat template is an error.
void append_sft_example(const Tokenizer& tok, const SftExample& example,
                        std::vector<uint32_t>& tokens, std::vector<uint8_t>& mask,
                        std::optional<uint32_t> bos = std::nullopt);

// Under a chat template: the conversation's ids (encode_chat), the assistant's scored, the first
// marked as the example's start; no end-of-text follows (the assistant's end-of-turn marker,
// scored, is where the model learns to stop).
void append_chat_example(const Tokenizer& tok, ChatTemplate t, const SftExample& example,
                         std::vector<uint32_t>& tokens, std::vector<uint8_t>& mask);

}  // namespace tessera::data
