// The autograd engine: ordering, accumulation, hooks, no-grad, memory, recompute, errors.
#include <gtest/gtest.h>

#include "backend/profile.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;

namespace {

// y = x, counting how often its backward runs.
Tensor counting_identity(const Tensor& x, int* calls) {
  Tensor y = x.detach().clone();
  return record("counting_identity", y, {x}, [calls](const Tensor& dy, GradSink& g) {
    ++*calls;
    g.add(0, dy);
  });
}

std::vector<double> grad_of(const Tensor& t) { return t.grad().to_vector<double>(); }

// The kernels loss.backward() runs on a tensor of shape `full` whose narrows have shape `slice`:
// fills and sums (axpby) of the full gradient, copies of a slice.
struct NarrowKernels {
  int64_t fills = 0, sums = 0, slice_copies = 0;
};
NarrowKernels backward_counting_kernels(const Tensor& loss, const std::string& full,
                                        const std::string& slice) {
  profile::start();
  loss.backward();
  profile::stop();
  NarrowKernels n;
  for (const profile::Row& r : profile::rows()) {
    if (r.kernel == "copy" && r.shapes.rfind(slice, 0) == 0) n.slice_copies += r.calls;
    if (r.shapes.rfind(full, 0) != 0) continue;  // the first argument has the full shape
    if (r.kernel == "fill") n.fills += r.calls;
    if (r.kernel == "axpby") n.sums += r.calls;
  }
  return n;
}

}  // namespace

TEST(Autograd, shared_subgraph_runs_once_and_sums_both_paths) {
  Tensor x = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  int calls = 0;
  Tensor a = counting_identity(ops::mul(x, x), &calls);  // a = x^2, used twice below
  Tensor loss = ops::sum(ops::add(ops::scale(a, 3.0), ops::mul(a, x)));  // 3x^2 + x^3
  loss.backward();
  EXPECT_EQ(calls, 1);  // both consumers delivered before the shared node ran
  EXPECT_EQ(grad_of(x), (std::vector<double>{6 + 3, 12 + 12, 18 + 27}));  // 6x + 3x^2
}

TEST(Autograd, parameter_gradients_accumulate_across_backward_calls) {
  Tensor w = from_vector<double>({1, -2}, {2}).requires_grad_();
  Tensor x = from_vector<double>({3, 5}, {2});
  ops::sum(ops::mul(w, x)).backward();
  EXPECT_EQ(grad_of(w), (std::vector<double>{3, 5}));
  ops::sum(ops::mul(w, x)).backward();
  EXPECT_EQ(grad_of(w), (std::vector<double>{6, 10}));
  w.zero_grad();
  EXPECT_FALSE(w.grad().defined());
}

TEST(Autograd, leaf_gradients_do_not_alias_each_other) {
  // add's backward hands the same tensor to both inputs; each leaf must own its gradient.
  Tensor a = zeros({2}, DType::F64).requires_grad_(), b = zeros({2}, DType::F64).requires_grad_();
  ops::sum(ops::add(a, b)).backward();
  EXPECT_NE(a.grad().storage(), b.grad().storage());
  ops::sum(ops::scale(a, 2.0)).backward();
  EXPECT_EQ(grad_of(a), (std::vector<double>{3, 3}));
  EXPECT_EQ(grad_of(b), (std::vector<double>{1, 1}));
}

TEST(Autograd, hook_fires_once_per_parameter_when_its_gradient_is_final) {
  Tensor w = from_vector<double>({2}, {1}).requires_grad_();
  Tensor v = from_vector<double>({5}, {1}).requires_grad_();
  std::vector<std::pair<std::string, double>> fired;
  register_grad_hook(w, [&](Tensor& p) { fired.emplace_back("w", p.grad().item()); });
  register_grad_hook(v, [&](Tensor& p) { fired.emplace_back("v", p.grad().item()); });
  // w is used at the start and the end of the graph, v in the middle:
  Tensor h = ops::mul(w, w);          // w^2
  h = ops::mul(h, v);                 // w^2 v
  h = ops::add(h, ops::scale(w, 7));  // w^2 v + 7 w
  ops::sum(h).backward();
  ASSERT_EQ(fired.size(), 2u);
  // Each hook saw the complete gradient: dL/dw = 2 w v + 7 = 27, dL/dv = w^2 = 4.
  for (auto& [name, value] : fired) EXPECT_EQ(value, name == "w" ? 27.0 : 4.0) << name;
  ops::sum(ops::mul(w, v)).backward();  // a second backward fires each hook once more
  EXPECT_EQ(fired.size(), 4u);
}

TEST(Autograd, hook_may_consume_the_gradient) {
  // LOMO's pattern: apply the update inside the hook and drop the gradient at once.
  Tensor w = from_vector<double>({1, 1}, {2}).requires_grad_();
  register_grad_hook(w, [](Tensor& p) {
    Tensor g = p.grad();
    Tensor upd = p.detach();
    upd.copy_(from_vector<double>(
        {1 - 0.5 * g.to_vector<double>()[0], 1 - 0.5 * g.to_vector<double>()[1]}, {2}));
    p.zero_grad();
  });
  ops::sum(ops::scale(w, 4.0)).backward();
  EXPECT_FALSE(w.grad().defined());
  EXPECT_EQ(w.to_vector<double>(), (std::vector<double>{-1, -1}));
}

TEST(Autograd, no_grad_scope_records_nothing) {
  Tensor w = ones({3}).requires_grad_();
  {
    NoGradGuard ng;
    EXPECT_FALSE(grad_enabled());
    Tensor y = ops::scale(w, 2.0);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_TRUE(y.is_leaf());
  }
  EXPECT_TRUE(grad_enabled());
  EXPECT_TRUE(ops::scale(w, 2.0).requires_grad());
}

TEST(Autograd, intermediate_gradients_are_freed_once_consumed) {
  // A chain of 16 ops on a 1 MiB tensor. If intermediate gradients were kept until the end of
  // backward, peak memory during backward would grow by ~16 MiB; consumed-and-freed keeps it to a
  // few live tensors (the gradient in flight, the next one, and the leaf's accumulator).
  const int64_t n = 1 << 18;  // 1 MiB of f32
  const int64_t bytes = n * 4;
  Tensor x = ones({n}).requires_grad_();
  Tensor h = x;
  for (int i = 0; i < 16; ++i) h = ops::scale(h, 1.0);  // scale saves no activation
  Tensor loss = ops::sum(h);
  h = Tensor();
  reset_peak_memory(Device::cpu());
  const int64_t before = memory_stats(Device::cpu()).current_bytes;
  loss.backward();
  const int64_t peak = memory_stats(Device::cpu()).peak_bytes - before;
  EXPECT_LE(peak, 4 * bytes) << "peak extra bytes during backward: " << peak;
  EXPECT_EQ(x.grad().to_vector<float>()[0], 1.0f);
}

TEST(Autograd, backward_twice_needs_retain_graph) {
  Tensor w = ones({2}, DType::F64).requires_grad_();
  Tensor loss = ops::sum(ops::mul(w, w));
  loss.backward();
  std::string msg = error_of([&] { loss.backward(); });
  EXPECT_NE(msg.find("retain_graph"), std::string::npos) << msg;

  w.zero_grad();
  Tensor loss2 = ops::sum(ops::mul(w, w));
  backward(loss2, {}, {.retain_graph = true});
  backward(loss2, {}, {.retain_graph = true});
  EXPECT_EQ(grad_of(w), (std::vector<double>{4, 4}));
}

TEST(Autograd, backward_from_a_non_scalar_needs_a_gradient) {
  Tensor w = ones({2, 3}).requires_grad_();
  Tensor y = ops::scale(w, 2.0);
  std::string msg = error_of([&] { y.backward(); });
  EXPECT_NE(msg.find("(2, 3)"), std::string::npos) << msg;
  backward(y, full({2, 3}, 0.5));
  EXPECT_EQ(w.grad().to_vector<float>(), std::vector<float>(6, 1.0f));
}

TEST(Autograd, a_wrong_gradient_shape_is_an_error_naming_the_op) {
  Tensor x = ones({2, 3}).requires_grad_();
  Tensor y = record("broken_op", x.detach().clone(), {x}, [](const Tensor&, GradSink& g) {
    g.add(0, zeros({3, 2}));
  });
  std::string msg = error_of([&] { ops::sum(y).backward(); });
  EXPECT_NE(msg.find("broken_op"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3, 2)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 3)"), std::string::npos) << msg;
}

TEST(Autograd, gradient_flows_through_views_and_dtype_conversions) {
  Tensor w = arange(0, 6, 1, DType::F64).requires_grad_();
  Tensor y = w.view({2, 3}).transpose(0, 1).narrow(0, 1, 2).contiguous().to(DType::F32);
  // y = [[1, 4], [2, 5]] as f32; weights 1..4 pick each element once.
  Tensor u = from_vector<float>({1, 2, 3, 4}, {2, 2});
  ops::sum(ops::mul(y, u)).backward();
  EXPECT_EQ(w.grad().dtype(), DType::F64);
  EXPECT_EQ(grad_of(w), (std::vector<double>{0, 1, 3, 0, 2, 4}));
}

namespace {

// A small MLP block with dropout: the kind of function activation checkpointing wraps.
struct Block {
  Tensor w1, b1, w2;
  Tensor operator()(const Tensor& x) const {
    Tensor h = ops::gelu(ops::linear(x, w1, b1));
    h = ops::dropout(h, 0.25);
    return ops::add(x, ops::linear(h, w2));
  }
};

}  // namespace

// A fused projection split in three (GPT's q, k, v): the narrows' backwards write their slices into
// one zero-filled gradient of the split tensor, in place (GradSink::add_into with a GradRegion).
// Without that, each built its own zero-padded gradient and the engine summed them: three fills
// and two full-size sums.
TEST(Autograd, narrows_of_one_tensor_fill_one_gradient_buffer) {
  Tensor x = from_vector<double>(std::vector<double>(48, 1.0), {4, 12}).requires_grad_();
  // An intermediate, like the qkv projection; mul's backward is a binary kernel, so every axpby of
  // x's shape below would be a sum of gradients.
  Tensor h = ops::mul(x, full({4, 12}, 2.0, DType::F64));
  Tensor q = h.narrow(1, 0, 4), k = h.narrow(1, 4, 4), v = h.narrow(1, 8, 4);
  Tensor loss =
      ops::add(ops::add(ops::sum(q), ops::sum(ops::scale(k, 2.0))), ops::sum(ops::scale(v, 3.0)));
  const NarrowKernels n = backward_counting_kernels(loss, "f64 (4, 12)", "f64 (4, 4)");
  EXPECT_EQ(n.fills, 1);  // h's gradient, once
  EXPECT_EQ(n.sums, 0);   // no full-size sum of per-narrow gradients
  // Each narrow's gradient copied into its slice, which the engine knows still holds zeros (the
  // regions are disjoint): no read-add-write of the slice.
  EXPECT_EQ(n.slice_copies, 3);
  std::vector<double> want(48);
  for (int64_t i = 0; i < 48; ++i) want[size_t(i)] = 2.0 * double(1 + (i % 12) / 4);
  EXPECT_EQ(grad_of(x), want);
}

// The narrows of dim 0, delivered first-rows-first (each slice after the ones before it): still one
// zero-filled buffer and one copy per slice, no read-add-write.
TEST(Autograd, narrows_of_rows_fill_one_buffer_in_either_order) {
  Tensor x = ones({12, 2}, DType::F64).requires_grad_();
  Tensor h = ops::mul(x, full({12, 2}, 2.0, DType::F64));
  Tensor c = h.narrow(0, 8, 4), b = h.narrow(0, 4, 4), a = h.narrow(0, 0, 4);  // a runs first
  Tensor loss =
      ops::add(ops::add(ops::sum(a), ops::sum(ops::scale(b, 2.0))), ops::sum(ops::scale(c, 3.0)));
  const NarrowKernels n = backward_counting_kernels(loss, "f64 (12, 2)", "f64 (4, 2)");
  EXPECT_EQ(n.fills, 1);
  EXPECT_EQ(n.sums, 0);
  EXPECT_EQ(n.slice_copies, 3);
  std::vector<double> want(24);
  for (size_t i = 0; i < 24; ++i) want[i] = 2.0 * double(1 + i / 8);
  EXPECT_EQ(x.grad().to_vector<double>(), want);
}

// GradSink::add_into's second dtype: a contribution that can add into either f64 or f32 gets the
// leaf's own f32 gradient buffer when one is attached (the bf16 table and its f32 flat gradient on
// a GPU), and an f64 accumulator otherwise; it may add() another input's gradient meanwhile.
TEST(Autograd, add_into_takes_a_held_gradient_of_its_second_dtype) {
  auto op = [](const Tensor& p, const Tensor& q, std::vector<DType>* seen) {
    Tensor out = ops::add(p.detach(), q.detach());
    return record("two_dtypes", out, {p, q}, [seen](const Tensor& dy, GradSink& g) {
      g.add_into(0, DType::F64,
                 [&g, dy, seen](Tensor& acc, bool) {
                   seen->push_back(acc.dtype());
                   acc.copy_(ops::add(acc.detach().to(DType::F64), dy).to(acc.dtype()));
                   g.add(1, ops::scale(dy, 2.0));
                 },
                 {.also = DType::F32});
    });
  };
  for (const bool attached : {true, false}) {
    Tensor p = zeros({4}, DType::F64).requires_grad_(), q = zeros({4}, DType::F64).requires_grad_();
    Tensor buffer = full({4}, 0.5, DType::F32);
    if (attached) attach_grad(p, buffer);
    std::vector<DType> seen;
    ops::sum(ops::scale(op(p, q, &seen), 3.0)).backward();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0], attached ? DType::F32 : DType::F64);
    if (attached) {
      EXPECT_EQ(p.grad().data_ptr(), buffer.data_ptr()) << "added in place into the buffer";
      EXPECT_EQ(buffer.to_vector<float>(), std::vector<float>(4, 3.5f));
    } else {
      EXPECT_EQ(grad_of(p), std::vector<double>(4, 3.0));
    }
    EXPECT_EQ(grad_of(q), std::vector<double>(4, 6.0)) << "the closure's add() is delivered";
  }
}

// GradSink::add_into with several targets (a norm's dx, dw and db from one kernel): one call gets
// every accumulator at once; a leaf's attached buffer in place, an intermediate's pending gradient,
// nothing for an input without a gradient, and two accumulators apart for one tensor passed twice.
TEST(Autograd, add_into_hands_one_contribution_several_accumulators) {
  Tensor p = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  Tensor q = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  Tensor x = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  Tensor buffer = zeros({3}, DType::F64);
  attach_grad(q, buffer, /*zero=*/true);
  const Tensor h = ops::scale(x, 1.0), c = full({3}, 1.0, DType::F64);  // intermediate; constant
  struct Seen {
    bool defined, zero;
    const void* data;
  };
  std::vector<Seen> seen;
  Tensor out = record(
      "several", zeros({3}, DType::F64), {p, q, h, c, p}, [&seen](const Tensor& dy, GradSink& g) {
        std::vector<IntoTarget> targets;
        for (size_t i = 0; i < 5; ++i) targets.push_back({i, DType::F64, {.overwrites = true}});
        g.add_into(targets, [dy, &seen](std::vector<Into>& into) {
          for (size_t i = 0; i < into.size(); ++i) {
            Tensor& acc = into[i].acc;
            seen.push_back({acc.defined(), into[i].zero, acc.defined() ? acc.data_ptr() : nullptr});
            if (!acc.defined()) continue;
            const Tensor v = ops::scale(dy, double(i + 2));
            acc.copy_(into[i].zero ? v : ops::add(acc.detach(), v));
          }
        });
      });
  ops::sum(ops::scale(out, 1.0)).backward();
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_TRUE(seen[0].defined && seen[1].defined && seen[2].defined && seen[4].defined);
  EXPECT_FALSE(seen[3].defined) << "an input without a gradient gets no accumulator";
  EXPECT_EQ(seen[1].data, buffer.data_ptr()) << "q's attached buffer, in place";
  EXPECT_TRUE(seen[1].zero);
  EXPECT_NE(seen[0].data, seen[4].data) << "p twice: two accumulators";
  EXPECT_EQ(grad_of(p), std::vector<double>(3, 2.0 + 6.0));
  EXPECT_EQ(buffer.to_vector<double>(), std::vector<double>(3, 3.0));
  EXPECT_EQ(grad_of(x), std::vector<double>(3, 4.0));
}

// Overlapping narrows, one of them used twice: every contribution still adds.
TEST(Autograd, overlapping_narrows_add_their_gradients) {
  Tensor x = from_vector<double>(std::vector<double>(30, 1.0), {3, 10}).requires_grad_();
  Tensor h = ops::scale(x, 1.0);
  Tensor a = h.narrow(1, 0, 6), b = h.narrow(1, 4, 6);  // columns 4 and 5 in both
  Tensor loss = ops::add(ops::add(ops::sum(a), ops::sum(ops::scale(b, 10.0))),
                         ops::sum(ops::scale(b, 100.0)));
  loss.backward();
  std::vector<double> want(30);
  for (int64_t i = 0; i < 30; ++i) {
    const int64_t c = i % 10;
    want[size_t(i)] = (c < 6 ? 1.0 : 0.0) + (c >= 4 ? 110.0 : 0.0);
  }
  EXPECT_EQ(grad_of(x), want);
}

TEST(Autograd, recompute_gives_gradients_identical_to_no_recompute) {
  Generator g(11);
  Block blk{randn({16, 8}, g).requires_grad_(), randn({16}, g).requires_grad_(),
            randn({8, 16}, g).requires_grad_()};
  Tensor x0 = randn({4, 8}, g);

  auto run = [&](bool checkpoint) {
    for (Tensor* p : {&blk.w1, &blk.b1, &blk.w2}) p->zero_grad();
    Tensor x = x0.detach().clone().requires_grad_();
    manual_seed(5);
    Tensor y = checkpoint
                   ? recompute([&](const std::vector<Tensor>& in) { return blk(in[0]); }, {x})
                   : blk(x);
    Tensor y2 = blk(y);  // a second, un-checkpointed use of the same parameters
    ops::sum(ops::mul(y2, y2)).backward();
    return std::vector<std::vector<float>>{
        y2.to_vector<float>(), x.grad().to_vector<float>(), blk.w1.grad().to_vector<float>(),
        blk.b1.grad().to_vector<float>(), blk.w2.grad().to_vector<float>()};
  };
  auto plain = run(false);
  auto ckpt = run(true);
  ASSERT_EQ(plain.size(), ckpt.size());
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_EQ(plain[i], ckpt[i]) << "tensor " << i;
}

TEST(Autograd, recompute_drops_the_activations_of_its_function) {
  Generator g(12);
  Block blk{randn({256, 64}, g).requires_grad_(), randn({256}, g).requires_grad_(),
            randn({64, 256}, g).requires_grad_()};
  Tensor x = randn({64, 64}, g).requires_grad_();
  auto held_after_forward = [&](bool checkpoint) {
    const int64_t before = memory_stats(Device::cpu()).current_bytes;
    Tensor y = checkpoint
                   ? recompute([&](const std::vector<Tensor>& in) { return blk(in[0]); }, {x})
                   : blk(x);
    return memory_stats(Device::cpu()).current_bytes - before;
  };
  const int64_t plain = held_after_forward(false), ckpt = held_after_forward(true);
  // Without recompute two (64, 256) hidden activations stay saved (gelu's input, and the dropout
  // output that the second linear multiplies; dropout regenerates its mask instead of saving it)
  // besides the (64, 64) output; with recompute only the output is held.
  EXPECT_EQ(ckpt, 64 * 64 * 4);
  EXPECT_EQ(plain, 64 * 64 * 4 + 2 * 64 * 256 * 4);
}
