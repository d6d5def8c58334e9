// stick_breaking_attention: values against a direct-product reference (no log space), what a token
// sees (earlier keys, itself only with attend_current), the remainder, gradients in f64, a
// 4096-token context whose sticks underflow f32 as products, and shape errors.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "backend/kernels.h"
#include "gradcheck.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::gradcheck;
using tessera::testing::values;

namespace {

struct Sizes {
  int64_t B, H, Hkv, T, D;
};

// Tan et al. 2024, eq. (1)-(2) as written: A[i, j] = beta[i, j] prod_{i<k<j} (1 - beta[k, j]) with
// beta = 1 / (1 + exp(-z)) and the product taken literally, factor by factor, in double; rem_j =
// prod_i (1 - beta[i, j]). No log space and no shared code with the kernel.
std::vector<double> naive_stick_breaking(const std::vector<double>& q, const std::vector<double>& k,
                                         const std::vector<double>& v, Sizes s, double scale,
                                         bool attend_current, bool add_remainder,
                                         std::vector<double>* rem_out = nullptr) {
  const int64_t G = s.H / s.Hkv, T = s.T, D = s.D;
  std::vector<double> out(size_t(s.B * s.H * T * D), 0.0);
  if (rem_out) rem_out->assign(size_t(s.B * s.H * T), 0.0);
  auto at = [&](int64_t b, int64_t h, int64_t heads, int64_t t, int64_t e) {
    return size_t(((b * heads + h) * T + t) * D + e);
  };
  auto beta = [&](int64_t b, int64_t h, int64_t i, int64_t j) {
    double dot = 0;
    for (int64_t e = 0; e < D; ++e) dot += q[at(b, h, s.H, j, e)] * k[at(b, h / G, s.Hkv, i, e)];
    return 1.0 / (1.0 + std::exp(-scale * dot));
  };
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t j = 0; j < T; ++j) {
        const int64_t last = attend_current ? j : j - 1;
        double rem = 1;
        for (int64_t i = 0; i <= last; ++i) {
          double a = beta(b, h, i, j);
          for (int64_t m = i + 1; m <= last; ++m) a *= 1 - beta(b, h, m, j);
          for (int64_t e = 0; e < D; ++e)
            out[at(b, h, s.H, j, e)] += a * v[at(b, h / G, s.Hkv, i, e)];
          rem *= 1 - beta(b, h, i, j);
        }
        if (add_remainder)
          for (int64_t e = 0; e < D; ++e)
            out[at(b, h, s.H, j, e)] += rem * v[at(b, h / G, s.Hkv, j, e)];
        if (rem_out) (*rem_out)[size_t((b * s.H + h) * T + j)] = rem;
      }
  return out;
}

void expect_near(const std::vector<double>& a, const std::vector<double>& b, double tol,
                 const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tol) << what << " element " << i;
}

ops::StickBreakingOptions options(bool current, bool remainder, double scale = 0.0) {
  ops::StickBreakingOptions o;
  o.attend_current = current;
  o.remainder =
      remainder ? ops::StickBreakingRemainder::Current : ops::StickBreakingRemainder::None;
  o.scale = scale;
  return o;
}

void expect_matches_naive(Sizes s, uint64_t seed) {
  Generator g(seed);
  Tensor q = randn({s.B, s.H, s.T, s.D}, g, DType::F64),
         k = randn({s.B, s.Hkv, s.T, s.D}, g, DType::F64),
         v = randn({s.B, s.Hkv, s.T, s.D}, g, DType::F64);
  auto qv = q.to_vector<double>(), kv = k.to_vector<double>(), vv = v.to_vector<double>();
  const double scale = 1.0 / std::sqrt(double(s.D));
  for (bool current : {false, true})
    for (bool remainder : {false, true}) {
      const std::string what = std::string(current ? "attend_current" : "earlier keys") +
                               (remainder ? ", remainder" : "");
      Tensor rem;
      std::vector<double> want_rem;
      std::vector<double> out =
          ops::stick_breaking_attention(q, k, v, options(current, remainder), &rem)
              .to_vector<double>();
      // f64 on both sides; the direct products lose relative precision only through 1 - beta
      // (eps / (1 - beta) per factor, 1 - beta > 1e-3 for these |z| < 7), so at most T = 7 factors
      // of ~1e-13 each: 1e-11 bounds it with room, and a wrong factor or term is off by O(0.1).
      expect_near(out, naive_stick_breaking(qv, kv, vv, s, scale, current, remainder, &want_rem),
                  1e-11, what);
      expect_near(rem.to_vector<double>(), want_rem, 1e-11, what + " rem");
    }
}

}  // namespace

TEST(StickBreaking, values_match_direct_products_grouped_query) {
  expect_matches_naive({2, 4, 2, 7, 4}, 31);
}

TEST(StickBreaking, values_match_direct_products_when_split_across_threads) {
  // B H T^2 D > 65536 turns on the kernels' OpenMP loops (over (b, h)): a race would break this.
  expect_matches_naive({2, 4, 2, 24, 16}, 32);
}

TEST(StickBreaking, f32_matches_f64_reference_of_rounded_inputs) {
  const Sizes s{1, 2, 1, 9, 5};
  Generator g(33);
  Tensor q = randn({1, 2, 9, 5}, g), k = randn({1, 1, 9, 5}, g), v = randn({1, 1, 9, 5}, g);
  std::vector<double> want =
      naive_stick_breaking(values(q), values(k), values(v), s, 0.7, false, true);
  // The kernel's scores and products run in f32 (BLAS) over D = 5 and at most 9 keys, the scan in
  // double: a few roundings of at most 2.4e-7 each for |out| < 4 (measured: 1.2e-7 apart); 1e-6
  // allows four.
  expect_near(values(ops::stick_breaking_attention(q, k, v, options(false, true, 0.7))), want, 1e-6,
              "f32");
}

TEST(StickBreaking, first_token_sees_nothing_unless_it_attends_to_itself) {
  Generator g(34);
  Tensor q = randn({1, 2, 4, 3}, g, DType::F64), k = randn({1, 2, 4, 3}, g, DType::F64),
         v = randn({1, 2, 4, 3}, g, DType::F64);
  Tensor rem;
  std::vector<double> out = ops::stick_breaking_attention(q, k, v, {}, &rem).to_vector<double>();
  std::vector<double> r = rem.to_vector<double>(), vv = v.to_vector<double>();
  for (int64_t h = 0; h < 2; ++h) {
    EXPECT_EQ(r[size_t(h * 4)], 1.0) << "no key: the whole stick is left";
    for (int64_t e = 0; e < 3; ++e) EXPECT_EQ(out[size_t(h * 12 + e)], 0.0) << "h " << h;
  }
  // With the remainder term the leftover stick (all of it) goes to the token's own value.
  out = ops::stick_breaking_attention(q, k, v, options(false, true)).to_vector<double>();
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t e = 0; e < 3; ++e) EXPECT_EQ(out[size_t(h * 12 + e)], vv[size_t(h * 12 + e)]);
}

TEST(StickBreaking, a_token_sees_its_own_value_only_with_attend_current) {
  const int64_t T = 6, D = 3;
  Generator g(35);
  Tensor q = randn({1, 1, T, D}, g, DType::F64), k = randn({1, 1, T, D}, g, DType::F64),
         v = randn({1, 1, T, D}, g, DType::F64);
  for (bool current : {false, true}) {
    std::vector<double> base =
        ops::stick_breaking_attention(q, k, v, options(current, false)).to_vector<double>();
    for (int64_t t = 0; t < T; ++t) {
      Tensor v2 = v.clone();
      v2.narrow(2, t, 1).fill_(5.0);
      std::vector<double> out =
          ops::stick_breaking_attention(q, k, v2, options(current, false)).to_vector<double>();
      for (int64_t j = 0; j < T; ++j) {
        double diff = 0;
        for (int64_t e = 0; e < D; ++e)
          diff = std::max(diff, std::abs(out[size_t(j * D + e)] - base[size_t(j * D + e)]));
        const bool sees = current ? t <= j : t < j;
        if (sees) {
          EXPECT_GT(diff, 1e-9) << "v at " << t << " did not reach query " << j;
        } else {
          EXPECT_EQ(diff, 0.0) << "v at " << t << " reached query " << j
                               << (current ? " (attend_current)" : "");
        }
      }
    }
  }
}

TEST(StickBreaking, gradcheck_q_k_v_grouped_query_earlier_keys) {
  Generator g(36);
  Tensor q = randn({2, 4, 5, 3}, g, DType::F64), k = randn({2, 2, 5, 3}, g, DType::F64),
         v = randn({2, 2, 5, 3}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return ops::stick_breaking_attention(in[0], in[1], in[2], options(false, false));
      },
      {q, k, v}));
}

TEST(StickBreaking, gradcheck_q_k_v_grouped_query_attend_current) {
  Generator g(37);
  Tensor q = randn({2, 4, 5, 3}, g, DType::F64), k = randn({2, 2, 5, 3}, g, DType::F64),
         v = randn({2, 2, 5, 3}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return ops::stick_breaking_attention(in[0], in[1], in[2], options(true, false));
      },
      {q, k, v}));
}

TEST(StickBreaking, gradcheck_q_k_v_grouped_query_remainder) {
  Generator g(38);
  Tensor q = randn({2, 4, 5, 3}, g, DType::F64), k = randn({2, 2, 5, 3}, g, DType::F64),
         v = randn({2, 2, 5, 3}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return ops::stick_breaking_attention(in[0], in[1], in[2], options(false, true));
      },
      {q, k, v}));
}

TEST(StickBreaking, gradcheck_q_k_v_attend_current_remainder_explicit_scale) {
  // Larger scores (scale 1.5 on q, k ~ 2 N(0, 1)) push beta towards 0 and 1, where the
  // (1 - beta) and -beta terms of dz differ most.
  Generator g(39);
  Tensor q = ops::scale(randn({1, 4, 6, 2}, g, DType::F64), 2.0),
         k = ops::scale(randn({1, 2, 6, 2}, g, DType::F64), 2.0),
         v = randn({1, 2, 6, 2}, g, DType::F64);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return ops::stick_breaking_attention(in[0], in[1], in[2], options(true, true, 1.5));
      },
      {q, k, v}));
}

TEST(StickBreaking, values_match_direct_products_across_row_blocks) {
  // T = 150 spans three of the CPU kernels' 64-row blocks (the last one short), each reading the
  // keys up to its own last row. f64; 150 factors of ~1e-13 each in the direct products: 1e-10.
  const Sizes s{1, 4, 2, 150, 8};
  Generator g(38);
  Tensor q = randn({s.B, s.H, s.T, s.D}, g, DType::F64),
         k = randn({s.B, s.Hkv, s.T, s.D}, g, DType::F64),
         v = randn({s.B, s.Hkv, s.T, s.D}, g, DType::F64);
  for (bool current : {false, true}) {
    const std::vector<double> want =
        naive_stick_breaking(values(q), values(k), values(v), s, 1 / std::sqrt(8.0), current, true);
    expect_near(values(ops::stick_breaking_attention(q, k, v, options(current, true))), want, 1e-10,
                current ? "attend_current" : "earlier keys");
  }
}

TEST(StickBreaking, gradients_across_row_blocks_match_directional_differences) {
  // The backward's blocks add dK and dV over three 64-row blocks and two query heads per kv head.
  // For L = sum(out * u) and a random direction d of each input x, the analytic dL/dx . d must
  // equal (L(x + h d) - L(x - h d)) / 2h (f64, h = 1e-5: truncation ~h^2 and rounding ~1e-16 / h,
  // both under 1e-8 of the O(10) derivatives; 1e-6 relative has room). A block that skipped or
  // doubled a key's contribution moves it by O(1).
  const int64_t B = 1, H = 4, Hkv = 2, T = 150, D = 8;
  for (bool current : {false, true})
    for (bool remainder : {false, true}) {
      SCOPED_TRACE(std::string(current ? "attend_current" : "earlier keys") +
                   (remainder ? ", remainder" : ""));
      Generator g(39);
      Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
             v = randn({B, Hkv, T, D}, g, DType::F64), u = randn({B, H, T, D}, g, DType::F64);
      auto loss = [&](const Tensor& qq, const Tensor& kk, const Tensor& vv) {
        return ops::sum(ops::mul(
            ops::stick_breaking_attention(qq, kk, vv, options(current, remainder)), u));
      };
      std::vector<Tensor> in{q.detach().requires_grad_(), k.detach().requires_grad_(),
                             v.detach().requires_grad_()};
      loss(in[0], in[1], in[2]).backward();
      for (int which = 0; which < 3; ++which) {
        const Tensor dir = randn(in[size_t(which)].shape(), g, DType::F64);
        const double h = 1e-5;
        std::vector<Tensor> plus{q, k, v}, minus{q, k, v};
        plus[size_t(which)] = ops::add(plus[size_t(which)], ops::scale(dir, h));
        minus[size_t(which)] = ops::add(minus[size_t(which)], ops::scale(dir, -h));
        const double numeric = (loss(plus[0], plus[1], plus[2]).item() -
                                loss(minus[0], minus[1], minus[2]).item()) / (2 * h);
        const double analytic = ops::sum(ops::mul(in[size_t(which)].grad(), dir)).item();
        EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
            << "input " << "qkv"[which];
      }
    }
}

TEST(StickBreaking, long_context_stays_finite_and_sticks_sum_to_one) {
  // T = 4096 with q, k ~ 2 + 0.5 N(0, 1) in D = 8: z = q . k / sqrt(8) is about +11, beta about
  // 1 - 2e-5. As direct products, (1 - beta) to the 8th power is already below the smallest f32
  // (1.4e-45), and 1 - beta itself loses all but a few bits to cancellation in f32. In log space
  // log rem_j is about -11 j, an ordinary f32 number.
  const int64_t T = 4096, D = 8;
  Generator g(40);
  Tensor q = ops::add(ops::scale(randn({1, 1, T, D}, g), 0.5), full({1, 1, T, D}, 2.0));
  Tensor k = ops::add(ops::scale(randn({1, 1, T, D}, g), 0.5), full({1, 1, T, D}, 2.0));
  Tensor v = ones({1, 1, T, D});  // out_j = sum_i A[i, j] in every channel
  Tensor out = Tensor::empty({1, 1, T, D}), log_rem = Tensor::empty({1, 1, T}),
         rem = Tensor::empty({1, 1, T});
  TESSERA_KERNEL(q, stick_breaking_forward)(out, log_rem, rem, q, k, v, 1.0 / std::sqrt(8.0), false,
                                            false);
  std::vector<float> o = out.to_vector<float>(), lr = log_rem.to_vector<float>(),
                     r = rem.to_vector<float>();
  std::vector<float> qv = q.to_vector<float>(), kv = k.to_vector<float>();
  for (int64_t j = 0; j < T; ++j) {
    ASSERT_TRUE(std::isfinite(lr[size_t(j)])) << "log rem at " << j;
    for (int64_t e = 0; e < D; ++e) ASSERT_TRUE(std::isfinite(o[size_t(j * D + e)])) << j;
    // sum_i A[i, j] + rem_j = 1 is an identity: out is the f32 rounding of a double sum of
    // positive terms, so 1e-6 (8 f32 ulps at 1) bounds the error; a lost or doubled piece of the
    // stick is off by beta ~ 1.
    EXPECT_NEAR(double(o[size_t(j * D)]) + double(r[size_t(j)]), 1.0, 1e-6) << "row " << j;
  }
  // log rem_j = -sum_{i<j} softplus(z[i, j]) directly for a few rows, in double (1e-4 relative:
  // f32 rounding of a value of order 1e4 is 1e-3 absolute, 1e-7 relative).
  for (int64_t j : {int64_t(1), int64_t(100), T - 1}) {
    double want = 0;
    for (int64_t i = 0; i < j; ++i) {
      double dot = 0;
      for (int64_t e = 0; e < D; ++e)
        dot += double(qv[size_t(j * D + e)]) * double(kv[size_t(i * D + e)]);
      const double z = dot / std::sqrt(8.0);
      want -= std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z)));
    }
    EXPECT_NEAR(lr[size_t(j)], want, 1e-4 * std::abs(want)) << "row " << j;
  }
  // The regime the test is about: the last stick is far below what an f32 product can hold.
  EXPECT_LT(lr[size_t(T - 1)], std::log(std::numeric_limits<float>::denorm_min()) - 1000.0);

  // The backward in the same regime, on the first 1024 tokens (log rem reaches about -1.1e4, still
  // far outside f32; a quarter of the length keeps the test fast): every gradient finite, none
  // zero.
  const int64_t Tb = 1024;
  Tensor qb = q.narrow(2, 0, Tb).contiguous().requires_grad_();
  Tensor kb = k.narrow(2, 0, Tb).contiguous().requires_grad_();
  Tensor vb = v.narrow(2, 0, Tb).contiguous().requires_grad_();
  Tensor y = ops::stick_breaking_attention(qb, kb, vb, options(false, true));
  backward(y, full(y.shape(), 0.01));
  for (const Tensor* t : {&qb, &kb, &vb}) {
    double norm = 0;
    for (float x : t->grad().to_vector<float>()) {
      ASSERT_TRUE(std::isfinite(x));
      norm += double(x) * x;
    }
    EXPECT_GT(norm, 0.0);
  }
}

TEST(StickBreaking, shape_mismatch_errors_name_all_shapes) {
  struct Case {
    Shape q, k, v;
    const char* why;
  };
  const Case cases[] = {
      {{1, 3, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 2}, "H not a multiple of Hkv"},
      {{1, 2, 5, 2}, {1, 2, 4, 2}, {1, 2, 4, 2}, "more queries than keys"},  // fewer: decoding
      {{1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 3}, "D differs"},
      {{2, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 2}, "B differs"},
      {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 1, 4, 2}, "k and v differ"},
      {{2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 2}, "q not 4-D"},
  };
  for (const Case& c : cases) {
    std::string msg =
        error_of([&] { ops::stick_breaking_attention(zeros(c.q), zeros(c.k), zeros(c.v)); });
    EXPECT_NE(msg.find("stick_breaking_attention"), std::string::npos) << c.why << ": " << msg;
    for (const Shape& s : {c.q, c.k, c.v})
      EXPECT_NE(msg.find(shape_str(s)), std::string::npos) << c.why << ": " << msg;
  }
}
