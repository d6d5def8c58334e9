// softmax and log_softmax: values against hand-computed rows, stability at +-1000, gradients by
// central differences.
#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.h"
#include "ops/ops.h"

using namespace tessera;
using tessera::testing::gradcheck;

// Tolerances on f32 results: each output is a handful of f32 roundings of values of order 1 (the
// kernel itself works in double), so 1e-6 is a few ulps; a wrong formula is off by > 1e-2.
constexpr double kF32Tol = 1e-6;

TEST(Softmax, value_of_logs_is_normalised_counts) {
  // exp([0, ln 2, ln 3]) = [1, 2, 3], normalised by 6.
  Tensor x = from_vector<float>({0.f, float(std::log(2.0)), float(std::log(3.0))}, {1, 3});
  std::vector<float> y = ops::softmax(x).to_vector<float>();
  EXPECT_NEAR(y[0], 1.0 / 6, kF32Tol);
  EXPECT_NEAR(y[1], 2.0 / 6, kF32Tol);
  EXPECT_NEAR(y[2], 3.0 / 6, kF32Tol);
}

TEST(Softmax, rows_are_independent_and_shift_invariant) {
  // Row 1 is row 0 plus 5, row 2 is constant: softmax sees only differences within a row.
  Tensor x = from_vector<float>({1, 2, 3, 6, 7, 8, 4, 4, 4}, {3, 3});
  std::vector<float> y = ops::softmax(x).to_vector<float>();
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(y[size_t(c)], y[size_t(3 + c)], kF32Tol);
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(y[size_t(6 + c)], 1.0 / 3, kF32Tol);
}

TEST(Softmax, keeps_leading_dimensions) {
  Generator g(1);
  Tensor y = ops::softmax(randn({2, 3, 4}, g));
  EXPECT_EQ(y.shape(), (Shape{2, 3, 4}));
  std::vector<float> v = y.to_vector<float>();
  for (int r = 0; r < 6; ++r) {
    double s = 0;
    for (int c = 0; c < 4; ++c) s += v[size_t(r * 4 + c)];
    EXPECT_NEAR(s, 1.0, 4 * kF32Tol);  // four rounded terms
  }
}

TEST(Softmax, large_logits_stay_finite) {
  // exp(1000) overflows even f64; subtracting the row max makes it exp(0).
  Tensor x = from_vector<float>({1000, 1000, -1000, 1000}, {2, 2});
  std::vector<float> y = ops::softmax(x).to_vector<float>();
  EXPECT_NEAR(y[0], 0.5, kF32Tol);
  EXPECT_NEAR(y[1], 0.5, kF32Tol);
  EXPECT_EQ(y[2], 0.0f);  // exp(-2000) underflows to exactly 0
  EXPECT_EQ(y[3], 1.0f);
}

TEST(Softmax, gradcheck_3d) {
  Generator g(2);
  Tensor x = randn({2, 3, 5}, g);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::softmax(in[0]); }, {x}));
}

TEST(Softmax, gradcheck_peaked_rows) {
  // Logits spread over +-8 make some probabilities tiny and one close to 1, where a missing
  // y * sum(dy * y) term would still show.
  Generator g(3);
  Tensor x = ops::scale(randn({4, 6}, g), 8.0);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::softmax(in[0]); }, {x}));
}

TEST(Softmax, integer_input_is_an_error) {
  Tensor x = from_vector<int32_t>({1, 2}, {1, 2}, DType::I32);
  EXPECT_THROW(ops::softmax(x), Error);
}

TEST(LogSoftmax, value_of_logs_is_log_of_normalised_counts) {
  Tensor x = from_vector<float>({0.f, float(std::log(2.0)), float(std::log(3.0))}, {3});
  std::vector<float> y = ops::log_softmax(x).to_vector<float>();
  EXPECT_NEAR(y[0], std::log(1.0 / 6), kF32Tol);
  EXPECT_NEAR(y[1], std::log(2.0 / 6), kF32Tol);
  EXPECT_NEAR(y[2], std::log(3.0 / 6), kF32Tol);
}

TEST(LogSoftmax, large_logits_stay_finite_and_exact) {
  // log softmax([1000, 0]) = [-log(1 + e^-1000), -1000 - log(1 + e^-1000)] = [0, -1000] in f32;
  // a naive log(exp(x) / sum) gives NaN (inf / inf) and -inf.
  Tensor x = from_vector<float>({1000, 0, -1000, -1000}, {2, 2});
  std::vector<float> y = ops::log_softmax(x).to_vector<float>();
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], -1000.0f);
  EXPECT_NEAR(y[2], -std::log(2.0), kF32Tol);
  EXPECT_NEAR(y[3], -std::log(2.0), kF32Tol);
}

TEST(LogSoftmax, matches_log_of_softmax) {
  Generator g(4);
  Tensor x = randn({3, 7}, g, DType::F64);
  std::vector<double> a = ops::log_softmax(x).to_vector<double>();
  std::vector<double> b = ops::softmax(x).to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], std::log(b[i]), 1e-12);  // f64 roundings
}

TEST(LogSoftmax, gradcheck_3d) {
  Generator g(5);
  Tensor x = randn({2, 3, 5}, g);
  EXPECT_TRUE(
      gradcheck([](const std::vector<Tensor>& in) { return ops::log_softmax(in[0]); }, {x}));
}

TEST(LogSoftmax, gradcheck_peaked_rows) {
  Generator g(6);
  Tensor x = ops::scale(randn({4, 6}, g), 8.0);
  EXPECT_TRUE(
      gradcheck([](const std::vector<Tensor>& in) { return ops::log_softmax(in[0]); }, {x}));
}
