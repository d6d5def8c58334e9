// ALiBi (Press et al. 2022, arXiv:2108.12409) on the CPU: the slopes, the flash kernels' biased
// scores against a direct reference (windows, grouped-query heads, row blocks, decoding's query
// offset), gradients in f64, and what causal_attention refuses.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/attention_mask.h"
#include "backend/kernels.h"
#include "gradcheck.h"
#include "naive_attention.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::flash_forward;
using tessera::testing::gradcheck;
using tessera::testing::max_abs_diff;
using tessera::testing::naive_window_attention;

TEST(Alibi, slopes_are_the_papers_geometric_sequences) {
  // Powers of two: 2^(-8 (h + 1) / H). Others: the slopes of the power of two below, then every
  // other slope of twice it (the paper's get_slopes; 12 heads: 8's slopes, then 2^-0.5, 2^-1.5,
  // 2^-2.5, 2^-3.5). All are powers of two computed by exp2 of exact exponents: equal, not near.
  const std::vector<std::pair<int64_t, std::vector<double>>> cases = {
      {1, {1.0 / 256}},
      {8, {1.0 / 2, 1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32, 1.0 / 64, 1.0 / 128, 1.0 / 256}},
      {6, {1.0 / 4, 1.0 / 16, 1.0 / 64, 1.0 / 256, 1.0 / 2, 1.0 / 8}},
      {12,
       {1.0 / 2, 1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32, 1.0 / 64, 1.0 / 128, 1.0 / 256,
        std::exp2(-0.5), std::exp2(-1.5), std::exp2(-2.5), std::exp2(-3.5)}},
  };
  for (const auto& [H, want] : cases)
    for (int64_t h = 0; h < H; ++h)
      EXPECT_EQ(alibi_slope(h, H), want[size_t(h)]) << "head " << h << " of " << H;
}

TEST(Alibi, flash_forward_matches_the_direct_reference_across_row_blocks) {
  // T = 150: three of the kernels' 64-query blocks; 6 query heads (non-power-of-two slopes) over
  // 2 kv heads; with and without a window that starts keys inside a block.
  const int64_t B = 2, H = 6, Hkv = 2, T = 150, D = 5;
  Generator g(71);
  Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
         v = randn({B, Hkv, T, D}, g, DType::F64);
  for (int64_t window : {0, 30}) {
    const std::string what = "window " + std::to_string(window);
    std::vector<double> want_lse;
    const std::vector<double> want =
        naive_window_attention(q.to_vector<double>(), k.to_vector<double>(), v.to_vector<double>(),
                               B, H, Hkv, T, D, 0.6, window, &want_lse,
                               /*alibi=*/true);
    const auto [out, lse] = flash_forward(q, k, v, 0.6, {window, true});
    // f64, scores O(1) plus biases down to -0.5 x 149, up to 150 terms a sum: 1e-12 is ~1e4 ulps
    // of |out| < 4; the bias moves outputs by O(0.1) (checked last).
    EXPECT_LT(max_abs_diff(out, from_vector(want, out.shape())), 1e-12) << what;
    EXPECT_LT(max_abs_diff(lse, from_vector(want_lse, lse.shape())), 1e-12) << what << " lse";
    // f32: the f64 reference, the inputs' rounding to f32 included. As the windows' f32 test
    // (test_flash_attention.cpp) bounds it, 2e-6, and the biased scores add one rounding each.
    const auto [outf, lsef] =
        flash_forward(q.to(DType::F32), k.to(DType::F32), v.to(DType::F32), 0.6, {window, true});
    EXPECT_LT(max_abs_diff(outf, from_vector(want, out.shape())), 2e-6) << what << " f32";
    EXPECT_LT(max_abs_diff(lsef, from_vector(want_lse, lse.shape())), 2e-6) << what << " f32 lse";
    // Without the bias the same inputs give another attention.
    EXPECT_GT(max_abs_diff(flash_forward(q, k, v, 0.6, window).out, out), 0.1) << what;
  }
}

TEST(Alibi, decoding_queries_equal_the_last_rows_of_the_full_forward) {
  // The bias is -m (i - j) from each query's own position Tk - Tq + row: a cached query at
  // position p must score keys as row p of the full forward does.
  const int64_t B = 1, H = 4, Hkv = 1, Tk = 90, D = 4;
  Generator g(72);
  Tensor q = randn({B, H, Tk, D}, g, DType::F64), k = randn({B, Hkv, Tk, D}, g, DType::F64),
         v = randn({B, Hkv, Tk, D}, g, DType::F64);
  for (int64_t window : {0, 20}) {
    const auto [full, full_lse] = flash_forward(q, k, v, 0.5, {window, true});
    for (int64_t Tq : {1, 3, 70}) {
      const std::string what = "window " + std::to_string(window) + " Tq " + std::to_string(Tq);
      const auto [out, lse] = flash_forward(q.narrow(2, Tk - Tq, Tq), k, v, 0.5, {window, true});
      // The same f64 scores in other blocks (the single-row path for Tq 1): ~1e-16 relative.
      EXPECT_LT(max_abs_diff(out, full.narrow(2, Tk - Tq, Tq)), 1e-12) << what;
      EXPECT_LT(max_abs_diff(lse, full_lse.narrow(2, Tk - Tq, Tq)), 1e-12) << what << " lse";
    }
  }
}

TEST(Alibi, gradcheck_across_row_blocks_with_grouped_heads) {
  // T = 65: two query blocks (the second one row), three query heads of different slopes adding
  // into one kv head's dK and dV; the backward rebuilds P from the biased scores.
  Generator g(73);
  Tensor q = randn({1, 3, 65, 2}, g, DType::F64), k = randn({1, 1, 65, 2}, g, DType::F64),
         v = randn({1, 1, 65, 2}, g, DType::F64);
  for (int64_t window : {0, 20}) {
    EXPECT_TRUE(gradcheck(
        [window](const std::vector<Tensor>& in) {
          return ops::flash_attention(in[0], in[1], in[2], 0.9, {window, true});
        },
        {q, k, v}))
        << "window " << window;
  }
}

TEST(Alibi, causal_attention_runs_the_flash_kernels_and_refuses_what_has_no_alibi) {
  Generator g(74);
  const Tensor q = randn({1, 2, 9, 4}, g, DType::F64), k = randn({1, 2, 9, 4}, g, DType::F64),
               v = randn({1, 2, 9, 4}, g, DType::F64);
  ops::AttentionSpec s;
  s.alibi = true;
  // The CPU's default softmax kernel is the materialised one, which has no bias: ALiBi must take
  // the flash kernels, bit for bit.
  EXPECT_EQ(max_abs_diff(ops::causal_attention(q, k, v, s),
                         ops::flash_attention(q, k, v, 0.0, {0, true})),
            0.0);
  EXPECT_GT(max_abs_diff(ops::causal_attention(q, k, v, s), ops::attention(q, k, v)), 1e-3);

  ops::AttentionSpec sb = s;
  sb.kind = ops::AttentionKind::StickBreaking;
  const std::string sb_msg = error_of([&] { ops::causal_attention(q, k, v, sb); });
  EXPECT_NE(sb_msg.find("ALiBi applies to softmax attention only"), std::string::npos) << sb_msg;
  ops::AttentionSpec s2 = s;
  s2.s2_attn = true;
  const std::string s2_msg = error_of([&] { ops::causal_attention(q, k, v, s2, true); });
  EXPECT_NE(s2_msg.find("ALiBi with S^2-Attn"), std::string::npos) << s2_msg;
}
