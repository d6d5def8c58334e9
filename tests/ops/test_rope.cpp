// rope: a value worked by hand, the properties that make it a position encoding (offset = later
// rows, pair norms kept, scores depend only on relative position), its gradient, and shape errors.
#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.h"
#include "ops/ops.h"

using namespace tessera;
using tessera::testing::gradcheck;

namespace {

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

TEST(RoPE, value_matches_hand_worked_case) {
  // x (1, 1, 2, 4), theta = 10000 (the default):
  // freq_0 = 10000^0 = 1, freq_1 = 10000^(-2/4) = 0.01.
  // Row t = 0 has angle 0: unchanged. Row t = 1, x = (1, 2, 3, 4), pairs (x0, x2) = (1, 3) at 1 rad
  // and (x1, x3) = (2, 4) at 0.01 rad; cos 1 = 0.5403023058681398, sin 1 = 0.8414709848078965,
  // cos 0.01 = 0.9999500004166653, sin 0.01 = 0.009999833334166664:
  //   y0 = 1 cos 1 - 3 sin 1       = -1.9841106485555495
  //   y1 = 2 cos 0.01 - 4 sin 0.01 =  1.959900667496664
  //   y2 = 1 sin 1 + 3 cos 1       =  2.4623779024123156
  //   y3 = 2 sin 0.01 + 4 cos 0.01 =  4.019799668334994
  const std::vector<double> expected = {
      0.5, -1, 2, 3, -1.9841106485555495, 1.959900667496664, 2.4623779024123156, 4.019799668334994};
  const std::vector<double> x = {0.5, -1, 2, 3, 1, 2, 3, 4};
  std::vector<double> y64 =
      ops::rope(from_vector<double>(x, {1, 1, 2, 4}, DType::F64)).to_vector<double>();
  // f64: only the last-bit rounding of cos/sin and of the two products separates us from the above.
  for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(y64[i], expected[i], 1e-14) << "element " << i;
  std::vector<float> xf(x.begin(), x.end());
  std::vector<float> y32 = ops::rope(from_vector<float>(xf, {1, 1, 2, 4})).to_vector<float>();
  // f32: one rounding of a result of magnitude <= 4, i.e. <= 2.4e-7.
  for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(y32[i], expected[i], 1e-6) << "element " << i;
}

TEST(RoPE, pos_offset_k_on_row_t_equals_row_t_plus_k_of_longer_sequence) {
  Generator g(11);
  Tensor full = randn({2, 3, 9, 8}, g, DType::F64);
  Tensor full_y = ops::rope(full, 500000.0);
  for (int64_t k : {1, 4}) {
    Tensor tail = full.narrow(2, k, 5).contiguous();
    // Bit-identical: both compute the angle of the same integer position.
    EXPECT_EQ(ops::rope(tail, 500000.0, k).to_vector<double>(),
              full_y.narrow(2, k, 5).contiguous().to_vector<double>())
        << "k = " << k;
  }
}

TEST(RoPE, each_rotated_pair_keeps_its_norm) {
  Generator g(12);
  const int64_t D = 10, half = D / 2;
  Tensor x = randn({2, 3, 7, D}, g, DType::F64);
  std::vector<double> xv = x.to_vector<double>();
  std::vector<double> yv = ops::rope(x, 10000.0, 3).to_vector<double>();
  ASSERT_NE(xv, yv);  // positions 3.. are not the identity
  for (size_t r = 0; r < xv.size() / D; ++r) {
    for (int64_t i = 0; i < half; ++i) {
      const size_t a = r * D + size_t(i), b = a + half;
      EXPECT_NEAR(std::hypot(yv[a], yv[b]), std::hypot(xv[a], xv[b]), 1e-14)
          << "row " << r << " pair " << i;
    }
  }
}

TEST(RoPE, query_key_score_depends_only_on_relative_position) {
  Generator g(13);
  const int64_t D = 8;
  Tensor q = randn({1, 1, 1, D}, g, DType::F64), k = randn({1, 1, 1, D}, g, DType::F64);
  auto score = [&](int64_t m, int64_t n) {
    return dot(ops::rope(q, 100.0, m).to_vector<double>(),
               ops::rope(k, 100.0, n).to_vector<double>());
  };
  // R(m)^T R(n) = R(n - m): only rounding of cos/sin (~1e-16 relative) separates equal offsets.
  const double s3 = score(3, 0);
  EXPECT_NEAR(score(5, 2), s3, 1e-12);
  EXPECT_NEAR(score(40, 37), s3, 1e-12);
  EXPECT_NEAR(score(1003, 1000), s3, 1e-12);
  EXPECT_NEAR(score(-2, 4), score(0, 6), 1e-12);
  // ...and it does change with the offset, so the equalities above are not vacuous.
  EXPECT_GT(std::abs(score(4, 0) - s3), 1e-3);
  EXPECT_GT(std::abs(score(3, 3) - s3), 1e-3);
}

TEST(RoPE, gradcheck) {
  Generator g(14);
  Tensor x = randn({2, 2, 3, 6}, g, DType::F64);
  EXPECT_TRUE(
      gradcheck([](const std::vector<Tensor>& in) { return ops::rope(in[0], 10.0, 2); }, {x}));
}

TEST(RoPE, odd_head_dim_is_an_error_naming_the_shape) {
  try {
    ops::rope(zeros({1, 2, 3, 5}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("(1, 2, 3, 5)"), std::string::npos) << msg;
  }
}
