// cross_entropy and token_losses: values against hand-computed losses, stability at +-1000,
// ignore_index, gradients by central differences, and the errors for bad targets and shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "autograd/autograd.h"
#include "backend/profile.h"
#include "core/storage.h"
#include "gradcheck.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::gradcheck;

namespace {

Tensor targets_of(const std::vector<int32_t>& t, const Shape& shape) {
  return from_vector<int32_t>(t, shape, DType::I32);
}


}  // namespace

// f32 results of order 1 after a few roundings (the kernel works in double): 1e-6 is a few ulps.
constexpr double kF32Tol = 1e-6;

TEST(CrossEntropy, uniform_row_costs_log_V) {
  // Equal logits give probability 1/V to every class, whatever the target.
  Tensor logits = full({2, 5}, 3.0);
  Tensor loss = ops::cross_entropy(logits, targets_of({0, 4}, {2}));
  EXPECT_EQ(loss.shape(), Shape{});
  EXPECT_NEAR(loss.item(), std::log(5.0), kF32Tol);
  // Large enough (64 x 1000) that the kernel splits rows across threads.
  std::vector<int32_t> t(64);
  for (size_t i = 0; i < t.size(); ++i) t[i] = int32_t(i * 15);
  loss = ops::cross_entropy(zeros({64, 1000}), targets_of(t, {64}));
  EXPECT_NEAR(loss.item(), std::log(1000.0), kF32Tol * 10);  // lse ~ 7 rounds to f32 once
}

TEST(CrossEntropy, value_is_mean_of_minus_log_probability) {
  // Row 0: logits [0, ln 2, ln 3] -> p = [1, 2, 3] / 6, target 2: -log(1/2).
  // Row 1: same logits, target 0: -log(1/6). Mean: (ln 2 + ln 6) / 2.
  const float l2 = float(std::log(2.0)), l3 = float(std::log(3.0));
  Tensor logits = from_vector<float>({0, l2, l3, 0, l2, l3}, {2, 3});
  Tensor loss = ops::cross_entropy(logits, targets_of({2, 0}, {2}));
  EXPECT_NEAR(loss.item(), (std::log(2.0) + std::log(6.0)) / 2, kF32Tol);
}

TEST(CrossEntropy, leading_dimensions_are_flattened) {
  Generator g(1);
  Tensor logits = randn({2, 3, 4}, g, DType::F64);
  Tensor t = targets_of({0, 1, 2, 3, 0, 1}, {2, 3});
  Tensor flat = ops::cross_entropy(logits.reshape({6, 4}), t.reshape({6}));
  EXPECT_DOUBLE_EQ(ops::cross_entropy(logits, t).item(), flat.item());
}

TEST(CrossEntropy, large_logits_stay_finite) {
  // Row 0: the target holds all the mass, loss log(1 + e^-2000) = 0.
  // Row 1: the target is 2000 below the other logit, loss 2000 (+ log(1 + e^-2000)).
  Tensor logits = from_vector<float>({1000, -1000, 1000, -1000}, {2, 2});
  Tensor loss = ops::cross_entropy(logits, targets_of({0, 1}, {2}));
  EXPECT_TRUE(std::isfinite(loss.item()));
  EXPECT_NEAR(loss.item(), 1000.0, kF32Tol * 1000);  // relative: the loss is ~1000
  logits.requires_grad_();
  ops::cross_entropy(logits, targets_of({0, 1}, {2})).backward();
  // d/dlogits = (softmax - onehot) / 2: row 0 [0, 0], row 1 [0.5, -0.5].
  EXPECT_EQ(logits.grad().to_vector<float>(), (std::vector<float>{0, 0, 0.5f, -0.5f}));
}

TEST(CrossEntropy, ignored_rows_are_excluded_from_the_mean) {
  Generator g(2);
  Tensor logits = randn({4, 6}, g, DType::F64);
  Tensor loss = ops::cross_entropy(logits, targets_of({1, -100, 5, -100}, {4}));
  // The same loss from the two valid rows (0 and 2) alone.
  std::vector<double> all = logits.to_vector<double>();
  std::vector<double> kept(all.begin(), all.begin() + 6);
  kept.insert(kept.end(), all.begin() + 12, all.begin() + 18);
  Tensor valid = from_vector<double>(kept, {2, 6}, DType::F64);
  Tensor expected = ops::cross_entropy(valid, targets_of({1, 5}, {2}));
  EXPECT_NEAR(loss.item(), expected.item(), 1e-14);  // identical sums of two f64 terms
}

TEST(CrossEntropy, ignored_rows_get_exactly_zero_gradient) {
  Generator g(3);
  Tensor logits = randn({3, 4}, g).requires_grad_();
  ops::cross_entropy(logits, targets_of({2, 7, 0}, {3}), /*ignore_index=*/7).backward();
  std::vector<float> grad = logits.grad().to_vector<float>();
  for (int v = 0; v < 4; ++v) EXPECT_EQ(grad[size_t(4 + v)], 0.0f) << "class " << v;
  // A valid row's gradient is (p - onehot) / 2 and sums to 0 over the classes.
  double row0 = 0;
  for (int v = 0; v < 4; ++v) row0 += grad[size_t(v)];
  EXPECT_NEAR(row0, 0.0, kF32Tol);
  EXPECT_LT(grad[2], 0.0f);  // the target's probability is below 1
}

// With the targets' host copy, the check and the count of valid rows read that copy (nothing read
// back), and the loss and gradient are the same bits.
TEST(CrossEntropy, host_targets_give_the_same_loss_and_gradient_without_reading_back) {
  Generator g(5);
  const Tensor x = randn({4, 5}, g);
  const Tensor targets = targets_of({1, -100, 4, 0}, {4});
  Tensor a = x.clone().requires_grad_(), b = x.clone().requires_grad_();
  Tensor la = ops::cross_entropy(a, targets);
  const TransferStats before = transfer_stats();
  Tensor lb = ops::cross_entropy(b, targets, -100, targets.clone());
  lb.backward();
  EXPECT_EQ(transfer_stats().host_readout_bytes, before.host_readout_bytes);
  la.backward();
  EXPECT_EQ(la.item(), lb.item());
  EXPECT_EQ(a.grad().to_vector<float>(), b.grad().to_vector<float>());
  const std::string msg = error_of([&] {
    ops::cross_entropy(x, targets, -100, targets_of({1, -100, 9, 0}, {4}));
  });
  EXPECT_NE(msg.find("target 9 at position 2"), std::string::npos) << msg;
}

TEST(CrossEntropy, all_rows_ignored_gives_zero_loss_and_zero_gradient) {
  Generator g(4);
  Tensor logits = randn({2, 3}, g).requires_grad_();
  Tensor loss = ops::cross_entropy(logits, targets_of({-100, -100}, {2}));
  EXPECT_EQ(loss.item(), 0.0);
  loss.backward();
  EXPECT_EQ(logits.grad().to_vector<float>(), std::vector<float>(6, 0.0f));
}

TEST(CrossEntropy, gradcheck_with_an_ignored_row) {
  Generator g(5);
  Tensor logits = randn({2, 3, 5}, g);
  Tensor t = targets_of({4, 0, -100, 2, 1, 3}, {2, 3});
  EXPECT_TRUE(gradcheck(
      [t](const std::vector<Tensor>& in) { return ops::cross_entropy(in[0], t); }, {logits}));
}

TEST(CrossEntropy, target_out_of_range_error_names_target_position_and_V) {
  Tensor logits = zeros({3, 5});
  std::string msg = error_of([&] { ops::cross_entropy(logits, targets_of({0, 1, 9}, {3})); });
  EXPECT_NE(msg.find("target 9"), std::string::npos) << msg;
  EXPECT_NE(msg.find("position 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[0, 5)"), std::string::npos) << msg;
  msg = error_of([&] { ops::cross_entropy(logits, targets_of({-1, 0, 0}, {3})); });
  EXPECT_NE(msg.find("target -1"), std::string::npos) << msg;
}

TEST(CrossEntropy, shape_mismatch_error_names_both_shapes) {
  Tensor logits = zeros({2, 3, 5});
  std::string msg = error_of([&] { ops::cross_entropy(logits, targets_of({0, 1, 2}, {3})); });
  EXPECT_NE(msg.find("(2, 3, 5)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3,)"), std::string::npos) << msg;
}

TEST(CrossEntropy, float_targets_are_an_error) {
  std::string msg = error_of([] { ops::cross_entropy(zeros({2, 3}), zeros({2})); });
  EXPECT_NE(msg.find("i32"), std::string::npos) << msg;
}

TEST(CrossEntropy, padding_columns_take_no_part_and_get_zero_gradient) {
  // Logits (N, 8) of which the first 5 columns are classes: the loss and the gradient of those
  // columns equal cross-entropy over the 5 columns alone (the same double arithmetic: exactly),
  // and the padding's gradient is exactly 0 whatever its values.
  Generator g(4);
  const Tensor logits = randn({3, 2, 8}, g, DType::F64);
  const Tensor t = targets_of({0, 4, -100, 2, 3, 1}, {3, 2});
  Tensor padded = logits.detach(), plain = logits.narrow(2, 0, 5).contiguous().detach();
  padded.requires_grad_();
  plain.requires_grad_();
  const Tensor a = ops::cross_entropy(padded, t, -100, {}, 5);
  const Tensor b = ops::cross_entropy(plain, t);
  EXPECT_EQ(a.item(), b.item());
  a.backward();
  b.backward();
  EXPECT_EQ(tessera::testing::max_abs_diff(padded.grad().narrow(2, 0, 5), plain.grad()), 0.0);
  const std::vector<double> pad = tessera::testing::values(padded.grad().narrow(2, 5, 3));
  for (double v : pad) EXPECT_EQ(v, 0.0);
  // A target among the padding is out of range, as is a class count past the columns.
  std::string e = error_of([&] { ops::cross_entropy(padded, targets_of({0, 5, 1, 1, 1, 1}, {3, 2}), -100, {}, 5); });
  EXPECT_NE(e.find("target 5 at position 1"), std::string::npos) << e;
  EXPECT_NE(e.find("is outside [0, 5)"), std::string::npos) << e;
  e = error_of([&] { ops::cross_entropy(padded, t, -100, {}, 9); });
  EXPECT_NE(e.find("cross_entropy: classes 9 must be in [0, 8]"), std::string::npos) << e;
}

namespace {

// A linear head and its loss, the shape of a GPT's last two ops: x (R, K), w (V, K), targets (R).
struct Head {
  Tensor x, w, targets;
  explicit Head(uint64_t seed, int64_t R = 64, int64_t K = 8, int64_t V = 1000) {
    Generator g(seed);
    x = randn({R, K}, g, DType::F64).requires_grad_();
    w = randn({V, K}, g, DType::F64).requires_grad_();
    std::vector<int32_t> t(static_cast<size_t>(R));
    for (size_t i = 0; i < t.size(); ++i) t[i] = i % 7 == 3 ? -100 : int32_t((i * 37) % V);
    targets = targets_of(t, {R});
  }
  std::vector<double> grads() const {
    std::vector<double> v = x.grad().to_vector<double>(), b = w.grad().to_vector<double>();
    v.insert(v.end(), b.begin(), b.end());
    return v;
  }
};

}  // namespace

// A GPT's loss: the logits are a temporary of the forward, so the backward writes dlogits over
// them instead of allocating a second (N, V) tensor (the step's largest). The gradients are the
// bits of the out-of-place backward (a run whose logits the caller holds), and the backward's
// peak stays under one logits' worth of bytes above what the forward left (out of place it is
// the logits' size plus the head's dX and dW).
TEST(CrossEntropy, the_gradient_takes_the_logits_memory_when_nothing_else_holds_it) {
  const int64_t R = 64, V = 1000, logits_bytes = R * V * 8;
  Head held(7), temporary(7);
  const Tensor logits = ops::linear(held.x, held.w);
  const std::vector<double> before = logits.to_vector<double>();
  ops::cross_entropy(logits, held.targets).backward();
  EXPECT_EQ(logits.to_vector<double>(), before) << "logits the caller holds were overwritten";

  Tensor loss = ops::cross_entropy(ops::linear(temporary.x, temporary.w), temporary.targets);
  const int64_t start = memory_stats(Device::cpu()).current_bytes;
  reset_peak_memory(Device::cpu());
  loss.backward();
  const int64_t grown = memory_stats(Device::cpu()).peak_bytes - start;
  EXPECT_LT(grown, logits_bytes / 2) << "the backward allocated a second logits tensor";
  EXPECT_EQ(temporary.grads(), held.grads());
}

// With the graph retained, the closure runs again and reads its logits a second time: they must
// still be the logits. Two retained backward passes accumulate exactly twice one pass.
TEST(CrossEntropy, a_retained_graph_keeps_its_logits_for_the_next_backward) {
  Head once(8), twice(8);
  ops::cross_entropy(ops::linear(once.x, once.w), once.targets).backward();
  const Tensor loss = ops::cross_entropy(ops::linear(twice.x, twice.w), twice.targets);
  backward(loss, {}, {.retain_graph = true});
  backward(loss, {}, {.retain_graph = true});
  std::vector<double> doubled = once.grads();
  for (double& v : doubled) v *= 2;  // exact in binary floating point
  EXPECT_EQ(twice.grads(), doubled);
}

namespace {

// Calls of `kernel` while f runs.
int64_t calls_of(const char* kernel, const std::function<void()>& f) {
  profile::start();
  f();
  profile::stop();
  int64_t n = 0;
  for (const profile::Row& r : profile::rows())
    if (r.kernel == kernel) n += r.calls;
  return n;
}

}  // namespace

// The fused classifier (fused_dy): the forward writes the gradient over the logits, and the
// backward, handed the dy it was promised, writes nothing more. The loss and every gradient are
// the unfused op's bit for bit (the same per-row formula from the same stored lse), for dy 1 and
// for the 1/4 of four accumulated micro-batches, ignored rows included.
TEST(CrossEntropy, the_fused_classifier_gives_the_unfused_loss_and_gradients_bit_for_bit) {
  for (const double dy : {1.0, 0.25}) {
    Head unfused(9), fused(9);
    const Tensor want = ops::cross_entropy(ops::linear(unfused.x, unfused.w), unfused.targets);
    ops::scale(want, dy).backward();
    Tensor got;
    EXPECT_EQ(calls_of("cross_entropy_fused",
                       [&] {
                         got = ops::cross_entropy(ops::linear(fused.x, fused.w), fused.targets,
                                                  -100, {}, 0, dy);
                       }),
              1);
    EXPECT_EQ(calls_of("cross_entropy_backward", [&] { ops::scale(got, dy).backward(); }), 0);
    EXPECT_EQ(got.item(), want.item()) << dy;
    EXPECT_EQ(fused.grads(), unfused.grads()) << dy;
  }
}

// A dy other than the one promised (a loss scaled before its backward: a spike test's injected
// scale) scales the fused gradient by their ratio: the unfused gradients to the rounding of that
// product (f64: 1e-14 of the largest).
TEST(CrossEntropy, a_dy_other_than_the_promised_one_scales_the_fused_gradient) {
  Head unfused(10), fused(10);
  ops::scale(ops::cross_entropy(ops::linear(unfused.x, unfused.w), unfused.targets), 3.0)
      .backward();
  ops::scale(ops::cross_entropy(ops::linear(fused.x, fused.w), fused.targets, -100, {}, 0, 1.0),
             3.0)
      .backward();
  const std::vector<double> want = unfused.grads(), got = fused.grads();
  double scale = 0;
  for (double v : want) scale = std::max(scale, std::fabs(v));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-14 * scale) << i;
}

// Where the logits are not the op's to give up, the unfused path runs and they stay the logits:
// a leaf (a parameter's values), logits another view also holds, logits computed without a
// gradient wanted. A retained graph keeps the fused gradient for its next pass, even where the
// first scaled it (a dy of 3 against the promised 1): two passes accumulate twice one, to the
// rounding of that scaling (f64: 1e-14 of the largest).
TEST(CrossEntropy, the_fused_classifier_never_overwrites_logits_it_was_not_given) {
  Head h(11);
  Tensor leaf = ops::linear(h.x, h.w).detach().requires_grad_();
  const std::vector<double> leaf_values = leaf.to_vector<double>();
  EXPECT_EQ(calls_of("cross_entropy_fused",
                     [&] { ops::cross_entropy(leaf, h.targets, -100, {}, 0, 1.0).backward(); }),
            0);
  EXPECT_EQ(leaf.to_vector<double>(), leaf_values);

  const Tensor logits = ops::linear(h.x, h.w), other_view = logits.view({-1});
  const std::vector<double> values = logits.to_vector<double>();
  ops::cross_entropy(logits, h.targets, -100, {}, 0, 1.0).backward();
  EXPECT_EQ(logits.to_vector<double>(), values);
  {
    NoGradGuard no_grad;
    const Tensor eval = ops::linear(h.x, h.w);
    EXPECT_EQ(calls_of("cross_entropy_fused",
                       [&] { ops::cross_entropy(eval, h.targets, -100, {}, 0, 1.0); }),
              0);
  }

  Head once(12), twice(12);
  ops::scale(ops::cross_entropy(ops::linear(once.x, once.w), once.targets), 3.0).backward();
  const Tensor loss = ops::scale(
      ops::cross_entropy(ops::linear(twice.x, twice.w), twice.targets, -100, {}, 0, 1.0), 3.0);
  backward(loss, {}, {.retain_graph = true});
  backward(loss, {}, {.retain_graph = true});
  const std::vector<double> one = once.grads(), two = twice.grads();
  double scale = 0;
  for (double v : one) scale = std::max(scale, std::fabs(v));
  ASSERT_EQ(two.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(two[i], 2 * one[i], 1e-14 * scale) << i;
}

// token_losses: each row's loss unreduced. Its values are -log_softmax at the target (the same
// f64 arithmetic as cross_entropy's kernel: 1e-14 allows the two ops' different summation order
// of the lse), exactly 0 on ignored rows, and their mean over valid rows is cross_entropy.
TEST(TokenLosses, each_row_is_minus_the_log_probability_of_its_target) {
  Generator g(6);
  const Tensor logits = randn({2, 3, 7}, g, DType::F64);
  const Tensor t = targets_of({6, 0, -100, 3, 1, 5}, {2, 3});
  const Tensor losses = ops::token_losses(logits, t);
  EXPECT_EQ(losses.shape(), (Shape{2, 3}));
  EXPECT_EQ(losses.dtype(), DType::F64);
  const std::vector<double> got = losses.to_vector<double>();
  const std::vector<double> lp = ops::log_softmax(logits).to_vector<double>();
  const std::vector<int32_t> tv = t.to_vector<int32_t>();
  double sum = 0;
  for (size_t n = 0; n < 6; ++n) {
    if (tv[n] == -100) {
      EXPECT_EQ(got[n], 0.0) << "row " << n;
      continue;
    }
    EXPECT_NEAR(got[n], -lp[n * 7 + size_t(tv[n])], 1e-14) << "row " << n;
    sum += got[n];
  }
  EXPECT_NEAR(sum / 5, ops::cross_entropy(logits, t).item(), 1e-14);
}

TEST(TokenLosses, gradcheck_with_an_ignored_row_and_padding_columns) {
  // Every row weighted by its own upstream gradient (gradcheck's random u), one row ignored, and
  // the last two of 6 columns padding (classes 4): their gradient must be 0, which central
  // differences see as the loss not moving with them.
  Generator g(7);
  const Tensor logits = randn({3, 2, 6}, g);
  const Tensor t = targets_of({3, -100, 0, 2, 1, 3}, {3, 2});
  EXPECT_TRUE(gradcheck(
      [t](const std::vector<Tensor>& in) { return ops::token_losses(in[0], t, -100, {}, 4); },
      {logits}));
}

TEST(TokenLosses, f32_logits_give_f32_losses_and_bad_targets_are_named) {
  // (bf16 logits, f32 losses: the CUDA backend's, tests/cuda/test_cross_entropy_cuda.cpp.)
  Generator g(8);
  const Tensor logits = randn({4, 5}, g);
  const Tensor t = targets_of({4, 0, 2, -100}, {4});
  const Tensor losses = ops::token_losses(logits, t);
  EXPECT_EQ(losses.dtype(), DType::F32);
  // The same rows as the f64 op on the same values, rounded once to f32.
  EXPECT_EQ(losses.to_vector<float>(),
            ops::token_losses(logits.to(DType::F64), t).to(DType::F32).to_vector<float>());
  std::string msg = error_of([&] { ops::token_losses(logits, targets_of({4, 0, 5, 1}, {4})); });
  EXPECT_NE(msg.find("token_losses: target 5 at position 2"), std::string::npos) << msg;
  msg = error_of([&] { ops::token_losses(logits, targets_of({0, 1}, {2})); });
  EXPECT_NE(msg.find("token_losses: targets (2,) do not match logits (4, 5)"), std::string::npos)
      << msg;
}
