// layernorm and rmsnorm: values against hand-computed rows, gradients by central differences, and
// shape errors that name the shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "backend/kernels.h"
#include "gradcheck.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::gradcheck;

// f32 outputs are computed in double and rounded once, so they are within half an ulp of the exact
// value; the largest |y| below is 5 (ulp 4.8e-7), and 1e-6 is about two ulps there.
constexpr double kValueTol = 1e-6;

TEST(LayerNorm, value_matches_hand_computed_rows) {
  // Row 0: x = [2, 4, 6, 8]: mean 5, deviations [-3, -1, 1, 3], biased var (9+1+1+9)/4 = 5;
  //   eps = 4 makes rstd = 1/sqrt(9) = 1/3, xhat = [-1, -1/3, 1/3, 1];
  //   y = xhat * w + b = [-1*1 + 0.5, -1/3*2 + 0, 1/3*3 - 0.5, 1*4 + 1] = [-0.5, -2/3, 0.5, 5].
  // Row 1: a constant row: var 0, rstd = 1/sqrt(0 + 4) = 1/2, xhat = 0, so y = b.
  Tensor x = from_vector<float>({2, 4, 6, 8, 10, 10, 10, 10}, {2, 4});
  Tensor w = from_vector<float>({1, 2, 3, 4}, {4});
  Tensor b = from_vector<float>({0.5f, 0, -0.5f, 1}, {4});
  std::vector<float> y = ops::layernorm(x, w, b, 4.0).to_vector<float>();
  std::vector<double> want = {-0.5, -2.0 / 3.0, 0.5, 5, 0.5, 0, -0.5, 1};
  ASSERT_EQ(y.size(), want.size());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], want[i], kValueTol) << "element " << i;
}

TEST(LayerNorm, rows_have_zero_mean_and_unit_variance_with_unit_weight) {
  // With w = 1, b = 0 each output row has mean 0 and biased variance var / (var + eps). The rows are
  // offset by 100 so a one-pass E[x^2] - mean^2 in f32 would lose several digits. f32 outputs of
  // size ~2 carry ~1e-7 rounding each; averaging 64 of them keeps the mean well inside 1e-5.
  Generator g(11);
  Tensor x = ops::add(randn({3, 64}, g), full({64}, 100.0));
  const double eps = 1e-5;
  std::vector<float> xv = x.to_vector<float>();
  std::vector<float> y = ops::layernorm(x, ones({64}), zeros({64}), eps).to_vector<float>();
  for (int r = 0; r < 3; ++r) {
    double m = 0, v = 0, xm = 0, xv2 = 0;
    for (int c = 0; c < 64; ++c) xm += xv[size_t(r * 64 + c)] / 64.0;
    for (int c = 0; c < 64; ++c) xv2 += std::pow(xv[size_t(r * 64 + c)] - xm, 2) / 64.0;
    for (int c = 0; c < 64; ++c) m += y[size_t(r * 64 + c)] / 64.0;
    for (int c = 0; c < 64; ++c) v += std::pow(y[size_t(r * 64 + c)] - m, 2) / 64.0;
    EXPECT_NEAR(m, 0.0, 1e-5) << "row " << r;
    EXPECT_NEAR(v, xv2 / (xv2 + eps), 1e-5) << "row " << r;
  }
}

TEST(LayerNorm, gradcheck_x_weight_bias_over_leading_dims) {
  Generator g(1);
  Tensor x = randn({2, 3, 5}, g), w = randn({5}, g), b = randn({5}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::layernorm(in[0], in[1], in[2]); }, {x, w, b}));
}

TEST(LayerNorm, gradcheck_one_dimensional_input) {
  Generator g(2);
  Tensor x = randn({7}, g), w = randn({7}, g), b = randn({7}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::layernorm(in[0], in[1], in[2]); }, {x, w, b}));
}

TEST(LayerNorm, gradcheck_wide_rows) {
  // 70 channels: dw and db are summed in blocks of columns, and 70 leaves a partial last block.
  Generator g(12);
  Tensor x = randn({2, 2, 70}, g), w = randn({70}, g), b = randn({70}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::layernorm(in[0], in[1], in[2]); }, {x, w, b}));
}

// A residual stream: x feeds the norm and the add, so the norm's backward adds its gradient into the
// one x has already received (the kernel's accumulate path), as a leaf and as an intermediate.
TEST(LayerNorm, gradcheck_residual_stream_accumulates_into_the_input_gradient) {
  Generator g(14);
  Tensor x = randn({3, 6}, g), w = randn({6}, g), b = randn({6}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return ops::add(in[0], ops::layernorm(in[0], in[1], in[2]));
      },
      {x, w, b}));
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        // An intermediate in a block's shape; the last scale gives the add a gradient of its own
        // (the one backward() is handed is shared with the caller, so it is not added into).
        const Tensor h = ops::scale(in[0], 1.5);
        return ops::scale(ops::add(h, ops::scale(ops::layernorm(h, in[1], in[2]), 3.0)), 2.0);
      },
      {x, w, b}));
}

// The kernels' accumulate flags give the bits of the adds they replace: each gradient alone, then
// axpby onto the one held (backend/kernels.h), in f32 and f64 (the CPU's dtypes; the CUDA test
// covers bf16), and each flag touches its own output only.
TEST(LayerNorm, accumulating_kernels_give_the_bits_of_a_separate_add) {
  Generator g(17);
  const int64_t N = 9, C = 70;
  namespace tt = tessera::testing;
  for (DType t : {DType::F32, DType::F64}) {
    const Tensor x = randn({N, C}, g).to(t), dy = randn({N, C}, g).to(t), held = randn({N, C}, g).to(t);
    const Tensor w = randn({C}, g).to(t), b = randn({C}, g).to(t);
    const Tensor held_w = randn({C}, g).to(t), held_b = randn({C}, g).to(t);
    auto added = [](const Tensor& h, const Tensor& d) {
      Tensor sum = h.clone();
      cpu::kernels().axpby(sum, 1.0, sum, 1.0, d);
      return sum;
    };
    const Options st(t);
    Tensor y = Tensor::empty({N, C}, t), mean = Tensor::empty({N}, st), rstd = Tensor::empty({N}, st);
    cpu::kernels().layernorm_forward(y, mean, rstd, x, w, b, 1e-5);
    Tensor dx = Tensor::empty({N, C}, t), dw = Tensor::empty({C}, t), db = Tensor::empty({C}, t);
    cpu::kernels().layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, {});
    Tensor acc = held.clone(), adw = held_w.clone(), adb = held_b.clone();
    cpu::kernels().layernorm_backward(acc, adw, adb, dy, x, w, mean, rstd,
                                      {.dx = true, .dw = true, .db = true});
    EXPECT_EQ(tt::bytes(acc), tt::bytes(added(held, dx))) << dtype_name(t) << " layernorm";
    EXPECT_EQ(tt::bytes(adw), tt::bytes(added(held_w, dw))) << dtype_name(t);
    EXPECT_EQ(tt::bytes(adb), tt::bytes(added(held_b, db))) << dtype_name(t);
    Tensor dx1 = Tensor::empty({N, C}, t), db1 = Tensor::empty({C}, t);
    adw = held_w.clone();
    cpu::kernels().layernorm_backward(dx1, adw, db1, dy, x, w, mean, rstd, {.dw = true});
    EXPECT_EQ(tt::bytes(dx1), tt::bytes(dx)) << dtype_name(t) << ": dx written";
    EXPECT_EQ(tt::bytes(adw), tt::bytes(added(held_w, dw))) << dtype_name(t);
    EXPECT_EQ(tt::bytes(db1), tt::bytes(db)) << dtype_name(t) << ": db written";

    Tensor r = Tensor::empty({N}, st);
    cpu::kernels().rmsnorm_forward(y, r, x, w, 1e-6);
    cpu::kernels().rmsnorm_backward(dx, dw, dy, x, w, r, {});
    acc = held.clone();
    Tensor dw1 = Tensor::empty({C}, t);
    cpu::kernels().rmsnorm_backward(acc, dw1, dy, x, w, r, {.dx = true});
    EXPECT_EQ(tt::bytes(acc), tt::bytes(added(held, dx))) << dtype_name(t) << " rmsnorm";
    EXPECT_NE(tt::bytes(acc), tt::bytes(dx)) << dtype_name(t) << ": the held gradient counts";
    EXPECT_EQ(tt::bytes(dw1), tt::bytes(dw)) << dtype_name(t) << ": dw written";
    adw = held_w.clone();
    cpu::kernels().rmsnorm_backward(dx1, adw, dy, x, w, r, {.dw = true});
    EXPECT_EQ(tt::bytes(adw), tt::bytes(added(held_w, dw))) << dtype_name(t) << " rmsnorm dw";
  }
}

TEST(LayerNorm, weight_gradients_without_an_input_gradient) {
  // x wants no gradient: the backward still computes the weight's and the bias's.
  Generator g(15);
  const Tensor x = randn({4, 5}, g).to(DType::F64);  // gradcheck runs in f64
  Tensor w = randn({5}, g), b = randn({5}, g);
  EXPECT_TRUE(gradcheck(
      [x](const std::vector<Tensor>& in) { return ops::layernorm(x, in[0], in[1]); }, {w, b}));
}

TEST(LayerNorm, mismatched_weight_error_names_both_shapes) {
  Tensor x = zeros({2, 3, 5});
  std::string msg = error_of([&] { ops::layernorm(x, ones({4}), zeros({5})); });
  EXPECT_NE(msg.find("weight (4,)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 3, 5)"), std::string::npos) << msg;
}

TEST(LayerNorm, mismatched_bias_error_names_both_shapes) {
  Tensor x = zeros({2, 3, 5});
  std::string msg = error_of([&] { ops::layernorm(x, ones({5}), zeros({5, 1})); });
  EXPECT_NE(msg.find("bias (5, 1)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 3, 5)"), std::string::npos) << msg;
}

TEST(LayerNorm, dtype_mismatch_is_an_error) {
  std::string msg = error_of(
      [] { ops::layernorm(zeros({2, 3}), ones({3}, DType::F64), zeros({3}, DType::F64)); });
  EXPECT_NE(msg.find("f64"), std::string::npos) << msg;
}

TEST(RMSNorm, value_matches_hand_computed_rows) {
  // Row 0: x = [1, 3, -1, -3]: mean(x^2) = (1+9+1+9)/4 = 5; eps = 4 gives rstd = 1/3;
  //   y = x / 3 * w with w = [3, 1, -3, 2] -> [1, 1, 1, -2].
  // Row 1: x = 0: rstd = 1/sqrt(0 + 4) = 1/2 stays finite (eps's job) and y = 0.
  Tensor x = from_vector<float>({1, 3, -1, -3, 0, 0, 0, 0}, {2, 4});
  Tensor w = from_vector<float>({3, 1, -3, 2}, {4});
  std::vector<float> y = ops::rmsnorm(x, w, 4.0).to_vector<float>();
  std::vector<double> want = {1, 1, 1, -2, 0, 0, 0, 0};
  ASSERT_EQ(y.size(), want.size());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], want[i], kValueTol) << "element " << i;
}

TEST(RMSNorm, gradcheck_x_weight_over_leading_dims) {
  Generator g(3);
  Tensor x = randn({2, 3, 5}, g), w = randn({5}, g);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::rmsnorm(in[0], in[1]); },
                        {x, w}));
}

TEST(RMSNorm, gradcheck_wide_rows) {
  Generator g(13);
  Tensor x = randn({2, 2, 70}, g), w = randn({70}, g);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::rmsnorm(in[0], in[1]); },
                        {x, w}));
}

TEST(RMSNorm, gradcheck_residual_stream_and_weight_only) {
  Generator g(16);
  Tensor x = randn({3, 6}, g), w = randn({6}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        const Tensor h = ops::scale(in[0], 0.5);  // as in the LayerNorm test above
        return ops::scale(ops::add(h, ops::scale(ops::rmsnorm(h, in[1]), 3.0)), 2.0);
      },
      {x, w}));
  const Tensor x64 = x.to(DType::F64);  // gradcheck runs in f64
  EXPECT_TRUE(gradcheck(
      [x64](const std::vector<Tensor>& in) { return ops::rmsnorm(x64, in[0]); }, {w}));
}

TEST(RMSNorm, mismatched_weight_error_names_both_shapes) {
  Tensor x = zeros({2, 3, 5});
  std::string msg = error_of([&] { ops::rmsnorm(x, ones({3})); });
  EXPECT_NE(msg.find("weight (3,)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 3, 5)"), std::string::npos) << msg;
}

TEST(RMSNorm, scalar_input_is_an_error) {
  std::string msg = error_of([] { ops::rmsnorm(full({}, 1.0), ones({1})); });
  EXPECT_NE(msg.find("()"), std::string::npos) << msg;
}
