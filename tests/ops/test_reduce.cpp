// sum and mean, over all elements and along one dimension.
#include <gtest/gtest.h>

#include "gradcheck.h"
#include "ops/ops.h"

using namespace tessera;
using tessera::testing::gradcheck;

TEST(Sum, value_all_and_along_each_dim) {
  Tensor x = arange(0, 24).view({2, 3, 4});
  EXPECT_EQ(ops::sum(x).item(), 276.0);  // 0 + ... + 23
  EXPECT_EQ(ops::sum(x).shape(), Shape{});
  Tensor s0 = ops::sum(x, 0);
  EXPECT_EQ(s0.shape(), (Shape{3, 4}));
  EXPECT_EQ(s0.to_vector<float>()[0], 0 + 12);
  Tensor s1 = ops::sum(x, 1, true);
  EXPECT_EQ(s1.shape(), (Shape{2, 1, 4}));
  EXPECT_EQ(s1.to_vector<float>()[5], 13 + 17 + 21);  // batch 1, column 1
  Tensor s2 = ops::sum(x, -1);
  EXPECT_EQ(s2.to_vector<float>(), (std::vector<float>{6, 22, 38, 54, 70, 86}));
}

TEST(Mean, value_all_and_along_dim) {
  Tensor x = arange(0, 6).view({2, 3});
  EXPECT_EQ(ops::mean(x).item(), 2.5);
  EXPECT_EQ(ops::mean(x, 1).to_vector<float>(), (std::vector<float>{1, 4}));
}

TEST(Sum, gradcheck_all_and_each_dim) {
  Generator g(31);
  Tensor x = randn({2, 3, 4}, g);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::sum(in[0]); }, {x}));
  for (int64_t d = 0; d < 3; ++d) {
    EXPECT_TRUE(gradcheck([d](const std::vector<Tensor>& in) { return ops::sum(in[0], d); }, {x}))
        << "dim " << d;
  }
}

TEST(Mean, gradcheck_all_and_dim) {
  Generator g(32);
  Tensor x = randn({3, 5}, g);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::mean(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::mean(in[0], 0, true); }, {x}));
}

TEST(Sum, dim_out_of_range_names_the_shape) {
  try {
    ops::sum(zeros({2, 3}), 2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(2, 3)"), std::string::npos) << e.what();
  }
}

TEST(Expand, repeats_along_the_dim_and_gradcheck) {
  Tensor x = from_vector<float>({1, 2, 3}, {3, 1});
  EXPECT_EQ(ops::expand(x, 1, 2).to_vector<float>(), (std::vector<float>{1, 1, 2, 2, 3, 3}));
  EXPECT_EQ(ops::expand(from_vector<float>({1, 2}, {1, 2}), 0, 2).to_vector<float>(),
            (std::vector<float>{1, 2, 1, 2}));
  Generator g(5);
  EXPECT_TRUE(tessera::testing::gradcheck(
      [](const std::vector<Tensor>& in) { return ops::expand(in[0], 1, 4); },
      {randn({3, 1, 2}, g, DType::F64)}));
  EXPECT_THROW(ops::expand(x, 0, 2), Error);  // size 3 there, not 1
}
