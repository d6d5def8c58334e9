// embedding: lookups by hand, the scatter-add gradient (repeated ids sum), gradients by central
// differences, and the errors for bad ids.
#include <gtest/gtest.h>

#include <string>

#include "gradcheck.h"
#include "core/storage.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::gradcheck;

namespace {

Tensor ids_of(const std::vector<int32_t>& ids, const Shape& shape) {
  return from_vector<int32_t>(ids, shape, DType::I32);
}


}  // namespace

TEST(Embedding, value_copies_table_rows_and_appends_channels) {
  Tensor table = from_vector<float>({0, 1, 10, 11, 20, 21}, {3, 2});
  Tensor out = ops::embedding(table, ids_of({2, 0, 2, 1}, {2, 2}));
  EXPECT_EQ(out.shape(), (Shape{2, 2, 2}));
  EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{20, 21, 0, 1, 20, 21, 10, 11}));
}

TEST(Embedding, backward_sums_repeated_ids_and_zeros_unused_rows) {
  Tensor table = zeros({4, 2}).requires_grad_();
  Tensor out = ops::embedding(table, ids_of({1, 3, 1}, {3}));
  Tensor dout = from_vector<float>({1, 2, 30, 40, 500, 600}, {3, 2});
  backward(out, dout);
  // Row 1 receives positions 0 and 2; rows 0 and 2 are never looked up. Sums of small integers
  // are exact in f32.
  EXPECT_EQ(table.grad().to_vector<float>(), (std::vector<float>{0, 0, 501, 602, 0, 0, 30, 40}));
}

TEST(Embedding, backward_equals_in_order_serial_sum_bit_for_bit) {
  // Many repeats of few ids over several channel blocks: a racy scatter-add would lose updates, and
  // one that sums in thread order would differ from the serial row-order sum in the last bits.
  Generator g(1);
  const int64_t N = 512, V = 3, C = 200;
  std::vector<int32_t> ids(N);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i % V);
  Tensor dout = randn({N, C}, g);
  Tensor table = zeros({V, C}).requires_grad_();
  backward(ops::embedding(table, ids_of(ids, {N})), dout);

  std::vector<float> d = dout.to_vector<float>(), expected(size_t(V * C), 0.0f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      expected[size_t(ids[size_t(n)] * C + c)] += d[size_t(n * C + c)];
  EXPECT_EQ(table.grad().to_vector<float>(), expected);
}

TEST(Embedding, gradcheck_with_repeated_id) {
  Generator g(2);
  Tensor table = randn({5, 3}, g);
  Tensor ids = ids_of({4, 0, 4, 2, 4, 1}, {2, 3});
  EXPECT_TRUE(gradcheck(
      [ids](const std::vector<Tensor>& in) { return ops::embedding(in[0], ids); }, {table}));
}

TEST(Embedding, id_out_of_range_error_names_id_position_and_V) {
  Tensor table = zeros({4, 2});
  std::string msg = error_of([&] { ops::embedding(table, ids_of({0, 3, 4}, {3})); });
  EXPECT_NE(msg.find("id 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("position 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[0, 4)"), std::string::npos) << msg;
  msg = error_of([&] { ops::embedding(table, ids_of({-1}, {1})); });
  EXPECT_NE(msg.find("id -1"), std::string::npos) << msg;
}

// With the ids' host copy (what GPT::loss passes for a host batch on a device model), the check reads
// that copy: nothing leaves tensor land, and a bad id is still an error naming it.
TEST(Embedding, host_ids_are_checked_without_reading_the_ids_back) {
  Tensor table = from_vector<float>({0, 1, 10, 11, 20, 21}, {3, 2});
  const Tensor ids = ids_of({2, 0, 2}, {3});
  const TransferStats before = transfer_stats();
  Tensor out = ops::embedding(table, ids, ids.clone());
  EXPECT_EQ(transfer_stats().host_readout_bytes, before.host_readout_bytes);
  EXPECT_EQ(out.to_vector<float>(), ops::embedding(table, ids).to_vector<float>());
  std::string msg = error_of([&] { ops::embedding(table, ids, ids_of({2, 5, 0}, {3})); });
  EXPECT_NE(msg.find("id 5 at position 1"), std::string::npos) << msg;
  msg = error_of([&] { ops::embedding(table, ids, ids_of({2, 0}, {2})); });
  EXPECT_NE(msg.find("host copy of the ids"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2,)"), std::string::npos) << msg;
}

TEST(Embedding, non_integer_ids_are_an_error) {
  std::string msg = error_of([] { ops::embedding(zeros({4, 2}), zeros({3})); });
  EXPECT_NE(msg.find("i32"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f32"), std::string::npos) << msg;
}

TEST(Embedding, table_that_is_not_2d_error_names_its_shape) {
  std::string msg = error_of([] { ops::embedding(zeros({4, 2, 2}), ids_of({0}, {1})); });
  EXPECT_NE(msg.find("(4, 2, 2)"), std::string::npos) << msg;
}

TEST(GatherRows, picks_rows_and_its_backward_sums_a_row_picked_twice) {
  Tensor x = from_vector<float>({0, 1, 10, 11, 20, 21}, {3, 2}).requires_grad_();
  Tensor y = ops::gather_rows(x, {2, 0, 2});
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{20, 21, 0, 1, 20, 21}));
  backward(y, from_vector<float>({1, 2, 30, 40, 500, 600}, {3, 2}));
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{30, 40, 0, 0, 501, 602}));
}

TEST(ScatterAddRows, sums_rows_in_order_and_its_backward_gathers) {
  Tensor src = from_vector<float>({1, 2, 30, 40, 500, 600}, {3, 2}).requires_grad_();
  Tensor y = ops::scatter_add_rows(src, {3, 1, 3}, 4);
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{0, 0, 30, 40, 0, 0, 501, 602}));
  backward(y, from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {4, 2}));
  EXPECT_EQ(src.grad().to_vector<float>(), (std::vector<float>{7, 8, 3, 4, 7, 8}));
}

TEST(GatherRows, gradcheck_of_gather_then_scatter) {
  Generator g(3);
  Tensor x = randn({4, 3}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        Tensor picked = ops::gather_rows(in[0], {3, 1, 1, 0});
        return ops::scatter_add_rows(ops::mul(picked, picked), {0, 2, 0, 4}, 5);
      },
      {x}));
}

TEST(GatherRows, rows_out_of_range_are_named) {
  Tensor x = zeros({3, 2});
  EXPECT_NE(error_of([&] {
              ops::gather_rows(x, {0, 3});
            }).find("row 3 at position 1 is outside [0, 3)"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              ops::scatter_add_rows(x, {0, -1, 2}, 2);
            }).find("row -1 at position 1 is outside [0, 2)"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              ops::scatter_add_rows(x, {0, 1}, 2);
            }).find("src must be (M, C) for M = 2"),
            std::string::npos);
}
