// Tensor: storage sharing, views, copies and conversions, creation, errors.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backend/copy_geometry.h"
#include "backend/cuda.h"
#include "core/build.h"
#include "core/tensor.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;

TEST(Tensor, creation_fills_values) {
  EXPECT_EQ(zeros({2, 2}).to_vector<float>(), (std::vector<float>{0, 0, 0, 0}));
  EXPECT_EQ(ones({3}, DType::F64).to_vector<double>(), (std::vector<double>{1, 1, 1}));
  EXPECT_EQ(full({2}, 2.5).to_vector<float>(), (std::vector<float>{2.5f, 2.5f}));
  EXPECT_EQ(arange(0, 1, 0.25).to_vector<float>(), (std::vector<float>{0, 0.25f, 0.5f, 0.75f}));
  EXPECT_EQ(arange(3, 0, -1, DType::I32).to_vector<int32_t>(), (std::vector<int32_t>{3, 2, 1}));
  EXPECT_EQ(arange(0, 0).numel(), 0);
}

TEST(Tensor, scalar_has_empty_shape_and_one_element) {
  Tensor s = full({}, 7.0);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.item(), 7.0);
}

TEST(Tensor, views_share_storage_with_offset) {
  Tensor base = arange(0, 12).view({3, 4});
  Tensor row = base.narrow(0, 1, 1);  // elements 4..7
  EXPECT_EQ(row.offset(), 4);
  EXPECT_EQ(row.storage(), base.storage());
  EXPECT_EQ(row.to_vector<float>(), (std::vector<float>{4, 5, 6, 7}));
  row.fill_(-1);
  EXPECT_EQ(base.to_vector<float>(),
            (std::vector<float>{0, 1, 2, 3, -1, -1, -1, -1, 8, 9, 10, 11}));
}

TEST(Tensor, narrow_on_inner_dim_is_strided_and_contiguous_copies_in_order) {
  Tensor base = arange(0, 12).view({3, 4});
  Tensor cols = base.narrow(1, 1, 2);  // columns 1, 2 of each row
  EXPECT_FALSE(cols.is_contiguous());
  EXPECT_EQ(cols.to_vector<float>(), (std::vector<float>{1, 2, 5, 6, 9, 10}));
  Tensor c = cols.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), base.storage());
}

TEST(Tensor, permute_and_transpose_reorder_elements) {
  Tensor x = arange(0, 6).view({2, 3});
  EXPECT_EQ(x.transpose(0, 1).to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor y = arange(0, 24).view({2, 3, 4}).permute({2, 0, 1});
  EXPECT_EQ(y.shape(), (Shape{4, 2, 3}));
  // y[i, j, k] = x[j, k, i] = 12 j + 4 k + i
  std::vector<float> v = y.to_vector<float>();
  EXPECT_EQ(v[size_t(1 * 6 + 1 * 3 + 2)], 12 + 8 + 1);
}

TEST(Tensor, view_infers_one_dimension_and_rejects_bad_shapes) {
  Tensor x = zeros({2, 3, 4});
  EXPECT_EQ(x.view({-1, 4}).shape(), (Shape{6, 4}));
  std::string msg = error_of([&] { x.view({5, -1}); });
  EXPECT_NE(msg.find("(2, 3, 4)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(5, -1)"), std::string::npos) << msg;
  msg = error_of([&] { x.transpose(0, 2).view({24}); });
  EXPECT_NE(msg.find("not contiguous"), std::string::npos) << msg;
  EXPECT_EQ(x.transpose(0, 2).reshape({24}).numel(), 24);  // reshape copies instead
}

TEST(Tensor, copy_shape_error_names_both_shapes) {
  Tensor a = zeros({2, 3}), b = zeros({3, 2});
  std::string msg = error_of([&] { a.copy_(b); });
  EXPECT_NE(msg.find("(2, 3)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3, 2)"), std::string::npos) << msg;
}

TEST(Tensor, narrow_out_of_range_names_the_shape) {
  std::string msg = error_of([] { zeros({2, 3}).narrow(1, 2, 2); });
  EXPECT_NE(msg.find("(2, 3)"), std::string::npos) << msg;
}

TEST(Tensor, bf16_rounds_to_nearest_even) {
  // bf16 keeps 7 mantissa bits: around 1.0 the spacing is 2^-7 = 0.0078125.
  Tensor x = from_vector<float>({1.0f, 1.00390625f, 1.01171875f, 1.0044f, -2.0f}, {5});
  std::vector<float> y = x.to(DType::BF16).to(DType::F32).to_vector<float>();
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], 1.0f);        // halfway between 1.0 (even) and 1.0078125: to even
  EXPECT_EQ(y[2], 1.015625f);   // halfway between 1.0078125 (odd) and 1.015625: to even
  EXPECT_EQ(y[3], 1.0078125f);  // above halfway: up
  EXPECT_EQ(y[4], -2.0f);
  float nan = std::numeric_limits<float>::quiet_NaN();
  float big = std::numeric_limits<float>::max();
  std::vector<float> z =
      from_vector<float>({nan, big}, {2}).to(DType::BF16).to(DType::F32).to_vector<float>();
  EXPECT_TRUE(std::isnan(z[0]));
  EXPECT_TRUE(std::isinf(z[1]));  // FLT_MAX is above bf16's largest finite value: rounds to inf
}

TEST(Tensor, dtype_conversions_round_trip) {
  Tensor i = from_vector<int32_t>({-3, 0, 7}, {3});
  EXPECT_EQ(i.to(DType::F64).to_vector<double>(), (std::vector<double>{-3, 0, 7}));
  EXPECT_EQ(i.to(DType::F32).to(DType::I32).to_vector<int32_t>(), (std::vector<int32_t>{-3, 0, 7}));
  EXPECT_EQ(from_vector<uint8_t>({0, 255}, {2}).to(DType::F32).to_vector<float>(),
            (std::vector<float>{0, 255}));
}

TEST(Tensor, data_checks_the_dtype) {
  Tensor x = zeros({2});
  std::string msg = error_of([&] { x.data<double>(); });
  EXPECT_NE(msg.find("f32"), std::string::npos) << msg;
}

TEST(Tensor, memory_counters_track_allocations) {
  MemoryStats before = memory_stats(Device::cpu());
  {
    Tensor t = Tensor::empty({1024}, DType::F32);
    EXPECT_EQ(memory_stats(Device::cpu()).current_bytes, before.current_bytes + 4096);
  }
  EXPECT_EQ(memory_stats(Device::cpu()).current_bytes, before.current_bytes);
}

TEST(Tensor, cuda_request_without_a_device_is_a_clear_error) {
  if (cuda::available()) GTEST_SKIP() << "a CUDA device is present";
  std::string msg = error_of([] { zeros({2}, Device::cuda()); });
  if (built_with::cuda())
    EXPECT_NE(msg.find("CUDA device 0 requested"), std::string::npos) << msg;
  else
    EXPECT_NE(msg.find("tessera was built without CUDA support"), std::string::npos) << msg;
}

TEST(Tensor, cuda_round_trip_preserves_values) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Tensor x = arange(0, 10).view({2, 5});
  Tensor back = x.to(Device::cuda()).to(DType::BF16).to(DType::F32).to(Device::cpu());
  EXPECT_EQ(back.to_vector<float>(), x.to_vector<float>());  // small integers are exact in bf16
}

// The CUDA copy indexes in 32 bits only where every thread's index fits: the last block's
// threads run up to threads - 1 past n, so n = 2^31 - 200 in blocks of 256 must take 64 bits
// (its last thread would be 2^31 + 55, a signed overflow; the check once compared n alone).
TEST(CopyGeometry, thirty_two_bit_indexing_only_where_the_last_blocks_threads_fit) {
  const int64_t max32 = 2147483647;
  EXPECT_TRUE(fits_int32_index(1000, 256, 999));
  EXPECT_TRUE(fits_int32_index(max32 - 255, 256, 0));   // last thread: exactly INT32_MAX
  EXPECT_FALSE(fits_int32_index(max32 - 254, 256, 0));
  EXPECT_FALSE(fits_int32_index(max32 - 199, 256, 0));
  EXPECT_FALSE(fits_int32_index(1000, 256, max32 + 1));  // an offset past 2^31 - 1
  EXPECT_TRUE(fits_int32_index(1000, 256, max32));
}
