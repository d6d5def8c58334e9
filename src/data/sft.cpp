// Supervised fine-tuning examples: see sft.h.
#include "data/sft.h"

#include "checkpoint/json.h"
#include "core/error.h"
#include "data/shard.h"  // kMaskScored, kMaskExampleStart

namespace tessera::data {
namespace {

// One object's example; `where` names it in errors ("chat.jsonl line 3").
SftExample example_of(const Json& j, const std::string& where) {
  TESSERA_CHECK(j.is(Json::Kind::Object), where, ": an example is a JSON object, not ",
                j.kind_name());
  const Json *prompt = nullptr, *response = nullptr, *instruction = nullptr, *input = nullptr,
             *output = nullptr;
  for (const auto& [key, value] : j.members()) {
    const Json** slot = key == "prompt"        ? &prompt
                        : key == "response"    ? &response
                        : key == "instruction" ? &instruction
                        : key == "input"       ? &input
                        : key == "output"      ? &output
                                               : nullptr;
    TESSERA_CHECK(slot, where, ": unknown key \"", key,
                  "\" (an example holds prompt and response, or Alpaca's instruction, input and "
                  "output)");
    TESSERA_CHECK(value.is(Json::Kind::String), where, ": \"", key, "\" is ", value.kind_name(),
                  ", not a string");
    *slot = &value;
  }
  const bool plain = prompt || response, alpaca = instruction || input || output;
  TESSERA_CHECK(!(plain && alpaca), where,
                ": prompt/response and Alpaca's instruction/input/output are two forms of an "
                "example; give one");
  SftExample e;
  if (alpaca) {
    TESSERA_CHECK(instruction && output, where, ": an Alpaca example needs \"",
                  instruction ? "output" : "instruction", "\"");
    e.prompt = alpaca_prompt(instruction->str(), input ? input->str() : "");
    e.response = output->str();
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
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    const Json root = parse_json(text, path);
    const std::vector<Json>& items = root.items(path);
    for (size_t i = 0; i < items.size(); ++i)
      out.push_back(example_of(items[i], path + " element " + std::to_string(i)));
  } else {
    for_each_json_line(text, path, [&](const Json& j, const std::string& where) {
      out.push_back(example_of(j, where));
    });
  }
  TESSERA_CHECK(!out.empty(), path, ": no examples (JSON Lines of {\"prompt\", \"response\"} ",
                "objects, or a JSON array of them)");
  return out;
}

void append_sft_example(const Tokenizer& tok, const SftExample& example,
                        std::vector<uint32_t>& tokens, std::vector<uint8_t>& mask,
                        std::optional<uint32_t> bos) {
  std::vector<uint32_t> prompt = tok.encode(example.prompt);
  if (bos) prompt.insert(prompt.begin(), *bos);
  const std::vector<uint32_t> response = tok.encode(example.response);
  tokens.insert(tokens.end(), prompt.begin(), prompt.end());
  mask.insert(mask.end(), prompt.size(), uint8_t(0));
  tokens.insert(tokens.end(), response.begin(), response.end());
  tokens.push_back(tok.eot_id());
  mask.insert(mask.end(), response.size() + 1, kMaskScored);
  mask[mask.size() - (prompt.size() + response.size() + 1)] |= kMaskExampleStart;
}

}  // namespace tessera::data
