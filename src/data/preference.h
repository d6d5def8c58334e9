// Preference pairs for Direct Preference Optimization (Rafailov et al. 2023, train/dpo.h): a prompt
// with a chosen response and a rejected one, each pair two SFT examples (data/sft.h) that share
// the prompt. `tokenize --format pairs` writes them (shard.h: kMaskPairStart).
//
//   std::vector<PreferenceExample> p = read_preference_examples("prefs.jsonl");
//   append_sft_example(*tok, p[0].chosen, tokens, mask);    // then p[0].rejected, the same way
//
// Input: JSON Lines (one object a line; blank lines skipped), or one JSON array of objects when
// the text's first non-blank character is '[', as sft.h reads. An object is one of TRL's
// preference forms with an explicit prompt:
//   {"prompt": "...", "chosen": "...", "rejected": "..."}     standard: chosen is the example
//                                                             {prompt, chosen}, rejected
//                                                             {prompt, rejected}
//   {"prompt": [messages], "chosen": [messages], "rejected": [messages]}
//                                                             conversational: chosen's messages
//                                                             are prompt's then chosen's, and
//                                                             rejected's likewise
// with messages as sft.h's {"role", "content"} objects; a conversation needs a chat template
// (data/chat.h) to be written. "prompt" may be left out (TRL's implicit prompt: each response
// holds all of its conversation); its tokens then count in log pi(y), where they are the same in
// both responses and cancel in DPO's difference of the two (up to the tokens at the seam).
// chosen and rejected lists must not be empty and must end with an assistant's message.
//
// Errors name the file, the line (or the array's element) and the key: an unknown key, a missing
// chosen or rejected, a value neither a string nor a list of messages, strings mixed with lists in
// one object, an empty example (no prompt and an empty response), and chosen equal to rejected
// (a pair that teaches nothing, almost always a bug in the data).
#pragma once

#include <string>
#include <vector>

#include "data/sft.h"

namespace tessera::data {

struct PreferenceExample {
  SftExample chosen, rejected;
  bool operator==(const PreferenceExample&) const = default;
};

std::vector<PreferenceExample> parse_preference_examples(const std::string& text,
                                                         const std::string& path);
// The file at path, parsed so (errors name it).
std::vector<PreferenceExample> read_preference_examples(const std::string& path);

}  // namespace tessera::data
