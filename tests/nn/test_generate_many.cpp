// generate_many: several continuations of one prompt drawn as one batch through the KV cache
// (generate_each: several prompts, those of one length in a batch). Each row must be what generate
// draws alone with that row's generator (f64 models: a batched forward and a lone one agree far
// below any gap between two tokens' probabilities), through the learned window's slides and past
// RoPE's trained length, with rows stopping at different lengths.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "nn/generate.h"
#include "nn/gpt.h"
#include "test_util.h"

using namespace tessera;
using nn::GPT;
using nn::GPTConfig;

namespace {

GPTConfig tiny(nn::PositionKind position) {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 8, c.block_size = 4, c.vocab_size = 11;
  c.position = position;
  return c;
}

// Every row of generate_many against generate alone with a copy of that row's generator; the
// generators must end where generate leaves them. Returns the rows.
std::vector<std::vector<int32_t>> expect_rows_as_alone(const GPT& m,
                                                       const std::vector<int32_t>& prompt,
                                                       const nn::SampleOptions& opt, int rows) {
  std::vector<Generator> gens;
  for (int r = 0; r < rows; ++r) gens.emplace_back(uint64_t(100 + r));
  std::vector<Generator> before = gens;
  const std::vector<std::vector<int32_t>> out = nn::generate_many(m, prompt, opt, gens);
  EXPECT_EQ(out.size(), size_t(rows));
  for (int r = 0; r < rows && r < int(out.size()); ++r) {
    Generator& alone = before[size_t(r)];
    EXPECT_EQ(out[size_t(r)], nn::generate(m, prompt, opt, alone)) << "row " << r;
    EXPECT_EQ(gens[size_t(r)].state().offset, alone.state().offset) << "row " << r;
  }
  return out;
}

}  // namespace

TEST(GenerateMany, each_row_is_what_its_generator_draws_alone) {
  for (const nn::PositionKind position : {nn::PositionKind::Learned, nn::PositionKind::RoPE}) {
    Generator g(9);
    const GPT m(tiny(position), g, DType::F64);
    // block_size 4 and 3 + 14 tokens: learned positions slide the window five times, RoPE runs
    // four times past its trained length.
    const auto out =
        expect_rows_as_alone(m, {1, 2, 3}, {.max_new_tokens = 14, .temperature = 2}, 5);
    std::set<std::vector<int32_t>> distinct(out.begin(), out.end());
    EXPECT_GT(distinct.size(), 1u) << "the rows' generators must draw different texts";
    for (const auto& row : out) EXPECT_EQ(row.size(), 17u);
  }
}

TEST(GenerateMany, rows_that_stop_early_are_cut_and_the_others_go_on) {
  Generator g(3);
  const GPT m(tiny(nn::PositionKind::Learned), g, DType::F64);
  // At temperature 5 every id is likely: id 0 as the stop token ends rows at different steps.
  const auto out = expect_rows_as_alone(
      m, {4, 5}, {.max_new_tokens = 40, .temperature = 5, .top_k = 0, .stop_token = 0}, 8);
  std::set<size_t> lengths;
  for (const auto& row : out) {
    lengths.insert(row.size());
    if (row.size() < 42u) {
      EXPECT_EQ(row.back(), 0) << "a row shorter than the limit stopped";
    }
    for (size_t i = 2; i + 1 < row.size(); ++i) EXPECT_NE(row[i], 0) << "stopped at " << i;
  }
  EXPECT_GE(lengths.size(), 3u) << "the case must hold rows of several lengths";
}

// on_token sees every drawn id: each row's calls spell its new ids, the stop id included, and a
// stopped row is called no more.
TEST(GenerateMany, the_callback_sees_each_rows_ids_as_they_are_drawn) {
  Generator g(3);
  const GPT m(tiny(nn::PositionKind::Learned), g, DType::F64);
  std::vector<Generator> gens = {Generator(100), Generator(101), Generator(102), Generator(103)};
  std::vector<std::vector<int32_t>> seen(gens.size());
  const auto out = nn::generate_many(
      m, {4, 5}, {.max_new_tokens = 40, .temperature = 5, .top_k = 0, .stop_token = 0}, gens,
      [&](size_t row, int32_t id) { seen[row].push_back(id); });
  for (size_t r = 0; r < out.size(); ++r)
    EXPECT_EQ(seen[r], std::vector<int32_t>(out[r].begin() + 2, out[r].end())) << "row " << r;
}

TEST(GenerateMany, no_generator_is_an_error) {
  Generator g(3);
  const GPT m(tiny(nn::PositionKind::Learned), g);
  std::vector<Generator> none;
  const std::string msg = tessera::testing::error_of([&] { nn::generate_many(m, {1}, {}, none); });
  EXPECT_NE(msg.find("no samples asked for"), std::string::npos) << msg;
}

// generate_each: prompts of several lengths, those of one length drawn as one batch (at most
// max_rows), each prompt what generate draws alone from it with its generator, through the learned
// window's slides and past RoPE's trained length. Same-length prompts differ in their ids, so a
// batch that fed one prompt to all its rows would show.
TEST(GenerateEach, each_prompt_is_what_it_draws_alone_and_batches_go_by_first_prompt) {
  for (const nn::PositionKind position : {nn::PositionKind::Learned, nn::PositionKind::RoPE}) {
    Generator g(9);
    const GPT m(tiny(position), g, DType::F64);
    const std::vector<std::vector<int32_t>> prompts = {{1, 2},    {3, 4, 5}, {6, 7}, {8, 9},
                                                       {5, 4, 3}, {2},       {10, 1}};
    const nn::SampleOptions opt{.max_new_tokens = 9, .temperature = 2, .stop_token = 0};
    std::vector<Generator> gens;
    for (size_t i = 0; i < prompts.size(); ++i) gens.emplace_back(uint64_t(200 + i));
    std::vector<Generator> before = gens;
    std::vector<size_t> order;
    std::vector<std::vector<int32_t>> done(prompts.size());
    const auto out =
        nn::generate_each(m, prompts, opt, gens, 2, [&](size_t i, const std::vector<int32_t>& ids) {
          order.push_back(i);
          done.at(i) = ids;
        });
    // Lengths 2 3 2 2 3 1 2, two rows a batch: {0, 2}, {1, 4}, {3, 6}, {5}.
    EXPECT_EQ(order, (std::vector<size_t>{0, 2, 1, 4, 3, 6, 5}));
    ASSERT_EQ(out.size(), prompts.size());
    EXPECT_EQ(done, out);
    for (size_t i = 0; i < prompts.size(); ++i) {
      Generator& alone = before[i];
      EXPECT_EQ(out[i], nn::generate(m, prompts[i], opt, alone)) << "prompt " << i;
      EXPECT_EQ(gens[i].state().offset, alone.state().offset) << "prompt " << i;
    }
  }
}

TEST(GenerateEach, a_batch_of_prompts_of_two_lengths_or_a_count_off_is_an_error) {
  Generator g(3);
  const GPT m(tiny(nn::PositionKind::Learned), g);
  std::vector<Generator> two = {Generator(1), Generator(2)};
  std::string msg = tessera::testing::error_of([&] {
    nn::generate_rows(m, {{1, 2}, {3}}, {}, two);
  });
  EXPECT_NE(msg.find("a batch's prompts must be of one length, got 2 and 1 tokens"),
            std::string::npos)
      << msg;
  msg = tessera::testing::error_of([&] { nn::generate_rows(m, {{1, 2}}, {}, two); });
  EXPECT_NE(msg.find("1 prompts for 2 generators"), std::string::npos) << msg;
  msg = tessera::testing::error_of([&] { nn::generate_each(m, {{1}, {2}}, {}, two, 0); });
  EXPECT_NE(msg.find("a batch must hold at least one row, got 0"), std::string::npos) << msg;
}
