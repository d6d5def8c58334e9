// Direct Preference Optimization's loss (train/dpo.h): its value and gradient by hand, the
// sequences' log-probabilities against a log-softmax summed by hand, and the gradient through
// whole models by central differences.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/autograd.h"
#include "nn/gpt.h"
#include "nn/gpt_fixture.h"
#include "ops/ops.h"
#include "test_util.h"
#include "train/dpo.h"

using namespace tessera;
using tessera::testing::gradcheck;
using tessera::testing::ids;
using tessera::testing::tiny_gpt2;
using tessera::testing::tiny_llama;
using train::DpoOptions;
using train::PairLoss;
using train::PairSums;

namespace {

Tensor f64(const std::vector<double>& v) { return from_vector(v, {int64_t(v.size())}); }

double softplus(double x) { return std::log(1 + std::exp(x)); }  // moderate x only

}  // namespace

// Two pairs: the first's chosen response gained 0.5 nats over the reference and its rejected one
// lost 0.5; the second went the wrong way (chosen -1, rejected +0.25).
TEST(Dpo, the_loss_and_the_rewards_by_hand) {
  const Tensor policy = f64({-3.0, -6.0, -4.5, -3.75});  // chosen 0, 1; rejected 0, 1
  const Tensor reference = f64({-3.5, -5.0, -4.0, -4.0});
  for (double e : {0.0, 0.2}) {
    const DpoOptions o{.beta = 0.5, .label_smoothing = e};
    PairSums s;
    const double loss = train::dpo_loss(policy, reference, o, &s).item();
    // z = beta ((pi_c - ref_c) - (pi_r - ref_r)): 0.5 (0.5 + 0.5) = 0.5 and 0.5 (-1 - 0.25).
    const double z0 = 0.5, z1 = -0.625;
    auto pair = [&](double z) { return (1 - e) * softplus(-z) + e * softplus(z); };
    EXPECT_NEAR(loss, (pair(z0) + pair(z1)) / 2, 1e-15) << "label smoothing " << e;
    EXPECT_NEAR(s.loss, pair(z0) + pair(z1), 1e-15);
    EXPECT_EQ(s.pairs, 2);
    EXPECT_EQ(s.correct, 1);                          // the first pair only
    EXPECT_NEAR(s.chosen, 0.5 * (0.5 - 1.0), 1e-15);  // beta (pi - ref), summed
    EXPECT_NEAR(s.rejected, 0.5 * (-0.5 + 0.25), 1e-15);
  }
  // The policy equal to its reference: z = 0, ln 2 a pair with or without smoothing, no pair
  // counted correct (rewards equal).
  PairSums s;
  EXPECT_NEAR(train::dpo_loss(reference, reference, {.beta = 0.1}, &s).item(), std::log(2.0),
              1e-15);
  EXPECT_EQ(s.correct, 0);
  // Large margins: softplus in its stable form, no overflow.
  EXPECT_NEAR(train::dpo_loss(f64({0, -2000}), f64({0, 0}), {.beta = 1}).item(), 0, 1e-300);
  EXPECT_NEAR(train::dpo_loss(f64({-2000, 0}), f64({0, 0}), {.beta = 1}).item(), 2000, 1e-9);
}

// The NLL term (train.dpo_nll_weight): a (-log pi(chosen) / n) a pair, n its scored tokens.
TEST(Dpo, the_chosen_responses_nll_a_token_joins_each_pairs_loss) {
  const Tensor policy = f64({-3.0, -6.0, -4.5, -3.75}), reference = f64({-3.5, -5.0, -4.0, -4.0});
  PairSums plain, with;
  const double a = train::dpo_loss(policy, reference, {.beta = 0.5}, &plain).item();
  const double b =
      train::dpo_loss(policy, reference, {.beta = 0.5, .nll_weight = 2}, &with, {3, 4, 5, 6})
          .item();
  EXPECT_NEAR(b - a, 2 * (3.0 / 3 + 6.0 / 4) / 2, 1e-15);  // the mean over the 2 pairs
  EXPECT_NEAR(with.loss - plain.loss, 2 * (3.0 / 3 + 6.0 / 4), 1e-15);
  EXPECT_EQ(with.chosen, plain.chosen);  // the rewards are DPO's alone
  const std::string missing = tessera::testing::error_of([&] {
    train::dpo_loss(policy, reference, {.nll_weight = 1}, nullptr, {3, 4});
  });
  EXPECT_NE(missing.find("2 pairs (4 rows) but the scored tokens of 2 rows"), std::string::npos)
      << missing;
  EXPECT_EQ(train::scored_per_row(ids({-100, 4, 5, -100, -100, 6, 7, 8, 1, 2, 3, 4}, {3, 4}), 2),
            (std::vector<int64_t>{2, 3}));
}

// IPO (train.dpo_loss ipo): (h - 1 / (2 beta))^2 a pair, h the log-ratio difference of the mean
// log-probabilities a scored token.
TEST(Dpo, ipos_loss_by_hand_and_by_central_differences) {
  const Tensor policy = f64({-3.0, -6.0, -4.5, -3.75}), reference = f64({-3.5, -5.0, -4.0, -4.0});
  const std::vector<int64_t> n = {2, 4, 3, 5};  // chosen 0, 1; rejected 0, 1
  PairSums s;
  const double loss =
      train::dpo_loss(policy, reference, {.beta = 0.25, .loss = PairLoss::Ipo}, &s, n).item();
  // h = (pi_c - ref_c) / n_c - (pi_r - ref_r) / n_r: 0.5 / 2 + 0.5 / 3 and -1 / 4 - 0.25 / 5.
  const double h0 = 0.25 + 0.5 / 3, h1 = -0.25 - 0.05;
  EXPECT_NEAR(loss, ((h0 - 2) * (h0 - 2) + (h1 - 2) * (h1 - 2)) / 2, 1e-14);  // 1 / (2 beta) = 2
  EXPECT_NEAR(s.chosen, 0.25 * (0.25 - 0.25), 1e-15);  // rewards of the per-token means
  EXPECT_EQ(s.correct, 1);
  for (double a : {0.0, 0.5})
    EXPECT_TRUE(gradcheck(
        [&](const std::vector<Tensor>& in) {
          return train::dpo_loss(in[0], in[1],
                                 {.beta = 0.3, .nll_weight = a, .loss = PairLoss::Ipo}, nullptr,
                                 {5, 2, 7, 3, 1, 4});
        },
        {f64({-3.0, -6.0, -1.5, -4.5, -3.75, -2.0}), f64({-3.5, -5.0, -1.0, -4.0, -4.0, -2.0})},
        {.check = {true, false}}))
        << "nll weight " << a;
  const std::string empty = tessera::testing::error_of([&] {
    train::dpo_loss(policy, reference, {.loss = PairLoss::Ipo}, nullptr, {2, 0, 3, 5});
  });
  EXPECT_NE(empty.find("row 1 of 4 scores no token"), std::string::npos) << empty;
}

// SimPO (train.dpo_loss simpo): no reference; z = beta (mean log pi(chosen) - mean log
// pi(rejected)) - gamma, the means a scored token, and the sigmoid loss (smoothed or not) of z.
TEST(Dpo, simpos_loss_by_hand_and_by_central_differences) {
  const Tensor policy = f64({-3.0, -6.0, -4.5, -3.75});  // chosen 0, 1; rejected 0, 1
  const std::vector<int64_t> n = {2, 4, 3, 5};
  for (double e : {0.0, 0.2}) {
    PairSums s;
    const DpoOptions o{.beta = 2, .label_smoothing = e, .loss = PairLoss::Simpo, .gamma = 0.75};
    const double loss = train::dpo_loss(policy, Tensor(), o, &s, n).item();
    // The means: -1.5 and -1.5 (chosen), -1.5 and -0.75 (rejected); z = 2 h - 0.75.
    const double z0 = 2 * (-1.5 + 1.5) - 0.75, z1 = 2 * (-1.5 + 0.75) - 0.75;
    auto pair = [&](double z) { return (1 - e) * softplus(-z) + e * softplus(z); };
    EXPECT_NEAR(loss, (pair(z0) + pair(z1)) / 2, 1e-15) << "label smoothing " << e;
    EXPECT_NEAR(s.chosen, 2 * (-1.5 - 1.5), 1e-15);  // beta log pi / n, summed over pairs
    EXPECT_NEAR(s.rejected, 2 * (-1.5 - 0.75), 1e-15);
    EXPECT_EQ(s.correct, 0);  // pair 0's rewards are equal, pair 1's rejected one is higher
  }
  // gamma 0 and equal means: ln 2, as DPO at its start.
  EXPECT_NEAR(train::dpo_loss(f64({-2, -4}), Tensor(),
                              {.beta = 2, .loss = PairLoss::Simpo, .gamma = 0}, nullptr, {1, 2})
                  .item(),
              std::log(2.0), 1e-15);
  for (double a : {0.0, 0.5})  // the NLL term beside it: CPO's (Xu et al. 2024)
    EXPECT_TRUE(gradcheck(
        [&](const std::vector<Tensor>& in) {
          return train::dpo_loss(in[0], Tensor(),
                                 {.beta = 2.5,
                                  .label_smoothing = 0.1,
                                  .nll_weight = a,
                                  .loss = PairLoss::Simpo,
                                  .gamma = 1.2},
                                 nullptr, {5, 2, 7, 3, 1, 4});
        },
        {f64({-3.0, -6.0, -1.5, -4.5, -3.75, -2.0})}))
        << "nll weight " << a;
  const Tensor reference = f64({-3.5, -5.0, -4.0, -4.0});
  const std::string given = tessera::testing::error_of(
      [&] { train::dpo_loss(policy, reference, {.loss = PairLoss::Simpo}, nullptr, n); });
  EXPECT_NE(given.find("SimPO's loss takes no reference"), std::string::npos) << given;
  const std::string missing =
      tessera::testing::error_of([&] { train::dpo_loss(policy, Tensor(), {}, nullptr, n); });
  EXPECT_NE(missing.find("the loss needs the reference's"), std::string::npos) << missing;
  const std::string empty = tessera::testing::error_of([&] {
    train::dpo_loss(policy, Tensor(), {.loss = PairLoss::Simpo}, nullptr, {2, 4, 0, 5});
  });
  EXPECT_NE(empty.find("row 2 of 4 scores no token: SimPO's"), std::string::npos) << empty;
}

// ORPO (train.dpo_loss orpo): no reference; with a the mean log-probability a scored token and
// lo(a) = a - log(1 - e^a) its log odds, a pair's loss is -a_chosen + beta softplus(-(lo(a_c) -
// lo(a_r))), the rewards beta a.
TEST(Dpo, orpos_loss_by_hand_and_by_central_differences) {
  const Tensor policy = f64({-3.0, -6.0, -4.5, -3.75});  // chosen 0, 1; rejected 0, 1
  const std::vector<int64_t> n = {2, 4, 3, 5};
  auto lo = [](double a) { return a - std::log(1 - std::exp(a)); };
  PairSums s;
  const DpoOptions o{.beta = 0.2, .nll_weight = 1, .loss = PairLoss::Orpo};
  const double loss = train::dpo_loss(policy, Tensor(), o, &s, n).item();
  // The means: chosen -1.5, -1.5; rejected -1.5, -0.75.
  const double p0 = 1.5 + 0.2 * softplus(-(lo(-1.5) - lo(-1.5)));
  const double p1 = 1.5 + 0.2 * softplus(-(lo(-1.5) - lo(-0.75)));
  EXPECT_NEAR(loss, (p0 + p1) / 2, 1e-14);
  EXPECT_NEAR(s.chosen, 0.2 * (-1.5 - 1.5), 1e-15);
  EXPECT_NEAR(s.rejected, 0.2 * (-1.5 - 0.75), 1e-15);
  // The gradient, log odds near 0 and near certainty (a mean of -1e-3: p = 0.999) among them.
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& in) {
        return train::dpo_loss(in[0], Tensor(),
                               {.beta = 0.7, .nll_weight = 1, .loss = PairLoss::Orpo}, nullptr,
                               {5, 2, 7, 3, 1, 4});
      },
      {f64({-3.0, -0.002, -1.5, -4.5, -3.75, -2.0})}));
  // A chosen response certain to the last bit (a = 0): held at odds of 1e12, finite.
  const double held =
      train::dpo_loss(f64({0, -3}), Tensor(), {.beta = 1, .loss = PairLoss::Orpo}, nullptr, {2, 3})
          .item();
  EXPECT_NEAR(held, softplus(-(lo(-1e-12) - lo(-1.0))), 1e-9);
  const std::string given = tessera::testing::error_of([&] {
    train::dpo_loss(policy, f64({-3.5, -5.0, -4.0, -4.0}), {.loss = PairLoss::Orpo}, nullptr, n);
  });
  EXPECT_NE(given.find("ORPO's loss takes no reference"), std::string::npos) << given;
}

TEST(Dpo, the_gradient_in_the_policy_by_central_differences) {
  const Tensor reference = f64({-3.5, -5.0, -1.0, -4.0, -4.0, -2.0});
  for (double e : {0.0, 0.3})
    EXPECT_TRUE(gradcheck(
        [&](const std::vector<Tensor>& in) {
          return train::dpo_loss(in[0], in[1],
                                 {.beta = 0.7, .label_smoothing = e, .nll_weight = 4 * e}, nullptr,
                                 {5, 2, 7, 3, 1, 4});
        },
        {f64({-3.0, -6.0, -1.5, -4.5, -3.75, -2.0}), reference}, {.check = {true, false}}))
        << "label smoothing " << e;
}

TEST(Dpo, bad_log_probabilities_are_named) {
  const std::string odd = tessera::testing::error_of([] {
    train::dpo_loss(f64({1, 2, 3}), f64({1, 2, 3}), {});
  });
  EXPECT_NE(odd.find("must be (2P) for P pairs, got"), std::string::npos) << odd;
  const std::string shape = tessera::testing::error_of([] {
    train::dpo_loss(f64({1, 2}), f64({1, 2, 3, 4}), {});
  });
  EXPECT_NE(shape.find("the reference's"), std::string::npos) << shape;
  const std::string nan = tessera::testing::error_of([] {
    train::dpo_loss(f64({std::nan(""), 2}), f64({1, 2}), {});
  });
  EXPECT_NE(nan.find("pair 0 of 1 has a non-finite log-probability"), std::string::npos) << nan;
}

// Each row's sum of log softmax(logits)[target] over the targets not ignored, from the model's
// own logits.
TEST(Dpo, sequence_log_probabilities_sum_each_rows_scored_targets) {
  Generator g(3);
  nn::GPT model(tiny_llama(), g, DType::F64);
  const Tensor x = ids({1, 5, 9, 2, 0, 10, 3, 3}, {2, 4});
  const Tensor y = ids({5, -100, 2, 7, -100, -100, 3, 4}, {2, 4});
  const std::vector<double> got = train::sequence_log_probs(model, x, y, false).to_vector<double>();
  const Tensor logp = ops::log_softmax(model.forward(x, false).contiguous());  // (2, 4, 11)
  const std::vector<double> lp = logp.to_vector<double>();
  const std::vector<int32_t> t = y.to_vector<int32_t>();
  ASSERT_EQ(got.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    double want = 0;
    for (int i = 0; i < 4; ++i)
      if (t[size_t(r * 4 + i)] >= 0) want += lp[size_t((r * 4 + i) * 11 + t[size_t(r * 4 + i)])];
    EXPECT_NEAR(got[size_t(r)], want, 1e-12) << "row " << r;
  }
}

// The whole objective as a function of the policy's parameters, a second model as the reference:
// central differences in both styles.
TEST(Dpo, the_gradient_through_the_model_by_central_differences) {
  for (const nn::GPTConfig& c : {tiny_gpt2(), tiny_llama()}) {
    Generator g(7), h(8);
    nn::GPT policy(c, g, DType::F64), reference(c, h, DType::F64);
    // Two pairs: rows 0, 1 chosen, 2, 3 rejected, prompts unscored.
    const Tensor x = ids({1, 5, 9, 2, 1, 5, 3, 3, 0, 10, 4, 6, 0, 10, 7, 7}, {4, 4});
    const Tensor y = ids({-100, 9, 2, 7, -100, 3, 3, 4, -100, 4, 6, 8, -100, 7, 7, 1}, {4, 4});
    Tensor ref;
    {
      NoGradGuard no_grad;
      ref = train::sequence_log_probs(reference, x, y, false);
    }
    std::vector<Tensor> params;
    for (const auto& [name, t] : policy.parameters()) params.push_back(t);
    EXPECT_TRUE(gradcheck(
        [&](const std::vector<Tensor>& p) {
          policy.replace_parameters(p);
          return train::dpo_loss(train::sequence_log_probs(policy, x, y, true), ref,
                                 {.beta = 0.3, .label_smoothing = 0.1});
        },
        params))
        << (c.gpt2_names() ? "gpt2" : "llama");
  }
}

TEST(Dpo, pair_sums_add_and_round_trip) {
  PairSums a{1, 2, 3, 4, 5}, b{10, 20, 30, 40, 50};
  a += b;
  EXPECT_EQ(a.values(), (std::vector<double>{11, 22, 33, 44, 55}));
  const std::vector<double> v = {0, 0, 11, 22, 33, 44, 55};
  EXPECT_EQ(PairSums::from_values(v, 2).values(), a.values());
  EXPECT_NE(tessera::testing::error_of([&] { PairSums::from_values(v, 3); }).find("no sums at 3"),
            std::string::npos);
}
