// Philox counter-based RNG: known answers, exact save/restore, distribution sanity.
#include <gtest/gtest.h>

#include <cmath>

#include "core/tensor.h"

using namespace tessera;

TEST(Philox, matches_published_known_answers) {
  // Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
  Philox4 a = philox4x32_10(0, 0, 0);
  EXPECT_EQ(a.v[0], 0x6627e8d5u);
  EXPECT_EQ(a.v[1], 0xe169c58du);
  EXPECT_EQ(a.v[2], 0xbc57ac4cu);
  EXPECT_EQ(a.v[3], 0x9b00dbd8u);
  Philox4 b = philox4x32_10(~0ull, ~0ull, ~0ull);
  EXPECT_EQ(b.v[0], 0x408f276du);
  EXPECT_EQ(b.v[1], 0x41c83b0eu);
  EXPECT_EQ(b.v[2], 0xa20bc7c6u);
  EXPECT_EQ(b.v[3], 0x6d5451fdu);
}

TEST(Generator, restoring_state_replays_the_stream_exactly) {
  Generator g(42);
  randn({17}, g);
  RngState s = g.state();
  EXPECT_EQ(s.offset, 17u);
  std::vector<float> a = randn({5, 3}, g).to_vector<float>();
  std::vector<float> a2 = rand({4}, g).to_vector<float>();
  g.set_state(s);
  EXPECT_EQ(randn({5, 3}, g).to_vector<float>(), a);
  EXPECT_EQ(rand({4}, g).to_vector<float>(), a2);
}

TEST(Generator, successive_draws_and_seeds_differ) {
  Generator g(1), h(2);
  std::vector<float> a = rand({8}, g).to_vector<float>();
  EXPECT_NE(rand({8}, g).to_vector<float>(), a);
  EXPECT_NE(rand({8}, h).to_vector<float>(), a);
}

TEST(Generator, element_i_depends_only_on_its_counter) {
  // Drawing 10 then 5 equals drawing 15 at once: this is what lets CUDA and CPU agree.
  Generator g(9), h(9);
  std::vector<double> ab = rand({10}, g, DType::F64).to_vector<double>();
  std::vector<double> c = rand({5}, g, DType::F64).to_vector<double>();
  ab.insert(ab.end(), c.begin(), c.end());
  EXPECT_EQ(rand({15}, h, DType::F64).to_vector<double>(), ab);
}

TEST(Generator, uniform_and_normal_have_the_right_moments) {
  // n = 200000: the standard error of a mean is sigma / sqrt(n) ~ 0.0022 sigma; 5 standard errors.
  const int64_t n = 200000;
  Generator g(3);
  std::vector<double> u = rand({n}, g, DType::F64).to_vector<double>();
  std::vector<double> z = randn({n}, g, DType::F64).to_vector<double>();
  double mu = 0, mz = 0, vz = 0, lo = 1, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    mu += u[size_t(i)];
    mz += z[size_t(i)];
    lo = std::min(lo, u[size_t(i)]);
    hi = std::max(hi, u[size_t(i)]);
  }
  mu /= n;
  mz /= n;
  for (int64_t i = 0; i < n; ++i) vz += (z[size_t(i)] - mz) * (z[size_t(i)] - mz);
  vz /= n;
  EXPECT_GE(lo, 0.0);
  EXPECT_LT(hi, 1.0);
  EXPECT_NEAR(mu, 0.5, 5 * std::sqrt(1.0 / 12 / n));
  EXPECT_NEAR(mz, 0.0, 5 * std::sqrt(1.0 / n));
  EXPECT_NEAR(vz, 1.0, 5 * std::sqrt(2.0 / n));  // the variance estimator's std is sqrt(2/n)
}
