// A mixture of experts in place of the MLP (GPTConfig::n_expert, nn/moe.h): the routing by hand,
// the mixture against each token summing its own experts, gradients by central differences (the
// model's, and the router losses'), the loss's value left as the cross-entropy's, the
// parameters and their names (Mixtral's, Qwen3-MoE's, Qwen2-MoE's), decoding through the cache,
// and a shared expert beside the routed ones, gated or not.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "autograd/autograd.h"
#include "nn/gpt.h"
#include "nn/gpt_fixture.h"
#include "nn/hf_names.h"
#include "nn/moe.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using nn::GPT;
using nn::GPTConfig;
using tessera::testing::gradcheck;
using tessera::testing::ids;
using tessera::testing::max_abs_diff;
using tessera::testing::model_gradcheck;
using tessera::testing::tiny_gpt2;
using tessera::testing::tiny_llama;

namespace {

GPTConfig with_experts(GPTConfig c, int64_t experts = 3, int64_t top_k = 2) {
  c.n_expert = experts, c.expert_top_k = top_k;
  return c;
}

// Expert e of the tests' mixtures: x W_e^T, W_e the e-th (C, C) block of w (E C, C).
nn::ExpertFn linear_experts(const Tensor& w, int64_t C) {
  return [w, C](int64_t e, const Tensor& xe) {
    return ops::linear(xe, w.narrow(0, e * C, C), Tensor());
  };
}

}  // namespace

TEST(Moe, routing_takes_each_tokens_most_probable_experts_ties_to_the_lower_index) {
  // 3 tokens over 4 experts, top 2. Token 1 ties experts 0 and 3 behind expert 2.
  const std::vector<float> probs = {0.1f, 0.6f, 0.2f, 0.1f,  //
                                    0.2f, 0.1f, 0.5f, 0.2f,  //
                                    0.4f, 0.1f, 0.1f, 0.4f};
  const nn::Routing r = nn::route_top_k(probs, 3, 4, 2);
  EXPECT_EQ(r.chosen, (std::vector<int32_t>{1, 2, 2, 0, 0, 3}));
  EXPECT_EQ(r.counts, (std::vector<int64_t>{2, 1, 2, 1}));
  // Grouped by expert, tokens in order within a group; each slot n k + j beside its token.
  EXPECT_EQ(r.rows, (std::vector<int32_t>{1, 2, 0, 0, 1, 2}));
  EXPECT_EQ(r.slots, (std::vector<int32_t>{3, 4, 0, 1, 2, 5}));
  const std::vector<float> nan = {0.5f, std::nanf(""), 0.2f, 0.3f};
  EXPECT_NE(tessera::testing::error_of([&] {
              nn::route_top_k(nan, 1, 4, 2);
            }).find("token 0's probability of expert 1 is NaN"),
            std::string::npos);
}

TEST(Moe, mixture_is_each_token_summing_its_top_k_experts_by_weight) {
  const int64_t N = 7, C = 3, E = 4, k = 2;
  Generator g(11);
  const Tensor x = randn({N, C}, g, DType::F64), logits = randn({N, E}, g, DType::F64),
               w = randn({E * C, C}, g, DType::F64);
  for (bool renormalize : {true, false}) {
    const Tensor y = nn::mixture(x, logits, {E, k, renormalize}, linear_experts(w, C));
    // By hand, token by token: softmax, the two largest, their weights, the experts' outputs.
    const std::vector<double> xv = x.to_vector<double>(), lv = logits.to_vector<double>(),
                              wv = w.to_vector<double>(), yv = y.to_vector<double>();
    double worst = 0;
    for (int64_t n = 0; n < N; ++n) {
      std::vector<double> p(E);
      double z = 0;
      for (int64_t e = 0; e < E; ++e) z += p[size_t(e)] = std::exp(lv[size_t(n * E + e)]);
      for (double& q : p) q /= z;
      int64_t first = 0;
      for (int64_t e = 1; e < E; ++e)
        if (p[size_t(e)] > p[size_t(first)]) first = e;
      int64_t second = first == 0 ? 1 : 0;
      for (int64_t e = 0; e < E; ++e)
        if (e != first && p[size_t(e)] > p[size_t(second)]) second = e;
      double w1 = p[size_t(first)], w2 = p[size_t(second)];
      if (renormalize) {
        const double s = w1 + w2;
        w1 /= s, w2 /= s;
      }
      for (int64_t c = 0; c < C; ++c) {
        double want = 0;
        for (int64_t i = 0; i < C; ++i) {
          const double xi = xv[size_t(n * C + i)];
          want += w1 * wv[size_t((first * C + c) * C + i)] * xi;
          want += w2 * wv[size_t((second * C + c) * C + i)] * xi;
        }
        worst = std::max(worst, std::abs(want - yv[size_t(n * C + c)]));
      }
    }
    // Sums of a few f64 products in another order: 1e-14 of values near 1.
    EXPECT_LT(worst, 1e-12) << "renormalize " << renormalize;
  }
}

TEST(Moe, gradcheck_of_the_mixture_and_of_its_router_losses) {
  const int64_t N = 6, C = 3, E = 3;
  Generator g(5);
  const std::vector<Tensor> in = {randn({N, C}, g, DType::F64), randn({N, E}, g, DType::F64),
                                  randn({E * C, C}, g, DType::F64)};
  for (int64_t k : {1, 2})
    for (bool renormalize : {true, false}) {
      const nn::MixtureOptions o{E, k, renormalize};
      EXPECT_TRUE(gradcheck(
          [&](const std::vector<Tensor>& t) {
            return nn::mixture(t[0], t[1], o, linear_experts(t[2], C));
          },
          in))
          << "k " << k << " renormalize " << renormalize;
      for (bool z : {false, true})
        EXPECT_TRUE(gradcheck(
            [&](const std::vector<Tensor>& t) {
              nn::RouterLosses losses;
              nn::mixture(t[0], t[1], o, linear_experts(t[2], C), &losses);
              return z ? losses.z : losses.balance;
            },
            in, {.check = {false, true, false}}))
            << "k " << k << (z ? " z" : " balance");
    }
}

TEST(Moe, router_losses_by_hand) {
  // Equal logits: every probability is 1/E, and E / (N k) sum_e count_e / E = 1 whatever the load
  // (the ties send all 8 slots of 4 tokens to experts 0 and 1). Unequal ones below weigh the load.
  nn::RouterLosses aux;
  const Tensor x = ones({4, 2}, DType::F64), w = ones({8, 2}, DType::F64);
  nn::mixture(x, zeros({4, 4}, DType::F64), {4, 2, true}, linear_experts(w, 2), &aux);
  EXPECT_NEAR(aux.balance.item(), 1.0, 1e-15);
  EXPECT_NEAR(aux.z.item(), std::log(4.0) * std::log(4.0), 1e-14);  // logsumexp of 4 zeros
  // Every token prefers expert 0 (probability p0), then 1: count 0 = count 1 = N.
  const Tensor logits =
      from_vector<double>({2, 1, 0, 0, 2, 1, 0, 0, 2, 1, 0, 0, 2, 1, 0, 0}, {4, 4});
  nn::mixture(x, logits, {4, 2, true}, linear_experts(w, 2), &aux);
  const double z = std::exp(2.0) + std::exp(1.0) + 2, p0 = std::exp(2.0) / z,
               p1 = std::exp(1.0) / z;
  EXPECT_NEAR(aux.balance.item(), 4.0 / 8.0 * (4 * p0 + 4 * p1), 1e-15);
  EXPECT_NEAR(aux.z.item(), std::log(z) * std::log(z), 1e-14);
}

TEST(Moe, model_gradcheck_in_both_styles) {
  for (GPTConfig c : {with_experts(tiny_gpt2()), with_experts(tiny_llama(), 2, 1)}) {
    c.router_aux_loss = 0;  // the loss's value is then all its gradient follows
    EXPECT_TRUE(model_gradcheck(c)) << (c.gpt2_names() ? "gpt2" : "llama");
  }
}

// A shared expert (GPTConfig::shared_expert_hidden) beside the routed ones, its output gated by
// sigmoid(x w^T) or not: every parameter's gradient, the gate's and the shared MLP's among them.
TEST(Moe, model_gradcheck_with_a_shared_expert_gated_or_not) {
  for (bool gated : {false, true})
    for (GPTConfig c : {with_experts(tiny_gpt2()), with_experts(tiny_llama(), 2, 1)}) {
      c.router_aux_loss = 0, c.shared_expert_hidden = 6, c.shared_expert_gate = gated;
      EXPECT_TRUE(model_gradcheck(c)) << (c.gpt2_names() ? "gpt2" : "llama") << " gated " << gated;
    }
}

// What the shared expert adds: with its gate's weights 0 the gate is sigmoid(0) = 1/2 for every
// token, so the gated model equals the ungated one whose shared down projection is halved (a
// Llama-style MLP has no bias for the halving to miss). The shared expert is the same MLP as
// the routed ones, named after them: Qwen2-MoE's shared_expert, tessera's under Mixtral's names.
TEST(Moe, a_shared_experts_gate_scales_its_output) {
  GPTConfig c = with_experts(tiny_llama(), 3, 1);
  c.shared_expert_hidden = 6;
  GPTConfig gated = c;
  gated.shared_expert_gate = true;
  Generator g1(4), g2(4);
  GPT plain(c, g1, DType::F64), half(gated, g2, DType::F64);
  const std::string block = "model.layers.1.block_sparse_moe.";
  EXPECT_EQ(half.parameter(block + "shared_expert_gate.weight").shape(), (Shape{1, 8}));
  EXPECT_EQ(half.parameter(block + "shared_expert.w1.weight").shape(), (Shape{6, 8}));
  EXPECT_EQ(half.parameter(block + "shared_expert.w2.weight").shape(), (Shape{8, 6}));
  for (auto& [name, t] : plain.parameters()) {  // the same weights (the gate's drawn among them);
    Tensor(half.parameter(name)).copy_(t);      // then the plain model's shared down halved
    if (name.find("shared_expert.w2") != std::string::npos) Tensor(t).copy_(ops::scale(t, 0.5));
  }
  for (int64_t l = 0; l < c.n_layer; ++l)
    Tensor(half.parameter("model.layers." + std::to_string(l) +
                          ".block_sparse_moe.shared_expert_gate.weight"))
        .copy_(zeros({1, 8}, Options(DType::F64)));
  const Tensor x = ids({1, 5, 9, 2, 0, 10, 3, 3}, {2, 4});
  const Tensor a = half.forward(x, false), b = plain.forward(x, false);
  EXPECT_LT(max_abs_diff(a, b), 1e-13);
  // The shared expert changes the output: without it (another seed's weights aside) the logits
  // differ from the plain model's.
  Tensor(plain.parameter("model.layers.0.block_sparse_moe.shared_expert.w2.weight"))
      .copy_(zeros({8, 6}, Options(DType::F64)));
  EXPECT_GT(max_abs_diff(plain.forward(x, false), b), 1e-6);
  GPTConfig q = gated;
  q.qkv_bias = true, q.bias = false;  // Qwen2-MoE's names
  GPT qm(q, g1);
  EXPECT_EQ(qm.parameter("model.layers.0.mlp.shared_expert.down_proj.weight").shape(),
            (Shape{8, 6}));
  EXPECT_EQ(nn::hf_arch(q).architecture, std::string("Qwen2MoeForCausalLM"));
  // Per layer: the router, 3 experts' MLPs, the shared one of 6 and its gate (8).
  GPT dense(tiny_llama(), g1);
  const int64_t mlp = 3 * 8 * 12, others = dense.num_parameters() - 2 * mlp;
  EXPECT_EQ(half.num_parameters(), others + 2 * (3 * 8 + 3 * mlp + 3 * 8 * 6 + 8));
}

TEST(Moe, router_losses_join_the_gradient_but_not_the_value) {
  GPTConfig c = with_experts(tiny_llama());
  c.router_z_loss = 0.3;
  Generator g(7);
  GPT model(c, g, DType::F64);
  const Tensor x = ids({1, 5, 9, 2, 0, 10, 3, 3}, {2, 4}),
               y = ids({5, 9, 2, 7, 10, 3, 3, 4}, {2, 4});
  std::vector<Tensor> params;
  for (const auto& [name, t] : model.parameters()) params.push_back(t);
  // The value the gradient follows: the cross-entropy + router_aux_loss x the balancing losses
  // + router_z_loss x the z-losses.
  EXPECT_TRUE(tessera::testing::gradcheck(
      [&](const std::vector<Tensor>& p) {
        model.replace_parameters(p);
        nn::RouterLosses router;
        Tensor loss = model.loss(x, y, true, 0, &router);
        return ops::add(loss, ops::add(ops::scale(router.balance, c.router_aux_loss),
                                       ops::scale(router.z, c.router_z_loss)));
      },
      params));
  // The loss itself is the cross-entropy's, bit for bit, whatever the coefficient; evaluation
  // computes no balance.
  GPTConfig none = c;
  none.router_aux_loss = 0, none.router_z_loss = 0;
  Generator g2(7);
  GPT plain(none, g2, DType::F64);
  plain.replace_parameters(params);
  nn::RouterLosses router;
  EXPECT_EQ(model.loss(x, y, true, 0, &router).item(), plain.loss(x, y).item());
  EXPECT_GT(router.balance.item(), 0.5 * double(c.n_layer));  // each block's is ~1 near uniform
  EXPECT_GT(router.z.item(), 0.0);
  model.loss(x, y, false, 0, &router);
  EXPECT_FALSE(router.balance.defined() || router.z.defined());
}

TEST(Moe, parameters_are_named_as_mixtral_qwen3_moe_and_tesseras_gpt2_experts) {
  Generator g(1);
  const GPTConfig llama = with_experts(tiny_llama());
  GPT m(llama, g);
  const std::string block = "model.layers.1.block_sparse_moe.";
  EXPECT_EQ(m.parameter(block + "gate.weight").shape(), (Shape{3, 8}));
  EXPECT_EQ(m.parameter(block + "experts.2.w1.weight").shape(), (Shape{12, 8}));  // gate
  EXPECT_EQ(m.parameter(block + "experts.2.w3.weight").shape(), (Shape{12, 8}));  // up
  EXPECT_EQ(m.parameter(block + "experts.2.w2.weight").shape(), (Shape{8, 12}));  // down
  EXPECT_EQ(nn::hf_arch(llama).architecture, std::string("MixtralForCausalLM"));
  GPTConfig qwen = llama;
  qwen.qk_norm = true;
  GPT q(qwen, g);
  EXPECT_EQ(q.parameter("model.layers.0.mlp.gate.weight").shape(), (Shape{3, 8}));
  EXPECT_EQ(q.parameter("model.layers.0.mlp.experts.1.down_proj.weight").shape(), (Shape{8, 12}));
  EXPECT_EQ(nn::hf_arch(qwen).architecture, std::string("Qwen3MoeForCausalLM"));
  GPT gp(with_experts(tiny_gpt2(), 2, 1), g);
  EXPECT_EQ(gp.parameter("transformer.h.0.mlp.router.weight").shape(), (Shape{2, 8}));
  EXPECT_EQ(gp.parameter("transformer.h.0.mlp.experts.1.c_fc.bias").shape(), (Shape{32}));
  // Per layer: the router, then every expert's MLP; nothing of a dense MLP.
  GPT dense(tiny_llama(), g);
  const int64_t mlp = 3 * 8 * 12, others = dense.num_parameters() - 2 * mlp;
  EXPECT_EQ(m.num_parameters(), others + 2 * (3 * 8 + 3 * mlp));
  EXPECT_THROW(m.parameter("model.layers.0.mlp.up_proj.weight"), Error);
  // The experts are block Linears (Muon, QLoRA); the router is not.
  const std::vector<std::string> linears = m.block_linear_weights();
  EXPECT_NE(std::find(linears.begin(), linears.end(), block + "experts.0.w2.weight"),
            linears.end());
  EXPECT_EQ(std::find(linears.begin(), linears.end(), block + "gate.weight"), linears.end());
}

TEST(Moe, decoding_through_the_cache_gives_the_forwards_logits) {
  GPTConfig shared = with_experts(tiny_llama());
  shared.shared_expert_hidden = 6, shared.shared_expert_gate = true;
  for (const GPTConfig& c : {with_experts(tiny_llama()), shared}) {
    Generator g(3);
    GPT m(c, g, DType::F64);
    const Tensor seq = ids({1, 5, 9, 2}, {1, 4});
    const Tensor full = m.forward(seq, false);
    nn::KVCache cache = m.make_cache(1, 4);
    const Tensor first = m.forward_cached(seq.narrow(1, 0, 3).contiguous(), cache);
    const Tensor last = m.forward_cached(seq.narrow(1, 3, 1).contiguous(), cache);
    EXPECT_LT(max_abs_diff(first, full.narrow(1, 0, 3)), 1e-12);
    EXPECT_LT(max_abs_diff(last, full.narrow(1, 3, 1)), 1e-12);
  }
}

TEST(Moe, config_refuses_what_it_cannot_build) {
  GPTConfig c = with_experts(tiny_llama(), 3, 4);
  Generator g(1);
  EXPECT_THROW(GPT(c, g), Error);  // top 4 of 3
  c = with_experts(tiny_llama(), -1, 1);
  EXPECT_THROW(GPT(c, g), Error);
}
