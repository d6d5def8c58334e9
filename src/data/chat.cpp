// Chat templates: see chat.h.
#include "data/chat.h"

#include <algorithm>

#include "core/error.h"
#include "data/utf8.h"

namespace tessera::data {
namespace {

// Python's str.isspace (what Jinja's trim strips): the C0 separators and spaces, NEL, and Unicode's
// space separators, line and paragraph separators.
bool is_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// s without the white space at either end (Python's str.strip()).
std::string_view trim(std::string_view s) {
  size_t first = s.size(), end = 0;
  for (size_t i = 0; i < s.size();) {
    const Utf8Char c = decode_utf8(s, i);
    if (!is_space(c.cp)) {
      first = std::min(first, i);
      end = i + c.len;
    }
    i += c.len;
  }
  return first < end ? s.substr(first, end - first) : std::string_view();
}

// s without the line breaks at its start (Python's lstrip('\n')) and at its end (rstrip('\n')).
std::string_view lstrip_newlines(std::string_view s) {
  const size_t i = s.find_first_not_of('\n');
  return i == std::string_view::npos ? std::string_view() : s.substr(i);
}
std::string_view rstrip_newlines(std::string_view s) {
  const size_t i = s.find_last_not_of('\n');
  return i == std::string_view::npos ? std::string_view() : s.substr(0, i + 1);
}

// A conversation's ids as the template lays them out: markers as added tokens, the text between
// two markers encoded as one string, and which ids an assistant wrote.
class Writer {
 public:
  Writer(const Tokenizer& tok, ChatTemplate t) : tok_(tok), t_(t) {}

  void marker(std::string_view text, bool scored) {
    flush();
    after_marker_ = true;
    const std::optional<uint32_t> id = tok_.added_token(text);
    TESSERA_CHECK(id.has_value(), "chat template ", chat_template_name(t_), ": the ", tok_.name(),
                  " tokenizer has no token ", text,
                  " (the template's markers are its model's added tokens: use its tokenizer)");
    out_.ids.push_back(*id);
    out_.scored.push_back(scored);
  }
  // Text within the segment up to the next marker; scored text ends the segment (the templates
  // put an assistant's end-of-turn marker right after it).
  void text(std::string_view s, bool scored) {
    if (s.empty()) return;
    if (scored && scored_from_ == std::string::npos) scored_from_ = segment_.size();
    TESSERA_CHECK(scored || scored_from_ == std::string::npos,
                  "chat: unscored text after an assistant's in one segment");
    segment_ += s;
  }
  ChatIds finish() {
    flush();
    return std::move(out_);
  }

 private:
  // The segment's ids: a piece after a marker as the tokenizer encodes those (a SentencePiece
  // "▁" first, or not: Tokenizer::encode_piece), one that starts the conversation as a text.
  std::vector<uint32_t> encode(std::string_view s) const {
    return after_marker_ ? tok_.encode_piece(s) : tok_.encode(s);
  }
  void flush() {
    if (segment_.empty()) return;
    // Scored: every id, none, or those ending past the unscored head, whose length is taken as
    // the ids spell it (an NFC tokenizer's decode gives the normalised text; decode_more keeps a
    // SentencePiece "▁" the piece starts with, on both sides): only then are the ids decoded.
    const bool none = scored_from_ == std::string::npos;
    const size_t head =
        none || scored_from_ == 0
            ? 0
            : tok_.decode_more(encode(std::string_view(segment_).substr(0, scored_from_))).size();
    size_t end = 0;
    for (const uint32_t id : encode(segment_)) {
      if (head > 0) end += tok_.decode_more({id}).size();
      out_.ids.push_back(id);
      out_.scored.push_back(!none && (head == 0 || end > head));
    }
    segment_.clear();
    scored_from_ = std::string::npos;
  }

  const Tokenizer& tok_;
  const ChatTemplate t_;
  std::string segment_;                     // text since the last marker
  size_t scored_from_ = std::string::npos;  // segment_'s first scored byte
  bool after_marker_ = false;               // a marker was written before segment_
  ChatIds out_;
};

// Qwen3's template: the index of the last user message that is not a tool's response wrapped in
// <tool_response> tags (its "last query"), or the last index where there is none.
size_t last_query(const std::vector<ChatMessage>& messages) {
  for (size_t i = messages.size(); i-- > 0;) {
    const std::string& c = messages[i].content;
    if (messages[i].role == "user" &&
        !(c.starts_with("<tool_response>") && c.ends_with("</tool_response>")))
      return i;
  }
  return messages.empty() ? 0 : messages.size() - 1;
}

// Qwen3's assistant message after its header. The template splits a content holding </think>
// into its reasoning (after the last <think> before the first </think>) and its reply (after the
// last </think>), and writes the reasoning block for a reply after the last query that ends the
// conversation or has reasoning; any other reply is written without its reasoning.
void qwen3_reply(Writer& w, std::string_view content, bool after_query, bool last) {
  constexpr std::string_view kOpen = "<think>", kClose = "</think>";
  std::string_view reply = content, reasoning;
  if (const size_t close = content.find(kClose); close != std::string_view::npos) {
    reply = lstrip_newlines(content.substr(content.rfind(kClose) + kClose.size()));
    std::string_view before = rstrip_newlines(content.substr(0, close));
    if (const size_t open = before.rfind(kOpen); open != std::string_view::npos)
      before = before.substr(open + kOpen.size());
    reasoning = lstrip_newlines(before);
  }
  if (!(after_query && (last || !reasoning.empty()))) return w.text(reply, true);
  w.marker(kOpen, true);
  w.text("\n", true);
  w.text(rstrip_newlines(reasoning), true);
  w.text("\n", true);
  w.marker(kClose, true);
  w.text("\n\n", true);
  w.text(lstrip_newlines(reply), true);  // a reply without </think> is stripped here too
}

void chatml(Writer& w, bool qwen3, const std::vector<ChatMessage>& messages,
            const ChatOptions& opt) {
  const size_t query = last_query(messages);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool reply = m.role == "assistant";
    w.marker("<|im_start|>", false);
    w.text(m.role + "\n", false);
    if (reply && qwen3) {
      qwen3_reply(w, m.content, i > query, i + 1 == messages.size());
    } else {
      w.text(m.content, reply);
    }
    w.marker("<|im_end|>", reply);
    w.text("\n", false);
  }
  if (!opt.generation_prompt) return;
  w.marker("<|im_start|>", false);
  w.text("assistant\n", false);
  if (qwen3 && !opt.think) {
    w.marker("<think>", false);
    w.text("\n\n", false);
    w.marker("</think>", false);
    w.text("\n\n", false);
  }
}

void llama3(Writer& w, const std::vector<ChatMessage>& messages, const ChatOptions& opt) {
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool reply = m.role == "assistant";
    if (i == 0) w.marker("<|begin_of_text|>", false);
    w.marker("<|start_header_id|>", false);
    w.text(m.role, false);
    w.marker("<|end_header_id|>", false);
    w.text("\n\n", false);
    w.text(trim(m.content), reply);
    w.marker("<|eot_id|>", reply);
  }
  if (!opt.generation_prompt) return;
  w.marker("<|start_header_id|>", false);
  w.text("assistant", false);
  w.marker("<|end_header_id|>", false);
  w.text("\n\n", false);
}

// Llama 2's and Mistral's roles: a user's message, an assistant's, a user's... from message
// `first` on (Llama 2: 1 after a system message, which joins the first user message); their
// templates raise an exception on anything else.
void check_alternating(ChatTemplate t, const std::vector<ChatMessage>& messages, size_t first) {
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    TESSERA_CHECK(role != "system" || (i == 0 && first == 1), "chat template ",
                  chat_template_name(t), ": message ", i + 1, " is a system message, which ",
                  t == ChatTemplate::Mistral
                      ? "Mistral's instruct template has no place for (put it in the first user "
                        "message)"
                      : "Llama 2's template takes only as the first message");
    const char* want = (i - first) % 2 == 0 ? "user" : "assistant";
    TESSERA_CHECK(i < first || role == want, "chat template ", chat_template_name(t), ": message ",
                  i + 1, " is the ", role, "'s where the ", want,
                  "'s comes (the template's roles alternate user, assistant, user, ...)");
  }
}

// Mistral 7B Instruct v0.2's and Mixtral 8x7B Instruct v0.1's chat_template: <s>, then
// [INST] USER [/INST] for a user's message, ASSISTANT</s> for an assistant's.
void mistral(Writer& w, const std::vector<ChatMessage>& messages) {
  check_alternating(ChatTemplate::Mistral, messages, 0);
  w.marker("<s>", false);
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      w.text("[INST] " + m.content + " [/INST]", false);
      continue;
    }
    w.text(m.content, true);
    w.marker("</s>", true);
  }
}

// Llama 2 chat's chat_template: <s>[INST] USER [/INST] for a user's message, " ASSISTANT </s>"
// for an assistant's, each content stripped (Python's str.strip), a system message written into
// the first user message as <<SYS>>\nSYSTEM\n<</SYS>>\n\n before it.
void llama2(Writer& w, const std::vector<ChatMessage>& messages) {
  const size_t first = !messages.empty() && messages[0].role == "system" ? 1 : 0;
  check_alternating(ChatTemplate::Llama2, messages, first);
  TESSERA_CHECK(first == 0 || messages.size() > 1,
                "chat template llama2: the system message needs a "
                "user message after it (the template writes it into the first)");
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const std::string content =
        i == 1 && first == 1 ? "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n" + m.content
                             : m.content;
    const std::string_view c = trim(content);
    if (m.role == "user") {
      w.marker("<s>", false);
      w.text("[INST] " + std::string(c) + " [/INST]", false);
      continue;
    }
    w.text(" ", false);
    w.text(std::string(c) + " ", true);
    w.marker("</s>", true);
  }
}

}  // namespace

std::optional<ChatTemplate> chat_template_named(std::string_view name) {
  if (name == "chatml") return ChatTemplate::ChatML;
  if (name == "qwen3") return ChatTemplate::Qwen3;
  if (name == "llama3") return ChatTemplate::Llama3;
  if (name == "llama2") return ChatTemplate::Llama2;
  if (name == "mistral") return ChatTemplate::Mistral;
  return std::nullopt;
}

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::ChatML:
      return "chatml";
    case ChatTemplate::Qwen3:
      return "qwen3";
    case ChatTemplate::Llama3:
      return "llama3";
    case ChatTemplate::Llama2:
      return "llama2";
    case ChatTemplate::Mistral:
      return "mistral";
  }
  return "?";
}

bool is_chat_role(std::string_view role) {
  return role == "system" || role == "user" || role == "assistant";
}

ChatIds encode_chat(const Tokenizer& tok, ChatTemplate t, const std::vector<ChatMessage>& messages,
                    const ChatOptions& opt) {
  for (size_t i = 0; i < messages.size(); ++i)
    TESSERA_CHECK(is_chat_role(messages[i].role), "chat template ", chat_template_name(t),
                  ": message ", i + 1, " has the role '", messages[i].role, "' (", kChatRoles, ")");
  Writer w(tok, t);
  // Llama 2's and Mistral's templates write no generation prompt: a model continues after the
  // user's [/INST].
  switch (t) {
    case ChatTemplate::ChatML:
    case ChatTemplate::Qwen3:
      chatml(w, t == ChatTemplate::Qwen3, messages, opt);
      break;
    case ChatTemplate::Llama3:
      llama3(w, messages, opt);
      break;
    case ChatTemplate::Llama2:
      llama2(w, messages);
      break;
    case ChatTemplate::Mistral:
      mistral(w, messages);
      break;
  }
  return w.finish();
}

uint32_t end_of_turn(const Tokenizer& tok, ChatTemplate t) {
  const char* text = t == ChatTemplate::Llama3                                 ? "<|eot_id|>"
                     : t == ChatTemplate::Llama2 || t == ChatTemplate::Mistral ? "</s>"
                                                                               : "<|im_end|>";
  const std::optional<uint32_t> id = tok.added_token(text);
  TESSERA_CHECK(id.has_value(), "chat template ", chat_template_name(t), ": the ", tok.name(),
                " tokenizer has no token ", text, " (its end of turn)");
  return *id;
}

Prompt encode_chat_prompt(const Tokenizer& tok, ChatTemplate t,
                          const std::vector<ChatMessage>& context, bool think) {
  Prompt p{encode_chat(tok, t, context, {.generation_prompt = true, .think = think}).ids,
           0,
           {end_of_turn(tok, t)}};
  if (tok.eot_id() != p.ends[0]) p.ends.push_back(tok.eot_id());
  return p;
}

}  // namespace tessera::data
