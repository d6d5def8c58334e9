// Global gradient norm and clipping: a 3-4-5 gradient split over two tensors, scaling above the
// limit, no change at or below it, NaN/Inf passed through untouched, and no f32 overflow.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "autograd/autograd.h"
#include "core/tensor.h"
#include "optim/clip.h"

namespace tessera {
namespace {

Tensor param_with_grad(const std::vector<float>& grad) {
  const Shape shape{int64_t(grad.size())};
  Tensor p = zeros(shape);
  p.requires_grad_();
  p.impl().autograd->grad = from_vector(grad, shape);  // the engine's part: p's own gradient
  return p;
}

std::vector<float> grad_of(const NamedParam& np) { return np.param.grad().to_vector<float>(); }

// |(3, 0, 4)| = 5, over two tensors, plus a parameter without a gradient (ignored).
std::vector<NamedParam> three_four_five() {
  Tensor frozen = zeros({2});
  frozen.requires_grad_();
  return {{"a", param_with_grad({3.0f})}, {"b", param_with_grad({0.0f, 4.0f})}, {"c", frozen}};
}

TEST(Clip, global_norm_covers_every_gradient) {
  EXPECT_EQ(grad_norm(three_four_five()), 5.0);
}

TEST(Clip, gradients_above_the_limit_are_scaled_to_it) {
  auto params = three_four_five();
  EXPECT_EQ(clip_grad_norm(params, 1.0), 5.0);  // the norm before clipping
  const double s = 1.0 / (5.0 + 1e-6);           // PyTorch's coefficient
  EXPECT_FLOAT_EQ(grad_of(params[0])[0], float(3.0 * s));
  EXPECT_EQ(grad_of(params[1])[0], 0.0f);
  EXPECT_FLOAT_EQ(grad_of(params[1])[1], float(4.0 * s));
  const double after = grad_norm(params);
  EXPECT_LT(after, 1.0);
  EXPECT_NEAR(after, 1.0, 1e-6);
  EXPECT_FALSE(params[2].param.grad().defined());
}

TEST(Clip, gradients_at_or_below_the_limit_are_untouched) {
  for (double max_norm : {5.0, 10.0, 0.0 /* disabled */, -1.0 /* disabled */}) {
    auto params = three_four_five();
    EXPECT_EQ(clip_grad_norm(params, max_norm), 5.0) << max_norm;
    EXPECT_EQ(grad_of(params[0]), std::vector<float>{3.0f}) << max_norm;
    EXPECT_EQ(grad_of(params[1]), (std::vector<float>{0.0f, 4.0f})) << max_norm;
  }
}

TEST(Clip, nan_or_inf_norm_is_returned_and_gradients_are_left_alone) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<NamedParam> params = {{"a", param_with_grad({nan, 1.0f})},
                                    {"b", param_with_grad({2.0f})}};
  EXPECT_TRUE(std::isnan(clip_grad_norm(params, 1.0)));
  EXPECT_TRUE(std::isnan(grad_of(params[0])[0]));
  EXPECT_EQ(grad_of(params[0])[1], 1.0f);
  EXPECT_EQ(grad_of(params[1])[0], 2.0f);

  params = {{"a", param_with_grad({-inf, 1.0f})}, {"b", param_with_grad({2.0f})}};
  EXPECT_EQ(clip_grad_norm(params, 1.0), std::numeric_limits<double>::infinity());
  EXPECT_EQ(grad_of(params[0])[1], 1.0f);
  EXPECT_EQ(grad_of(params[1])[0], 2.0f);
}

TEST(Clip, squares_of_large_f32_gradients_do_not_overflow) {
  // (3e20)^2 = 9e40 exceeds f32's 3.4e38; accumulated in double the norm is finite and exact.
  std::vector<NamedParam> params = {{"a", param_with_grad({3e20f, 4e20f})}};
  const double g0 = double(3e20f), g1 = double(4e20f);
  EXPECT_DOUBLE_EQ(grad_norm(params), std::sqrt(g0 * g0 + g1 * g1));
  EXPECT_DOUBLE_EQ(clip_grad_norm(params, 1.0), std::sqrt(g0 * g0 + g1 * g1));
  EXPECT_NEAR(grad_of(params[0])[0], 0.6f, 1e-6f);
  EXPECT_NEAR(grad_of(params[0])[1], 0.8f, 1e-6f);
}

TEST(Clip, norm_sums_every_block_of_a_large_gradient) {
  // More elements than one summation block (65536), so the blocked double sum is exercised.
  std::vector<float> g(200003, 0.5f);
  std::vector<NamedParam> params = {{"a", param_with_grad(g)}};
  EXPECT_DOUBLE_EQ(grad_norm(params), std::sqrt(200003 * 0.25));
}

}  // namespace
}  // namespace tessera
