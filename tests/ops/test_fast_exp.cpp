// fast_exp.h: exp_f32 against double exp over its whole range, its edges, and sigmoid's limits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "backend/cpu/fast_exp.h"

using tessera::cpu::exp_f32;
using tessera::cpu::sigmoid;

namespace {

// Distance in units of the last place of the float nearest the true value.
double ulps(float got, double want) {
  const float w = float(want);
  const double ulp = double(std::nextafter(w, std::numeric_limits<float>::infinity())) - double(w);
  return std::abs(double(got) - want) / ulp;
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
