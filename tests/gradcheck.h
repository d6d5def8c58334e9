// Gradient checks: the analytic backward of an op against central differences, in double precision.
//
//   Generator g(7);
//   Tensor x = randn({3, 5}, g, DType::F64), w = randn({5}, g, DType::F64);
//   EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::rmsnorm(in[0], in[1]); },
//                         {x, w}));
//
// f is evaluated on f64 copies of the floating inputs (integer inputs such as ids pass through).
// A fixed random upstream gradient u (same shape as f's output) makes the scalar L = sum(f(x) * u),
// so every output element's gradient is exercised with a different weight; the analytic dL/dx comes
// from backward(f(x), u), the numeric one from (L(x + h e_j) - L(x - h e_j)) / 2h for every element j.
//
// Tolerance: with h = 1e-6 in double, the central difference has truncation error O(h^2 f''') ~ 1e-12
// and rounding error O(eps_f64 |L| / h) ~ 1e-10 |L|; atol 1e-6 and rtol 1e-5 leave a wide margin for
// ops with kinks near a sampled point while a wrong sign or a missing term is off by O(1).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <vector>

#include "autograd/autograd.h"
#include "core/tensor.h"

namespace tessera::testing {

struct GradcheckOptions {
  double h = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
  uint64_t seed = 1234;          // for the upstream gradient
  std::vector<bool> check = {};  // which inputs to check (default: every floating input)
};

using GradFn = std::function<Tensor(const std::vector<Tensor>&)>;

inline double dot_with(const Tensor& y, const std::vector<double>& u) {
  std::vector<double> yv = y.detach().to(DType::F64).to_vector<double>();
  double s = 0;
  for (size_t i = 0; i < yv.size(); ++i) s += yv[i] * u[i];
  return s;
}

inline ::testing::AssertionResult gradcheck(const GradFn& f, const std::vector<Tensor>& inputs,
                                            GradcheckOptions opt = {}) {
  std::vector<Tensor> xs;
  std::vector<bool> check;
  for (size_t i = 0; i < inputs.size(); ++i) {
    bool floating = inputs[i].defined() && is_floating(inputs[i].dtype());
    bool want = floating && (opt.check.empty() || (i < opt.check.size() && opt.check[i]));
    Tensor x = floating ? inputs[i].detach().to(DType::F64).contiguous().clone() : inputs[i];
    if (floating) x = x.detach();
    if (want) x.requires_grad_();
    xs.push_back(x);
    check.push_back(want);
  }
  Tensor y = f(xs);
  if (!y.requires_grad())
    return ::testing::AssertionFailure() << "output does not require a gradient";
  Generator g(opt.seed);
  Tensor u = randn(y.shape(), g, DType::F64);
  std::vector<double> uv = u.to_vector<double>();
  backward(y, u);

  std::ostringstream report;
  bool ok = true;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!check[i]) continue;
    if (!xs[i].grad().defined()) {
      return ::testing::AssertionFailure() << "input " << i << " received no gradient";
    }
    std::vector<double> analytic = xs[i].grad().to_vector<double>();
    double* p = xs[i].data<double>();
    double worst = 0;
    int64_t worst_j = -1;
    double worst_a = 0, worst_n = 0;
    for (int64_t j = 0; j < xs[i].numel(); ++j) {
      const double saved = p[j];
      double lp, lm;
      {
        NoGradGuard ng;
        p[j] = saved + opt.h;
        lp = dot_with(f(xs), uv);
        p[j] = saved - opt.h;
        lm = dot_with(f(xs), uv);
      }
      p[j] = saved;
      double numeric = (lp - lm) / (2 * opt.h);
      double err = std::abs(analytic[size_t(j)] - numeric);
      double excess = err - (opt.atol + opt.rtol * std::abs(numeric));
      if (excess > 0 && (worst_j < 0 || excess > worst)) {
        worst = excess;
        worst_j = j;
        worst_a = analytic[size_t(j)];
        worst_n = numeric;
      }
    }
    if (worst_j >= 0) {
      ok = false;
      report << "input " << i << " " << shape_str(xs[i].shape()) << ": element " << worst_j
             << " analytic " << worst_a << " vs numeric " << worst_n << "; ";
    }
  }
  if (!ok) return ::testing::AssertionFailure() << "gradient mismatch: " << report.str();
  return ::testing::AssertionSuccess();
}

}  // namespace tessera::testing
