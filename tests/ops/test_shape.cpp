// view/reshape, narrow, permute/transpose, contiguous, split, concat: values and gradients.
#include <gtest/gtest.h>

#include "gradcheck.h"
#include "ops/ops.h"

using namespace tessera;
using tessera::testing::gradcheck;

TEST(Reshape, gradcheck_view_and_copying_reshape) {
  Generator g(41);
  Tensor x = randn({2, 3, 4}, g);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return in[0].view({6, -1}); }, {x}));
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return in[0].transpose(0, 2).reshape({4, 6}); }, {x}));
}

TEST(Narrow, gradcheck_inner_and_outer_dims) {
  Generator g(42);
  Tensor x = randn({3, 5}, g);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return in[0].narrow(1, 1, 3); }, {x}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return in[0].narrow(0, 2, 1); }, {x}));
}

TEST(Permute, gradcheck) {
  Generator g(43);
  Tensor x = randn({2, 3, 4}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return in[0].permute({1, 2, 0}).contiguous(); }, {x}));
}

TEST(Permute, repeated_dimension_is_an_error) {
  EXPECT_THROW(zeros({2, 3}).permute({0, 0}), Error);
}

TEST(Split, pieces_are_views_in_order) {
  Tensor x = arange(0, 10).view({2, 5});
  std::vector<Tensor> parts = ops::split(x, 2, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].to_vector<float>(), (std::vector<float>{0, 1, 5, 6}));
  EXPECT_EQ(parts[2].to_vector<float>(), (std::vector<float>{4, 9}));
  EXPECT_EQ(parts[1].storage(), x.storage());
  EXPECT_THROW(ops::split(x, std::vector<int64_t>{2, 2}, 1), Error);  // sizes add up to 4, not 5
}

TEST(Split, gradcheck) {
  Generator g(44);
  Tensor x = randn({4, 6}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        std::vector<Tensor> p = ops::split(in[0], std::vector<int64_t>{1, 2, 3}, 1);
        return ops::add(ops::scale(p[0], 2.0), ops::mul(p[2].narrow(1, 0, 1), p[1].narrow(1, 1, 1)));
      },
      {x}));
}

TEST(Concat, value_along_each_dim) {
  Tensor a = arange(0, 4).view({2, 2}), b = arange(10, 12).view({2, 1});
  EXPECT_EQ(ops::concat({a, b}, 1).to_vector<float>(), (std::vector<float>{0, 1, 10, 2, 3, 11}));
  EXPECT_EQ(ops::concat({a, a}, 0).shape(), (Shape{4, 2}));
}

TEST(Concat, mismatched_shapes_are_named) {
  try {
    ops::concat({zeros({2, 2}), zeros({3, 1})}, 1);
    FAIL();
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("(2, 2)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(3, 1)"), std::string::npos) << msg;
  }
}

TEST(Concat, gradcheck) {
  Generator g(45);
  Tensor a = randn({2, 3}, g), b = randn({2, 2}, g);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::concat({in[0], in[1], in[0]}, 1); },
                        {a, b}));
}
