// eval.choices and eval.answers over ranks (train/choices.h, train/answers.h): item i (of the
// choices' length order, of the answers' file) scored by rank i mod world, the counts summed, so
// every rank reports what one process scoring every item does (7 items: unequal shares on 2 and 4
// ranks, one rank of 4 scoring a single item).
#include <gtest/gtest.h>

#include "comm_under_test.h"
#include "core/rng.h"
#include "data/tokenizer.h"
#include "nn/gpt.h"
#include "ops/elementwise.h"
#include "train/answer_fixture.h"
#include "train/answers.h"
#include "train/choices.h"

namespace tessera {
namespace {

TEST(ChoicesRanks, every_rank_reports_one_processs_accuracy) {
  dist::Communicator& comm = dist::communicator_under_test();
  nn::GPTConfig cfg;
  cfg.n_layer = 1, cfg.n_head = 2, cfg.n_embd = 16, cfg.block_size = 16, cfg.vocab_size = 257;
  Generator gen(7);  // the same weights on every rank
  nn::GPT model(cfg, gen);
  for (const auto& [name, p] : model.parameters())
    Tensor(p).copy_(ops::scale(randn(p.shape(), gen), 0.5));
  const auto tok = data::make_tokenizer("byte");
  std::vector<train::ChoiceItem> items;
  const char* endings[] = {"light", "dark", "water", "earth", "day", "night", "sea", "land"};
  for (int i = 0; i < 7; ++i)
    items.push_back({"And God made the",
                     {endings[i], endings[i + 1], endings[(i + 3) % 8]},
                     int64_t(i % 3),
                     "t line " + std::to_string(i + 1)});
  const train::ChoiceResult one = train::evaluate_choices(model, *tok, items);
  const train::ChoiceResult all = train::evaluate_choices(model, *tok, items, &comm);
  EXPECT_EQ(all.items, 7);
  // Counts of 7: exact in a double whatever the order of the sum.
  EXPECT_EQ(all.acc, one.acc) << "rank " << comm.rank() << " of " << comm.world();
  EXPECT_EQ(all.acc_norm, one.acc_norm);
  EXPECT_DOUBLE_EQ(all.chance, 1.0 / 3);
}

// The chain model answers prompts ending in 'a' with "b!": items 0, 3 and 6 exact (one on each of
// ranks 0, 1 and 2 of 4; two on rank 0 of 2), item 4 formed.
TEST(AnswersRanks, every_rank_reports_one_processs_shares) {
  dist::Communicator& comm = dist::communicator_under_test();
  const nn::GPT model = testing::chain_model(testing::chain_model_config());
  const auto tok = data::make_tokenizer("byte");
  const train::AnswerSet set({{"1a", "b!"},
                              {"2", "x"},
                              {"33", "yy"},
                              {"4a", "b!"},
                              {"5a", "zz"},
                              {"66", "x"},
                              {"7a", "b!"}},
                             *tok, "t.jsonl");
  const train::AnswerResult one = train::evaluate_answers(model, *tok, set);
  const train::AnswerResult all = train::evaluate_answers(model, *tok, set, &comm);
  EXPECT_EQ(all.items, 7);
  EXPECT_DOUBLE_EQ(one.exact, 3.0 / 7);
  // Counts of 7: exact in a double whatever the order of the sum.
  EXPECT_EQ(all.exact, one.exact) << "rank " << comm.rank() << " of " << comm.world();
  EXPECT_EQ(all.formed, one.formed);
  EXPECT_GT(all.formed, all.exact);
}

}  // namespace
}  // namespace tessera
