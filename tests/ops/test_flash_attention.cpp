// flash_attention: equal to the materialised attention() in values and gradients, the saved
// log-sum-exp, the sliding window against a direct reference, gradients in f64, and shape errors.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "backend/kernels.h"
#include "gradcheck.h"
#include "naive_attention.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::gradcheck;
using tessera::testing::naive_window_attention;
using tessera::testing::values;

namespace {

void expect_near(const std::vector<double>& a, const std::vector<double>& b, double tol,
                 const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tol) << what << " element " << i;
}

}  // namespace

TEST(FlashAttention, values_and_gradients_equal_materialised_attention) {
  // T = 150 spans three of the materialised kernels' 64-row blocks (the last one short), whose
  // dK and dV add up across blocks and across the group's two query heads.
  for (const auto& [T, D] : {std::pair<int64_t, int64_t>{7, 3}, {150, 8}}) {
    SCOPED_TRACE("T " + std::to_string(T));
    const int64_t B = 2, H = 4, Hkv = 2;
    Generator g(51);
    Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
           v = randn({B, Hkv, T, D}, g, DType::F64), u = randn({B, H, T, D}, g, DType::F64);
    for (Tensor* t : {&q, &k, &v}) t->requires_grad_();
    Tensor flash = ops::flash_attention(q, k, v), full = ops::attention(q, k, v);
    // Same sums in double in a different order (lse form vs normalised P): 1e-13 allows ~1e3 ulps.
    expect_near(flash.to_vector<double>(), full.to_vector<double>(), 1e-13, "out");
    backward(flash, u);
    std::vector<double> dq = q.grad().to_vector<double>(), dk = k.grad().to_vector<double>(),
                        dv = v.grad().to_vector<double>();
    for (Tensor* t : {&q, &k, &v}) t->zero_grad();
    backward(full, u);
    // The backward differs more: rowsum(dO * O) instead of rowsum(dP * P), P rebuilt from lse.
    expect_near(dq, q.grad().to_vector<double>(), 1e-12, "dq");
    expect_near(dk, k.grad().to_vector<double>(), 1e-12, "dk");
    expect_near(dv, v.grad().to_vector<double>(), 1e-12, "dv");
  }
}

TEST(FlashAttention, f32_equals_materialised_attention) {
  Generator g(52);
  Tensor q = randn({1, 2, 9, 4}, g), k = randn({1, 1, 9, 4}, g), v = randn({1, 1, 9, 4}, g);
  // Without a window both forwards run the same row blocks through BLAS (the flash one keeps
  // lse where the materialised one keeps P, in a scratch block of another row stride): measured
  // equal. 5e-7 allows four f32 roundings of |out| < 3 (D = 4 and 9 keys), what a BLAS whose
  // sums depended on the row stride could move them.
  expect_near(values(ops::flash_attention(q, k, v, 0.4)), values(ops::attention(q, k, v, 0.4)),
              5e-7, "f32");
}

TEST(FlashAttention, saved_lse_and_windowed_output_match_direct_reference) {
  const int64_t B = 1, H = 2, Hkv = 1, T = 9, D = 3;
  Generator g(53);
  Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
         v = randn({B, Hkv, T, D}, g, DType::F64);
  for (int64_t window : {0, 1, 3, 9, 20}) {
    Tensor out = Tensor::empty({B, H, T, D}, DType::F64),
           lse = Tensor::empty({B, H, T}, DType::F64);
    TESSERA_KERNEL(q, flash_attention_forward)(out, lse, q, k, v, 0.6, window);
    std::vector<double> want_lse;
    std::vector<double> want =
        naive_window_attention(q.to_vector<double>(), k.to_vector<double>(), v.to_vector<double>(),
                               B, H, Hkv, T, D, 0.6, window, &want_lse);
    const std::string what = "window " + std::to_string(window);
    // f64, O(1) scores, at most 9 terms: 1e-12 is ~1e4 ulps; a key in or out of the window
    // moves the output by O(0.1).
    expect_near(out.to_vector<double>(), want, 1e-12, what);
    expect_near(lse.to_vector<double>(), want_lse, 1e-12, what + " lse");
  }
}

TEST(FlashAttention, windows_across_row_blocks_match_direct_reference) {
  // T = 150 spans three of the kernels' 64-query blocks; each window below starts its rows' keys
  // inside, at or past a block boundary (a block reads the band of keys its rows attend).
  const int64_t B = 1, H = 2, Hkv = 1, T = 150, D = 5;
  Generator g(58);
  Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
         v = randn({B, Hkv, T, D}, g, DType::F64);
  for (int64_t window : {0, 1, 30, 64, 65, 100, 149, 400}) {
    const std::string what = "window " + std::to_string(window);
    std::vector<double> want_lse;
    const std::vector<double> want =
        naive_window_attention(q.to_vector<double>(), k.to_vector<double>(), v.to_vector<double>(),
                               B, H, Hkv, T, D, 0.6, window, &want_lse);
    Tensor out = Tensor::empty({B, H, T, D}, DType::F64),
           lse = Tensor::empty({B, H, T}, DType::F64);
    TESSERA_KERNEL(q, flash_attention_forward)(out, lse, q, k, v, 0.6, window);
    // f64 as in the test above, up to 150 terms per sum: 1e-12 is still ~1e4 ulps.
    expect_near(out.to_vector<double>(), want, 1e-12, what);
    expect_near(lse.to_vector<double>(), want_lse, 1e-12, what + " lse");
    // f32 against the f64 reference (the inputs' own rounding to f32 included): scores from 5
    // products, exp within 2 ulp, rows of up to 150 keys summed in f32 by BLAS (the softmax sum in
    // double). Measured at most 6.4e-7 apart for |out| < 4.1 and 7.2e-7 for lse < 8.4 (under one
    // ulp there); 2e-6 leaves 3x, and a key in or out of a window moves the output by O(0.1).
    const Tensor qf = q.to(DType::F32), kf = k.to(DType::F32), vf = v.to(DType::F32);
    Tensor outf = Tensor::empty({B, H, T, D}), lsef = Tensor::empty({B, H, T});
    TESSERA_KERNEL(qf, flash_attention_forward)(outf, lsef, qf, kf, vf, 0.6, window);
    expect_near(values(outf), want, 2e-6, what + " f32");
    expect_near(values(lsef), want_lse, 2e-6, what + " f32 lse");
  }
}

TEST(FlashAttention, offset_queries_with_a_window_equal_the_last_rows_of_the_full_forward) {
  // KV-cached decoding: Tq queries at positions Tk - Tq.. over Tk = 150 keys, row blocks that
  // start mid-sequence (position 80 for Tq 70) and windows that cut into them.
  const int64_t B = 2, H = 4, Hkv = 2, Tk = 150, D = 6;
  Generator g(59);
  Tensor q = randn({B, H, Tk, D}, g, DType::F64), k = randn({B, Hkv, Tk, D}, g, DType::F64),
         v = randn({B, Hkv, Tk, D}, g, DType::F64);
  for (int64_t window : {0, 20, 90}) {
    Tensor full = Tensor::empty({B, H, Tk, D}, DType::F64),
           full_lse = Tensor::empty({B, H, Tk}, DType::F64);
    TESSERA_KERNEL(q, flash_attention_forward)(full, full_lse, q, k, v, 0.5, window);
    for (int64_t Tq : {1, 70, 149}) {
      const std::string what = "window " + std::to_string(window) + " Tq " + std::to_string(Tq);
      Tensor out = Tensor::empty({B, H, Tq, D}, DType::F64),
             lse = Tensor::empty({B, H, Tq}, DType::F64);
      TESSERA_KERNEL(q, flash_attention_forward)(out, lse, q.narrow(2, Tk - Tq, Tq), k, v, 0.5,
                                                 window);
      // The same f64 scores in other blocks (other BLAS calls): ~1e-16 relative.
      expect_near(out.to_vector<double>(), full.narrow(2, Tk - Tq, Tq).to_vector<double>(),
                  1e-12, what);
      expect_near(lse.to_vector<double>(), full_lse.narrow(2, Tk - Tq, Tq).to_vector<double>(),
                  1e-12, what + " lse");
    }
  }
}

TEST(FlashAttention, gradcheck_with_windows_across_row_blocks) {
  // T = 65: two query blocks, the second a single row (the forward's direct loops), its keys cut
  // by the window (or all 65 without one); dK and dV add up over blocks and over the group's
  // three query heads.
  Generator g(60);
  Tensor q = randn({1, 3, 65, 2}, g, DType::F64), k = randn({1, 1, 65, 2}, g, DType::F64),
         v = randn({1, 1, 65, 2}, g, DType::F64);
  for (int64_t window : {0, 20}) {
    EXPECT_TRUE(gradcheck(
        [window](const std::vector<Tensor>& in) {
          return ops::flash_attention(in[0], in[1], in[2], 0.9, window);
        },
        {q, k, v}))
        << "window " << window;
  }
}

TEST(FlashAttention, window_of_one_returns_each_tokens_own_value_exactly) {
  Generator g(54);
  Tensor q = ops::scale(randn({1, 2, 5, 4}, g), 10.0), k = randn({1, 2, 5, 4}, g),
         v = randn({1, 2, 5, 4}, g);
  // One key: p = exp(s - lse) = exp(0) = 1 exactly, whatever the score.
  EXPECT_EQ(ops::flash_attention(q, k, v, 0.0, 1).to_vector<float>(), v.to_vector<float>());
}

TEST(FlashAttention, gradcheck_q_k_v_grouped_query) {
  Generator g(55);
  Tensor q = randn({2, 4, 5, 3}, g, DType::F64), k = randn({2, 2, 5, 3}, g, DType::F64),
         v = randn({2, 2, 5, 3}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::flash_attention(in[0], in[1], in[2]); },
      {q, k, v}));
}

TEST(FlashAttention, gradcheck_q_k_v_sliding_window_explicit_scale) {
  Generator g(56);
  Tensor q = randn({1, 3, 7, 2}, g, DType::F64), k = randn({1, 1, 7, 2}, g, DType::F64),
         v = randn({1, 1, 7, 2}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return ops::flash_attention(in[0], in[1], in[2], 0.8, 3);
      },
      {q, k, v}));
}

TEST(FlashAttention, gradients_equal_materialised_when_split_across_threads) {
  // B H T^2 D > 65536: the OpenMP loops run (forward over (b, h), backward over (b, kv head)).
  const int64_t B = 2, H = 6, Hkv = 2, T = 24, D = 16;
  Generator g(57);
  Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
         v = randn({B, Hkv, T, D}, g, DType::F64), u = randn({B, H, T, D}, g, DType::F64);
  for (Tensor* t : {&q, &k, &v}) t->requires_grad_();
  backward(ops::flash_attention(q, k, v), u);
  std::vector<double> dk = k.grad().to_vector<double>(), dv = v.grad().to_vector<double>();
  for (Tensor* t : {&q, &k, &v}) t->zero_grad();
  backward(ops::attention(q, k, v), u);
  // As in the first test, with up to 24 * 3 terms per sum: 1e-11.
  expect_near(dk, k.grad().to_vector<double>(), 1e-11, "dk");
  expect_near(dv, v.grad().to_vector<double>(), 1e-11, "dv");
}

TEST(FlashAttention, shape_mismatch_errors_name_all_shapes) {
  const Shape bad[][3] = {
      {{1, 3, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 2}},
      {{1, 2, 5, 2}, {1, 2, 4, 2}, {1, 2, 4, 2}},  // more queries than keys (fewer: decoding)
      {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 1, 4, 2}},
  };
  for (const auto& c : bad) {
    std::string msg =
        error_of([&] { ops::flash_attention(zeros(c[0]), zeros(c[1]), zeros(c[2])); });
    EXPECT_NE(msg.find("flash_attention"), std::string::npos) << msg;
    for (const Shape& s : c) EXPECT_NE(msg.find(shape_str(s)), std::string::npos) << msg;
  }
}
