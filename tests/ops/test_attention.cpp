// attention: values against a naive double-precision reference, causality, grouped-query heads as
// repeated kv heads, the saved probabilities, gradients, and shape errors.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backend/kernels.h"
#include "gradcheck.h"
#include "ops/ops.h"

using namespace tessera;
using tessera::testing::gradcheck;

namespace {

// out[b, h, i] = sum_j softmax_j(scale * q[b, h, i] . k[b, h / G, j]) v[b, h / G, j], with the
// causal mask written as -inf scores over the whole row (so it takes a different path than the
// kernel's loop bound j <= i).
std::vector<double> naive_attention(const std::vector<double>& q, const std::vector<double>& k,
                                    const std::vector<double>& v, int64_t B, int64_t H, int64_t Hkv,
                                    int64_t T, int64_t D, double scale) {
  const int64_t G = H / Hkv;
  std::vector<double> out(size_t(B * H * T * D), 0.0);
  auto at = [&](int64_t b, int64_t h, int64_t heads, int64_t t, int64_t e) {
    return size_t(((b * heads + h) * T + t) * D + e);
  };
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / G;
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> s(size_t(T), -std::numeric_limits<double>::infinity());
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < T; ++j) {
          if (j > i) continue;
          double dot = 0;
          for (int64_t e = 0; e < D; ++e) dot += q[at(b, h, H, i, e)] * k[at(b, kvh, Hkv, j, e)];
          s[size_t(j)] = scale * dot;
          m = std::max(m, s[size_t(j)]);
        }
        double z = 0;
        for (int64_t j = 0; j < T; ++j) z += std::exp(s[size_t(j)] - m);
        for (int64_t j = 0; j < T; ++j) {
          const double p = std::exp(s[size_t(j)] - m) / z;
          for (int64_t e = 0; e < D; ++e) out[at(b, h, H, i, e)] += p * v[at(b, kvh, Hkv, j, e)];
        }
      }
    }
  }
  return out;
}

// (B, Hkv, T, D) -> (B, Hkv * G, T, D), each kv head repeated G times in place.
std::vector<double> repeat_heads(const std::vector<double>& x, int64_t B, int64_t Hkv, int64_t G,
                                 int64_t TD) {
  std::vector<double> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hkv * G; ++h) {
      auto src = x.begin() + (b * Hkv + h / G) * TD;
      out.insert(out.end(), src, src + TD);
    }
  return out;
}

// The transpose of repeat_heads: (B, Hkv * G, T, D) -> (B, Hkv, T, D), summing each group.
std::vector<double> sum_groups(const std::vector<double>& x, int64_t B, int64_t Hkv, int64_t G,
                               int64_t TD) {
  std::vector<double> out(size_t(B * Hkv * TD), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hkv * G; ++h)
      for (int64_t n = 0; n < TD; ++n)
        out[size_t((b * Hkv + h / G) * TD + n)] += x[size_t((b * Hkv * G + h) * TD + n)];
  return out;
}

void expect_near(const std::vector<double>& a, const std::vector<double>& b, double tol,
                 const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tol) << what << " element " << i;
}

}  // namespace

TEST(Attention, values_match_naive_reference) {
  const int64_t B = 2, H = 4, Hkv = 2, T = 5, D = 3;
  Generator g(21);
  Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
         v = randn({B, Hkv, T, D}, g, DType::F64);
  auto qv = q.to_vector<double>(), kv = k.to_vector<double>(), vv = v.to_vector<double>();
  // f64: both sides sum at most T * D products of O(1) numbers in double; 1e-12 is ~1e4 ulps.
  expect_near(ops::attention(q, k, v).to_vector<double>(),
              naive_attention(qv, kv, vv, B, H, Hkv, T, D, 1.0 / std::sqrt(double(D))), 1e-12,
              "default scale");
  expect_near(ops::attention(q, k, v, 0.3).to_vector<double>(),
              naive_attention(qv, kv, vv, B, H, Hkv, T, D, 0.3), 1e-12, "scale 0.3");
  // f32: compared with the reference of the f32-rounded inputs. The kernel's products, sums and
  // softmax run in f32 (BLAS, fast_exp) over D = 3 and at most T = 5 keys: a few roundings of
  // ~2e-7 each for |out| <= 3; 1e-6 allows 5.
  Tensor q32 = q.to(DType::F32), k32 = k.to(DType::F32), v32 = v.to(DType::F32);
  auto qr = q32.to(DType::F64).to_vector<double>(), kr = k32.to(DType::F64).to_vector<double>(),
       vr = v32.to(DType::F64).to_vector<double>();
  expect_near(ops::attention(q32, k32, v32).to(DType::F64).to_vector<double>(),
              naive_attention(qr, kr, vr, B, H, Hkv, T, D, 1.0 / std::sqrt(double(D))), 1e-6,
              "f32");
}

TEST(Attention, large_scores_stay_finite_and_match_reference) {
  // Scores of order 1e3 overflow exp() unless the row max is subtracted first.
  const int64_t B = 1, H = 2, Hkv = 1, T = 4, D = 4;
  Generator g(22);
  Tensor q = ops::scale(randn({B, H, T, D}, g, DType::F64), 30.0);
  Tensor k = ops::scale(randn({B, Hkv, T, D}, g, DType::F64), 30.0);
  Tensor v = randn({B, Hkv, T, D}, g, DType::F64);
  std::vector<double> out = ops::attention(q, k, v, 1.0).to_vector<double>();
  for (double o : out) ASSERT_TRUE(std::isfinite(o));
  expect_near(out,
              naive_attention(q.to_vector<double>(), k.to_vector<double>(), v.to_vector<double>(),
                              B, H, Hkv, T, D, 1.0),
              1e-12, "large scores");
}

TEST(Attention, first_query_output_is_first_value_row_exactly) {
  // Query 0 sees only key 0: its softmax is exp(0) / exp(0) = 1 exactly, whatever the score.
  const int64_t B = 2, H = 6, Hkv = 3, T = 4, D = 5;
  Generator g(23);
  Tensor q = ops::scale(randn({B, H, T, D}, g), 10.0), k = randn({B, Hkv, T, D}, g),
         v = randn({B, Hkv, T, D}, g);
  std::vector<float> out = ops::attention(q, k, v).to_vector<float>(), vv = v.to_vector<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t e = 0; e < D; ++e)
        EXPECT_EQ(out[size_t(((b * H + h) * T + 0) * D + e)],
                  vv[size_t(((b * Hkv + h / (H / Hkv)) * T + 0) * D + e)])
            << "b " << b << " h " << h << " e " << e;
}

TEST(Attention, perturbing_key_or_value_at_t_changes_no_earlier_output) {
  const int64_t B = 1, H = 4, Hkv = 2, T = 6, D = 4;
  Generator g(24);
  Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
         v = randn({B, Hkv, T, D}, g, DType::F64);
  std::vector<double> base = ops::attention(q, k, v).to_vector<double>();
  for (int64_t t = 1; t < T; ++t) {
    for (bool perturb_k : {true, false}) {
      Tensor k2 = k.clone(), v2 = v.clone();
      Tensor& x = perturb_k ? k2 : v2;
      x.narrow(2, t, 1).fill_(3.0);  // every kv head at position t
      std::vector<double> out = ops::attention(q, k2, v2).to_vector<double>();
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t i = 0; i < T; ++i) {
          double diff = 0;
          for (int64_t e = 0; e < D; ++e) {
            const size_t n = size_t(((h * T) + i) * D + e);
            diff = std::max(diff, std::abs(out[n] - base[n]));
          }
          if (i < t) {
            EXPECT_EQ(diff, 0.0) << (perturb_k ? "k" : "v") << " at " << t << " moved query " << i
                                 << " of head " << h;
          } else {  // the perturbation is seen from t on, so the check above can fail
            EXPECT_GT(diff, 1e-6) << (perturb_k ? "k" : "v") << " at " << t
                                  << " did not reach query " << i << " of head " << h;
          }
        }
      }
    }
  }
}

// GQA output and gradients against MHA on kv heads repeated G times.
static void expect_gqa_matches_repeated_mha(int64_t B, int64_t H, int64_t Hkv, int64_t T,
                                            int64_t D) {
  const int64_t G = H / Hkv, TD = T * D;
  Generator g(25);
  Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
         v = randn({B, Hkv, T, D}, g, DType::F64), u = randn({B, H, T, D}, g, DType::F64);
  Tensor k_rep = from_vector<double>(repeat_heads(k.to_vector<double>(), B, Hkv, G, TD),
                                     {B, H, T, D}, DType::F64);
  Tensor v_rep = from_vector<double>(repeat_heads(v.to_vector<double>(), B, Hkv, G, TD),
                                     {B, H, T, D}, DType::F64);
  for (Tensor* t : {&q, &k, &v, &k_rep, &v_rep}) t->requires_grad_();

  Tensor gqa = ops::attention(q, k, v), mha = ops::attention(q, k_rep, v_rep);
  // Same arithmetic per query head in both; the tolerance only allows a reordering of sums.
  expect_near(gqa.to_vector<double>(), mha.to_vector<double>(), 1e-13, "output");

  // Repeating a head is a linear map whose transpose sums the group, so dk = sum of dk_rep.
  backward(gqa, u);
  std::vector<double> dq_gqa = q.grad().to_vector<double>();
  q.zero_grad();
  backward(mha, u);
  expect_near(dq_gqa, q.grad().to_vector<double>(), 1e-13, "dq");
  expect_near(k.grad().to_vector<double>(),
              sum_groups(k_rep.grad().to_vector<double>(), B, Hkv, G, TD), 1e-12, "dk");
  expect_near(v.grad().to_vector<double>(),
              sum_groups(v_rep.grad().to_vector<double>(), B, Hkv, G, TD), 1e-12, "dv");
}

TEST(Attention, grouped_query_heads_equal_multi_head_with_repeated_kv_heads) {
  expect_gqa_matches_repeated_mha(2, 4, 2, 5, 3);
}

TEST(Attention, grouped_query_heads_equal_repeated_kv_heads_when_split_across_threads) {
  // Large enough (B H T^2 D > 65536) for the kernels' OpenMP loops to run in parallel: forward
  // splits over (b, h), backward over (b, kv head), so a write race would break the equality.
  expect_gqa_matches_repeated_mha(2, 6, 2, 24, 16);
}

TEST(Attention, saved_probs_are_causal_rows_that_sum_to_one) {
  // The kernel's probs are what the fused kernels' log-sum-exp must reproduce.
  const int64_t B = 1, H = 2, Hkv = 1, T = 5, D = 3;
  Generator g(26);
  Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
         v = randn({B, Hkv, T, D}, g, DType::F64);
  Tensor out = Tensor::empty({B, H, T, D}, DType::F64),
         probs = Tensor::empty({B, H, T, T}, DType::F64);
  probs.fill_(std::numeric_limits<double>::quiet_NaN());  // the kernel must assign every entry
  TESSERA_KERNEL(q, attention_forward)(out, probs, q, k, v, 0.5);
  std::vector<double> p = probs.to_vector<double>();
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < T; ++i) {
      double sum = 0;
      for (int64_t j = 0; j < T; ++j) {
        const double pij = p[size_t((h * T + i) * T + j)];
        if (j > i) {
          EXPECT_EQ(pij, 0.0) << "h " << h << " i " << i << " j " << j;
        } else {
          EXPECT_GT(pij, 0.0) << "h " << h << " i " << i << " j " << j;
        }
        sum += pij;
      }
      EXPECT_NEAR(sum, 1.0, 1e-15) << "h " << h << " row " << i;
    }
}

TEST(Attention, gradcheck_q_k_v_grouped_query) {
  Generator g(27);
  Tensor q = randn({2, 4, 5, 4}, g, DType::F64), k = randn({2, 2, 5, 4}, g, DType::F64),
         v = randn({2, 2, 5, 4}, g, DType::F64);
  EXPECT_TRUE(
      gradcheck([](const std::vector<Tensor>& in) { return ops::attention(in[0], in[1], in[2]); },
                {q, k, v}));
}

TEST(Attention, gradcheck_q_k_v_multi_query_explicit_scale) {
  Generator g(28);
  Tensor q = randn({1, 3, 4, 2}, g, DType::F64), k = randn({1, 1, 4, 2}, g, DType::F64),
         v = randn({1, 1, 4, 2}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::attention(in[0], in[1], in[2], 0.8); },
      {q, k, v}));
}

TEST(Attention, shape_mismatch_errors_name_all_shapes) {
  struct Case {
    Shape q, k, v;
    const char* why;
  };
  const Case cases[] = {
      {{1, 3, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 2}, "H not a multiple of Hkv"},
      {{1, 2, 4, 2}, {1, 2, 5, 2}, {1, 2, 5, 2}, "T differs"},
      {{1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 3}, "D differs"},
      {{2, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 2}, "B differs"},
      {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 1, 4, 2}, "k and v differ"},
      {{2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 2}, "q not 4-D"},
  };
  for (const Case& c : cases) {
    try {
      ops::attention(zeros(c.q), zeros(c.k), zeros(c.v));
      ADD_FAILURE() << "expected an error: " << c.why;
    } catch (const Error& e) {
      std::string msg = e.what();
      for (const Shape& s : {c.q, c.k, c.v})
        EXPECT_NE(msg.find(shape_str(s)), std::string::npos) << c.why << ": " << msg;
    }
  }
}
