// Exact-match answers: see answers.h.
#include "train/answers.h"

#include <algorithm>
#include <map>

#include "core/error.h"
#include "nn/generate.h"

namespace tessera::train {

AnswerSet::AnswerSet(std::vector<data::SftExample> examples_in, const data::Tokenizer& tok,
                     const std::string& what, std::optional<data::ChatTemplate> chat, bool bos)
    : examples(std::move(examples_in)) {
  TESSERA_CHECK(!(chat && bos), what,
                ": a beginning-of-text id and a chat template: the template "
                "writes what starts a prompt");
  std::map<std::string, int64_t> counts;
  for (size_t i = 0; i < examples.size(); ++i) {
    const data::SftExample& e = examples[i];
    if (chat) {
      data::ChatTurn turn = data::last_turn(e);
      // Qwen3's non-thinking prompt: the answer is the reply itself, within the token budget.
      prompts.push_back(data::encode_chat_prompt(tok, *chat, turn.context, /*think=*/false));
      answers.push_back(std::move(turn.reply));
    } else {
      TESSERA_CHECK(
          !e.needs_chat_template(), what, ": example ", i + 1,
          " is a conversation (\"messages\"): it needs a chat template (data.chat_template, "
          "or eval --prompt-style)");
      prompts.push_back(data::encode_prompt(tok, e.prompt, bos, what));
      answers.push_back(e.response);
    }
    const std::string& answer = answers.back();
    TESSERA_CHECK(!answer.empty(), what, ": example ", i + 1,
                  chat ? " ends with no assistant message to compare an answer with"
                       : " has no response to compare an answer with");
    responses.insert(answer);
    longest = std::max(longest, int64_t(tok.encode_more(answer).size()));
    ++counts[answer];
  }
  int64_t most = 0;
  for (const auto& [response, n] : counts) most = std::max(most, n);
  if (!examples.empty()) majority = double(most) / double(examples.size());
}

AnswerResult evaluate_answers(const nn::GPT& model, const data::Tokenizer& tok,
                              const AnswerSet& set, dist::Communicator* comm) {
  const size_t world = comm ? size_t(comm->world()) : 1, rank = comm ? size_t(comm->rank()) : 0;
  std::vector<size_t> mine;  // this rank's examples
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Generator> gens;  // greedy draws use none; generate_each wants one a prompt
  size_t longest_prompt = 1;
  for (size_t i = rank; i < set.examples.size(); i += world) {
    const std::vector<uint32_t>& ids = set.prompts[i].ids;
    mine.push_back(i);
    prompts.emplace_back(ids.begin(), ids.end());
    gens.emplace_back(0);
    longest_prompt = std::max(longest_prompt, ids.size());
  }
  nn::SampleOptions opt;
  opt.max_new_tokens = set.longest + 1;  // the end-of-text id after the longest response
  opt.temperature = 0;
  if (!set.prompts.empty()) opt.stop_tokens = data::stop_ids(set.prompts[0]);  // one template
  opt.vocab = tok.vocab_size();  // a model padded past it: ids no tokenizer can decode
  // A batch's prefill holds each row's whole prompt in its activations (and, on the CPU, its
  // attention scores; the logits are the last position's alone): rows up to 32 and up to 8192
  // prompt tokens, at least one row (8 rows of GPT-2's 1024-token context).
  const int64_t rows = std::clamp<int64_t>(8192 / int64_t(longest_prompt), 1, 32);
  double exact = 0, formed = 0;
  nn::generate_each(model, prompts, opt, gens, rows,
                    [&](size_t k, const std::vector<int32_t>& ids) {
                      const size_t i = mine[k];
                      const std::string answer = data::decode_completion(tok, set.prompts[i], ids);
                      exact += answer == set.answers[i];
                      formed += set.responses.count(answer) > 0;
                    });
  if (world > 1) {
    const std::vector<double> sums = comm->all_reduce_host({exact, formed}, dist::ReduceOp::Sum);
    exact = sums[0], formed = sums[1];
  }
  AnswerResult r;
  r.items = int64_t(set.examples.size());
  if (r.items) {
    r.exact = exact / double(r.items);
    r.formed = formed / double(r.items);
    r.majority = set.majority;
  }
  return r;
}

TrainingAnswers::TrainingAnswers(const Config& cfg) {
  try {
    tok_ = data::make_tokenizer(cfg.data.tokenizer, cfg.data.tokenizer_dir);
    set_ = std::make_unique<AnswerSet>(
        data::read_sft_examples(cfg.eval.answers), *tok_, cfg.eval.answers,
        data::chat_template_named(cfg.data.chat_template), cfg.eval.answers_bos);
  } catch (const Error& e) {
    TESSERA_FAIL("eval.answers: ", e.what());
  }
}

}  // namespace tessera::train
