// dropout: the mask is a function of the generator's (seed, offset), is regenerated in backward,
// drops the expected fraction and keeps the expected value; identity outside training.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "gradcheck.h"
#include "ops/ops.h"

using namespace tessera;
using tessera::testing::gradcheck;

namespace {

int64_t count_zeros(const std::vector<float>& v) {
  int64_t n = 0;
  for (float f : v) n += f == 0.0f;
  return n;
}

}  // namespace

TEST(Dropout, same_generator_state_gives_same_mask) {
  Tensor x = ones({1000});
  Generator a(42), b(42);
  EXPECT_EQ(ops::dropout(x, 0.5, true, a).to_vector<float>(),
            ops::dropout(x, 0.5, true, b).to_vector<float>());
  // Restoring a saved state replays the mask (what recompute relies on).
  RngState s = a.state();
  std::vector<float> first = ops::dropout(x, 0.5, true, a).to_vector<float>();
  a.set_state(s);
  EXPECT_EQ(ops::dropout(x, 0.5, true, a).to_vector<float>(), first);
}

TEST(Dropout, consecutive_calls_use_fresh_counters_and_different_masks) {
  Tensor x = ones({1000});
  Generator g(42);
  std::vector<float> m1 = ops::dropout(x, 0.5, true, g).to_vector<float>();
  EXPECT_EQ(g.state().offset, 1000u);
  std::vector<float> m2 = ops::dropout(x, 0.5, true, g).to_vector<float>();
  EXPECT_EQ(g.state().offset, 2000u);
  // Independent masks with p = 0.5 disagree at each position with probability 1/2: ~500 of 1000,
  // std 16; identical masks would give 0.
  int64_t differ = 0;
  for (size_t i = 0; i < m1.size(); ++i) differ += m1[i] != m2[i];
  EXPECT_GT(differ, 400);
}

TEST(Dropout, mask_is_the_same_for_f32_and_f64) {
  Generator a(9), b(9);
  std::vector<float> y32 = ops::dropout(ones({500}), 0.4, true, a).to_vector<float>();
  std::vector<double> y64 = ops::dropout(ones({500}, DType::F64), 0.4, true, b).to_vector<double>();
  for (size_t i = 0; i < y32.size(); ++i) EXPECT_EQ(y32[i] == 0, y64[i] == 0) << "element " << i;
}

TEST(Dropout, dropped_fraction_matches_p_and_mean_is_preserved) {
  // The number dropped of n = 100000 is Binomial(n, p): mean n p = 30000, std sqrt(n p (1 - p))
  // = 145. A 5-std band (725, i.e. a fraction of +-0.00725) is missed by chance with probability
  // 6e-7, while a mask of the wrong p (say keep < p swapped to drop 70%) is off by ~270 std.
  const int64_t n = 100000;
  const double p = 0.3;
  Generator g(123);
  std::vector<float> y = ops::dropout(ones({n}), p, true, g).to_vector<float>();
  const double dropped = double(count_zeros(y));
  const double sd = std::sqrt(double(n) * p * (1 - p));
  EXPECT_NEAR(dropped, double(n) * p, 5 * sd);
  // mean(y) = kept / (n (1 - p)), so its std is sd / (n (1 - p)) = 0.0021; the same 5-std band.
  double mean = 0;
  for (float v : y) mean += v;
  mean /= double(n);
  EXPECT_NEAR(mean, 1.0, 5 * sd / (double(n) * (1 - p)));
}

TEST(Dropout, kept_values_are_scaled_by_inverse_keep_probability) {
  // x in [1, 2) is never 0, so y == 0 marks exactly the dropped elements. Kept values are x times
  // the f32-rounded 1 / (1 - p): two roundings, within 3e-7 relative.
  const double p = 0.25;
  Generator gx(1), g(2);
  Tensor x = ops::add(rand({2000}, gx), ones({2000}));
  std::vector<float> xv = x.to_vector<float>();
  std::vector<float> y = ops::dropout(x, p, true, g).to_vector<float>();
  int64_t kept = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (y[i] == 0) continue;
    ++kept;
    EXPECT_NEAR(y[i], xv[i] / (1 - p), 3e-7 * xv[i] / (1 - p)) << "element " << i;
  }
  EXPECT_GT(kept, 0);
}

TEST(Dropout, not_training_or_zero_p_is_identity_and_draws_nothing) {
  Generator g(3);
  Tensor x = randn({4, 5}, g);
  const RngState before = g.state();
  Tensor eval = ops::dropout(x, 0.5, false, g);
  Tensor p0 = ops::dropout(x, 0.0, true, g);
  EXPECT_EQ(eval.impl_ptr(), x.impl_ptr());
  EXPECT_EQ(p0.impl_ptr(), x.impl_ptr());
  EXPECT_EQ(g.state(), before);
}

TEST(Dropout, p_outside_zero_one_is_an_error) {
  Generator g(4);
  Tensor x = ones({3});
  for (double p : {1.0, -0.1, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    try {
      ops::dropout(x, p, true, g);
      ADD_FAILURE() << "expected an error for p = " << p;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("[0, 1)"), std::string::npos) << e.what();
    }
  }
}

TEST(Dropout, backward_regenerates_the_forward_mask) {
  // For x = 1, y = keep / (1 - p), and dL/dx for L = sum(y) is the same keep / (1 - p).
  Generator g(8);
  Tensor x = ones({300}).requires_grad_();
  Tensor y = ops::dropout(x, 0.6, true, g);
  ops::sum(y).backward();
  EXPECT_EQ(x.grad().to_vector<float>(), y.to_vector<float>());
}

TEST(Dropout, gradcheck_with_fixed_mask) {
  // A fresh Generator(5) in every evaluation gives every one of them the same mask.
  Generator g(7);
  Tensor x = randn({2, 3, 5}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        Generator fixed(5);
        return ops::dropout(in[0], 0.3, true, fixed);
      },
      {x}));
}

TEST(Dropout, default_generator_overload_advances_default_generator) {
  manual_seed(77);
  Tensor a = ops::dropout(ones({64}), 0.5);
  EXPECT_EQ(default_generator().state().offset, 64u);
  manual_seed(77);
  EXPECT_EQ(ops::dropout(ones({64}), 0.5).to_vector<float>(), a.to_vector<float>());
}
