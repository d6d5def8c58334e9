// Supervised fine-tuning examples: see sft.h.
#include "data/sft.h"

#include "checkpoint/json.h"
#include "core/error.h"
#include "data/shard.h"  // kMaskScored, kMaskExampleStart

namespace tessera::data {

std::vector<ChatMessage> chat_messages_of(const Json& list, const std::string& where,
                                          const std::string& field) {
  TESSERA_CHECK(list.is(Json::Kind::Array), where, ": \"", field, "\" is ", list.kind_name(),
                ", not an array of {\"role\", \"content\"} objects");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < list.items().size(); ++i) {
    const Json& m = list.items()[i];
    const std::string at = where + ": " + field + "[" + std::to_string(i) + "]";
    TESSERA_CHECK(m.is(Json::Kind::Object), at, " is ", m.kind_name(),
                  ", not a {\"role\", \"content\"} object");
    for (const auto& [key, value] : m.members()) {
      TESSERA_CHECK(key == "role" || key == "content", at, ": unknown key \"", key,
                    "\" (a message holds role and content)");
      TESSERA_CHECK(value.is(Json::Kind::String), at, ": \"", key, "\" is ", value.kind_name(),
                    ", not a string");
    }
    const Json *role = m.get("role"), *content = m.get("content");
    TESSERA_CHECK(role && content, at, ": no \"", role ? "content" : "role", "\"");
    TESSERA_CHECK(is_chat_role(role->str()), at, ": role \"", role->str(), "\" is not ",
                  kChatRoles);
    out.push_back({role->str(), content->str()});
  }
  TESSERA_CHECK(!out.empty(), where, ": \"", field, "\" is empty");
  return out;
}

void for_each_example_json(const std::string& text, const std::string& path,
                           const std::function<void(const Json&, const std::string&)>& f) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    const Json root = parse_json(text, path);
    const std::vector<Json>& items = root.items(path);
    for (size_t i = 0; i < items.size(); ++i) f(items[i], path + " element " + std::to_string(i));
  } else {
    for_each_json_line(text, path, f);
  }
}

namespace {

// One object's example; `where` names it in errors ("chat.jsonl line 3").
SftExample example_of(const Json& j, const std::string& where) {
  TESSERA_CHECK(j.is(Json::Kind::Object), where, ": an example is a JSON object, not ",
                j.kind_name());
  const Json *prompt = nullptr, *response = nullptr, *instruction = nullptr, *input = nullptr,
             *output = nullptr, *messages = nullptr;
  for (const auto& [key, value] : j.members()) {
    const Json** slot = key == "prompt"        ? &prompt
                        : key == "response"    ? &response
                        : key == "instruction" ? &instruction
                        : key == "input"       ? &input
                        : key == "output"      ? &output
                        : key == "messages"    ? &messages
                                               : nullptr;
    TESSERA_CHECK(slot, where, ": unknown key \"", key,
                  "\" (an example holds prompt and response, Alpaca's instruction, input and "
                  "output, or messages)");
    TESSERA_CHECK(key == "messages" || value.is(Json::Kind::String), where, ": \"", key, "\" is ",
                  value.kind_name(), ", not a string");
    *slot = &value;
  }
  const bool plain = prompt || response, alpaca = instruction || input || output;
  TESSERA_CHECK(int(plain) + int(alpaca) + int(messages != nullptr) <= 1, where,
                ": prompt/response, Alpaca's instruction/input/output and messages are three "
                "forms of an example; give one");
  SftExample e;
  if (messages) {
    e.messages = chat_messages_of(*messages, where, "messages");
    return e;
  }
  if (alpaca) {
    TESSERA_CHECK(instruction && output, where, ": an Alpaca example needs \"",
                  instruction ? "output" : "instruction", "\"");
    const std::string in = input ? input->str() : "";
    e.prompt = alpaca_prompt(instruction->str(), in);
    e.response = output->str();
    e.messages = {{"user", instruction->str() + (in.empty() ? "" : "\n\n" + in)},
                  {"assistant", e.response}};
  } else {
    e.prompt = prompt ? prompt->str() : "";
    e.response = response ? response->str() : "";
  }
  TESSERA_CHECK(!e.prompt.empty() || !e.response.empty(), where,
                ": an empty example (no prompt and no response)");
  return e;
}

}  // namespace

std::vector<SftExample> read_sft_examples(const std::string& path) {
  return parse_sft_examples(read_json_file(path), path);
}

std::string alpaca_prompt(const std::string& instruction, const std::string& input) {
  // Stanford Alpaca's two templates (Taori et al. 2023), with input and without.
  if (!input.empty())
    return "Below is an instruction that describes a task, paired with an input that provides "
           "further context. Write a response that appropriately completes the request.\n\n"
           "### Instruction:\n" +
           instruction + "\n\n### Input:\n" + input + "\n\n### Response:\n";
  return "Below is an instruction that describes a task. Write a response that appropriately "
         "completes the request.\n\n### Instruction:\n" +
         instruction + "\n\n### Response:\n";
}

std::vector<SftExample> parse_sft_examples(const std::string& text, const std::string& path) {
  std::vector<SftExample> out;
  for_each_example_json(text, path, [&](const Json& j, const std::string& where) {
    out.push_back(example_of(j, where));
  });
  TESSERA_CHECK(!out.empty(), path, ": no examples (JSON Lines of {\"prompt\", \"response\"} ",
                "objects, or a JSON array of them)");
  return out;
}

std::vector<ChatMessage> conversation(const SftExample& e) {
  if (!e.messages.empty()) return e.messages;
  std::vector<ChatMessage> out;
  if (!e.prompt.empty()) out.push_back({"user", e.prompt});
  if (!e.response.empty()) out.push_back({"assistant", e.response});
  return out;
}

ChatTurn last_turn(const SftExample& e) {
  ChatTurn turn{conversation(e), ""};
  if (!turn.context.empty() && turn.context.back().role == "assistant") {
    turn.reply = std::move(turn.context.back().content);
    turn.context.pop_back();
  }
  return turn;
}

void append_sft_example(const Tokenizer& tok, const SftExample& example,
                        std::vector<uint32_t>& tokens, std::vector<uint8_t>& mask,
                        std::optional<uint32_t> bos) {
  TESSERA_CHECK(!example.needs_chat_template(),
                "an example given as messages needs a chat template (", kChatTemplateNames, ")");
  std::vector<uint32_t> prompt = tok.encode(example.prompt);
  if (bos) prompt.insert(prompt.begin(), *bos);
  const std::vector<uint32_t> response = tok.encode_more(example.response);
  tokens.insert(tokens.end(), prompt.begin(), prompt.end());
  mask.insert(mask.end(), prompt.size(), uint8_t(0));
  tokens.insert(tokens.end(), response.begin(), response.end());
  tokens.push_back(tok.eot_id());
  mask.insert(mask.end(), response.size() + 1, kMaskScored);
  mask[mask.size() - (prompt.size() + response.size() + 1)] |= kMaskExampleStart;
}

void append_chat_example(const Tokenizer& tok, ChatTemplate t, const SftExample& example,
                         std::vector<uint32_t>& tokens, std::vector<uint8_t>& mask) {
  const ChatIds c = encode_chat(tok, t, conversation(example));  // never empty: markers
  const size_t first = tokens.size();
  tokens.insert(tokens.end(), c.ids.begin(), c.ids.end());
  for (const bool scored : c.scored) mask.push_back(scored ? kMaskScored : uint8_t(0));
  mask[first] |= kMaskExampleStart;
}

}  // namespace tessera::data
