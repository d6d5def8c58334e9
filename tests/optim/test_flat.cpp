// Flat parameter and gradient buffers (optim/flat.h) and AdamW over them (optim/flat_adamw.h) on
// one process: the layout, gradients accumulating into the buffer in place (in f32 for bf16
// parameters), and the update bit for bit equal to the per-tensor AdamW.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "autograd/autograd.h"
#include "backend/profile.h"
#include "core/tensor.h"
#include "distributed/communicator.h"
#include "nn/gpt.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/flat.h"
#include "optim/flat_adamw.h"
#include "optim/flat_fixture.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::bytes;
using testing::values;

using testing::leaf;
using testing::loss_of;
using testing::model_params;
using testing::single;
using testing::twin_of;

TEST(Flat, layout_is_reverse_order_of_use_in_padded_buckets_and_keeps_the_values) {
  Generator g(1);
  std::vector<NamedParam> params = model_params(g);
  std::vector<std::vector<double>> before;
  for (const auto& p : params) before.push_back(values(p.param));
  // Buckets of >= 100 bytes (25 f32 gradients), the first of >= 20 bytes, padded to 4 elements.
  FlatParams flat(params, {.bucket_bytes = 100, .first_bucket_bytes = 20, .pad = 4});
  ASSERT_EQ(flat.slots().size(), 4u);
  EXPECT_EQ(flat.slots()[0].name, "ln");  // used last in the forward: first in the buffer
  EXPECT_EQ(flat.slots()[3].name, "wte");
  // ln (5) closes the small first bucket, padded to 8; w (30) the next one (8 + 30, padded to 40);
  // b and wte (6 + 60) share the last one (40 + 66 -> 108).
  ASSERT_EQ(flat.buckets().size(), 3u);
  EXPECT_EQ(flat.buckets()[0].range.end, 8);
  EXPECT_EQ(flat.buckets()[1].range.end, 40);
  EXPECT_EQ(flat.buckets()[2].range.end, 108);
  EXPECT_EQ(flat.numel(), 108);
  EXPECT_EQ(flat.slots()[1].offset, 8);
  EXPECT_EQ(flat.slots()[2].offset, 40);
  EXPECT_EQ(flat.slots()[3].offset, 46);
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(values(params[i].param), before[i]) << params[i].name;  // moved, not changed
    EXPECT_EQ(params[i].param.storage(), flat.values().storage()) << params[i].name;
  }
  // Decay ranges: the matrices (w at 8..38, wte at 46..106), relative to the range asked for.
  EXPECT_EQ(flat.decay_ranges({0, 108}).to_vector<int32_t>(), (std::vector<int32_t>{8, 38, 46, 106}));
  EXPECT_EQ(flat.decay_ranges({30, 50}).to_vector<int32_t>(), (std::vector<int32_t>{0, 8, 16, 20}));
}

TEST(Flat, gradients_accumulate_into_the_buffer_in_place_and_zero_grad_keeps_the_views) {
  Generator g(2);
  std::vector<NamedParam> params = model_params(g);
  std::vector<NamedParam> twin;  // the same values, ordinary per-tensor gradients
  for (const auto& p : params) {
    Tensor c = p.param.detach().clone();
    c.requires_grad_();
    twin.push_back({p.name, c});
  }
  FlatParams flat(params, {.pad = 3});
  const Tensor x = randn({3, 10}, g);
  for (int k = 0; k < 3; ++k) {  // three micro-batches accumulate
    backward(loss_of(params, x));
    backward(loss_of(twin, x));
  }
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i].param.grad().storage(), flat.grads().storage()) << params[i].name;
    EXPECT_EQ(bytes(params[i].param.grad()), bytes(twin[i].param.grad())) << params[i].name;
  }
  const void* where = flat.grads().data_ptr();
  flat.zero_grad();
  EXPECT_EQ(flat.grads().data_ptr(), where);
  for (double v : values(flat.grads())) EXPECT_EQ(v, 0.0);
  backward(loss_of(params, x));
  EXPECT_EQ(params[2].param.grad().storage(), flat.grads().storage());
  flat.check_attached();
  // A gradient dropped behind the buffer's back is an error, not a silently lost update.
  params[1].param.zero_grad();
  backward(loss_of(params, x));
  const std::string msg = testing::error_of([&] { flat.check_attached(); });
  EXPECT_NE(msg.find("gradient of 'b' is not in the flat buffer"), std::string::npos) << msg;
}

// After zero_grad the buffer is known to hold zeros: each parameter's first contribution of a
// backward is copied in (on CUDA converting bf16 to f32 in the same pass), not added to zeros
// through a converted temporary; later contributions add. The gradients are the same.
TEST(Flat, the_first_contribution_after_zero_grad_is_written_not_added) {
  Generator g(4);
  std::vector<NamedParam> params = model_params(g, DType::F64);
  FlatParams flat(params, {.pad = 3});
  const Tensor x = randn({3, 10}, g).to(DType::F64);
  std::set<std::string> into_grads;  // the kernels' shape strings for "into a parameter's gradient"
  std::vector<std::string> gemm_into;  // a gemm's, whose output is a matrix parameter's gradient
  for (const NamedParam& p : params) {
    const std::string s = shape_str(p.param.shape());
    into_grads.insert("f64 " + s + " <- " + s);
    if (p.param.dim() == 2) gemm_into.push_back("f64 " + s + " <- ");
  }
  struct Counts {
    int64_t sums = 0, copies = 0, gemms = 0;
  };
  auto profiled_backward = [&] {
    profile::start();
    backward(loss_of(params, x));
    profile::stop();
    Counts n;
    for (const profile::Row& r : profile::rows()) {
      for (const std::string& prefix : gemm_into)
        if (r.kernel == "gemm" && r.shapes.rfind(prefix, 0) == 0) n.gemms += r.calls;
      if (!into_grads.count(r.shapes)) continue;
      if (r.kernel == "axpby") n.sums += r.calls;
      if (r.kernel == "copy") n.copies += r.calls;
    }
    return n;
  };
  // wte and w get their gradients from matmuls here (no scatter-add), whose gemms write into the
  // flat buffer themselves (beta 0, then 1 to accumulate); b's and ln's arrive as tensors.
  const Counts first = profiled_backward();
  EXPECT_EQ(first.sums, 0);
  EXPECT_EQ(first.copies, 2);
  EXPECT_EQ(first.gemms, 2);
  const std::vector<double> once = values(flat.grads());
  const Counts second = profiled_backward();  // accumulates
  EXPECT_EQ(second.sums, 2);
  EXPECT_EQ(second.copies, 0);
  EXPECT_EQ(second.gemms, 2);
  const std::vector<double> twice = values(flat.grads());
  for (size_t i = 0; i < once.size(); ++i) EXPECT_EQ(twice[i], once[i] + once[i]) << i;
  flat.zero_grad();
  const Counts third = profiled_backward();
  EXPECT_EQ(third.sums, 0);
  EXPECT_EQ(third.copies, 2);
  EXPECT_EQ(values(flat.grads()), once);
}

// How many fill kernels f runs.
int64_t fills_in(const std::function<void()>& f) {
  profile::start();
  f();
  profile::stop();
  int64_t n = 0;
  for (const profile::Row& r : profile::rows())
    if (r.kernel == "fill") n += r.calls;
  return n;
}

// NaN written over every parameter's range of the gradient buffer, through a view of it that
// fills nothing in (an empty range): after zero_grad, memory that must never be read.
void poison(const FlatParams& flat) {
  const Tensor raw = flat.grads(FlatRange{0, 0});
  for (const FlatParams::Slot& s : flat.slots())
    make_view(raw, {s.numel}, {1}, raw.offset() + s.offset).fill_(std::nan(""));
}

// zero_grad writes nothing: each view is attached unfilled, zero by definition. A contribution
// that overwrites its accumulator (a gemm with beta 0, a gradient copied in) writes it without a
// zero pass; one that adds into it (the embedding's scatter-add) gets the zeros first, and so does
// a read (FlatParams::grads, Tensor::grad) of a gradient nothing wrote. To show that no unfilled
// memory is ever read, every parameter's range is poisoned with NaN after zero_grad: the gradients
// must come out as the ones of parameters outside any buffer, bit for bit, and the backward must
// run no more fills than theirs does (a parameter without a buffer gets a zero-filled accumulator
// where a contribution adds into it, so the embedding's fill is in both counts).
TEST(Flat, zero_grad_writes_nothing_and_unwritten_gradients_read_as_zeros) {
  Generator g(5);
  std::vector<NamedParam> params = model_params(g), twin = twin_of(params);
  FlatParams flat(params, {.pad = 3});
  const Tensor x = randn({3, 10}, g), ids = from_vector<int32_t>({1, 7, 7, 2}, {4}, DType::I32);
  const auto fills = fills_in;
  // Three losses: every parameter through overwriting contributions; wte through the embedding's
  // scatter-add (it adds: its zeros first); ln left out (its gradient never written).
  auto dense_loss = [&](const std::vector<NamedParam>& p) { return loss_of(p, x); };
  auto embedded_loss = [&](const std::vector<NamedParam>& p) {
    Tensor h = ops::add(ops::embedding(p[0].param, ids), p[1].param);
    return ops::sum(ops::mul(ops::matmul(h, p[2].param), p[3].param));
  };
  auto partial_loss = [&](const std::vector<NamedParam>& p) {
    return ops::sum(ops::matmul(ops::add(ops::matmul(x, p[0].param), p[1].param), p[2].param));
  };
  using Loss = std::function<Tensor(const std::vector<NamedParam>&)>;
  for (const auto& [name, loss] : {std::pair<const char*, Loss>{"dense", dense_loss},
                                   {"embedded", embedded_loss},
                                   {"partial", partial_loss}}) {
    EXPECT_EQ(fills([&] { flat.zero_grad(); }), 0) << name;
    poison(flat);
    const int64_t in_buffer_fills = fills([&] { backward(loss(params)); });
    for (NamedParam& t : twin) t.param.zero_grad();
    EXPECT_EQ(in_buffer_fills, fills([&] { backward(loss(twin)); })) << name;
    for (size_t i = 0; i < params.size(); ++i) {
      const FlatParams::Slot* slot = nullptr;
      for (const FlatParams::Slot& s : flat.slots())
        if (s.name == params[i].name) slot = &s;
      ASSERT_NE(slot, nullptr);
      const Tensor in_buffer =
          make_view(flat.grads(), {slot->numel}, {1}, flat.grads().offset() + slot->offset);
      const Tensor want =
          twin[i].param.grad().defined() ? twin[i].param.grad() : zeros(twin[i].param.shape());
      EXPECT_EQ(bytes(in_buffer), bytes(want.reshape({slot->numel})))
          << name << ": " << params[i].name;
      EXPECT_EQ(bytes(params[i].param.grad()), bytes(want)) << name << ": " << params[i].name;
    }
  }
  // Twice with nothing added between: attached and zero already, nothing to do.
  flat.zero_grad();
  EXPECT_EQ(fills([&] { flat.zero_grad(); }), 0);
  for (double v : values(flat.grads())) EXPECT_EQ(v, 0.0);
  // A view dropped (Tensor::zero_grad on its parameter): zero_grad attaches it again.
  params[1].param.zero_grad();
  EXPECT_THROW(flat.check_attached(), Error);
  flat.zero_grad();
  flat.check_attached();
  poison(flat);
  backward(loss_of(params, x));
  for (double v : values(flat.grads())) EXPECT_FALSE(std::isnan(v));
}

// TESSERA_ZERO_GRAD=fill, a check for a GPU: zero_grad writes the buffer's zeros (one fill over it,
// the default writes none), so NaN written before it reads as zeros through a view that fills
// nothing, and the gradients are the default's, bit for bit. Gradients attached unfilled before the
// switch are written by the next zero_grad even when it has nothing else to do. Any value but lazy
// or fill is an error naming the variable.
TEST(Flat, tessera_zero_grad_fill_writes_the_buffers_zeros) {
  struct Unset {
    ~Unset() { ::unsetenv("TESSERA_ZERO_GRAD"); }
  } unset;
  Generator g(5);
  std::vector<NamedParam> params = model_params(g);
  FlatParams flat(params, {.pad = 3});
  const Tensor x = randn({3, 10}, g);
  auto raw_unfilled = [&] {  // the buffer as it lies, through a view that fills nothing
    const Tensor r = flat.grads(FlatRange{0, 0});
    return values(make_view(r, {flat.numel()}, {1}, r.offset()));
  };
  backward(loss_of(params, x));
  const std::vector<double> lazy = values(flat.grads());
  ::setenv("TESSERA_ZERO_GRAD", "fill", 1);
  poison(flat);
  EXPECT_EQ(fills_in([&] { flat.zero_grad(); }), 1);
  for (double v : raw_unfilled()) EXPECT_EQ(v, 0.0);
  backward(loss_of(params, x));
  EXPECT_EQ(values(flat.grads()), lazy);
  EXPECT_EQ(fills_in([&] { flat.zero_grad(); }), 1);
  EXPECT_EQ(fills_in([&] { flat.zero_grad(); }), 0);  // nothing added since: nothing to do
  // Attached unfilled under the default, then the switch: written by a zero_grad with nothing
  // else to do.
  ::unsetenv("TESSERA_ZERO_GRAD");
  backward(loss_of(params, x));
  EXPECT_EQ(fills_in([&] { flat.zero_grad(); }), 0);
  poison(flat);
  ::setenv("TESSERA_ZERO_GRAD", "fill", 1);
  flat.zero_grad();
  for (double v : raw_unfilled()) EXPECT_EQ(v, 0.0);
  ::setenv("TESSERA_ZERO_GRAD", "eager", 1);
  const std::string msg = testing::error_of([&] { flat.zero_grad(); });
  EXPECT_NE(msg.find("TESSERA_ZERO_GRAD='eager'"), std::string::npos) << msg;
}

// The same at a model's scale, GPT-2 style (LayerNorm, biases, learned positions added into a row
// window, 12 of its 16 rows; a tied embedding: the head's gemm first, then the lookup's
// scatter-add) and Llama style (RMSNorm, SwiGLU, RoPE, untied: the lookup alone): with every
// parameter's range poisoned with NaN after zero_grad, two steps' gradients are those of a twin
// model without buffers, bit for bit. Dropping the fill before a contribution that adds fails it
// on the positions' rows and the untied embedding.
TEST(Flat, a_gpts_gradients_never_read_an_unfilled_buffer) {
  for (const bool llama : {false, true}) {
    nn::GPTConfig c;
    c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.block_size = 16, c.vocab_size = 64;
    if (llama) {
      c.norm = nn::NormKind::RMSNorm, c.mlp = nn::MlpKind::SwiGLU;
      c.position = nn::PositionKind::RoPE, c.tie_embeddings = false, c.bias = false;
    }
    Generator g1(8), g2(8), data(9);
    nn::GPT model(c, g1), twin(c, g2);
    FlatParams flat(named_params(model.parameters()));
    for (int step = 0; step < 2; ++step) {
      auto tokens = [&] {
        std::vector<int32_t> ids;
        for (float u : rand({2 * 12}, data).to_vector<float>())
          ids.push_back(std::min(int32_t(u * float(c.vocab_size)), int32_t(c.vocab_size - 1)));
        return from_vector(ids, {2, 12});  // 12 of the 16 position rows: 4 never written
      };
      const Tensor x = tokens(), y = tokens();
      flat.zero_grad();
      poison(flat);
      for (const auto& [name, p] : twin.parameters()) Tensor(p).zero_grad();
      model.loss(x, y).backward();
      twin.loss(x, y).backward();
      const auto mp = model.parameters(), tp = twin.parameters();
      ASSERT_EQ(mp.size(), tp.size());
      for (size_t i = 0; i < mp.size(); ++i)
        EXPECT_EQ(bytes(mp[i].second.grad()), bytes(tp[i].second.grad()))
            << (llama ? "llama " : "gpt2 ") << mp[i].first << ", step " << step;
    }
  }
}

// Every micro-batch's bf16 gradient is added into an f32 buffer: 32 additions of 1 + 2^-7 (exact in
// bf16) sum to 32 + 2^-2 exactly in f32, where bf16 accumulation would stall at 32 (its ulp there
// is 2^-2, so each further 2^-7 rounds away).
TEST(Flat, bf16_parameters_accumulate_their_gradients_in_f32) {
  Tensor p = zeros({4}, DType::BF16);
  p.requires_grad_();
  FlatParams flat({{"p", p}});
  EXPECT_EQ(flat.grads().dtype(), DType::F32);
  for (int k = 0; k < 32; ++k) {
    Tensor y = record("contribute", zeros({1}), {p}, [](const Tensor&, GradSink& sink) {
      sink.add(0, full({4}, 1.0 + 1.0 / 128, DType::BF16));
    });
    backward(y, ones({1}));
  }
  for (double v : values(flat.grads())) EXPECT_EQ(v, 32.0 + 0.25);
}

// Also with the owned range split into launches of 7 elements (FlatAdamWOptions::max_range; 2^30
// by default, for i32 decay bounds): splits across parameters and their decay boundaries change
// no bit.
class FlatAdamWRanges : public ::testing::TestWithParam<int64_t> {};
INSTANTIATE_TEST_SUITE_P(MaxRange, FlatAdamWRanges, ::testing::Values(int64_t(1) << 30, 7));

TEST_P(FlatAdamWRanges, one_process_updates_bit_for_bit_like_per_tensor_adamw) {
  Generator g(3);
  std::vector<NamedParam> params = model_params(g), twin = twin_of(params);
  auto comm = single();
  FlatParams flat(params, {.pad = 1});
  const AdamWOptions a{.lr = 0.01, .weight_decay = 0.1};
  FlatAdamW opt(flat, *comm, {.adam = a, .max_norm = 0, .max_range = GetParam()});
  AdamW ref(twin, a);
  for (int step = 0; step < 5; ++step) {
    const Tensor x = randn({3, 10}, g);
    opt.backward(loss_of(params, x), true);
    backward(loss_of(twin, x));
    opt.step(0.01);
    ref.step(0.01);
    ref.zero_grad();
  }
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(bytes(params[i].param), bytes(twin[i].param)) << params[i].name;
  }
  EXPECT_EQ(opt.step_count(), 5);
  // The checkpoint view of the state is the per-tensor optimizer's, entry by entry.
  const std::vector<StateTensor> state = opt.state();
  ASSERT_EQ(state.size(), 8u);  // m and v per parameter; f32 parameters are their own master
  EXPECT_EQ(state[0].key, "wte/m");
  EXPECT_EQ(bytes(state[0].get()), bytes(ref.m("wte")));
  EXPECT_EQ(bytes(state[7].get()), bytes(ref.v("ln")));
}

// Options that reach the optimizer without a validated config (a library user's) are refused,
// each naming what it needs; so is a negative step count from a hand-made state.
TEST(FlatAdamW, hyperparameters_out_of_range_are_refused) {
  Generator g(3);
  std::vector<NamedParam> params = model_params(g);
  auto comm = single();
  FlatParams flat(params);
  const std::vector<AdamWOptions> bad = {
      {.lr = -1e-3}, {.beta1 = -0.1}, {.beta1 = 1.0}, {.beta2 = -0.1}, {.beta2 = 1.0},
      {.eps = 0.0},  {.weight_decay = -0.1}};
  for (const AdamWOptions& a : bad)
    EXPECT_NE(tessera::testing::error_of([&] { FlatAdamW opt(flat, *comm, {.adam = a}); })
                  .find("need lr >= 0, betas in [0, 1), eps > 0, weight_decay >= 0"),
              std::string::npos)
        << a.lr << " " << a.beta1 << " " << a.beta2 << " " << a.eps << " " << a.weight_decay;
  EXPECT_NO_THROW(FlatAdamW(
      flat, *comm, {.adam = {.lr = 0.0, .beta1 = 0.0, .beta2 = 0.0, .weight_decay = 0.0}}));
  for (int64_t range : {int64_t(0), int64_t(1) << 31}) {
    const FlatAdamWOptions o{.adam = {}, .max_range = range};
    EXPECT_NE(tessera::testing::error_of([&] { FlatAdamW opt(flat, *comm, o); })
                  .find("max_range must be in [1, 2^31), got " + std::to_string(range)),
              std::string::npos);
  }
  FlatAdamW opt(flat, *comm, {});
  opt.set_step_count(0);
  EXPECT_NE(tessera::testing::error_of([&] { opt.set_step_count(-1); })
                .find("step count must be >= 0, got -1"),
            std::string::npos);
}

// Clipping: the coefficient rides the update (adamw_step_flat's grad_scale), and the weights are
// those of per-tensor AdamW on gradients scaled by it in f32 (one rounding).
TEST(FlatAdamW, clipping_equals_per_tensor_adamw_on_gradients_scaled_in_f32) {
  Generator g(6);
  std::vector<NamedParam> params = model_params(g), twin = twin_of(params);
  auto comm = single();
  FlatParams flat(params);
  const AdamWOptions a{.lr = 0.01, .weight_decay = 0.1};
  FlatAdamW opt(flat, *comm, {.adam = a, .max_norm = 0.5});
  AdamW ref(twin, a);
  int clipped = 0;
  for (int step = 0; step < 3; ++step) {
    const Tensor x = randn({3, 10}, g);
    opt.backward(loss_of(params, x), true);
    backward(loss_of(twin, x));
    const double norm = *opt.grad_norm();
    const float coef = float(0.5 / (norm + 1e-6));
    clipped += norm > 0.5;
    for (auto& p : twin) {
      float* d = p.param.grad().data<float>();
      for (int64_t i = 0; i < p.param.numel(); ++i) d[i] = d[i] * coef;
    }
    opt.step(0.01);
    ref.step(0.01);
    ref.zero_grad();
  }
  EXPECT_EQ(clipped, 3) << "every step must clip, or this test shows nothing";
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_EQ(bytes(params[i].param), bytes(twin[i].param)) << params[i].name;
}

TEST(FlatAdamW, state_round_trip_continues_bit_exactly_and_bad_state_is_named) {
  testing::StateRoundTrip r({.adam = {}, .max_norm = 1.0, .zero = false});
  FlatAdamW& b = r.b;
  const std::vector<NamedParam>& b_params = r.b_params;
  const std::vector<std::pair<std::string, Tensor>>& entries = r.entries;

  // A bf16 (CUDA) run's checkpoint holds f32 masters: resumed with f32 parameters (the CPU),
  // they replace the weights, whose low bits the bf16 copy lost.
  auto with_masters = entries;
  for (const NamedParam& p : b_params)
    with_masters.emplace_back(p.name + "/master", full(p.param.shape(), 0.25));
  b.load_state(with_masters, "ck.h5");
  for (const NamedParam& p : b_params)
    EXPECT_EQ(values(p.param), std::vector<double>(size_t(p.param.numel()), 0.25)) << p.name;

  auto missing = entries;
  missing.erase(missing.begin() + 1);  // wte/v
  std::string msg = testing::error_of([&] { b.load_state(missing, "ck.h5"); });
  EXPECT_NE(msg.find("ck.h5: no AdamW state for wte"), std::string::npos) << msg;
  auto wrong = entries;
  wrong[2].second = zeros({3});  // b/m
  msg = testing::error_of([&] { b.load_state(wrong, "ck.h5"); });
  EXPECT_NE(msg.find("optimizer state b/m"), std::string::npos) << msg;
  auto extra = entries;
  extra.emplace_back("nope/m", zeros({1}));
  msg = testing::error_of([&] { b.load_state(extra, "ck.h5"); });
  EXPECT_NE(msg.find("'nope/m' belongs to no parameter"), std::string::npos) << msg;
  auto unknown_kind = entries;
  unknown_kind.emplace_back("wte/momentum", zeros({10, 6}));
  msg = testing::error_of([&] { b.load_state(unknown_kind, "ck.h5"); });
  EXPECT_NE(msg.find("'wte/momentum' belongs to no parameter"), std::string::npos) << msg;
}

// bf16 parameters keep f32 masters: a saved master comes back exactly and its rounding becomes
// the weight; without one (an older file) the master starts from the weights.
TEST(FlatAdamW, bf16_masters_come_back_from_the_state_or_from_the_weights) {
  Generator g(4);
  std::vector<NamedParam> params = model_params(g, DType::BF16);
  auto comm = single();
  FlatParams flat(params);
  FlatAdamW opt(flat, *comm, {});
  const auto masters = [&] {
    std::vector<std::vector<double>> out;
    for (const StateTensor& s : opt.state())
      if (s.key.ends_with("/master")) out.push_back(values(s.get()));
    return out;
  };
  std::vector<std::pair<std::string, Tensor>> entries;
  for (const NamedParam& p : params) {
    entries.emplace_back(p.name + "/m", zeros(p.param.shape()));
    entries.emplace_back(p.name + "/v", zeros(p.param.shape()));
  }
  auto with_masters = entries;
  for (const NamedParam& p : params)
    with_masters.emplace_back(p.name + "/master", full(p.param.shape(), 0.3));
  opt.load_state(with_masters, "ck.h5");
  ASSERT_EQ(masters().size(), params.size());
  for (const std::vector<double>& m : masters())
    for (double x : m) EXPECT_EQ(x, double(0.3f));  // f32 exactly, not bf16's 0.30078125
  for (const NamedParam& p : params)
    for (double x : values(p.param)) EXPECT_EQ(x, 0.30078125) << p.name;  // 0.3 in bf16

  for (const NamedParam& p : params) p.param.detach().copy_(full(p.param.shape(), 0.5));
  opt.load_state(entries, "ck.h5");
  for (const std::vector<double>& m : masters())
    for (double x : m) EXPECT_EQ(x, 0.5);
}

}  // namespace
}  // namespace tessera
