// Forgetting Attention (Lin et al. 2025, arXiv:2503.02130) on the CPU: the forget gate's sums, the
// flash kernels' biased scores against a direct reference (row blocks, grouped-query heads,
// decoding's query offset), ALiBi as its special case, gradients in f64 through the sums and the
// gate, and what causal_attention refuses.
#include <gtest/gtest.h>

#include <array>
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
using tessera::testing::FlashForward;
using tessera::testing::gradcheck;
using tessera::testing::max_abs_diff;
using tessera::testing::naive_window_attention;

namespace {

// The flash forward kernel with the forget gate's sums c (B, H, Tk) as its bias.
FlashForward forward_with(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                          const Tensor& c) {
  AttentionMask m;
  m.forget = c;
  return flash_forward(q, k, v, scale, m);
}

// Sums of the kind a trained gate gives: log f in (-3, 0), so c falls by up to 3 a position.
Tensor random_sums(int64_t B, int64_t H, int64_t T, Generator& g) {
  Tensor logits = ops::scale(randn({B, T, H}, g, DType::F64), 2.0);
  return ops::forget_gate(logits);
}

}  // namespace

TEST(ForgetGate, sums_log_sigmoid_along_positions_from_a_start) {
  // log sigmoid(x) = -log(1 + e^-x) directly in f64, where that form is accurate (|x| <= 30); at
  // x = -800 it is x itself (e^800 overflows the direct form) and at +800 it is -e^-800 = 0.
  const int64_t B = 2, T = 7, H = 3;
  Generator g(81);
  Tensor logits = ops::scale(randn({B, T, H}, g, DType::F64), 5.0);
  std::vector<double> x = logits.to_vector<double>();
  x[4] = -800, x[5] = 800;  // (b 0, t 1, h 1) and (b 0, t 1, h 2)
  logits = from_vector(x, {B, T, H});
  const Tensor start = from_vector(std::vector<double>{0.5, -2, 3, 0, 1, -7}, {B, H});
  const Tensor c = ops::forget_gate(logits, start);
  ASSERT_EQ(c.shape(), (Shape{B, H, T}));
  const std::vector<double> got = c.to_vector<double>(), s = start.to_vector<double>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      double sum = s[size_t(b * H + h)];
      for (int64_t t = 0; t < T; ++t) {
        const double xi = x[size_t((b * T + t) * H + h)];
        sum += std::abs(xi) > 30 ? std::min(xi, 0.0) : -std::log1p(std::exp(-xi));
        // A sum of 7 terms of size <= ~30: 1e-12 is thousands of ulps.
        EXPECT_NEAR(got[size_t((b * H + h) * T + t)], sum, 1e-12) << b << " " << h << " " << t;
      }
    }
  // f32 logits give f32 sums (the statistics' dtype), the same within f32 rounding.
  const Tensor cf = ops::forget_gate(logits.to(DType::F32), start.to(DType::F32));
  EXPECT_EQ(cf.dtype(), DType::F32);
  EXPECT_LT(max_abs_diff(cf, c), 1e-3);  // |c| up to ~800: 1e-3 is ~16 f32 ulps there
}

TEST(ForgetGate, gradcheck) {
  Generator g(82);
  const Tensor logits = ops::scale(randn({2, 6, 3}, g, DType::F64), 3.0);
  EXPECT_TRUE(
      gradcheck([](const std::vector<Tensor>& in) { return ops::forget_gate(in[0]); }, {logits}));
  const Tensor start = randn({2, 3}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [start](const std::vector<Tensor>& in) { return ops::forget_gate(in[0], start); }, {logits}));
}

TEST(ForgettingAttention, flash_forward_matches_the_direct_reference_across_row_blocks) {
  // T = 150: three of the kernels' 64-query blocks; 6 query heads, each with sums of its own, over
  // 2 kv heads.
  const int64_t B = 2, H = 6, Hkv = 2, T = 150, D = 5;
  Generator g(83);
  Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
         v = randn({B, Hkv, T, D}, g, DType::F64);
  const Tensor c = random_sums(B, H, T, g);
  const std::vector<double> cv = c.to_vector<double>();
  std::vector<double> want_lse;
  const std::vector<double> want =
      naive_window_attention(q.to_vector<double>(), k.to_vector<double>(), v.to_vector<double>(), B,
                             H, Hkv, T, D, 0.6, 0, &want_lse, false, &cv);
  const auto [out, lse] = forward_with(q, k, v, 0.6, c);
  // f64: the biases reach -150 x 3 but a row's max is subtracted; 1e-12 is ~1e4 ulps of |out| < 4.
  EXPECT_LT(max_abs_diff(out, from_vector(want, out.shape())), 1e-12);
  EXPECT_LT(max_abs_diff(lse, from_vector(want_lse, lse.shape())), 1e-10);  // |lse| up to ~500
  // f32: the inputs and sums rounded to f32 (|c| up to ~300: ulp 3e-5, an error that moves a
  // score, and so a weight, by that relative amount): 1e-4.
  const auto [outf, lsef] =
      forward_with(q.to(DType::F32), k.to(DType::F32), v.to(DType::F32), 0.6, c.to(DType::F32));
  EXPECT_LT(max_abs_diff(outf, from_vector(want, out.shape())), 1e-4);
  // The gate's bias moves the outputs by O(1) from plain softmax attention.
  EXPECT_GT(max_abs_diff(ops::flash_attention(q, k, v, 0.6), out), 0.1);
}

TEST(ForgettingAttention, alibi_is_the_gate_of_constant_sums) {
  // c[i] = -m_h i gives c[i] - c[j] = -m_h (i - j): ALiBi's bias through the forget gate's path.
  const int64_t B = 1, H = 4, Hkv = 2, T = 70, D = 3;
  Generator g(84);
  Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
         v = randn({B, Hkv, T, D}, g, DType::F64);
  std::vector<double> cv(size_t(B * H * T));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < T; ++t) cv[size_t(h * T + t)] = -alibi_slope(h, H) * double(t);
  const auto [out, lse] = forward_with(q, k, v, 0.7, from_vector(cv, {B, H, T}));
  const Tensor alibi = ops::flash_attention(q, k, v, 0.7, {0, true});
  // The same scores up to the order of two additions: 1e-13.
  EXPECT_LT(max_abs_diff(out, alibi), 1e-13);
}

TEST(ForgettingAttention, decoding_queries_equal_the_last_rows_of_the_full_forward) {
  // A cached query at position p scores keys with c[p] - c[j], as row p of the full forward.
  const int64_t B = 2, H = 4, Hkv = 1, Tk = 90, D = 4;
  Generator g(85);
  Tensor q = randn({B, H, Tk, D}, g, DType::F64), k = randn({B, Hkv, Tk, D}, g, DType::F64),
         v = randn({B, Hkv, Tk, D}, g, DType::F64);
  const Tensor c = random_sums(B, H, Tk, g);
  const auto [full, full_lse] = forward_with(q, k, v, 0.5, c);
  for (int64_t Tq : {1, 3, 70}) {
    const auto [out, lse] = forward_with(q.narrow(2, Tk - Tq, Tq), k, v, 0.5, c);
    // The same f64 scores in other blocks (the single-row path for Tq 1).
    EXPECT_LT(max_abs_diff(out, full.narrow(2, Tk - Tq, Tq)), 1e-12) << "Tq " << Tq;
    EXPECT_LT(max_abs_diff(lse, full_lse.narrow(2, Tk - Tq, Tq)), 1e-10) << "Tq " << Tq;
  }
}

TEST(ForgettingAttention, gradcheck_through_the_sums_across_row_blocks_with_grouped_heads) {
  // T = 65: two query blocks (the second one row), three query heads adding into one kv head's
  // dK and dV, each head's dc from its own scores. The sums are an input of their own here.
  Generator g(86);
  Tensor q = randn({1, 3, 65, 2}, g, DType::F64), k = randn({1, 1, 65, 2}, g, DType::F64),
         v = randn({1, 1, 65, 2}, g, DType::F64);
  const Tensor c = random_sums(1, 3, 65, g).detach();
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        AttentionMask m;
        m.forget = in[3];
        return ops::flash_attention(in[0], in[1], in[2], 0.9, m);
      },
      {q, k, v, c}));
}

TEST(ForgettingAttention, gradcheck_from_the_gate_logits) {
  // What a model trains: logits -> forget_gate -> the attention's bias.
  Generator g(87);
  Tensor q = randn({2, 2, 9, 3}, g, DType::F64), k = randn({2, 2, 9, 3}, g, DType::F64),
         v = randn({2, 2, 9, 3}, g, DType::F64), logits = randn({2, 9, 2}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        ops::AttentionSpec s;
        s.kind = ops::AttentionKind::Forgetting;
        return ops::causal_attention(in[0], in[1], in[2], s, true, nullptr,
                                     ops::forget_gate(in[3]));
      },
      {q, k, v, logits}));
}

TEST(ForgettingAttention, causal_attention_takes_the_sums_with_its_kind_alone) {
  Generator g(88);
  const Tensor q = randn({1, 2, 9, 4}, g, DType::F64), k = randn({1, 2, 9, 4}, g, DType::F64),
               v = randn({1, 2, 9, 4}, g, DType::F64);
  const Tensor c = random_sums(1, 2, 9, g);
  ops::AttentionSpec s;
  s.kind = ops::AttentionKind::Forgetting;
  EXPECT_EQ(ops::find_attention_kind("forgetting"), ops::AttentionKind::Forgetting);
  // The flash kernels, bit for bit.
  EXPECT_EQ(max_abs_diff(ops::causal_attention(q, k, v, s, false, nullptr, c),
                         forward_with(q, k, v, 0.5, c).out),
            0.0);
  const std::string none = error_of([&] { ops::causal_attention(q, k, v, s); });
  EXPECT_NE(none.find("forgetting attention needs the forget gate's sums"), std::string::npos)
      << none;
  const std::string softmax =
      error_of([&] { ops::causal_attention(q, k, v, ops::AttentionSpec{}, false, nullptr, c); });
  EXPECT_NE(softmax.find("forget gate sums given to attention of kind softmax"), std::string::npos)
      << softmax;
  const std::string wrong =
      error_of([&] { ops::causal_attention(q, k, v, s, false, nullptr, random_sums(1, 2, 8, g)); });
  EXPECT_NE(wrong.find("the forget gate's sums must be a f64 (1, 2, 9)"), std::string::npos)
      << wrong;
  ops::AttentionSpec s2 = s;
  s2.s2_attn = true;
  const std::string s2_msg =
      error_of([&] { ops::causal_attention(q, k, v, s2, true, nullptr, c); });
  EXPECT_NE(s2_msg.find("forgetting attention with S^2-Attn"), std::string::npos) << s2_msg;
  ops::AttentionSpec al = s;
  al.alibi = true;
  EXPECT_NE(ops::attention_support(al, Device::cpu(), DType::F64, 4)
                .find("ALiBi applies to softmax attention only, not forgetting"),
            std::string::npos);
  // On CUDA the flash kernels run it at their head dims (tests/cuda/test_forgetting_cuda.cpp).
  EXPECT_EQ(ops::attention_support(s, Device::cuda(0), DType::BF16, 64), "");
  EXPECT_NE(ops::attention_support(s, Device::cuda(0), DType::BF16, 32)
                .find("CUDA forgetting attention (flash kernel) needs head dim 64 or 128 in bf16, "
                      "got head dim 32"),
            std::string::npos);
}

TEST(ForgettingAttention, within_documents_each_gets_what_it_gets_alone_and_its_gradients) {
  // Two rows of 9: documents [0, 2), [2, 6), [6, 9) and [0, 9) (a document opens at each 0). The
  // gate's sums run on across a row; a document's scores read differences within it alone.
  const std::vector<int32_t> ids = {1, 2, 0, 3, 4, 5, 0, 6, 7, 1, 1, 2, 3, 4, 5, 6, 7, 8};
  const ops::Documents docs = ops::Documents::at_token(ids.data(), 2, 9, 0);
  Generator g(89);
  const Tensor q = randn({2, 2, 9, 3}, g, DType::F64), k = randn({2, 1, 9, 3}, g, DType::F64),
               v = randn({2, 1, 9, 3}, g, DType::F64), logits = randn({2, 9, 2}, g, DType::F64);
  const Tensor c = ops::forget_gate(logits);
  ops::AttentionSpec s;
  s.kind = ops::AttentionKind::Forgetting;
  const Tensor packed = ops::causal_attention(q, k, v, s, false, &docs, c);
  const std::vector<std::array<int64_t, 3>> spans = {{0, 0, 2}, {0, 2, 4}, {0, 6, 3}, {1, 0, 9}};
  for (const auto& [b, start, length] : spans) {
    auto part = [&](const Tensor& t) { return t.narrow(0, b, 1).narrow(2, start, length); };
    // Alone: its own sums from 0, which differ from the row's by a constant.
    const Tensor alone =
        forward_with(part(q).contiguous(), part(k).contiguous(), part(v).contiguous(),
                     1.0 / std::sqrt(3.0),
                     ops::forget_gate(logits.narrow(0, b, 1).narrow(1, start, length)))
            .out;
    EXPECT_LT(max_abs_diff(part(packed), alone), 1e-12) << "row " << b << " from " << start;
  }
  // Across documents nothing is read: without them the later documents' outputs move.
  EXPECT_GT(max_abs_diff(ops::causal_attention(q, k, v, s, false, nullptr, c).narrow(2, 2, 7),
                         packed.narrow(2, 2, 7)),
            1e-3);
  EXPECT_TRUE(gradcheck(
      [&docs, s](const std::vector<Tensor>& in) {
        return ops::causal_attention(in[0], in[1], in[2], s, true, &docs, ops::forget_gate(in[3]));
      },
      {q, k, v, logits}));
}
