// Chat templates: a conversation's messages as token ids in an instruct model's turn markers, and
// which of those ids an assistant wrote (the ones fine-tuning scores).
//
//   std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hi"}};
//   ChatIds c = encode_chat(*tok, ChatTemplate::Qwen3, chat, {.generation_prompt = true});
//   // c.ids: <|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n
//   //        <|im_start|>assistant\n           (markers as their added tokens' ids)
//
// Each template writes what its model's tokenizer_config.json chat_template (a Jinja program)
// writes for messages of the roles system, user and assistant, without tools:
//   chatml  <|im_start|>ROLE\nCONTENT<|im_end|>\n a message; the generation prompt
//           <|im_start|>assistant\n. ChatML as Hugging Face's chat-template documentation gives
//           it (Qwen2.5's own adds a default system message; this one adds none).
//   qwen3   chatml, and Qwen3's reasoning block: an assistant message after the conversation's last
//           user message, when it is the last message or has reasoning, is written
//           <|im_start|>assistant\n<think>\nREASONING\n</think>\n\nCONTENT<|im_end|>\n, REASONING
//           being what a content of the form "<think>REASONING</think>CONTENT" holds (empty
//           otherwise); an earlier assistant message keeps only the CONTENT after its </think>.
//           With think off, the generation prompt ends with the empty block
//           <think>\n\n</think>\n\n (Qwen3's enable_thinking=False).
//   llama3  <|begin_of_text|>, then <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>
//           a message with CONTENT stripped of whitespace at both ends (Jinja's trim, Python's
//           str.strip: Unicode's white space); the generation prompt
//           <|start_header_id|>assistant<|end_header_id|>\n\n (Meta Llama 3's instruct models;
//           Llama 3.1 and later's templates also write a dated system message of their own where
//           none is given, which this one does not: give it as the system message to match).
//   llama2  Llama 2 chat's: <s>[INST] USER [/INST] a user's message, " ASSISTANT </s>" an
//           assistant's, contents stripped as llama3's; a system message (the first message
//           only) goes into the first user message: [INST] <<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER
//           [/INST].
//   mistral Mistral 7B Instruct v0.2's and Mixtral 8x7B Instruct v0.1's: <s>, then
//           [INST] USER [/INST] a user's message, ASSISTANT</s> an assistant's; no system message.
//           Both want user and assistant messages alternating from a user's (their templates
//           raise an exception otherwise: here an error naming the message), write no generation
//           prompt (the model continues after [/INST]), and end a turn with </s>, the end of text.
//           Their text between markers is SentencePiece's: a piece after a marker gets its own
//           "▁" where the tokenizer's normaliser puts one before every piece (Tokenizer::
//           encode_piece), as Hugging Face's tokenizer encodes the rendered text.
//
// Tokens: every marker is the tokenizer's added token of that text (Tokenizer::added_token; a
// tokenizer without it is an error naming the template, the token and the tokenizer), and the
// text between two markers is encoded as one string, as Hugging Face's apply_chat_template
// tokenizes the rendered text (tests/scripts/chat_template_reference.sh checks id for id). A
// message's content is only ever text: a marker spelled inside it stays its bytes, where the
// Hugging Face tokenizer would make it the marker (no message can open or close a turn).
//
// Scored: an assistant message's ids after its header (<|im_start|>assistant\n, Llama 3's
// <|start_header_id|>assistant<|end_header_id|>\n\n, the user's [/INST] and Llama 2's space after
// it), through its end-of-turn marker; a token that holds both the header's last bytes and the
// content's first is scored. Nothing else is (system and user messages, headers, the newline after
// <|im_end|>, the generation prompt).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"

namespace tessera::data {

enum class ChatTemplate { ChatML, Qwen3, Llama3, Llama2, Mistral };

// "chatml" | "qwen3" | "llama3" | "llama2" | "mistral"; none for any other name.
std::optional<ChatTemplate> chat_template_named(std::string_view name);
const char* chat_template_name(ChatTemplate t);
inline constexpr const char* kChatTemplateNames = "chatml, qwen3, llama3, llama2 or mistral";

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
  bool operator==(const ChatMessage&) const = default;
};

// Whether a template writes messages of this role.
bool is_chat_role(std::string_view role);
inline constexpr const char* kChatRoles = "system, user or assistant";

struct ChatOptions {
  bool generation_prompt = false;  // end with the assistant's header: what the model continues
  bool think = true;               // qwen3: false ends the generation prompt with an empty block
};

struct ChatIds {
  std::vector<uint32_t> ids;
  std::vector<bool> scored;  // by id: written by an assistant (the header comment)
};

// The conversation in the template. A message of another role than kChatRoles is an error naming
// its index and role.
ChatIds encode_chat(const Tokenizer& tok, ChatTemplate t, const std::vector<ChatMessage>& messages,
                    const ChatOptions& opt = {});

// The marker that ends an assistant's turn (<|im_end|>, Llama 3's <|eot_id|>): where generation
// stops. An error naming the template and token where the tokenizer has none.
uint32_t end_of_turn(const Tokenizer& tok, ChatTemplate t);

// What a model continues under the template (build/generate, eval.answers): the context and the
// generation prompt, none of it hidden (a printed prompt shows its markers as their text), ended
// by the end of turn or the end-of-text id.
Prompt encode_chat_prompt(const Tokenizer& tok, ChatTemplate t,
                          const std::vector<ChatMessage>& context, bool think = true);

}  // namespace tessera::data
