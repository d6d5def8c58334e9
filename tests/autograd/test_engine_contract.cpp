// The autograd engine's contract with its callers (autograd/autograd.h): which tensors may have a
// gradient, a hook or an attached buffer, and what an attached buffer reads as before, during and
// after a backward.
#include <gtest/gtest.h>

#include <functional>

#include "backend/profile.h"
#include "config/expect_contains.h"
#include "ops/ops.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;

TEST(AutogradContract, only_floating_leaves_take_a_gradient) {
  Tensor ids = zeros({3}, DType::I32);
  EXPECT_CONTAINS(error_of([&] { ids.requires_grad_(); }),
                  "requires_grad_() on a i32 tensor: only floating tensors have gradients");
  ids.requires_grad_(false);  // turning it off is always allowed
  EXPECT_FALSE(ids.requires_grad());
  Tensor w = zeros({3}, DType::F64).requires_grad_();
  Tensor y = ops::scale(w, 2.0);
  EXPECT_CONTAINS(error_of([&] { y.requires_grad_(false); }), "on a non-leaf tensor");
  EXPECT_CONTAINS(error_of([&] { y.requires_grad_(false); }), "use detach()");
}

TEST(AutogradContract, hooks_and_attached_gradients_need_a_leaf_that_requires_one) {
  Tensor plain = zeros({3}, DType::F64);
  Tensor w = zeros({3}, DType::F64).requires_grad_();
  Tensor y = ops::scale(w, 2.0);
  for (const Tensor* t : {&plain, &y}) {
    EXPECT_CONTAINS(error_of([&] { register_grad_hook(*t, [](Tensor&) {}); }),
                    "register_grad_hook: ");
    EXPECT_CONTAINS(error_of([&] { register_grad_hook(*t, [](Tensor&) {}); }),
                    "is not a leaf that requires a gradient");
    EXPECT_CONTAINS(error_of([&] { attach_grad(*t, zeros({3}, DType::F64)); }),
                    "is not a leaf that requires a gradient");
  }
  EXPECT_CONTAINS(error_of([&] { attach_grad(w, zeros({4}, DType::F64)); }), "does not fit");
  EXPECT_CONTAINS(error_of([&] { attach_grad(w, zeros({3}, DType::I32)); }), "does not fit");
  EXPECT_CONTAINS(error_of([&] { attach_grad(w, zeros({3}, DType::F64), false, false); }),
                  "a gradient left unfilled must be zero by definition");
}

// attach_grad(zero, filled = false): the buffer is zero by definition; grad() and
// fill_pending_grad write the zeros, a backward copies its contribution over them, zero_grad
// detaches it.
TEST(AutogradContract, an_unfilled_attached_gradient_reads_as_zeros_until_written) {
  for (const bool read_first : {false, true}) {
    SCOPED_TRACE(read_first ? "read before the backward" : "backward first");
    Tensor w = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
    Tensor buffer = full({3}, 7.0, DType::F32);  // stale memory
    attach_grad(w, buffer, /*zero=*/true, /*filled=*/false);
    EXPECT_TRUE(grad_holds_zeros(w));
    if (read_first) {
      EXPECT_EQ(w.grad().to_vector<float>(), std::vector<float>(3, 0.f));
      EXPECT_EQ(buffer.to_vector<float>(), std::vector<float>(3, 0.f)) << "written in place";
      EXPECT_TRUE(grad_holds_zeros(w)) << "read, still nothing added";
    }
    ops::sum(ops::scale(w, 2.0)).backward();
    EXPECT_FALSE(grad_holds_zeros(w));
    EXPECT_EQ(buffer.to_vector<float>(), std::vector<float>(3, 2.f));
    ops::sum(ops::scale(w, 2.0)).backward();  // now it adds
    EXPECT_EQ(buffer.to_vector<float>(), std::vector<float>(3, 4.f));
    w.zero_grad();
    EXPECT_FALSE(w.grad().defined());
    EXPECT_FALSE(grad_holds_zeros(w));
  }
  // The zeros are written once, however often they are read.
  Tensor w = zeros({2}, DType::F64).requires_grad_();
  Tensor buffer = full({2}, 5.0, DType::F64);
  attach_grad(w, buffer, true, false);
  profile::start();
  fill_pending_grad(w);
  (void)w.grad();
  fill_pending_grad(w);
  profile::stop();
  int64_t fills = 0;
  for (const profile::Row& r : profile::rows()) fills += r.kernel == "fill" ? r.calls : 0;
  EXPECT_EQ(fills, 1);
  EXPECT_EQ(buffer.to_vector<double>(), std::vector<double>(2, 0.0));
  // Filled already: nothing to write, and the buffer is used as it is.
  Tensor v = zeros({2}, DType::F64).requires_grad_();
  Tensor kept = full({2}, 5.0, DType::F64);
  attach_grad(v, kept, false, true);
  EXPECT_FALSE(grad_holds_zeros(v));
  ops::sum(v).backward();
  EXPECT_EQ(kept.to_vector<double>(), std::vector<double>(2, 6.0)) << "added to what it held";
}

// An op with one input hands gradients to input 0 only: any other index is the closure's bug,
// named with the op, whichever way it is handed over.
TEST(AutogradContract, a_gradient_for_an_input_the_op_lacks_is_an_error_naming_the_op) {
  Tensor x = ones({2}, DType::F64).requires_grad_();
  const auto error_with = [&](std::function<void(const Tensor&, GradSink&)> backward) {
    Tensor y = record("one_input", x.detach().clone(), {x}, std::move(backward));
    return error_of([&] { ops::sum(y).backward(); });
  };
  const char* want = "backward of one_input: gradient for input 1 but the op has 1 inputs";
  EXPECT_CONTAINS(error_with([](const Tensor& dy, GradSink& g) { g.add(1, dy); }), want);
  EXPECT_CONTAINS(error_with([](const Tensor&, GradSink& g) {
                    g.add_into(1, DType::F64, [](Tensor&, bool) {});
                  }),
                  want);
  EXPECT_CONTAINS(error_with([](const Tensor&, GradSink& g) {
                    g.add_into({{1, DType::F64}}, [](std::vector<Into>&) {});
                  }),
                  want);
  bool needs0 = false, needs1 = true;
  Tensor y = record("one_input", x.detach().clone(), {x}, [&](const Tensor& dy, GradSink& g) {
    needs0 = g.needs(0);
    needs1 = g.needs(1);
    g.add(0, dy);
  });
  ops::sum(y).backward();
  EXPECT_TRUE(needs0);
  EXPECT_FALSE(needs1);
}

// A contribution that overwrites its accumulator writes all of it; confined to a region (any dim,
// 0 included) it would leave the rest unwritten.
TEST(AutogradContract, an_overwriting_contribution_cannot_be_confined_to_a_region) {
  Tensor x = ones({2, 4}, DType::F64).requires_grad_();
  for (const int64_t dim : {0, 1}) {
    SCOPED_TRACE(dim);
    Tensor y = record("overwrite", x.detach().clone(), {x}, [dim](const Tensor&, GradSink& g) {
      g.add_into(0, DType::F64, [](Tensor&, bool) {}, {.region = {dim, 0, 1}, .overwrites = true});
    });
    EXPECT_CONTAINS(error_of([&] { ops::sum(y).backward(); }),
                    "backward of overwrite: a contribution that overwrites its accumulator cannot "
                    "be confined to a region");
  }
}

// backward() from a leaf: the gradient given is the leaf's, and its hook fires.
TEST(AutogradContract, backward_from_a_leaf_delivers_to_it_and_fires_its_hook) {
  Tensor w = zeros({2}, DType::F64).requires_grad_();
  int hooks = 0;
  register_grad_hook(w, [&](Tensor&) { ++hooks; });
  backward(w, from_vector<double>({3, 4}, {2}));
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{3, 4}));
  EXPECT_EQ(hooks, 1);
}

// A narrow's gradient is copied into a slice the engine knows is still zero; once a whole-tensor
// gradient has been added to that buffer, no slice of it is zero any more, and the next narrow
// adds. (Backward runs the latest op first: the narrow of columns 0-3, then the scale, then the
// narrow of columns 4-7.)
TEST(AutogradContract, a_whole_gradient_added_between_two_narrows_is_kept) {
  Tensor x = ones({2, 8}, DType::F64).requires_grad_();
  Tensor h = ops::mul(x, full({2, 8}, 2.0, DType::F64));
  Tensor b = h.narrow(1, 4, 4);
  Tensor f = ops::scale(h, 3.0);
  Tensor a = h.narrow(1, 0, 4);
  ops::sum(ops::add(ops::add(ops::sum(a), ops::sum(b)), ops::sum(f))).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), std::vector<double>(16, 2.0 * (1 + 3)));
}

// A contribution added into the whole of a pending gradient (add_into, no region) between two
// narrows: the second narrow adds to it.
TEST(AutogradContract, a_whole_contribution_added_in_place_between_two_narrows_is_kept) {
  Tensor x = ones({2, 8}, DType::F64).requires_grad_();
  Tensor h = ops::mul(x, full({2, 8}, 2.0, DType::F64));
  Tensor b = h.narrow(1, 4, 4);
  Tensor f = record("whole_into", h.detach().clone(), {h}, [](const Tensor& dy, GradSink& g) {
    g.add_into(0, DType::F64,
               [dy](Tensor& acc, bool) { acc.copy_(ops::add(acc, ops::scale(dy, 3.0))); });
  });
  Tensor a = h.narrow(1, 0, 4);
  ops::sum(ops::add(ops::add(ops::sum(a), ops::sum(b)), ops::sum(f))).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), std::vector<double>(16, 2.0 * (1 + 3)));
}

// A hook fires for a leaf that received a gradient in this backward, not for one that its graph
// reaches but no op gave a gradient to.
TEST(AutogradContract, a_hook_fires_only_for_a_leaf_that_received_a_gradient) {
  Tensor w = ones({2}, DType::F64).requires_grad_();
  int hooks = 0;
  register_grad_hook(w, [&](Tensor&) { ++hooks; });
  Tensor y = record("no_gradient", w.detach().clone(), {w}, [](const Tensor&, GradSink&) {});
  ops::sum(y).backward();
  EXPECT_EQ(hooks, 0);
  EXPECT_FALSE(w.grad().defined());
  ops::sum(ops::scale(w, 2.0)).backward();
  EXPECT_EQ(hooks, 1);
}

TEST(AutogradContract, recompute_of_a_function_that_returns_nothing_is_an_error) {
  Tensor x = ones({2}, DType::F64).requires_grad_();
  EXPECT_CONTAINS(
      error_of([&] { recompute([](const std::vector<Tensor>&) { return Tensor(); }, {x}); }),
      "recompute: the function returned an undefined tensor");
}

// A leaf's gradient has the leaf's dtype, whatever dtype its first contribution came in.
TEST(AutogradContract, a_leaf_gradient_keeps_the_leaf_dtype) {
  Tensor w = ones({3}, DType::F64).requires_grad_();
  Tensor y = record("f32_grad", w.detach().clone(), {w},
                    [](const Tensor& dy, GradSink& g) { g.add(0, dy.to(DType::F32)); });
  backward(y, full({3}, 0.5, DType::F64));
  EXPECT_EQ(w.grad().dtype(), DType::F64);
  EXPECT_EQ(w.grad().to_vector<double>(), std::vector<double>(3, 0.5));
}

}  // namespace
}  // namespace tessera
