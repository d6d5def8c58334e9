// Multiple-choice evaluation (eval --choices): for each item, a context and its candidate endings,
// the ending the model finds most likely, as HellaSwag is scored (Zellers et al. 2019; llm.c scores
// its GPT-2 runs so, and lm-evaluation-harness, Gao et al. 2021, every multiple-choice task).
//
//   std::vector<ChoiceItem> items = parse_choice_items(read_file("val.jsonl"), "val.jsonl");
//   ChoiceResult r = evaluate_choices(model, *tok, items);   // r.acc, r.acc_norm
//
// Input: HellaSwag's JSON Lines (one object a line, blank lines skipped): "ctx" (a string),
// "endings" (two or more strings) and "label" (the right ending's index, from 0). Other keys are
// read past (HellaSwag's files carry ind, activity_label, ctx_a, ctx_b, source_id, split, ...);
// a missing or mistyped one of the three, or a label out of range, is an error naming the file,
// the line and the key.
//
// Scoring: an ending follows its context after one space, unless the context ends in whitespace
// or the ending starts with it (HellaSwag's texts carry none at the seam; the harness's
// target_delimiter " "). The context and " " + ending are encoded apart (the ending's tokens are
// the same whatever the context's end), and the ending's log-likelihood is the sum of the model's
// log-probabilities of its tokens, each after everything before it. An empty context starts from
// the end-of-text id, as generate does. A sequence longer than the model's context (block_size + 1
// tokens with the first, which is only read) loses context tokens from its start; an ending longer
// than that alone is an error naming the item. acc picks the ending of the highest log-likelihood,
// acc_norm the highest per byte of " " + ending (the harness's acc_norm); ties go to the first.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/tokenizer.h"
#include "distributed/communicator.h"
#include "nn/gpt.h"

namespace tessera::train {

struct ChoiceItem {
  std::string context;
  std::vector<std::string> endings;
  int64_t label = 0;
  std::string where;  // names the item in errors: "val.jsonl line 3"
};

std::vector<ChoiceItem> parse_choice_items(const std::string& text, const std::string& path);
// The items of a file (a regular file or a pipe); errors name it.
std::vector<ChoiceItem> read_choice_items(const std::string& path);

// Each ending's sum of log-probabilities (nats) after the item's context, and its bytes with the
// separator (" " + ending), for acc_norm.
struct EndingScores {
  std::vector<double> logprob;
  std::vector<int64_t> bytes;
};
EndingScores score_endings(const nn::GPT& model, const data::Tokenizer& tok,
                           const ChoiceItem& item);

// Items encoded for a model of context `window`: a row an ending (the context's tail and the
// ending, at most window + 1 tokens; its last `scored` tokens the ending's), the endings' bytes
// with their separator, the label. An ending longer than the context is an error naming its item.
struct EncodedItem {
  std::vector<std::vector<uint32_t>> rows;
  std::vector<int64_t> scored, bytes;
  int64_t label = 0;
};
std::vector<EncodedItem> encode_choice_items(const std::vector<ChoiceItem>& items,
                                             const data::Tokenizer& tok, int64_t window);

// The index of the largest value; the first of equal ones.
int64_t best_choice(const std::vector<double>& values);

struct ChoiceResult {
  int64_t items = 0;
  double acc = 0, acc_norm = 0;
  double chance = 0;  // the mean over items of 1 / its ending count
};
// Items are batched in order of their longest row (a batch pads its rows little). With a
// communicator of several ranks, the i-th item of that order is scored by rank i mod world and the
// counts are summed over ranks: every rank returns the same result.
ChoiceResult evaluate_choices(const nn::GPT& model, const data::Tokenizer& tok,
                              const std::vector<ChoiceItem>& items,
                              dist::Communicator* comm = nullptr);
// The same over items already encoded (pad: the id that fills short rows, the end-of-text id).
ChoiceResult evaluate_choices(const nn::GPT& model, const std::vector<EncodedItem>& items,
                              uint32_t pad, dist::Communicator* comm = nullptr);

// eval.choices during training: the file read and its items encoded for the model's context
// once, at the start (errors name the key, the file and the line), then scored at each evaluation.
class TrainingChoices {
 public:
  explicit TrainingChoices(const Config& cfg);
  ChoiceResult score(const nn::GPT& model, dist::Communicator* comm) const {
    return evaluate_choices(model, items_, pad_, comm);
  }

 private:
  std::vector<EncodedItem> items_;
  uint32_t pad_ = 0;
};

}  // namespace tessera::train
