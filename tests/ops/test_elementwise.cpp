// add, sub, mul (full and bias-row broadcast), scale.
#include <gtest/gtest.h>

#include "gradcheck.h"
#include "ops/ops.h"

using namespace tessera;
using tessera::testing::gradcheck;

namespace {
const Tensor kA = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
const Tensor kB = from_vector<float>({6, 5, 4, 3, 2, 1}, {2, 3});
const Tensor kRow = from_vector<float>({10, 20, 30}, {3});
}  // namespace

TEST(Add, value_full_and_row_broadcast) {
  EXPECT_EQ(ops::add(kA, kB).to_vector<float>(), std::vector<float>(6, 7));
  EXPECT_EQ(ops::add(kA, kRow).to_vector<float>(), (std::vector<float>{11, 22, 33, 14, 25, 36}));
}

TEST(Sub, value_full_and_row_broadcast) {
  EXPECT_EQ(ops::sub(kA, kB).to_vector<float>(), (std::vector<float>{-5, -3, -1, 1, 3, 5}));
  EXPECT_EQ(ops::sub(kA, kRow).to_vector<float>(),
            (std::vector<float>{-9, -18, -27, -6, -15, -24}));
}

TEST(Mul, value_full_and_row_broadcast) {
  EXPECT_EQ(ops::mul(kA, kB).to_vector<float>(), (std::vector<float>{6, 10, 12, 12, 10, 6}));
  EXPECT_EQ(ops::mul(kA, kRow).to_vector<float>(),
            (std::vector<float>{10, 40, 90, 40, 100, 180}));
}

TEST(Scale, value) {
  EXPECT_EQ(ops::scale(kA, -0.5).to_vector<float>(),
            (std::vector<float>{-0.5f, -1, -1.5f, -2, -2.5f, -3}));
}

TEST(Add, shape_mismatch_names_both_shapes) {
  try {
    ops::add(zeros({2, 3}), zeros({2}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("(2, 3)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(2,)"), std::string::npos) << msg;
  }
}

TEST(Add, dtype_mismatch_is_an_error) {
  EXPECT_THROW(ops::add(zeros({2}), zeros({2}, DType::F64)), Error);
}

namespace {
void check_binary(Tensor (*op)(const Tensor&, const Tensor&)) {
  Generator g(21);
  Tensor a = randn({2, 3, 4}, g), b = randn({2, 3, 4}, g), row = randn({4}, g);
  auto f = [op](const std::vector<Tensor>& x) { return op(x[0], x[1]); };
  EXPECT_TRUE(gradcheck(f, {a, b}));
  EXPECT_TRUE(gradcheck(f, {a, row}));
}
}  // namespace

TEST(Add, gradcheck_full_and_row) { check_binary(ops::add); }
TEST(Sub, gradcheck_full_and_row) { check_binary(ops::sub); }
TEST(Mul, gradcheck_full_and_row) { check_binary(ops::mul); }

TEST(Scale, gradcheck) {
  Generator g(22);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return ops::scale(x[0], -1.7); },
                        {randn({3, 4}, g)}));
}

TEST(Mul, same_tensor_twice_gets_both_contributions) {
  Tensor x = from_vector<double>({3}, {1}).requires_grad_();
  ops::sum(ops::mul(x, x)).backward();
  EXPECT_EQ(x.grad().item(), 6.0);
}
