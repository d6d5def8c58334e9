// fast_exp.h: exp_f32 against double exp over its whole range, its edges, and sigmoid's limits;
// exp_f64 and log1p_f64 against libm's over the stick-breaking scan's ranges.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "backend/cpu/fast_exp.h"

using tessera::cpu::exp_f32;
using tessera::cpu::exp_f64;
using tessera::cpu::log1p_f64;
using tessera::cpu::sigmoid;

namespace {

// Distance in units of the last place of the float nearest the true value.
double ulps(float got, double want) {
  const float w = float(want);
  const double ulp = double(std::nextafter(w, std::numeric_limits<float>::infinity())) - double(w);
  return std::abs(double(got) - want) / ulp;
}

// Distance in units of the last place of want, a double (libm's value).
double ulps64(double got, double want) {
  if (got == want) return 0;
  const double w = std::abs(want);
  return std::abs(got - want) / (std::nextafter(w, std::numeric_limits<double>::infinity()) - w);
}

}  // namespace

TEST(FastExp, within_two_ulp_of_exp_over_its_range) {
  // 2^21 + 1 evenly spaced arguments over [-87, 88], then small ones (|x| from 2^-40 to 1, where
  // exp is 1 + x and the reduction's n is 0). The reduction's, the polynomial's and the final
  // product's roundings measured 1.22 ulp at worst over 2^24 arguments (0.93 with FMA
  // contraction, -march=haswell): 2 is that with room, and a wrong low-order coefficient (1/720
  // off by 3%) still stays under it; a wrong ln 2 split or a higher coefficient does not.
  double worst = 0;
  float at = 0;
  auto check = [&](float x) {
    const double u = ulps(exp_f32(x), std::exp(double(x)));
    if (u > worst) worst = u, at = x;
  };
  constexpr int kSteps = 1 << 21;
  for (int i = 0; i <= kSteps; ++i) check(float(-87.0 + 175.0 * i / kSteps));
  for (int e = -40; e <= 0; ++e)
    for (int j = 0; j < 64; ++j) {
      const float m = std::ldexp(1.0f + float(j) / 64.0f, e);
      check(m);
      check(-m);
    }
  EXPECT_LE(worst, 2.0) << "at x = " << at;
}

TEST(FastExp, edges_give_zero_infinity_and_nan) {
  EXPECT_EQ(exp_f32(0.0f), 1.0f);
  EXPECT_EQ(exp_f32(-87.5f), 0.0f);
  EXPECT_EQ(exp_f32(-1e30f), 0.0f);
  EXPECT_EQ(exp_f32(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(exp_f32(88.5f), std::numeric_limits<float>::infinity());
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(exp_f32(inf), inf);
  EXPECT_TRUE(std::isnan(exp_f32(std::numeric_limits<float>::quiet_NaN())));
  // At the clamp's edges the value is still exp's, to the same bound.
  EXPECT_LE(ulps(exp_f32(88.0f), std::exp(88.0)), 2.0);
  EXPECT_LE(ulps(exp_f32(-87.0f), std::exp(-87.0)), 2.0);
}

TEST(FastExp, sigmoid_reaches_its_limits_without_overflow) {
  EXPECT_EQ(sigmoid(0.0f), 0.5f);
  EXPECT_EQ(sigmoid(1000.0f), 1.0f);
  EXPECT_EQ(sigmoid(-1000.0f), 0.0f);
  EXPECT_EQ(sigmoid(-100.0), 1.0 / (1.0 + std::exp(100.0)));  // double: libm
  EXPECT_NEAR(sigmoid(2.0f), 1.0 / (1.0 + std::exp(-2.0)), 1e-7);
  EXPECT_TRUE(std::isnan(sigmoid(std::numeric_limits<float>::quiet_NaN())));
}

TEST(FastExp, double_exp_and_log1p_within_two_ulp_of_libm_over_the_scans_ranges) {
  // exp_f64 on [-708, 0] (2^20 + 1 even steps, then -2^e (1 + j/64) for e from -60 to 0, where
  // the reduction's n is 0) and log1p_f64 on [0, 1] (2^20 + 1 steps, then 2^e (1 + j/64) down to
  // the subnormals, where it is x itself). Measured: 1.0 ulp at worst for both (libm's own error
  // is under one). Cut short, they fail: exp's Taylor polynomial at degree 11 (56 ulp), log1p's
  // atanh series at s^17 (7 ulp near x = 0.414); and so does log1p's s formed from a rounded
  // 1 + x (tiny x).
  double worst_exp = 0, worst_log = 0, at_exp = 0, at_log = 0;
  auto check = [&](double x) {
    if (x <= 0) {
      const double u = ulps64(exp_f64(x), std::exp(x));
      if (u > worst_exp) worst_exp = u, at_exp = x;
    }
    if (x >= 0 && x <= 1) {
      const double u = ulps64(log1p_f64(x), std::log1p(x));
      if (u > worst_log) worst_log = u, at_log = x;
    }
  };
  constexpr int kSteps = 1 << 20;
  for (int i = 0; i <= kSteps; ++i) {
    check(-708.0 * i / kSteps);
    check(1.0 * i / kSteps);
  }
  for (int e = -1074; e <= 0; ++e)
    for (int j = 0; j < 64; ++j) {
      const double m = std::ldexp(1.0 + j / 64.0, e);
      check(m);
      if (e >= -60) check(-m);
    }
  EXPECT_LE(worst_exp, 2.0) << "exp_f64 at x = " << at_exp;
  EXPECT_LE(worst_log, 2.0) << "log1p_f64 at x = " << at_log;
  // Edges: exp(0) = 1 and log1p(0) = 0 exactly, 0 below -708, +inf above 709, NaN kept; small
  // positive arguments (a softmax's x - lse rounded above 0) as exp's.
  EXPECT_EQ(exp_f64(0.0), 1.0);
  EXPECT_EQ(exp_f64(-709.0), 0.0);
  EXPECT_EQ(exp_f64(710.0), std::numeric_limits<double>::infinity());
  EXPECT_LE(ulps64(exp_f64(709.0), std::exp(709.0)), 2.0);
  EXPECT_LE(ulps64(exp_f64(1e-7), std::exp(1e-7)), 2.0);
  EXPECT_LE(ulps64(exp_f64(0.3), std::exp(0.3)), 2.0);
  EXPECT_EQ(exp_f64(-std::numeric_limits<double>::infinity()), 0.0);
  EXPECT_EQ(log1p_f64(0.0), 0.0);
  EXPECT_EQ(log1p_f64(1e-300), 1e-300);
  EXPECT_TRUE(std::isnan(exp_f64(std::numeric_limits<double>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(log1p_f64(std::numeric_limits<double>::quiet_NaN())));
}
