// shifted_sparse_attention (S^2-Attn): values against a loop that finds each query's keys directly,
// with softmax and stick-breaking inside the groups; one unshifted group is plain attention;
// causality of the shifted heads; gradients; errors.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "gradcheck.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::gradcheck;

namespace {

struct Sizes {
  int64_t B, H, Hkv, T, D, group;
};

// For query t of head h: the positions of the keys it attends, nearest first: from the start of
// its group to t (t itself included when `self`). Unshifted heads: groups [0, G), [G, 2G), ...;
// shifted heads (h >= H/2): [0, G/2), [G/2, 3G/2), ..., [T - G/2, T).
std::vector<int64_t> keys_of(int64_t t, int64_t h, Sizes s, bool shift, bool self) {
  const int64_t sh = (shift && h >= s.H / 2) ? s.group / 2 : 0;
  const int64_t start = t < sh ? 0 : sh + (t - sh) / s.group * s.group;
  std::vector<int64_t> keys;
  for (int64_t j = self ? t : t - 1; j >= start; --j) keys.push_back(j);
  return keys;
}

enum class Inner { Softmax, StickBreaking };

std::vector<double> reference(const Tensor& qt, const Tensor& kt, const Tensor& vt, Sizes s,
                              bool shift, Inner inner) {
  const auto q = qt.to_vector<double>(), k = kt.to_vector<double>(), v = vt.to_vector<double>();
  const int64_t G = s.H / s.Hkv, T = s.T, D = s.D;
  const double scale = 1.0 / std::sqrt(double(D));
  auto at = [&](int64_t b, int64_t h, int64_t heads, int64_t t) {
    return size_t(((b * heads + h) * T + t) * D);
  };
  std::vector<double> out(size_t(s.B * s.H * T * D), 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const std::vector<int64_t> keys = keys_of(t, h, s, shift, inner == Inner::Softmax);
        std::vector<double> score;
        for (int64_t j : keys) {
          double dot = 0;
          for (int64_t e = 0; e < D; ++e)
            dot += q[at(b, h, s.H, t) + e] * k[at(b, h / G, s.Hkv, j) + e];
          score.push_back(scale * dot);
        }
        std::vector<double> w(keys.size());
        if (inner == Inner::Softmax) {  // softmax over the listed keys
          double z = 0;
          for (double x : score) z += std::exp(x);
          for (size_t n = 0; n < keys.size(); ++n) w[n] = std::exp(score[n]) / z;
        } else {  // stick-breaking, nearest key first: w[n] = beta_n prod_{m<n} (1 - beta_m)
          double left = 1;
          for (size_t n = 0; n < keys.size(); ++n) {
            const double beta = 1 / (1 + std::exp(-score[n]));
            w[n] = beta * left;
            left *= 1 - beta;
          }
        }
        for (size_t n = 0; n < keys.size(); ++n)
          for (int64_t e = 0; e < D; ++e)
            out[at(b, h, s.H, t) + e] += w[n] * v[at(b, h / G, s.Hkv, keys[n]) + e];
      }
  return out;
}

ops::AttentionFn inner_fn(Inner inner) {
  if (inner == Inner::Softmax) return {};  // the default: ops::attention
  return [](const Tensor& q, const Tensor& k, const Tensor& v) {
    return ops::stick_breaking_attention(q, k, v);
  };
}

void expect_matches_reference(Inner inner, bool shift) {
  const Sizes s{2, 4, 2, 8, 3, 4};
  Generator g(61);
  Tensor q = randn({s.B, s.H, s.T, s.D}, g, DType::F64),
         k = randn({s.B, s.Hkv, s.T, s.D}, g, DType::F64),
         v = randn({s.B, s.Hkv, s.T, s.D}, g, DType::F64);
  std::vector<double> got =
      ops::shifted_sparse_attention(q, k, v, s.group, inner_fn(inner), shift).to_vector<double>();
  std::vector<double> want = reference(q, k, v, s, shift, inner);
  ASSERT_EQ(got.size(), want.size());
  // f64 sums of at most 4 terms on both sides: 1e-12 is ~1e4 ulps; a key from the wrong group
  // or an unrolled head changes an output by O(0.1).
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << "element " << i;
}

}  // namespace

TEST(ShiftedSparseAttention, softmax_inside_groups_matches_reference_loop) {
  expect_matches_reference(Inner::Softmax, true);
}

TEST(ShiftedSparseAttention, stick_breaking_inside_groups_matches_reference_loop) {
  expect_matches_reference(Inner::StickBreaking, true);
}

TEST(ShiftedSparseAttention, unshifted_groups_match_reference_loop) {
  expect_matches_reference(Inner::Softmax, false);
}

TEST(ShiftedSparseAttention, one_unshifted_group_is_plain_attention) {
  Generator g(62);
  Tensor q = randn({2, 4, 6, 3}, g), k = randn({2, 2, 6, 3}, g), v = randn({2, 2, 6, 3}, g);
  // group == T puts every token in one group; regrouping moves no data, so bit-identical.
  EXPECT_EQ(ops::shifted_sparse_attention(q, k, v, 6, {}, false).to_vector<float>(),
            ops::attention(q, k, v).to_vector<float>());
  EXPECT_EQ(ops::shifted_sparse_attention(q, k, v, 6, inner_fn(Inner::StickBreaking), false)
                .to_vector<float>(),
            ops::stick_breaking_attention(q, k, v).to_vector<float>());
}

TEST(ShiftedSparseAttention, shifted_heads_stay_causal_and_cross_group_borders) {
  // Changing token u's key and value changes outputs at t >= u only (no future leaks in, unlike
  // LongLoRA's rolled version, where tokens 0 .. G/2 - 1 of the shifted heads saw the sequence's
  // end), and in the shifted head it reaches across the unshifted group border at G.
  const int64_t T = 8, D = 3, group = 4;
  Generator g(63);
  Tensor q = randn({1, 2, T, D}, g, DType::F64), k = randn({1, 2, T, D}, g, DType::F64),
         v = randn({1, 2, T, D}, g, DType::F64);
  const std::vector<double> base = ops::shifted_sparse_attention(q, k, v, group).to_vector<double>();
  for (int64_t u = 0; u < T; ++u) {
    Tensor k2 = k.clone(), v2 = v.clone();
    k2.narrow(2, u, 1).fill_(0.5), v2.narrow(2, u, 1).fill_(4.0);
    const std::vector<double> out =
        ops::shifted_sparse_attention(q, k2, v2, group).to_vector<double>();
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t t = 0; t < u; ++t)
        EXPECT_EQ(out[size_t((h * T + t) * D)], base[size_t((h * T + t) * D)])
            << "head " << h << ": token " << t << " saw token " << u;
  }
  // Token 3 (last of the unshifted group [0, 4)) is seen by token 4 in the shifted head only.
  Tensor v3 = v.clone();
  v3.narrow(2, 3, 1).fill_(4.0);
  const std::vector<double> out = ops::shifted_sparse_attention(q, k, v3, group).to_vector<double>();
  EXPECT_EQ(out[size_t(4 * D)], base[size_t(4 * D)]);                          // head 0
  EXPECT_GT(std::abs(out[size_t((T + 4) * D)] - base[size_t((T + 4) * D)]), 1e-9);  // head 1
}

TEST(ShiftedSparseAttention, gradcheck_q_k_v_softmax_inner) {
  Generator g(64);
  Tensor q = randn({1, 4, 8, 2}, g, DType::F64), k = randn({1, 2, 8, 2}, g, DType::F64),
         v = randn({1, 2, 8, 2}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return ops::shifted_sparse_attention(in[0], in[1], in[2], 4);
      },
      {q, k, v}));
}

TEST(ShiftedSparseAttention, gradcheck_q_k_v_stick_breaking_inner) {
  Generator g(65);
  Tensor q = randn({1, 4, 8, 2}, g, DType::F64), k = randn({1, 2, 8, 2}, g, DType::F64),
         v = randn({1, 2, 8, 2}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return ops::shifted_sparse_attention(in[0], in[1], in[2], 4,
                                             inner_fn(Inner::StickBreaking));
      },
      {q, k, v}));
}

TEST(ShiftedSparseAttention, errors_name_the_shapes) {
  std::string msg = error_of([] {
    ops::shifted_sparse_attention(zeros({1, 2, 10, 3}), zeros({1, 2, 10, 3}), zeros({1, 2, 10, 3}),
                                  4);
  });
  EXPECT_NE(msg.find("multiple of group = 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(1, 2, 10, 3)"), std::string::npos) << msg;
  msg = error_of([] {
    ops::shifted_sparse_attention(zeros({1, 3, 8, 3}), zeros({1, 1, 8, 3}), zeros({1, 1, 8, 3}), 4);
  });
  EXPECT_NE(msg.find("even number"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(1, 3, 8, 3)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(1, 1, 8, 3)"), std::string::npos) << msg;
}
