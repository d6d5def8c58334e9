// NF4 quantisation (peft/nf4.h): error bounds, double quantisation, storage size, and the NF4
// linear against a dense matmul with the dequantised weight.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "backend/nf4_codebook.h"
#include "gradcheck.h"
#include "ops/ops.h"
#include "peft/nf4.h"
#include "test_util.h"

namespace tessera::peft {
namespace {

using testing::gradcheck;

// Half the gap between the two NF4 levels around v in [-1, 1]: the most rounding to the nearest
// level can move v.
double half_gap(double v) {
  for (int c = 0; c < 15; ++c)
    if (v <= kNF4[c + 1]) return 0.5 * (double(kNF4[c + 1]) - kNF4[c]);
  return 0;
}

std::vector<double> absmax_of(const std::vector<float>& w) {
  std::vector<double> a((w.size() + kNF4Block - 1) / kNF4Block, 0.0);
  for (size_t e = 0; e < w.size(); ++e) a[e / kNF4Block] = std::max(a[e / kNF4Block], double(std::fabs(w[e])));
  return a;
}

TEST(NF4, every_weight_is_within_half_a_level_gap_of_its_block_absmax) {
  Generator g(3);
  // 3 x 100 = 300 weights: the last block has 44, and the row length is not a multiple of 64.
  Tensor w = ops::scale(randn({3, 100}, g), 0.05);
  NF4Tensor q = nf4_quantize(w, false);
  const std::vector<float> v = w.to_vector<float>();
  const std::vector<float> back = nf4_dequantize(q).to_vector<float>();
  const std::vector<double> a = absmax_of(v);
  double worst = 0;
  for (size_t e = 0; e < v.size(); ++e) {
    const double A = a[e / kNF4Block];
    // f32 rounding of v / A and of kNF4 * A: a few ulps of A.
    const double bound = A * half_gap(v[e] / A) + 4 * A * 1.2e-7;
    EXPECT_LE(std::fabs(back[e] - v[e]), bound) << "element " << e;
    worst = std::max(worst, std::fabs(back[e] - v[e]) / A);
  }
  EXPECT_GT(worst, 0.01);  // it really is 4-bit: not a lossless copy
  EXPECT_EQ(q.codes.numel(), 150);
  EXPECT_EQ(q.absmax.numel(), 5);
}

TEST(NF4, levels_times_absmax_round_trip_exactly_and_zero_blocks_stay_zero) {
  std::vector<float> v(128, 0.0f);
  for (int i = 0; i < 64; ++i) v[size_t(i)] = kNF4[i % 16] * 0.5f;  // absmax 0.5 (level 15)
  Tensor w = from_vector(v, {2, 64});
  const std::vector<float> back = nf4_dequantize(nf4_quantize(w, false)).to_vector<float>();
  for (size_t e = 0; e < v.size(); ++e) EXPECT_EQ(back[e], v[e]) << e;
}

TEST(NF4, double_quantization_adds_at_most_half_an_int8_step_of_the_absmax) {
  Generator g(5);
  // 64 x 640 weights = 640 blocks = 3 second-level blocks (256, 256, 128); row scales that vary
  // so the absmax constants spread.
  Tensor w = ops::mul(randn({64, 640}, g), ops::scale(rand({640}, g), 0.1));
  NF4Tensor q = nf4_quantize(w, true);
  NF4Tensor plain = nf4_quantize(w, false);
  ASSERT_TRUE(q.double_quantized());
  EXPECT_EQ(q.qabsmax.numel(), 640);
  EXPECT_EQ(q.absmax_scale.numel(), 3);
  const std::vector<float> exact = plain.absmax.to_vector<float>();
  const std::vector<float> dq = q.block_absmax().to_vector<float>();
  const std::vector<float> scale = q.absmax_scale.to_vector<float>();
  double mean = 0;
  for (float a : exact) mean += a;
  mean /= double(exact.size());
  EXPECT_NEAR(q.absmax_mean, mean, 1e-6 * mean);
  for (size_t i = 0; i < exact.size(); ++i) {
    const double s = scale[i / kNF4AbsmaxBlock];
    EXPECT_LE(std::fabs(dq[i] - exact[i]), s / 254 * 1.0001 + 1e-7) << "constant " << i;
  }
  // Same codes as without double quantisation; each weight moves by |level| * |absmax error|.
  EXPECT_EQ(q.codes.to_vector<uint8_t>(), plain.codes.to_vector<uint8_t>());
  const std::vector<float> a = nf4_dequantize(q).to_vector<float>();
  const std::vector<float> b = nf4_dequantize(plain).to_vector<float>();
  for (size_t e = 0; e < a.size(); ++e)
    EXPECT_LE(std::fabs(a[e] - b[e]), scale[e / kNF4Block / kNF4AbsmaxBlock] / 254 * 1.0001 + 1e-7);
}

TEST(NF4, storage_is_4_5_bits_per_weight_or_4_127_with_double_quantization) {
  Generator g(1);
  Tensor w = randn({256, 1024}, g);  // 262144 weights, 4096 blocks, 16 second-level blocks
  const double n = double(w.numel());
  EXPECT_NEAR(8.0 * double(nf4_quantize(w, false).nbytes()) / n, 4.5, 1e-9);
  // 4 + 8 / 64 + 32 / (64 * 256) = 4.127 (QLoRA, section 3), plus the 32-bit mean.
  EXPECT_NEAR(8.0 * double(nf4_quantize(w, true).nbytes()) / n, 4.127, 1e-3);
}

TEST(NF4, linear_equals_a_dense_linear_with_the_dequantized_weight) {
  Generator g(9);
  for (bool dq : {false, true}) {
    Tensor w = ops::scale(randn({150, 72}, g), 0.1);  // 150 rows: three tiles of 64, 64, 22
    NF4Tensor q = nf4_quantize(w, dq);
    Tensor dense = nf4_dequantize(q);
    Tensor x = randn({2, 5, 72}, g).requires_grad_();
    Tensor bias = randn({150}, g);
    Tensor y = nf4_linear(x, q, bias);
    Tensor ref = ops::linear(x, dense, bias);
    ASSERT_EQ(y.shape(), ref.shape());
    // Both are f32 sums of 72 products through different gemm blockings: a few ulps of |y| ~ 1.
    EXPECT_LT(testing::max_abs_diff(y, ref), 2e-5);
    Tensor u = randn(y.shape(), g);
    backward(y, u);
    Tensor dx = x.grad().clone();
    x.zero_grad();
    backward(ref, u);
    EXPECT_LT(testing::max_abs_diff(dx, x.grad()), 2e-5);
  }
}

TEST(NF4, linear_gradcheck_in_x_and_bias) {
  Generator g(11);
  NF4Tensor q = nf4_quantize(randn({70, 24}, g), true);
  Tensor x = randn({3, 24}, g, DType::F64), b = randn({70}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& in) { return nf4_linear(in[0], q, in[1]); }, {x, b}));
}

// A NaN or an infinity anywhere in a block is refused, naming the element: std::max over the block
// passed over a NaN (first or not), which then took code 0 and came back as -absmax.
TEST(NF4, non_finite_weights_are_refused_naming_the_element) {
  Generator g(3);
  for (int64_t at : {int64_t(5), int64_t(64), int64_t(130)}) {
    for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
      std::vector<float> w = randn({3, 64}, g).to_vector<float>();
      w[size_t(at)] = bad;
      const std::string e = testing::error_of([&] { nf4_quantize(from_vector(w, {3, 64}), true); });
      EXPECT_NE(e.find("at element " + std::to_string(at) + " (block " + std::to_string(at / 64)),
                std::string::npos)
          << e;
    }
  }
}

TEST(NF4, shape_errors_name_the_shapes) {
  Generator g(2);
  NF4Tensor q = nf4_quantize(randn({8, 64}, g), false);
  EXPECT_NE(testing::error_of([&] { nf4_linear(randn({3, 32}, g), q); }).find("(3, 32)"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { nf4_quantize(randn({64}, g), false); }).find("2-D"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera::peft
