// eval.choices over ranks (train/choices.h): item i scored by rank i mod world, the counts summed,
// so every rank reports what one process scoring every item does (7 items: unequal shares on 2
// and 4 ranks, one rank of 4 scoring a single item).
#include <gtest/gtest.h>

#include "comm_under_test.h"
#include "core/rng.h"
#include "data/tokenizer.h"
#include "nn/gpt.h"
#include "ops/elementwise.h"
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

}  // namespace
}  // namespace tessera
