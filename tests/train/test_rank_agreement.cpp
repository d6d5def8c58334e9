// The lines data-parallel ranks compare before training (train/rank_agreement.h): every config key
// with its section, the training shards, and the keys a rank names when its fingerprints differ
// from rank 0's. The exchange itself runs under mpirun (tests/multirank).
#include <gtest/gtest.h>

#include <algorithm>

#include "train/rank_agreement.h"

using namespace tessera;

namespace {

bool has_line(const std::vector<std::string>& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

}  // namespace

TEST(RankAgreement, every_key_is_compared_under_its_section_and_the_shards_too) {
  Config c;
  c.optim.lr = 0.002;
  const std::vector<std::string> lines =
      train::agreement_lines(c, {{"d/train_000.bin", "d/train_001.bin"}, 41, {"d/val_000.bin"}});
  EXPECT_TRUE(has_line(lines, "optim.lr: 0.002"));
  EXPECT_TRUE(has_line(lines, "model.rope_scaling.factor: 1.0"));
  EXPECT_TRUE(has_line(lines, "lora.rank: 0"));
  EXPECT_TRUE(has_line(lines, "data.train files: d/train_000.bin d/train_001.bin"));
  EXPECT_TRUE(has_line(lines, "data.train windows: 41"));
  EXPECT_TRUE(has_line(lines, "data.train tokens: CRC-32C 00000000"));
  EXPECT_TRUE(has_line(lines, "data.val files: d/val_000.bin"));
  EXPECT_EQ(lines.back(), "data.val tokens: CRC-32C 00000000");
  // Other tokens in files of the same names: one line differs, naming the fingerprint.
  train::RankData other_tokens{{"d/train_000.bin", "d/train_001.bin"}, 41, {"d/val_000.bin"}};
  other_tokens.train_contents = 0x1234abcd;
  EXPECT_EQ(
      train::differing_keys(train::agreement_lines(c, other_tokens), train::fingerprints(lines)),
      "data.train tokens is 'CRC-32C 1234abcd' here");
  // One line per key: the same count for every config of this build.
  Config other;
  other.train.run_name = "other", other.lora.targets = "q,k,v,o";
  EXPECT_EQ(train::agreement_lines(other, {}).size(), lines.size());
}

TEST(RankAgreement, a_rank_names_each_key_that_differs_from_rank_0_with_its_own_value) {
  Config zero, one;
  one.optim.lr = 0.002, one.train.seed = 7;
  const std::vector<double> reference =
      train::fingerprints(train::agreement_lines(zero, {{"a"}, 3, {}}));
  EXPECT_EQ(train::differing_keys(train::agreement_lines(zero, {{"a"}, 3, {}}), reference), "");
  EXPECT_EQ(train::differing_keys(train::agreement_lines(one, {{"a"}, 3, {}}), reference),
            "train.seed is '7' here, optim.lr is '0.002' here");
  EXPECT_EQ(train::differing_keys(train::agreement_lines(zero, {{"a", "b"}, 5, {"v"}}), reference),
            "data.train files is 'a b' here, data.train windows is '5' here, data.val files is 'v' "
            "here");
  Config many = zero;  // past 8 keys, the rest are counted
  many.model.n_layer = 3, many.model.n_head = 3, many.model.n_embd = 96, many.train.seed = 2;
  many.optim.lr = 1, many.optim.min_lr = 0.5, many.optim.beta1 = 0.5, many.optim.beta2 = 0.5;
  many.optim.eps = 1, many.eval.steps = 3;
  const std::string text =
      train::differing_keys(train::agreement_lines(many, {{"a"}, 3, {}}), reference);
  EXPECT_NE(text.find("model.n_layer is '3' here, "), std::string::npos) << text;
  EXPECT_TRUE(text.ends_with(" here and 2 more")) << text;
}
