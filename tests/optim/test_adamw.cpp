// AdamW: the update formula by hand and against a re-implementation in double, bias correction,
// skipped parameters, bf16 master weights, checkpoint state round trips and their errors, and a
// small least-squares problem solved end to end.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/autograd.h"
#include "core/tensor.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;

Tensor param(const std::vector<double>& values, const Shape& shape, DType t = DType::F64) {
  Tensor p = from_vector(values, shape, t);
  p.requires_grad_();
  return p;
}

// Plays the autograd engine's part: installs g as p's gradient (its own storage, in p's dtype).
void set_grad(const Tensor& p, const std::vector<double>& g) {
  p.impl().autograd->grad = from_vector(g, p.shape(), p.dtype());
}

using tessera::testing::bytes;
using tessera::testing::values;

TEST(AdamW, one_step_matches_hand_computed_formula_and_decays_only_the_matrix) {
  Tensor w = param({1.0, -2.0, 0.5, 3.0}, {2, 2});
  Tensor b = param({0.5, -1.0}, {2});
  AdamW opt({{"w", w}, {"b", b}}, {.weight_decay = 0.1});  // b1 0.9, b2 0.95, eps 1e-8
  set_grad(w, {0.1, -0.2, 0.3, 0.0});
  set_grad(b, {1.0, -0.5});
  opt.step(0.1);  // overrides options().lr (1e-3)

  // t = 1: m = 0.1 g, v = 0.05 g^2, so m / (1 - 0.9) = g and sqrt(v / (1 - 0.95)) = |g|:
  // p = p * (1 - lr wd) - lr g / (|g| + eps) with lr wd = 0.01 on the matrix, no decay on the bias.
  // The literals are those expressions evaluated exactly and rounded to 17 digits; 1e-15 allows
  // the last-bit differences between that and the kernel's double arithmetic.
  const std::vector<double> w_expected = {
      0.89000000999999895,   // 1 * 0.99 - 0.1 * 0.1 / (0.1 + 1e-8)
      -1.8800000049999996,   // -2 * 0.99 + 0.1 * 0.2 / (0.2 + 1e-8)
      0.39500000333333324,   // 0.5 * 0.99 - 0.1 * 0.3 / (0.3 + 1e-8)
      2.9700000000000002,    // 3 * 0.99: a zero gradient leaves only the decay
  };
  const std::vector<double> b_expected = {
      0.40000000099999999,   // 0.5 - 0.1 * 1 / (1 + 1e-8): no decay
      -0.90000000199999997,  // -1 + 0.1 * 0.5 / (0.5 + 1e-8)
  };
  auto wv = values(w), bv = values(b);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(wv[i], w_expected[i], 1e-15) << "w[" << i << "]";
  for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(bv[i], b_expected[i], 1e-15) << "b[" << i << "]";

  // m = (1 - b1) g and v = (1 - b2) g^2, relative 1e-15: 1 - 0.9 and 1 - 0.95 are computed in
  // binary (0.09999999999999998, 0.05000000000000004), a few ulp from the decimal values.
  auto mw = values(opt.m("w")), vw = values(opt.v("w"));
  const std::vector<double> gw = {0.1, -0.2, 0.3, 0.0};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(mw[i], 0.1 * gw[i], 1e-15 * std::abs(0.1 * gw[i])) << i;
    EXPECT_NEAR(vw[i], 0.05 * gw[i] * gw[i], 1e-15 * 0.05 * gw[i] * gw[i]) << i;
  }
  EXPECT_EQ(opt.step_count(), 1);
}

TEST(AdamW, decays_only_tensors_with_two_or_more_dimensions) {
  AdamW opt({{"wte", param({0, 0, 0, 0, 0, 0}, {3, 2})},
             {"ln.weight", param({1, 1}, {2})},
             {"conv", param({0, 0, 0, 0, 0, 0, 0, 0}, {2, 2, 2})},
             {"scalar", param({2}, {})}});
  EXPECT_TRUE(opt.decays("wte"));
  EXPECT_FALSE(opt.decays("ln.weight"));
  EXPECT_TRUE(opt.decays("conv"));
  EXPECT_FALSE(opt.decays("scalar"));
  EXPECT_NE(error_of([&] { (void)opt.decays("nope"); }).find("'nope'"), std::string::npos);
}

// The test's own AdamW, written from the formula in the header, in double.
struct ReferenceAdamW {
  double b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  int64_t t = 0;
  std::vector<std::vector<double>> m, v;

  void step(std::vector<std::vector<double>>& p, const std::vector<std::vector<double>>& g,
            const std::vector<bool>& decay, double lr) {
    if (m.empty()) {
      for (const auto& x : p) {
        m.emplace_back(x.size(), 0.0);
        v.emplace_back(x.size(), 0.0);
      }
    }
    t += 1;
    for (size_t k = 0; k < p.size(); ++k) {
      for (size_t i = 0; i < p[k].size(); ++i) {
        if (decay[k]) p[k][i] -= lr * wd * p[k][i];
        m[k][i] = b1 * m[k][i] + (1 - b1) * g[k][i];
        v[k][i] = b2 * v[k][i] + (1 - b2) * g[k][i] * g[k][i];
        const double mhat = m[k][i] / (1 - std::pow(b1, double(t)));
        const double vhat = v[k][i] / (1 - std::pow(b2, double(t)));
        p[k][i] -= lr * mhat / (std::sqrt(vhat) + eps);
      }
    }
  }
};

TEST(AdamW, several_steps_match_a_double_reimplementation) {
  Generator gen(7);
  Tensor w = randn({3, 4}, gen, DType::F64).requires_grad_();
  Tensor b = randn({4}, gen, DType::F64).requires_grad_();
  AdamW opt({{"w", w}, {"b", b}});
  ReferenceAdamW ref;
  std::vector<std::vector<double>> p = {values(w), values(b)};
  double worst = 0.0;
  for (int step = 0; step < 20; ++step) {
    const double lr = 1e-2 * (1.0 + 0.1 * step);  // varies, as under a schedule
    std::vector<std::vector<double>> g = {values(randn({3, 4}, gen, DType::F64)),
                                          values(randn({4}, gen, DType::F64))};
    set_grad(w, g[0]);
    set_grad(b, g[1]);
    opt.step(lr);
    ref.step(p, g, {true, false}, lr);
    // The moments do not depend on the weights: same operations in the same order, so equal bits.
    EXPECT_EQ(values(opt.m("w")), ref.m[0]);
    EXPECT_EQ(values(opt.v("b")), ref.v[1]);
    auto got = std::vector<std::vector<double>>{values(w), values(b)};
    for (size_t k = 0; k < 2; ++k)
      for (size_t i = 0; i < p[k].size(); ++i)
        worst = std::max(worst, std::abs(got[k][i] - p[k][i]) / std::max(1.0, std::abs(p[k][i])));
  }
  // The kernel evaluates PyTorch's arrangement (p * (1 - lr wd), sqrt(v) / sqrt(1 - b2^t)) rather
  // than the formula's, so each step may leave p a bit or two apart (<= 4.4e-16 relative). Those
  // roundings are independent and the moments (which feed back) are exact, so over 20 steps they
  // add up like a random walk: ~sqrt(20) * 4.4e-16 = 2e-15. (Seen: 2.8e-16. Decaying the bias, or
  // any other slip in the formula, is off by ~1e-3.)
  EXPECT_LT(worst, 2e-15);
}

TEST(AdamW, first_step_moves_each_weight_by_lr_times_the_sign_of_its_gradient) {
  // At t = 1 bias correction makes m_hat = g and sqrt(v_hat) = |g|, so the step is
  // lr * g / (|g| + eps): lr * sign(g) whatever the gradient's scale, up to eps / |g| relative.
  const std::vector<double> g = {1e-3, -1e-3, 0.25, -7.0, 1e3, -1e6};
  Tensor p = param(std::vector<double>(g.size(), 0.5), {int64_t(g.size())});
  AdamW opt({{"p", p}}, {.weight_decay = 0.0});
  set_grad(p, g);
  const double lr = 3e-3;
  opt.step(lr);
  auto after = values(p);
  for (size_t i = 0; i < g.size(); ++i) {
    // Slack beyond the eps term: two ulp of 0.5 (rounding p, then 0.5 - p).
    const double moved = 0.5 - after[i];
    EXPECT_NEAR(moved, lr * (g[i] > 0 ? 1 : -1), lr * 1e-8 / std::abs(g[i]) + 2.3e-16) << g[i];
  }
}

TEST(AdamW, parameters_without_a_gradient_are_untouched) {
  Tensor w = param({1, 2, 3, 4}, {2, 2});
  Tensor b = param({5, 6}, {2});
  AdamW opt({{"w", w}, {"b", b}});
  set_grad(w, {1, 1, 1, 1});  // b never receives a gradient
  opt.step(0.1);
  opt.step(0.1);
  EXPECT_EQ(values(b), (std::vector<double>{5, 6}));
  EXPECT_EQ(values(opt.m("b")), (std::vector<double>{0, 0}));
  EXPECT_EQ(values(opt.v("b")), (std::vector<double>{0, 0}));
  EXPECT_NE(values(w), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(opt.step_count(), 2);
}

TEST(AdamW, zero_grad_drops_every_gradient) {
  Tensor w = param({1, 2, 3, 4}, {2, 2});
  Tensor b = param({5, 6}, {2});
  AdamW opt({{"w", w}, {"b", b}});
  set_grad(w, {1, 1, 1, 1});
  set_grad(b, {1, 1});
  opt.zero_grad();
  EXPECT_FALSE(w.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  opt.step(0.1);  // nothing to update
  EXPECT_EQ(values(w), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(values(b), (std::vector<double>{5, 6}));
}

TEST(AdamW, f32_master_is_the_parameter_itself) {
  Tensor w = param({1, 2, 3, 4}, {2, 2}, DType::F32);
  AdamW opt({{"w", w}});
  EXPECT_EQ(opt.master("w").data_ptr(), w.data_ptr());  // no second copy of the weights
  EXPECT_EQ(opt.m("w").dtype(), DType::F32);
  EXPECT_EQ(opt.v("w").dtype(), DType::F32);
}

TEST(AdamW, bf16_parameter_keeps_small_updates_in_its_f32_master) {
  // bf16 has 8 significant bits: near 1 its spacing is 2^-7 (0.0078), so a step of 1e-3 applied to
  // the bf16 value would round away every time. The f32 master accumulates them instead.
  Tensor p = param({1.0, -1.0, 0.25}, {3}, DType::BF16);
  AdamW opt({{"p", p}}, {.weight_decay = 0.0});
  ASSERT_EQ(opt.master("p").dtype(), DType::F32);
  EXPECT_NE(opt.master("p").data_ptr(), p.data_ptr());
  for (int step = 0; step < 20; ++step) {
    set_grad(p, {1.0, -1.0, 1.0});
    opt.step(1e-3);
    const auto master = opt.master("p").to_vector<float>();
    const auto bits = p.to_vector<bf16>();
    for (size_t i = 0; i < 3; ++i)  // the parameter is always the master, rounded
      EXPECT_EQ(bits[i].bits, bf16(master[i]).bits) << "step " << step << " element " << i;
  }
  // Each step moves by lr: the gradient is constant, so m_hat / sqrt(v_hat) = 1 up to f32 rounding.
  const auto master = opt.master("p").to_vector<float>();
  EXPECT_NEAR(master[0], 1.0 - 20 * 1e-3, 1e-5);
  EXPECT_NEAR(master[1], -1.0 + 20 * 1e-3, 1e-5);
  EXPECT_NEAR(values(p)[0], 0.98, 0.004);  // bf16(0.98): the drift reached the parameter
}

// Copies of the state and the weights, as a checkpoint holds them.
struct Snapshot {
  std::vector<StateEntry> state;
  std::vector<Tensor> weights;
  int64_t step = 0;
};

Snapshot snapshot(const AdamW& opt) {
  Snapshot s;
  for (const StateEntry& e : opt.state())
    s.state.push_back({e.name, e.m.clone(), e.v.clone(), e.master.clone()});
  for (const auto& np : opt.params()) s.weights.push_back(np.param.detach().clone());
  s.step = opt.step_count();
  return s;
}

class AdamWResume : public ::testing::TestWithParam<DType> {};

TEST_P(AdamWResume, restored_state_continues_bit_identically) {
  const DType t = GetParam();
  Generator gen(11);
  auto grads_for = [&](int step) {  // the same gradients for both runs, step by step
    Generator g(1000 + uint64_t(step));
    return std::vector<std::vector<double>>{values(randn({4, 3}, g, DType::F64)),
                                            values(randn({3}, g, DType::F64))};
  };
  auto step_with = [&](AdamW& opt, int step) {
    auto g = grads_for(step);
    set_grad(opt.params()[0].param, g[0]);
    set_grad(opt.params()[1].param, g[1]);
    opt.step(lr_at({.name = "cosine", .lr = 1e-2, .min_lr = 1e-3, .warmup_steps = 2,
                    .max_steps = 8},
                   step));
  };

  Tensor w = randn({4, 3}, gen, t).requires_grad_();
  Tensor b = randn({3}, gen, t).requires_grad_();
  AdamW a({{"w", w}, {"b", b}});
  for (int step = 0; step < 3; ++step) step_with(a, step);
  const Snapshot saved = snapshot(a);
  for (int step = 3; step < 6; ++step) step_with(a, step);  // the uninterrupted run

  Tensor w2 = saved.weights[0].clone().requires_grad_();
  Tensor b2 = saved.weights[1].clone().requires_grad_();
  AdamW resumed({{"w", w2}, {"b", b2}});
  if (t == DType::BF16) {
    // The master rebuilt from the bf16 weights has lost the low bits: restoring it matters.
    EXPECT_NE(bytes(resumed.master("w")), bytes(saved.state[0].master));
  }
  resumed.load_state(saved.state);
  resumed.set_step_count(saved.step);
  for (int step = 3; step < 6; ++step) step_with(resumed, step);

  EXPECT_EQ(resumed.step_count(), a.step_count());
  for (const char* name : {"w", "b"}) {
    EXPECT_EQ(bytes(resumed.m(name)), bytes(a.m(name))) << name;
    EXPECT_EQ(bytes(resumed.v(name)), bytes(a.v(name))) << name;
    EXPECT_EQ(bytes(resumed.master(name)), bytes(a.master(name))) << name;
  }
  EXPECT_EQ(bytes(w2), bytes(w));
  EXPECT_EQ(bytes(b2), bytes(b));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, AdamWResume, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(AdamW, handing_its_own_state_back_is_a_no_op) {
  Tensor w = param({1, 2, 3, 4}, {2, 2}, DType::F32);
  AdamW opt({{"w", w}});
  set_grad(w, {1, -1, 1, -1});
  opt.step(0.1);
  const auto before = bytes(w), m_before = bytes(opt.m("w"));
  opt.load_state(opt.state());  // aliases of the live tensors: nothing to copy
  EXPECT_EQ(bytes(w), before);
  EXPECT_EQ(bytes(opt.m("w")), m_before);
}

TEST(AdamW, load_state_with_a_wrong_shape_names_the_parameter_and_both_shapes) {
  Tensor w = param({1, 2, 3, 4}, {2, 2}, DType::F32);
  Tensor b = param({5, 6}, {2}, DType::F32);
  AdamW opt({{"h.0.attn.w", w}, {"h.0.attn.b", b}});
  set_grad(w, {1, 1, 1, 1});
  set_grad(b, {1, 1});
  opt.step(0.1);
  const auto m_before = bytes(opt.m("h.0.attn.b"));

  std::vector<StateEntry> bad = {
      {"h.0.attn.b", zeros({2}), zeros({2}), {}},  // valid, listed first: must not be applied
      {"h.0.attn.w", zeros({3}), zeros({2, 2}), {}},
  };
  std::string msg = error_of([&] { opt.load_state(bad); });
  EXPECT_NE(msg.find("'h.0.attn.w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3,)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 2)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("m of"), std::string::npos) << msg;
  EXPECT_EQ(bytes(opt.m("h.0.attn.b")), m_before);  // checked everything before copying anything

  bad[1] = {"h.0.attn.w", zeros({2, 2}), zeros({2, 2}), zeros({4, 1})};
  msg = error_of([&] { opt.load_state(bad); });
  EXPECT_NE(msg.find("master of 'h.0.attn.w' has shape (4, 1)"), std::string::npos) << msg;

  msg = error_of([&] { opt.load_state({bad[0]}); });
  EXPECT_NE(msg.find("no state for parameter 'h.0.attn.w'"), std::string::npos) << msg;

  msg = error_of([&] {
    opt.load_state({bad[0], {"h.1.attn.w", zeros({2, 2}), zeros({2, 2}), {}}});
  });
  EXPECT_NE(msg.find("'h.1.attn.w'"), std::string::npos) << msg;

  msg = error_of([&] { opt.load_state({bad[0], bad[0]}); });
  EXPECT_NE(msg.find("two entries for 'h.0.attn.b'"), std::string::npos) << msg;
}

TEST(AdamW, bad_parameters_and_options_are_errors_that_name_them) {
  Tensor w = param({1, 2, 3, 4}, {2, 2});
  std::string msg = error_of([&] { AdamW({{"w", w}, {"w", param({1}, {1})}}); });
  EXPECT_NE(msg.find("two parameters are named 'w'"), std::string::npos) << msg;
  msg = error_of([&] { AdamW({{"wte", w}, {"lm_head", w}}); });
  EXPECT_NE(msg.find("'wte' and 'lm_head' are the same tensor"), std::string::npos) << msg;
  msg = error_of([&] { AdamW({{"ids", zeros({2}, DType::I32)}}); });
  EXPECT_NE(msg.find("'ids' is i32"), std::string::npos) << msg;
  msg = error_of([&] { AdamW({{"wt", w.detach().transpose(0, 1)}}); });
  EXPECT_NE(msg.find("'wt'"), std::string::npos) << msg;
  msg = error_of([&] { AdamW({{"w", w}}, {.beta2 = 1.0}); });
  EXPECT_NE(msg.find("beta2"), std::string::npos) << msg;
  AdamW opt({{"w", w}});
  msg = error_of([&] { opt.set_step_count(-1); });
  EXPECT_NE(msg.find("-1"), std::string::npos) << msg;
}

TEST(AdamW, gradient_of_the_wrong_dtype_is_an_error_and_changes_nothing) {
  Tensor w = param({1, 2, 3, 4}, {2, 2});
  AdamW opt({{"w", w}});
  w.impl().autograd->grad = zeros({2, 2}, DType::F32);  // not the engine's doing: w is f64
  std::string msg = error_of([&] { opt.step(0.1); });
  EXPECT_NE(msg.find("gradient of 'w'"), std::string::npos) << msg;
  EXPECT_EQ(opt.step_count(), 0);
}

TEST(AdamW, minimises_a_least_squares_problem) {
  // loss = mean((W x - y)^2) with y = W* x: a convex problem whose minimum is 0 at W = W*.
  Generator gen(3);
  Tensor x = randn({3, 32}, gen);
  Tensor y = ops::matmul(randn({4, 3}, gen), x);
  Tensor w = randn({4, 3}, gen).requires_grad_();
  AdamW opt({{"w", w}}, {.weight_decay = 0.0});  // decay would pull W away from W*
  const ScheduleOptions sched{.name = "cosine", .lr = 0.1, .min_lr = 1e-3, .warmup_steps = 10,
                              .max_steps = 200};
  auto loss_of = [&] {
    Tensor d = ops::sub(ops::matmul(w, x), y);
    return ops::mean(ops::mul(d, d));
  };
  double first = 0.0, last = 0.0;
  for (int64_t step = 0; step < 200; ++step) {
    opt.zero_grad();
    Tensor loss = loss_of();
    if (step == 0) first = loss.item();
    loss.backward();
    clip_grad_norm(opt.params(), 1.0);
    opt.step(lr_at(sched, step));
  }
  {
    NoGradGuard ng;
    last = loss_of().item();
  }
  EXPECT_LT(last, first / 100) << "first " << first << " last " << last;
}

}  // namespace
}  // namespace tessera
