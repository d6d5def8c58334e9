// add, sub, mul (full and bias-row broadcast), add_rows, scale.
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

// Rows [1, 3) of a (4, 2) table added to each of two (2, 2) sequences.
TEST(AddRows, adds_the_rows_from_start_to_every_sequence) {
  const Tensor x = from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  const Tensor table = from_vector<float>({10, 20, 30, 40, 50, 60, 70, 80}, {4, 2});
  EXPECT_EQ(ops::add_rows(x, table, 1).to_vector<float>(),
            (std::vector<float>{31, 42, 53, 64, 35, 46, 57, 68}));
}

// The table's gradient is dy summed over the sequences, in the rows read; the others get none.
// Twice into the same rows (two forwards, one graph) the contributions add.
TEST(AddRows, gradcheck_and_rows_outside_the_window_get_zero) {
  Generator g(23);
  const Tensor x = randn({3, 2, 4}, g, DType::F64), table = randn({5, 4}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::add_rows(in[0], in[1], 2); }, {x, table}));
  Tensor t = table.detach().requires_grad_();
  const Tensor y = ops::add_rows(x, t, 1), z = ops::add_rows(x, t, 2);
  ops::sum(ops::add(y, z)).backward();
  // Rows 1 and 3 are read once each (3 sequences: gradient 3), row 2 twice (6), rows 0 and 4 never.
  const std::vector<double> grad = t.grad().to_vector<double>();
  const double per_row[5] = {0, 3, 6, 3, 0};
  for (size_t i = 0; i < grad.size(); ++i) EXPECT_EQ(grad[i], per_row[i / 4]) << "element " << i;
}

TEST(AddRows, rows_past_the_table_or_another_width_are_errors_naming_the_shapes) {
  const Tensor x = zeros({2, 3, 4}), table = zeros({5, 4});
  for (const auto& [t, start] : {std::pair{table, int64_t(3)}, std::pair{zeros({5, 3}), int64_t(0)}}) {
    try {
      ops::add_rows(x, t, start);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("(2, 3, 4)"), std::string::npos) << msg;
      EXPECT_NE(msg.find(shape_str(t.shape())), std::string::npos) << msg;
    }
  }
}
