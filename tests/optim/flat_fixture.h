// A small model's parameters for the flat-buffer optimizer tests (test_flat.cpp, test_muon.cpp):
// an embedding, a bias, a matrix and a norm gain, a loss that touches each, copies for a reference
// optimizer beside the flat one, and a checkpoint round trip of FlatAdamW's state.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/autograd.h"
#include "core/rng.h"
#include "distributed/communicator.h"
#include "ops/ops.h"
#include "optim/flat.h"
#include "optim/flat_adamw.h"
#include "test_util.h"

namespace tessera::testing {

inline Tensor leaf(const Shape& shape, Generator& g, DType t = DType::F32) {
  Tensor p = randn(shape, g).to(t);
  p.requires_grad_();
  return p;
}

inline std::unique_ptr<dist::Communicator> single() {
  dist::CommOptions o;
  o.backend = "single";
  return dist::make_communicator(o, dist::LaunchInfo{});
}

// The model's order: an embedding (used first), a bias, a matrix, a norm gain (used last). The
// flat buffer holds them reversed, so the matrix sits between the others.
inline std::vector<NamedParam> model_params(Generator& g, DType t = DType::F32) {
  return {{"wte", leaf({10, 6}, g, t)},
          {"b", leaf({6}, g, t)},
          {"w", leaf({6, 5}, g, t)},
          {"ln", leaf({5}, g, t)}};
}

// Separate copies of the parameters (for a reference optimizer run beside the flat one).
inline std::vector<NamedParam> twin_of(const std::vector<NamedParam>& params) {
  std::vector<NamedParam> twin;
  for (const auto& p : params) {
    Tensor c = p.param.detach().clone();
    c.requires_grad_();
    twin.push_back({p.name, c});
  }
  return twin;
}

// A loss touching every parameter: sum((onehot(x) @ wte + b) @ w * ln).
inline Tensor loss_of(const std::vector<NamedParam>& p, const Tensor& x) {
  Tensor h = ops::add(ops::matmul(x, p[0].param), p[1].param);
  return ops::sum(ops::mul(ops::matmul(h, p[2].param), p[3].param));
}

// Two copies of the model under FlatAdamW with `options`: a trains 3 steps, b takes its weights
// and state (`entries`, as a checkpoint holds them), then both train 3 more on the same batches,
// with the same gradient norms, and end with the same bits.
struct StateRoundTrip {
  Generator ga{4}, gb{4};
  std::vector<NamedParam> a_params = model_params(ga), b_params = model_params(gb);
  std::unique_ptr<dist::Communicator> comm = single();
  FlatParams fa{a_params}, fb{b_params};
  FlatAdamW a, b;
  std::vector<std::pair<std::string, Tensor>> entries;

  explicit StateRoundTrip(const FlatAdamWOptions& options)
      : a(fa, *comm, options), b(fb, *comm, options) {
    Generator data(5);
    std::vector<Tensor> xs;
    for (int i = 0; i < 6; ++i) xs.push_back(randn({3, 10}, data));
    for (int i = 0; i < 3; ++i) {
      a.backward(loss_of(a_params, xs[size_t(i)]), true);
      a.step(0.01);
    }
    for (const StateTensor& s : a.state()) entries.emplace_back(s.key, s.get().clone());
    for (size_t i = 0; i < a_params.size(); ++i)
      b_params[i].param.detach().copy_(a_params[i].param);
    b.load_state(entries, "ck.h5");
    b.set_step_count(a.step_count());
    for (int i = 3; i < 6; ++i) {
      a.backward(loss_of(a_params, xs[size_t(i)]), true);
      b.backward(loss_of(b_params, xs[size_t(i)]), true);
      EXPECT_EQ(*a.grad_norm(), *b.grad_norm());
      a.step(0.01);
      b.step(0.01);
    }
    for (size_t i = 0; i < a_params.size(); ++i)
      EXPECT_EQ(bytes(a_params[i].param), bytes(b_params[i].param)) << a_params[i].name;
  }
};

}  // namespace tessera::testing
