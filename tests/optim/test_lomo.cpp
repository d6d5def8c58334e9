// LOMO and AdaLomo: the fused update against SGD and against a plain re-implementation of
// AdaLomo, two-pass norm clipping against clip_grad_norm, training on a tiny GPT, gradient memory
// measured through the allocator, checkpoint resume, and the errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "backend/kernels.h"
#include "checkpoint/checkpoint.h"
#include "core/tensor.h"
#include "nn/gpt.h"
#include "ops/ops.h"
#include "optim/clip.h"
#include "optim/lomo.h"
#include "optim/lomo_step.h"
#include "test_util.h"

namespace tessera {
namespace {

using nn::GPT;
using nn::GPTConfig;
using testing::error_of;

using tessera::testing::bytes;
using tessera::testing::values;

// 2 layers, 32 channels, tied embeddings: every kind of GPT-2 parameter, and one (wte) that gets
// two contributions per backward.
GPTConfig tiny_gpt(bool tied = true) {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.block_size = 16, c.vocab_size = 64;
  c.tie_embeddings = tied;
  return c;
}

// A fixed batch (4, 16) whose next token is a fixed function of the current one: learnable.
struct Batch {
  Tensor x, y;
};
Batch fixed_batch() {
  Generator g(99);
  const std::vector<float> u = rand({64}, g).to_vector<float>();
  std::vector<int32_t> xs(64), ys(64);
  for (size_t i = 0; i < xs.size(); ++i) {
    xs[i] = std::min(int32_t(u[i] * 64), 63);  // uniform tokens
    ys[i] = (xs[i] * 5 + 1) % 64;
  }
  return {from_vector(xs, {4, 16}), from_vector(ys, {4, 16})};
}

std::vector<std::vector<double>> param_values(const GPT& m) {
  std::vector<std::vector<double>> out;
  for (const auto& [name, p] : m.parameters()) out.push_back(values(p));
  return out;
}

// ---- LOMO ----

TEST(Lomo, one_step_equals_sgd_on_the_same_gradients) {
  const double lr = 0.05, wd = 0.1, loss_scale = 4.0, coef = 0.5;
  Batch b = fixed_batch();
  Generator g1(5), g2(5);
  GPT model(tiny_gpt(), g1, DType::F64), ref(tiny_gpt(), g2, DType::F64);  // equal weights

  // The reference: a plain backward keeps every gradient; then SGD by hand.
  backward(ops::scale(ref.loss(b.x, b.y), loss_scale));
  std::vector<double> all;
  for (const auto& [name, p] : ref.parameters())
    for (double x : values(p.grad())) all.push_back(std::abs(x / loss_scale));
  std::nth_element(all.begin(), all.begin() + all.size() / 2, all.end());
  const double clip_value = all[all.size() / 2];  // the median: half the elements get clamped

  FusedOptimizer opt(named_params(model.parameters()),
                     {.weight_decay = wd, .clip_value = clip_value, .loss_scale = loss_scale});
  opt.apply(ops::scale(model.loss(b.x, b.y), loss_scale), lr, coef);

  int64_t clamped = 0;
  for (const auto& [name, p] : ref.parameters()) {
    std::vector<double> w = values(p), gr = values(p.grad());
    const double decay = p.dim() >= 2 ? 1.0 - lr * wd : 1.0;
    for (size_t i = 0; i < w.size(); ++i) {
      double gi = gr[i] / loss_scale;
      if (std::abs(gi) > clip_value) ++clamped;
      gi = std::min(std::max(gi, -clip_value), clip_value) * coef;
      w[i] = w[i] * decay - lr * gi;
    }
    // Exact: the LOMO pass computes the same gradients (same graph, same kernels, and no op reads
    // a parameter after its hook updated it) and the hook does the same double operations in the
    // same order. A tied embedding updated twice, or with half its gradient, would be off by
    // ~lr * g; a decayed bias by lr * wd * b.
    EXPECT_EQ(values(model.parameter(name)), w) << name;
    EXPECT_FALSE(model.parameter(name).grad().defined()) << name << ": gradient not freed";
  }
  EXPECT_GT(clamped, 0);
  EXPECT_EQ(opt.step_count(), 1);
}

TEST(Lomo, hooks_are_idle_outside_a_pass_and_stale_gradients_are_refused) {
  Batch b = fixed_batch();
  Generator g(5);
  GPT model(tiny_gpt(), g, DType::F64);
  const auto before = param_values(model);
  {
    FusedOptimizer opt(named_params(model.parameters()), {});
    backward(model.loss(b.x, b.y));  // somebody else's backward: gradients kept, nothing applied
    EXPECT_EQ(param_values(model), before);
    EXPECT_TRUE(model.parameter("transformer.wte.weight").grad().defined());
    const std::string msg = error_of([&] { opt.apply(model.loss(b.x, b.y), 0.1); });
    EXPECT_NE(msg.find("'transformer.wte.weight' already holds a gradient"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("cannot accumulate"), std::string::npos) << msg;
    EXPECT_EQ(param_values(model), before);  // refused before anything ran
    model.zero_grad();
    opt.apply(model.loss(b.x, b.y), 0.1);
    EXPECT_NE(param_values(model), before);
  }
  // The optimizer is gone; its hooks stay on the tensors but do nothing.
  const auto after = param_values(model);
  backward(model.loss(b.x, b.y));
  EXPECT_EQ(param_values(model), after);
  EXPECT_TRUE(model.parameter("transformer.wte.weight").grad().defined());
}

TEST(Lomo, two_pass_norm_clipping_equals_clipping_the_whole_gradient) {
  Batch b = fixed_batch();
  for (const double max_norm : {0.05, 1e3}) {  // clipping, then a limit the norm stays under
    const double lr = 0.05;
    Generator g1(5), g2(5);
    GPT model(tiny_gpt(), g1, DType::F64), ref(tiny_gpt(), g2, DType::F64);

    backward(ref.loss(b.x, b.y));
    const auto ref_params = named_params(ref.parameters());
    const double ref_norm = clip_grad_norm(ref_params, max_norm);
    for (const auto& [name, p] : ref_params) {  // SGD by hand on the clipped gradients
      double* w = p.data<double>();
      const double* gr = p.grad().data<double>();
      for (int64_t i = 0; i < p.numel(); ++i) w[i] = w[i] - lr * gr[i];
    }

    FusedOptimizer opt(named_params(model.parameters()), {.max_norm = max_norm});
    const double norm = opt.backward_step(model.loss(b.x, b.y), lr);
    // Bit-equal: per-parameter sums in double over the same blocks, added in parameter order as
    // clip_grad_norm adds them, then the same coefficient and the same product g * coef.
    EXPECT_EQ(norm, ref_norm);
    EXPECT_EQ(max_norm < ref_norm, max_norm == 0.05) << "the cases must clip and not clip";
    EXPECT_EQ(param_values(model), param_values(ref)) << "max_norm " << max_norm;
  }
}

TEST(Lomo, grad_norm_applies_nothing_and_apply_reuses_the_graph) {
  Batch b = fixed_batch();
  Generator g1(5), g2(5);
  GPT model(tiny_gpt(), g1, DType::F64), ref(tiny_gpt(), g2, DType::F64);
  FusedOptimizer opt(named_params(model.parameters()), {.max_norm = 0.05});
  FusedOptimizer ref_opt(named_params(ref.parameters()), {.max_norm = 0.05});
  const auto before = param_values(model);

  Tensor loss = model.loss(b.x, b.y);
  const double norm = opt.grad_norm(loss);
  EXPECT_EQ(param_values(model), before);
  for (const auto& [name, p] : model.parameters()) EXPECT_FALSE(p.grad().defined()) << name;
  EXPECT_EQ(opt.step_count(), 0);
  // The single-pass norm of the update pass is the same number.
  EXPECT_EQ(opt.apply(loss, 0.05, opt.clip_coef(norm)), norm);
  EXPECT_EQ(ref_opt.backward_step(ref.loss(b.x, b.y), 0.05), norm);
  EXPECT_EQ(param_values(model), param_values(ref));
}

// ---- AdaLomo ----

// The test's own AdaLomo, written from the formulas in the header with plain loops, in double.
struct ReferenceAdaLomo {
  double wd = 0.0;
  int64_t t = 0;
  std::vector<std::vector<double>> r, c, v;

  static double rms(const std::vector<double>& x) {
    double s = 0;
    for (double e : x) s += e * e;
    return std::sqrt(s / double(x.size()));
  }

  // p (rows x cols, row-major) or a vector when rows == 0.
  void update(size_t k, std::vector<double>& p, const std::vector<double>& g, int64_t rows,
              double lr) {
    const double beta2 = 1.0 - std::pow(double(t), -0.8);
    const double eta = lr * std::max(1e-3, rms(p));
    std::vector<double> u(g.size());
    if (rows > 0) {
      const size_t R = size_t(rows), C = g.size() / R;
      if (r[k].empty()) r[k].assign(R, 0.0), c[k].assign(C, 0.0);
      for (size_t i = 0; i < R; ++i) {
        double s = 0;
        for (size_t j = 0; j < C; ++j) s += g[i * C + j] * g[i * C + j] + 1e-30;
        r[k][i] = beta2 * r[k][i] + (1 - beta2) * (s / double(C));
      }
      for (size_t j = 0; j < C; ++j) {
        double s = 0;
        for (size_t i = 0; i < R; ++i) s += g[i * C + j] * g[i * C + j] + 1e-30;
        c[k][j] = beta2 * c[k][j] + (1 - beta2) * (s / double(R));
      }
      double mean_r = 0;
      for (double x : r[k]) mean_r += x / double(R);
      for (size_t i = 0; i < R; ++i)
        for (size_t j = 0; j < C; ++j)
          u[i * C + j] = g[i * C + j] / std::sqrt(r[k][i] / mean_r) / std::sqrt(c[k][j]);
    } else {
      if (v[k].empty()) v[k].assign(g.size(), 0.0);
      for (size_t i = 0; i < g.size(); ++i) {
        v[k][i] = beta2 * v[k][i] + (1 - beta2) * (g[i] * g[i] + 1e-30);
        u[i] = g[i] / std::sqrt(v[k][i]);
      }
    }
    const double div = std::max(1.0, rms(u));
    const double decay = rows > 0 ? 1.0 - eta * wd : 1.0;
    for (size_t i = 0; i < p.size(); ++i) p[i] = p[i] * decay - eta * u[i] / div;
  }
};

// Relative difference, with a floor of 1 on the scale (values near 0 compare absolutely).
double worst_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  return worst;
}

TEST(AdaLomo, three_steps_match_a_plain_reimplementation) {
  Generator gen(11);
  // A matrix, a 3-D tensor (factored as 2 rows x 6 columns) and a vector that starts at zero;
  // loss = sum_k <p_k, a_k>, so the gradient of p_k is exactly the a_k this step draws. Gradients
  // grow tenfold per step, so the second moments lag and the RMS clip of U engages.
  std::vector<Tensor> ps = {randn({3, 4}, gen, DType::F64).requires_grad_(),
                            randn({2, 3, 2}, gen, DType::F64).requires_grad_(),
                            zeros({5}, DType::F64).requires_grad_()};  // eta's 1e-3 floor
  const std::vector<int64_t> rows = {3, 2, 0};
  FusedOptimizer opt({{"w", ps[0]}, {"t", ps[1]}, {"b", ps[2]}},
                     {.name = "adalomo", .weight_decay = 0.5});
  ReferenceAdaLomo ref;
  ref.wd = 0.5;
  ref.r.resize(3), ref.c.resize(3), ref.v.resize(3);
  std::vector<std::vector<double>> p;
  for (const Tensor& t : ps) p.push_back(values(t));

  for (int step = 0; step < 3; ++step) {
    const double lr = 1e-2 * (1 + step);
    std::vector<Tensor> as;
    Tensor loss;
    for (size_t k = 0; k < ps.size(); ++k) {
      Tensor a = ops::scale(randn(ps[k].shape(), gen, DType::F64), std::pow(10.0, step - 1.0));
      as.push_back(a);
      Tensor term = ops::sum(ops::mul(ps[k], a));
      loss = loss.defined() ? ops::add(loss, term) : term;
    }
    opt.apply(loss, lr);
    ref.t += 1;
    for (size_t k = 0; k < ps.size(); ++k) ref.update(k, p[k], values(as[k]), rows[k], lr);
    // The kernel computes rsqrt factors, divides by mean(R) in another order and sums in double
    // blocks; each is a rounding or two apart (~1e-16 relative), over three steps well under
    // 1e-14. A slip in the formula (beta2_t, the mean of R, the RMS clip, eta) is off by > 1e-4.
    for (size_t k = 0; k < ps.size(); ++k)
      EXPECT_LT(worst_diff(values(ps[k]), p[k]), 1e-14) << "param " << k << " step " << step;
  }
  const auto st = opt.state();
  ASSERT_EQ(st.size(), 5u);  // w/row, w/col, t/row, t/col, b/v
  EXPECT_EQ(st[0].first, "w/row");
  EXPECT_EQ(st[3].first, "t/col");
  EXPECT_EQ(st[4].first, "b/v");
  auto rel = [](const std::vector<double>& a, const std::vector<double>& b) {
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i)
      worst = std::max(worst, std::abs(a[i] - b[i]) / std::abs(b[i]));
    return worst;
  };
  EXPECT_LT(rel(values(st[0].second), ref.r[0]), 1e-14);
  EXPECT_LT(rel(values(st[1].second), ref.c[0]), 1e-14);
  EXPECT_LT(rel(values(st[3].second), ref.c[1]), 1e-14);
  EXPECT_LT(rel(values(st[4].second), ref.v[2]), 1e-14);
  EXPECT_EQ(opt.step_count(), 3);
}

// The kernels sum in double over fixed blocks (65536 elements; a matrix's column sums over blocks
// of 256 rows) and add the partial sums in order; the test above stays inside one block. Here a
// 300 x 300 matrix (two row blocks, two flat blocks for RMS(p) and RMS(U)) and a 70000-vector (two
// flat blocks) take two AdaLomo steps, and LOMO's norm pass sums their gradients. Against the
// reference's sequential sums the block order moves a sum of n terms by at most n ulp (9e4 *
// 1.1e-16 = 1e-11 relative); a block left out is off by percents.
TEST(AdaLomo, sums_over_several_blocks_match_a_plain_reimplementation) {
  Generator gen(12);
  std::vector<Tensor> ps = {randn({300, 300}, gen, DType::F64).requires_grad_(),
                            randn({70000}, gen, DType::F64).requires_grad_()};
  const std::vector<int64_t> rows = {300, 0};
  FusedOptimizer opt({{"w", ps[0]}, {"b", ps[1]}}, {.name = "adalomo", .weight_decay = 0.1});
  ReferenceAdaLomo ref;
  ref.wd = 0.1;
  ref.r.resize(2), ref.c.resize(2), ref.v.resize(2);
  std::vector<std::vector<double>> p;
  for (const Tensor& t : ps) p.push_back(values(t));
  auto linear_loss = [&](const std::vector<Tensor>& as) {
    Tensor loss = ops::sum(ops::mul(ps[0], as[0]));
    return ops::add(loss, ops::sum(ops::mul(ps[1], as[1])));
  };
  for (int step = 0; step < 2; ++step) {
    const std::vector<Tensor> as = {randn(ps[0].shape(), gen, DType::F64),
                                    randn(ps[1].shape(), gen, DType::F64)};
    double sum_squares = 0;
    for (const Tensor& a : as)
      for (double x : values(a)) sum_squares += x * x;
    // The norm pass alone (the gradients are the a's), then the update on the same graph.
    const Tensor loss = linear_loss(as);
    const double norm = opt.grad_norm(loss);
    EXPECT_LT(std::abs(norm - std::sqrt(sum_squares)) / std::sqrt(sum_squares), 1e-11);
    opt.apply(loss, 1e-2);
    ref.t += 1;
    for (size_t k = 0; k < ps.size(); ++k) ref.update(k, p[k], values(as[k]), rows[k], 1e-2);
    for (size_t k = 0; k < ps.size(); ++k)
      EXPECT_LT(worst_diff(values(ps[k]), p[k]), 1e-11) << "param " << k << " step " << step;
  }
}

TEST(Lomo, bf16_parameters_accumulate_updates_below_their_precision_in_an_f32_master) {
  // Just below 1 the bf16 spacing is 2^-8 = 0.0039, so one step of lr * g = 1e-3 stored directly
  // would round back to 1 every time. The f32 master accumulates ten of them: 0.99, which rounds
  // to 253/256 = 0.98828125.
  Tensor p = ones({4}, DType::BF16).requires_grad_();
  FusedOptimizer opt({{"p", p}}, {});
  for (int i = 0; i < 10; ++i) opt.apply(ops::sum(p.to(DType::F32)), 1e-3);
  const auto st = opt.state();
  ASSERT_EQ(st.size(), 1u);
  EXPECT_EQ(st[0].first, "p/master");
  EXPECT_NEAR(values(st[0].second)[0], 0.99, 1e-6);  // ten f32 subtractions of 1e-3
  EXPECT_EQ(values(p), std::vector<double>(4, 0.98828125));
}

// A checkpoint of the other device's dtype: a bf16 (CUDA) run saves "p/master", which an f32 run
// has no slot for: the saved master replaces the f32 weights it was rounded from. An f32 run's
// checkpoint has none, which a bf16 run needs: its master starts from the weights loaded.
TEST(Lomo, masters_cross_between_bf16_and_f32_runs) {
  for (const char* name : {"lomo", "adalomo"}) {
    SCOPED_TRACE(name);
    Tensor w32 = zeros({4, 3}).requires_grad_();
    FusedOptimizer f32({{"w", w32}}, {.name = name});
    Tensor w16 = full({4, 3}, 1.0, DType::BF16).requires_grad_();
    FusedOptimizer b16({{"w", w16}}, {.name = name});
    auto saved = b16.state();  // with "w/master"
    std::vector<std::pair<std::string, Tensor>> entries;
    for (const auto& [key, t] : saved)
      entries.emplace_back(key, key == "w/master" ? full({4, 3}, 1.0 + 1.0 / 1024) : t.clone());
    f32.load_state(entries);
    EXPECT_EQ(values(w32), std::vector<double>(12, 1.0 + 1.0 / 1024));
    std::vector<std::pair<std::string, Tensor>> plain;  // the f32 run's: no master
    for (const auto& [key, t] : f32.state()) plain.emplace_back(key, t.clone());
    w16.detach().copy_(full({4, 3}, 0.5, DType::BF16));  // the weights the checkpoint loaded
    b16.load_state(plain);
    const auto st = b16.state();
    EXPECT_EQ(values(st.back().second), std::vector<double>(12, 0.5)) << st.back().first;
    auto bad = entries;
    bad.back().second = zeros({3});
    EXPECT_NE(error_of([&] { f32.load_state(bad); }).find("'w/master' has shape (3,)"),
              std::string::npos);
  }
}

// ---- training and memory ----

double train(const std::string& name, double lr, int steps, double* first) {
  Batch b = fixed_batch();
  Generator g(3);
  GPT model(tiny_gpt(), g);
  FusedOptimizer opt(named_params(model.parameters()),
                     {.name = name, .weight_decay = 0.0, .max_norm = 1.0});
  double loss = 0;
  for (int s = 0; s < steps; ++s) {
    Tensor l = model.loss(b.x, b.y);
    loss = l.item();
    if (s == 0) *first = loss;
    opt.backward_step(l, lr);
  }
  return loss;
}

TEST(Lomo, lomo_and_adalomo_lower_the_loss_of_a_tiny_gpt) {
  for (const auto& [name, lr] : {std::pair{"lomo", 0.5}, std::pair{"adalomo", 3e-2}}) {
    double first = 0;
    const double last = train(name, lr, 30, &first);
    // ln 64 = 4.16 at the start; the batch is learnable, so a working optimizer takes a large
    // bite in 30 steps. A wrong sign diverges, a zero update stays at 4.16.
    EXPECT_NEAR(first, std::log(64.0), 0.2) << name;
    EXPECT_LT(last, first - 1.0) << name << ": " << first << " -> " << last;
  }
}

TEST(Lomo, gradient_memory_stays_within_the_largest_parameter) {
  // Untied, so every parameter's gradient is complete as soon as its op is differentiated (a tied
  // embedding's lives from the head to the embedding lookup, i.e. through the whole backward). No
  // op delivers more than one weight matrix; a Linear's node delivers its weight's and its bias's
  // gradients together (one kernel computes both), so the bound is the largest parameter together
  // with its bias.
  Batch b = fixed_batch();
  Generator g(3);
  GPT model(tiny_gpt(/*tied=*/false), g);
  const auto params = named_params(model.parameters());
  int64_t largest = 0, total = 0;
  for (const auto& [name, p] : params) {
    int64_t bytes = int64_t(p.nbytes());
    const std::string suffix = "weight";
    if (name.size() > suffix.size() && name.ends_with(suffix))
      for (const auto& [other, q] : params)
        if (other == name.substr(0, name.size() - suffix.size()) + "bias")
          bytes += int64_t(q.nbytes());
    largest = std::max(largest, bytes);
    total += int64_t(p.nbytes());
  }

  // A probe at every gradient-ready event, registered before the optimizer's hooks so it runs
  // first, before LOMO frees anything: allocator bytes, and bytes of gradients the tensors hold.
  struct Event {
    int64_t current, held;
  };
  std::vector<Event> events;
  auto held_now = [&] {
    int64_t h = 0;
    for (const auto& [name, p] : params)
      if (p.grad().defined()) h += int64_t(p.grad().nbytes());
    return h;
  };
  for (const auto& [name, p] : params)
    register_grad_hook(p, [&](Tensor&) {
      events.push_back({memory_stats(Device::cpu()).current_bytes, held_now()});
    });
  FusedOptimizer opt(params, {.name = "lomo"});

  auto pass = [&](bool lomo) {
    events.clear();
    Tensor loss = model.loss(b.x, b.y);
    const int64_t base = memory_stats(Device::cpu()).current_bytes;
    if (lomo) {
      opt.apply(loss, 1e-3);
    } else {
      backward(loss);
    }
    std::vector<Event> out = events;
    for (Event& e : out) e.current -= base;
    return out;
  };
  const std::vector<Event> kept = pass(false);  // AdamW's way: every gradient kept to the end
  model.zero_grad();
  const std::vector<Event> fused = pass(true);
  ASSERT_EQ(kept.size(), params.size());
  ASSERT_EQ(fused.size(), kept.size());
  EXPECT_EQ(kept.back().held, total);

  // Both passes run the same graph in the same order, so at event k they hold the same activations
  // and intermediate gradients: the allocator's difference is exactly the parameter-gradient bytes
  // LOMO has released. Measured that way, the bytes LOMO still holds must equal what its tensors
  // say (a gradient dropped from .grad but kept alive elsewhere would show here) and stay within
  // the largest parameter and its bias (gradients kept to the end would reach `total`).
  int64_t peak = 0;
  for (size_t k = 0; k < kept.size(); ++k) {
    const int64_t held = kept[k].held - (kept[k].current - fused[k].current);
    EXPECT_EQ(held, fused[k].held) << "event " << k;
    peak = std::max(peak, held);
  }
  EXPECT_GT(peak, 0);
  EXPECT_LE(peak, largest);
  EXPECT_EQ(opt.peak_grad_bytes(), peak);
  std::cout << "[ gradient bytes ] LOMO peak " << peak << ", largest parameter with its bias "
            << largest << ", AdamW (all gradients) " << total << "\n";
  EXPECT_LT(3 * peak, total);
}

// ---- checkpoints ----

class AdaLomoCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("tessera_lomo_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(AdaLomoCheckpoint, resume_matches_uninterrupted_run_bit_for_bit) {
  const LomoOptions o{.name = "adalomo", .weight_decay = 0.1, .max_norm = 0.5};
  Batch b = fixed_batch();
  auto steps = [&](GPT& m, FusedOptimizer& opt, int n) {
    for (int s = 0; s < n; ++s) opt.backward_step(m.loss(b.x, b.y), 1e-2);
  };

  Generator g1(3);
  GPT straight(tiny_gpt(), g1);
  FusedOptimizer straight_opt(named_params(straight.parameters()), o);
  steps(straight, straight_opt, 4);

  const std::string file = (dir_ / "step_2.h5").string();
  {
    Generator g2(3);
    GPT first(tiny_gpt(), g2);
    FusedOptimizer opt(named_params(first.parameters()), o);
    steps(first, opt, 2);
    CheckpointData ck;
    ck.model = first.parameters();
    ck.optimizer = opt.state();
    ck.trainer_ints["step"] = opt.step_count();
    save_checkpoint(file, ck);
  }
  Generator g3(4);  // other weights: everything must come from the file
  GPT resumed(tiny_gpt(), g3);
  FusedOptimizer opt(named_params(resumed.parameters()), o);
  const CheckpointData back = load_checkpoint(file);
  load_model_into(file, resumed.parameters());
  opt.load_state(back.optimizer);
  opt.set_step_count(back.trainer_ints.at("step"));
  steps(resumed, opt, 2);

  for (const auto& [name, p] : straight.parameters())
    EXPECT_EQ(bytes(p), bytes(resumed.parameter(name))) << name;
  const auto a = straight_opt.state(), r = opt.state();
  ASSERT_EQ(a.size(), r.size());
  for (size_t k = 0; k < a.size(); ++k)
    EXPECT_EQ(bytes(a[k].second), bytes(r[k].second)) << a[k].first;
  EXPECT_EQ(opt.step_count(), 4);
}

TEST(AdaLomo, load_state_checks_every_key_and_shape_before_copying) {
  Tensor w = zeros({3, 4}).requires_grad_(), bias = zeros({4}).requires_grad_();
  FusedOptimizer opt({{"w", w}, {"b", bias}}, {.name = "adalomo"});
  const auto st = opt.state();
  ASSERT_EQ(st.size(), 3u);  // w/row (3), w/col (4), b/v (4)
  auto good = [] {
    return std::vector<std::pair<std::string, Tensor>>{
        {"w/row", full({3}, 1.0)}, {"w/col", full({4}, 2.0)}, {"b/v", full({4}, 3.0)}};
  };

  auto e = good();
  e[2].second = full({3}, 3.0);  // wrong shape, after two good entries
  std::string msg = error_of([&] { opt.load_state(e); });
  EXPECT_NE(msg.find("'b/v' has shape (3,) but the optimizer's has shape (4,)"), std::string::npos)
      << msg;
  EXPECT_EQ(values(st[0].second), std::vector<double>(3, 0.0)) << "nothing may be copied";

  e = good();
  e.pop_back();
  msg = error_of([&] { opt.load_state(e); });
  EXPECT_NE(msg.find("no entry for 'b/v'"), std::string::npos) << msg;

  e = good();
  e.push_back({"b/row", zeros({4})});
  msg = error_of([&] { opt.load_state(e); });
  EXPECT_NE(msg.find("'b/row' is not a state key"), std::string::npos) << msg;

  e = good();
  e.push_back(e[0]);
  msg = error_of([&] { opt.load_state(e); });
  EXPECT_NE(msg.find("two entries for 'w/row'"), std::string::npos) << msg;

  opt.load_state(good());
  EXPECT_EQ(values(st[1].second), std::vector<double>(4, 2.0));  // state() aliases the live state
}

// optim.loss_scale through the trainer's optimizer (LomoStep): the loss is multiplied by it and
// the gradients divided by it, so a power of two leaves every update bit for bit, clipping and
// the reported norm included. (A scale applied on one side only would shrink the update
// 1024-fold.)
TEST(LomoStep, loss_scale_multiplies_the_loss_and_divides_the_gradients) {
  for (const char* name : {"lomo", "adalomo"}) {
    SCOPED_TRACE(name);
    dist::CommOptions co;
    co.backend = "single";
    auto comm = dist::make_communicator(co, dist::LaunchInfo{});
    const Batch b = fixed_batch();
    std::vector<std::vector<unsigned char>> weights[2];
    double norms[2] = {0, 0};
    for (int k = 0; k < 2; ++k) {
      Generator g(5);
      GPT m(tiny_gpt(), g);
      LomoOptions o{.name = name, .clip_value = 0.5, .loss_scale = k ? 1024.0 : 1.0,
                    .max_norm = 0.1};
      LomoStep opt(named_params(m.parameters()), o, *comm);
      opt.backward(m.loss(b.x, b.y), true);
      norms[k] = *opt.grad_norm();
      opt.step(1e-2);
      for (const auto& [n, p] : m.parameters()) weights[k].push_back(bytes(p));
    }
    EXPECT_EQ(norms[0], norms[1]);
    EXPECT_EQ(weights[0], weights[1]);
  }
}

TEST(Lomo, bad_options_and_parameters_are_errors_naming_them) {
  Tensor w = zeros({2, 2}).requires_grad_();
  EXPECT_NE(error_of([&] {
              FusedOptimizer({{"w", w}}, {.name = "adam"});
            }).find("'adam'"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              FusedOptimizer({{"w", w}}, {.loss_scale = 0});
            }).find("loss_scale"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              FusedOptimizer({{"w", w}, {"v", w}}, {});
            }).find("same tensor"),
            std::string::npos);
  Tensor frozen = zeros({2});
  EXPECT_NE(error_of([&] { FusedOptimizer({{"f", frozen}}, {}); }).find("'f'"), std::string::npos);
}

// The kernel-table entries behind FusedOptimizer (backend/kernels.h) refuse what they cannot
// update, naming the tensor: a bf16 parameter without its own master, a state of the wrong size.
TEST(Lomo, update_kernels_name_bad_arguments) {
  const Kernels& k = cpu::kernels();
  Tensor p = zeros({4, 3}, DType::BF16), g = zeros({4, 3}, DType::BF16);
  Tensor master = zeros({4, 3});
  EXPECT_NE(error_of([&] { k.lomo_step(p, p, g, {}, 0.1, 1.0); }).find("master"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              k.adalomo_step(p, master, g, zeros({5}), zeros({3}), Tensor(), {}, 0.5, 0.1, 0.0);
            }).find("rows x cols"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              k.lomo_grad_sum_squares(zeros({1}), g, 1.0);  // f32, not f64
            }).find("f64"),
            std::string::npos);
  Tensor gw = ones({4, 3});
  Tensor out = zeros({2}, DType::F64);
  k.lomo_grad_sum_squares(out.narrow(0, 1, 1), gw, 2.0);  // (1 / 2)^2 over 12 elements
  EXPECT_EQ(values(out), (std::vector<double>{0.0, 3.0}));
}

}  // namespace
}  // namespace tessera
