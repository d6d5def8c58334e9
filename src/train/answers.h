// Exact-match answers (eval --answers, eval.answers): prompt / response examples whose prompts the
// model continues greedily, each continuation compared with its response, as tasks with one right
// answer are scored (lm-evaluation-harness's exact_match, Gao et al. 2021; GSM8K's final answer).
//
//   AnswerSet set(data::read_sft_examples("held-out.jsonl"), *tok);
//   AnswerResult r = evaluate_answers(model, *tok, set);   // r.exact, r.formed, r.majority
//
// Input: data/sft.h's examples (JSON Lines or a JSON array of prompt / response or Alpaca
// examples, as `tokenize --format sft` reads them; conversations too under a chat template); an
// example without a response is an error naming it (nothing to compare with).
//
// Scoring: each prompt (encoded as build/generate encodes one; an empty prompt starts from the
// end-of-text id) continued at temperature 0, the most likely id at each step, until the
// end-of-text id or one token past the longest response of the file (encoded alone); the
// continuation, less that end-of-text id, is `exact` where it equals the example's response and
// `formed` where it equals some response of the file (the answers' format learnt, right or not).
// `majority` is the share of the commonest response: what always answering it would score.
// scripts/sft_accuracy.py prints the same three counts through build/generate --prompts.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/chat.h"
#include "data/sft.h"
#include "data/tokenizer.h"
#include "distributed/communicator.h"
#include "nn/gpt.h"

namespace tessera::train {

struct AnswerResult {
  int64_t items = 0;
  double exact = 0, formed = 0, majority = 0;  // shares of the items
};

// The examples with their prompts encoded, the file's responses and its longest one's tokens.
// `what` names the examples in errors ("held-out.jsonl").
// Under a chat template (data.chat_template) an example's prompt is its conversation less a final
// assistant message, whose content is the response (data::last_turn), sent as build/generate
// --prompt-style sends it (under qwen3 with --no-think: the prompt ends with the empty reasoning
// block, so that what the model writes is the answer itself); the answer ends at the end of turn.
struct AnswerSet {
  // bos: each plain prompt after the tokenizer's beginning-of-text id (an error naming `what`
  // where it has none), as tokenize --format sft --bos starts examples.
  AnswerSet(std::vector<data::SftExample> examples, const data::Tokenizer& tok,
            const std::string& what, std::optional<data::ChatTemplate> chat = std::nullopt,
            bool bos = false);
  std::vector<data::SftExample> examples;
  std::vector<data::Prompt> prompts;
  std::vector<std::string> answers;  // by example: the response to compare with
  std::set<std::string> responses;
  int64_t longest = 0;  // tokens of the longest response
  double majority = 0;
};

// Prompts are continued together, of any lengths in a batch (nn::generate_each). With a
// communicator of several ranks, example i is answered by rank i mod world and the counts are
// summed over ranks: every rank returns the same result.
AnswerResult evaluate_answers(const nn::GPT& model, const data::Tokenizer& tok,
                              const AnswerSet& set, dist::Communicator* comm = nullptr);

// eval.answers during training: the file read and its prompts encoded once, at the start (errors
// name the key, the file and the example), then answered at each evaluation.
class TrainingAnswers {
 public:
  explicit TrainingAnswers(const Config& cfg);
  AnswerResult score(const nn::GPT& model, dist::Communicator* comm) const {
    return evaluate_answers(model, *tok_, *set_, comm);
  }

 private:
  std::unique_ptr<data::Tokenizer> tok_;
  std::unique_ptr<AnswerSet> set_;
};

}  // namespace tessera::train
