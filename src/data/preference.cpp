// Preference pairs: see preference.h. The JSON and message reading is sft.cpp's.
#include "data/preference.h"

#include "checkpoint/json.h"
#include "core/error.h"

namespace tessera::data {
namespace {

// One object's pair; `where` names it in errors ("prefs.jsonl line 3").
PreferenceExample pair_of(const Json& j, const std::string& where) {
  TESSERA_CHECK(j.is(Json::Kind::Object), where, ": a preference pair is a JSON object, not ",
                j.kind_name());
  const Json *prompt = nullptr, *chosen = nullptr, *rejected = nullptr;
  std::string first_key;  // the first key given, and whether its value is a string
  bool strings = false;
  for (const auto& [key, value] : j.members()) {
    const Json** slot = key == "prompt"     ? &prompt
                        : key == "chosen"   ? &chosen
                        : key == "rejected" ? &rejected
                                            : nullptr;
    TESSERA_CHECK(slot, where, ": unknown key \"", key,
                  "\" (a preference pair holds prompt, chosen and rejected)");
    const bool string = value.is(Json::Kind::String);
    TESSERA_CHECK(string || value.is(Json::Kind::Array), where, ": \"", key, "\" is ",
                  value.kind_name(),
                  ", not a string or an array of {\"role\", \"content\"} messages");
    if (first_key.empty()) first_key = key, strings = string;
    TESSERA_CHECK(string == strings, where, ": \"", key, "\" is ", string ? "a string" : "an array",
                  " but \"", first_key, "\" is ", strings ? "a string" : "an array",
                  ": give prompt, chosen and rejected all as strings or all as messages");
    *slot = &value;
  }
  TESSERA_CHECK(chosen && rejected, where, ": no \"", chosen ? "rejected" : "chosen",
                "\" (a preference pair holds prompt, chosen and rejected)");

  PreferenceExample p;
  if (strings) {
    const std::string context = prompt ? prompt->str() : "";
    p.chosen = {context, chosen->str()};
    p.rejected = {context, rejected->str()};
    // Both empty would be an example that needs a chat template (SftExample), and says nothing.
    for (const auto* e : {&p.chosen, &p.rejected})
      TESSERA_CHECK(!e->needs_chat_template(), where, ": \"",
                    e == &p.chosen ? "chosen" : "rejected",
                    "\" is empty and so is the prompt: an empty example");
  } else {
    const std::vector<ChatMessage> context =
        prompt ? chat_messages_of(*prompt, where, "prompt") : std::vector<ChatMessage>{};
    // The prompt's messages, then the response's, which end with the assistant's (the one scored).
    const auto conversation = [&](const char* key, const Json& value) {
      const std::vector<ChatMessage> reply = chat_messages_of(value, where, key);
      TESSERA_CHECK(reply.back().role == "assistant", where, ": \"", key, "\" ends with a ",
                    reply.back().role,
                    "'s message, not the assistant's response the pair compares");
      std::vector<ChatMessage> all = context;
      all.insert(all.end(), reply.begin(), reply.end());
      return all;
    };
    p.chosen.messages = conversation("chosen", *chosen);
    p.rejected.messages = conversation("rejected", *rejected);
  }
  TESSERA_CHECK(!(p.chosen == p.rejected), where,
                ": \"chosen\" and \"rejected\" are the same response: a pair that teaches nothing "
                "(a bug in the data?)");
  return p;
}

}  // namespace

std::vector<PreferenceExample> parse_preference_examples(const std::string& text,
                                                         const std::string& path) {
  std::vector<PreferenceExample> out;
  for_each_example_json(text, path, [&](const Json& j, const std::string& where) {
    out.push_back(pair_of(j, where));
  });
  TESSERA_CHECK(!out.empty(), path,
                ": no preference pairs (JSON Lines of {\"prompt\", \"chosen\", \"rejected\"} "
                "objects, or a JSON array of them)");
  return out;
}

std::vector<PreferenceExample> read_preference_examples(const std::string& path) {
  return parse_preference_examples(read_json_file(path), path);
}

}  // namespace tessera::data
