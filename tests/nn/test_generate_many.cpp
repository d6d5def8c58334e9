// generate_many: several continuations of one prompt drawn as one batch through the KV cache
// (generate_each: several prompts of any lengths in a batch, each row of the cache at its own
// position). Each row must be what generate draws alone with that row's generator (f64 models: a
// batched forward and a lone one agree far below any gap between two tokens' probabilities),
// through the learned window's slides and past RoPE's trained length, with rows stopping at
// different lengths.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "nn/generate.h"
#include "nn/gpt.h"
#include "ops/ops.h"
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

// Models whose positions or attention a row of the cache must get right on its own: learned
// positions (each row its own table row, the window sliding a row at a time), RoPE (each row its
// own rotation) with dynamic NTK scaling (each row's table of its own length) and QK-norm, ALiBi,
// and the two attentions that carry state along the keys (the forget gate's sums, stick-breaking).
std::vector<std::pair<std::string, GPTConfig>> decoding_styles() {
  std::vector<std::pair<std::string, GPTConfig>> out;
  out.emplace_back("learned", tiny(nn::PositionKind::Learned));
  out.emplace_back("rope", tiny(nn::PositionKind::RoPE));
  GPTConfig dynamic = tiny(nn::PositionKind::RoPE);
  dynamic.rope_scaling.type = nn::RopeScalingType::Dynamic, dynamic.rope_scaling.factor = 2;
  dynamic.qk_norm = true;
  out.emplace_back("rope dynamic qk_norm", dynamic);
  GPTConfig alibi = tiny(nn::PositionKind::ALiBi);
  alibi.attention.alibi = true;
  out.emplace_back("alibi", alibi);
  GPTConfig forgetting = tiny(nn::PositionKind::None);
  forgetting.attention.kind = nn::AttentionKind::Forgetting;
  out.emplace_back("forgetting", forgetting);
  GPTConfig sb = tiny(nn::PositionKind::None);
  sb.attention.kind = nn::AttentionKind::StickBreaking;
  out.emplace_back("stick_breaking", sb);
  return out;
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
      m, {4, 5}, {.max_new_tokens = 40, .temperature = 5, .top_k = 0, .stop_tokens = {0}}, 8);
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
      m, {4, 5}, {.max_new_tokens = 40, .temperature = 5, .top_k = 0, .stop_tokens = {0}}, gens,
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

// generate_each: prompts of several lengths drawn together (at most max_rows a batch, in order),
// each prompt what generate draws alone from it with its generator, through the learned window's
// slides and past RoPE's trained length, in every decoding style. Same-length prompts differ in
// their ids, so a batch that fed one prompt to all its rows would show. The (untied) head is
// scaled up so that the logits spread over several nats and each draw depends on what the model
// reads: at GPT-2's initial scale every distribution is near uniform, and a row fed the wrong keys
// would draw what it draws right.
TEST(GenerateEach, each_prompt_is_what_it_draws_alone_in_batches_of_any_lengths) {
  for (auto [style, cfg] : decoding_styles()) {
    SCOPED_TRACE(style);
    cfg.tie_embeddings = false;
    Generator g(9);
    GPT m(cfg, g, DType::F64);
    {
      NoGradGuard no_grad;
      Tensor head = m.parameter("lm_head.weight");
      head.copy_(ops::scale(head.clone(), 100.0));
    }
    const std::vector<std::vector<int32_t>> prompts = {{1, 2},    {3, 4, 5}, {6, 7}, {8, 9},
                                                       {5, 4, 3}, {2},       {10, 1}};
    const nn::SampleOptions opt{.max_new_tokens = 9, .temperature = 2, .stop_tokens = {0}};
    std::vector<Generator> gens;
    for (size_t i = 0; i < prompts.size(); ++i) gens.emplace_back(uint64_t(200 + i));
    std::vector<Generator> before = gens;
    std::vector<size_t> order;
    std::vector<std::vector<int32_t>> done(prompts.size());
    const auto out =
        nn::generate_each(m, prompts, opt, gens, 3, [&](size_t i, const std::vector<int32_t>& ids) {
          order.push_back(i);
          done.at(i) = ids;
        });
    // Lengths 2 3 2 2 3 1 2, three rows a batch, whole groups of one length in turn: {0, 2, 3},
    // then 1's group {1, 4} and 5's {5}, then {6}.
    EXPECT_EQ(order, (std::vector<size_t>{0, 2, 3, 1, 4, 5, 6}));
    ASSERT_EQ(out.size(), prompts.size());
    EXPECT_EQ(done, out);
    for (size_t i = 0; i < prompts.size(); ++i) {
      Generator& alone = before[i];
      EXPECT_EQ(out[i], nn::generate(m, prompts[i], opt, alone)) << "prompt " << i;
      EXPECT_EQ(gens[i].state().offset, alone.state().offset) << "prompt " << i;
    }
  }
}

TEST(GenerateEach, an_empty_prompt_or_a_count_off_is_an_error) {
  Generator g(3);
  const GPT m(tiny(nn::PositionKind::Learned), g);
  std::vector<Generator> two = {Generator(1), Generator(2)};
  std::string msg = tessera::testing::error_of([&] {
    nn::generate_rows(m, {{1, 2}, {}}, {}, two);
  });
  EXPECT_NE(msg.find("prompt 1 is empty"), std::string::npos) << msg;
  msg = tessera::testing::error_of([&] { nn::generate_rows(m, {{1, 2}}, {}, two); });
  EXPECT_NE(msg.find("1 prompts for 2 generators"), std::string::npos) << msg;
  msg = tessera::testing::error_of([&] { nn::generate_each(m, {{1}, {2}}, {}, two, 0); });
  EXPECT_NE(msg.find("a batch must hold at least one row, got 0"), std::string::npos) << msg;
}

// A cache of rows of different lengths (KVCache::lengths): each row filled alone through its view
// (KVCache::rows), then steps of one token a row for the whole batch. Each row's logits are those
// of the full forward over that row's sequence alone (f64: equal to rounding), in every decoding
// style; rows of 1, 4, 4 and 2 tokens (the two of 4 side by side: attended as one run), three
// steps.
TEST(RaggedCache, each_rows_logits_are_its_full_forwards) {
  const std::vector<std::vector<int32_t>> seqs = {
      {3, 1, 4, 1}, {5, 9, 2, 6, 5, 3, 5}, {2, 7, 1, 8, 2, 8, 1}, {8, 9, 7, 9, 3}};
  const std::vector<int64_t> prompt = {1, 4, 4, 2};
  const size_t R = seqs.size();
  for (auto [style, cfg] : decoding_styles()) {
    SCOPED_TRACE(style);
    cfg.block_size = 8;
    Generator g(12);
    const GPT m(cfg, g, DType::F64);
    nn::KVCache cache = m.make_cache(int64_t(R), 8);
    cache.lengths.assign(R, 0);
    double worst = 0;
    auto full = [&](size_t r, int64_t n) {  // the last row of the forward over seqs[r][0, n)
      const std::vector<int32_t> ids(seqs[r].begin(), seqs[r].begin() + n);
      return m.forward(from_vector<int32_t>(ids, {1, n}), false).narrow(1, n - 1, 1);
    };
    for (size_t r = 0; r < R; ++r) {
      nn::KVCache row = cache.rows(int64_t(r));
      const std::vector<int32_t> ids(seqs[r].begin(), seqs[r].begin() + prompt[r]);
      const Tensor got = m.forward_cached(from_vector<int32_t>(ids, {1, prompt[r]}), row, true);
      cache.lengths[r] = row.length;
      worst = std::max(worst, tessera::testing::max_abs_diff(got, full(r, prompt[r])));
    }
    EXPECT_EQ(cache.lengths, (std::vector<int64_t>{1, 4, 4, 2}));
    for (int64_t step = 0; step < 3; ++step) {
      std::vector<int32_t> next;
      for (size_t r = 0; r < R; ++r) next.push_back(seqs[r][size_t(prompt[r] + step)]);
      const Tensor got = m.forward_cached(from_vector<int32_t>(next, {int64_t(R), 1}), cache);
      ASSERT_EQ(got.shape(), (Shape{int64_t(R), 1, cfg.vocab_size}));
      for (size_t r = 0; r < R; ++r)
        worst = std::max(worst, tessera::testing::max_abs_diff(got.narrow(0, int64_t(r), 1),
                                                               full(r, prompt[r] + step + 1)));
    }
    EXPECT_EQ(cache.lengths, (std::vector<int64_t>{4, 7, 7, 5}));
    EXPECT_LT(worst, 1e-12);
  }
}

TEST(RaggedCache, more_than_one_token_a_row_or_a_full_row_is_an_error) {
  Generator g(3);
  const GPT m(tiny(nn::PositionKind::RoPE), g);
  nn::KVCache cache = m.make_cache(2, 4);
  cache.lengths = {1, 4};
  std::string msg = tessera::testing::error_of([&] {
    m.forward_cached(from_vector<int32_t>({1, 2, 3, 4}, {2, 2}), cache);
  });
  EXPECT_NE(msg.find("takes one token a row of its 2 rows, got"), std::string::npos) << msg;
  msg = tessera::testing::error_of([&] {
    m.forward_cached(from_vector<int32_t>({1, 2}, {2, 1}), cache);
  });
  EXPECT_NE(msg.find("row 1's position 4 is past the cache capacity 4"), std::string::npos) << msg;
  EXPECT_EQ(cache.lengths, (std::vector<int64_t>{1, 4}));  // nothing advanced
  msg = tessera::testing::error_of([&] { cache.rows(2); });
  EXPECT_NE(msg.find("rows [2, 3) of a cache of 2 rows"), std::string::npos) << msg;
}
