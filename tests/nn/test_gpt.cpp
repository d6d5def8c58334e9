// The GPT model: parameter layout, initial loss, whole-model gradient checks in both styles,
// activation recompute, and that it learns.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>

#include "backend/profile.h"
#include "nn/generate.h"
#include "nn/gpt.h"
#include "nn/gpt_fixture.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using nn::GPT;
using nn::GPTConfig;
using tessera::testing::error_of;
using tessera::testing::ids;
using tessera::testing::max_abs_diff;
using tessera::testing::model_gradcheck;
using tessera::testing::tiny_gpt2;
using tessera::testing::tiny_llama;

namespace {

// A model without position parameters reads twice its block: causal, so the first block_size
// positions' logits are the block's own.
void expect_reads_past_block_size(const GPT& m, uint64_t seed) {
  const GPTConfig& c = m.config();
  Generator ids_gen(seed);
  const Tensor ids = tessera::testing::random_tokens(2, 2 * c.block_size, c.vocab_size, ids_gen);
  const Tensor longer = m.forward(ids, false),
               shorter = m.forward(ids.narrow(1, 0, c.block_size), false);
  EXPECT_LT(max_abs_diff(longer.narrow(1, 0, c.block_size), shorter), 1e-5);
}

}  // namespace

TEST(GPT, gpt2_style_parameter_names_and_shapes) {
  Generator g(1);
  GPT m(tiny_gpt2(), g);
  EXPECT_EQ(m.parameter("transformer.wte.weight").shape(), (Shape{11, 8}));
  EXPECT_EQ(m.parameter("transformer.wpe.weight").shape(), (Shape{4, 8}));
  EXPECT_EQ(m.parameter("transformer.h.1.attn.c_attn.weight").shape(), (Shape{24, 8}));  // [out, in]
  EXPECT_EQ(m.parameter("transformer.h.0.mlp.c_fc.weight").shape(), (Shape{32, 8}));
  EXPECT_EQ(m.parameter("transformer.h.0.mlp.c_proj.bias").shape(), (Shape{8}));
  EXPECT_EQ(m.parameter("transformer.ln_f.bias").shape(), (Shape{8}));
  EXPECT_FALSE(error_of([&] { m.parameter("lm_head.weight"); }).empty());  // tied to wte
}

TEST(GPT, llama_style_parameter_names_and_shapes) {
  Generator g(1);
  GPT m(tiny_llama(), g);
  EXPECT_EQ(m.parameter("model.layers.0.self_attn.q_proj.weight").shape(), (Shape{8, 8}));
  EXPECT_EQ(m.parameter("model.layers.0.self_attn.k_proj.weight").shape(), (Shape{4, 8}));  // 1 kv head
  EXPECT_EQ(m.parameter("model.layers.1.mlp.gate_proj.weight").shape(), (Shape{12, 8}));
  EXPECT_EQ(m.parameter("model.norm.weight").shape(), (Shape{8}));
  EXPECT_EQ(m.parameter("lm_head.weight").shape(), (Shape{11, 8}));
  EXPECT_FALSE(error_of([&] { m.parameter("model.layers.0.self_attn.q_proj.bias"); }).empty());
}

TEST(GPT, llama_up_proj_is_swiglus_linear_factor_and_gate_proj_its_silu_argument) {
  // down(silu(gate x) * up x): HF's LlamaMLP. Both matrices are [F, C], so names swapped between
  // them would still load into transformers and silently compute another function; the names must
  // say which factor is linear. Doubling up_proj and halving down_proj leaves the logits as they
  // were (powers of two: exact in f64, up to the last bits of summation order); doing that to
  // gate_proj instead changes them, silu not being linear. gate_proj is first scaled up so that
  // silu works away from its near-linear origin (measured change 6e-3; ~1e-6 without).
  Generator g(8);
  GPT base(tiny_llama(), g, DType::F64);
  NoGradGuard no_grad;
  for (int64_t l = 0; l < 2; ++l) {
    Tensor gate = base.parameter("model.layers." + std::to_string(l) + ".mlp.gate_proj.weight");
    gate.copy_(ops::scale(gate, 50.0));
  }
  const Tensor x = ids({1, 5, 9, 2, 0, 10, 3, 3}, {2, 4});
  const Tensor want = base.forward(x, false);
  auto rescaled = [&](const char* factor) {
    for (int64_t l = 0; l < 2; ++l) {
      const std::string mlp = "model.layers." + std::to_string(l) + ".mlp.";
      Tensor f = base.parameter(mlp + factor + ".weight"), down = base.parameter(mlp + "down_proj.weight");
      const Tensor f0 = f.clone(), down0 = down.clone();
      f.copy_(ops::scale(f0, 2.0));
      down.copy_(ops::scale(down0, 0.5));
    }
    const Tensor got = base.forward(x, false);
    for (int64_t l = 0; l < 2; ++l) {  // undo: halving and doubling are exact
      const std::string mlp = "model.layers." + std::to_string(l) + ".mlp.";
      Tensor f = base.parameter(mlp + factor + ".weight"), down = base.parameter(mlp + "down_proj.weight");
      f.copy_(ops::scale(f.clone(), 0.5));
      down.copy_(ops::scale(down.clone(), 2.0));
    }
    return max_abs_diff(got, want);
  };
  const double up = rescaled("up_proj"), gate = rescaled("gate_proj");
  std::printf("logit change: up_proj x2 %.3g, gate_proj x2 %.3g\n", up, gate);
  EXPECT_LT(up, 1e-12);
  EXPECT_GT(gate, 1e-4);
}

TEST(GPT, gpt2_124m_has_the_published_parameter_count) {
  // GPT-2 small: 124,439,808 parameters counting the tied embedding once (Radford et al. 2019;
  // the figure Hugging Face reports for "gpt2").
  GPTConfig c;
  c.n_layer = 12, c.n_head = 12, c.n_embd = 768, c.block_size = 1024, c.vocab_size = 50257;
  Generator g(1);
  GPT m(c, g);
  EXPECT_EQ(m.num_parameters(), 124439808);
}

TEST(GPT, residual_projections_use_the_scaled_init) {
  GPTConfig c = tiny_gpt2();
  c.n_embd = 64, c.n_head = 4, c.n_layer = 8;
  Generator g(2);
  GPT m(c, g);
  auto stddev = [](const Tensor& t) {
    std::vector<float> v = t.to_vector<float>();
    double s = 0;
    for (float x : v) s += double(x) * x;
    return std::sqrt(s / double(v.size()));
  };
  // 4096 samples: the sample std is within ~5% of the true one with overwhelming probability.
  EXPECT_NEAR(stddev(m.parameter("transformer.h.0.attn.c_attn.weight")), 0.02, 0.001);
  EXPECT_NEAR(stddev(m.parameter("transformer.h.0.attn.c_proj.weight")), 0.02 / std::sqrt(16.0), 0.0003);
}

TEST(GPT, initial_loss_is_close_to_log_vocab) {
  // With N(0, 0.02) weights the logits are nearly uniform: loss ~ ln V = ln 257 = 5.549.
  GPTConfig c = tiny_gpt2();
  c.vocab_size = 257, c.n_embd = 32, c.block_size = 16;
  Generator g(3);
  GPT m(c, g);
  // Targets differ from the inputs: with tied embeddings an input token's own logit is raised at
  // init (its embedding is in the residual stream), which would pull the loss below ln V.
  std::vector<int32_t> v(32), t(32);
  for (size_t i = 0; i < v.size(); ++i) v[i] = int32_t((i * 37) % 257), t[i] = int32_t((i * 91 + 5) % 257);
  double loss = m.loss(ids(v, {2, 16}), ids(t, {2, 16})).item();
  EXPECT_NEAR(loss, std::log(257.0), 0.1);
}

TEST(GPT, gradcheck_whole_model_gpt2_style) { EXPECT_TRUE(model_gradcheck(tiny_gpt2())); }

TEST(GPT, gradcheck_whole_model_llama_style) { EXPECT_TRUE(model_gradcheck(tiny_llama())); }

// Qwen2's attention: biases on q, k and v alone (qkv_bias), checked with the biases among the
// parameters the central differences move.
TEST(GPT, gradcheck_whole_model_qwen2_style) {
  GPTConfig c = tiny_llama();
  c.qkv_bias = true;
  Generator g(1);
  EXPECT_EQ(GPT(c, g).parameters().size(), GPT(tiny_llama(), g).parameters().size() + 3 * 2);
  EXPECT_TRUE(model_gradcheck(c));
}

// Stick-breaking attention without position encoding (the sb-small configuration), in its variants.
std::vector<GPTConfig> stick_breaking_variants() {
  std::vector<GPTConfig> out;
  for (int v = 0; v < 3; ++v) {
    GPTConfig c = tiny_gpt2();
    c.attention.kind = nn::AttentionKind::StickBreaking, c.position = nn::PositionKind::None;
    c.attention.attend_current = v == 1, c.attention.sb_remainder = v == 2;
    out.push_back(c);
  }
  return out;
}

TEST(GPT, gradcheck_whole_model_alibi) {
  // ALiBi (no position parameters): off GPT-2's fused c_attn (the packed path) and, Llama style,
  // off separate projections with grouped-query heads.
  for (GPTConfig c : {tiny_gpt2(), tiny_llama()}) {
    c.position = nn::PositionKind::ALiBi, c.attention.alibi = true;
    EXPECT_TRUE(model_gradcheck(c));
  }
}

TEST(GPT, an_alibi_model_has_no_position_parameters_and_reads_past_block_size) {
  GPTConfig c = tiny_gpt2();
  c.position = nn::PositionKind::ALiBi, c.attention.alibi = true;
  Generator g(81);
  GPT m(c, g);
  for (const auto& [name, t] : m.parameters())
    EXPECT_EQ(name.find("wpe"), std::string::npos) << name;
  expect_reads_past_block_size(m, 82);
  // The flag and the position kind go together.
  GPTConfig half = tiny_gpt2();
  half.attention.alibi = true;
  const std::string msg = tessera::testing::error_of([&] { half.validate(); });
  EXPECT_NE(msg.find("position alibi and attention.alibi go together"), std::string::npos) << msg;
}

TEST(GPT, gradcheck_whole_model_forgetting) {
  // Forgetting attention: the gate's Linear per block, its sums and the biased flash kernels,
  // GPT-2 style without positions and Llama style with RoPE and grouped-query heads.
  for (GPTConfig c : {tiny_gpt2(), tiny_llama()}) {
    c.attention.kind = nn::AttentionKind::Forgetting;
    if (c.position == nn::PositionKind::Learned) c.position = nn::PositionKind::None;
    EXPECT_TRUE(model_gradcheck(c));
  }
}

TEST(GPT, a_forgetting_model_has_a_gate_per_block_and_reads_past_block_size) {
  GPTConfig c = tiny_gpt2();
  c.attention.kind = nn::AttentionKind::Forgetting, c.position = nn::PositionKind::None;
  c.bias = false;  // the gate keeps its bias all the same
  Generator g(83);
  GPT m(c, g);
  EXPECT_EQ(m.parameter("transformer.h.1.attn.fgate.weight").shape(), (Shape{c.n_head, c.n_embd}));
  EXPECT_EQ(m.parameter("transformer.h.1.attn.fgate.bias").shape(), (Shape{c.n_head}));
  GPTConfig l = tiny_llama();
  l.attention.kind = nn::AttentionKind::Forgetting;
  Generator gl(84);
  EXPECT_EQ(GPT(l, gl).parameter("model.layers.0.self_attn.fgate_proj.bias").shape(),
            (Shape{l.n_head}));
  expect_reads_past_block_size(m, 85);
}

TEST(GPT, gradcheck_whole_model_stick_breaking) {
  for (const GPTConfig& c : stick_breaking_variants()) EXPECT_TRUE(model_gradcheck(c));
}

TEST(GPT, s2_attn_changes_training_forwards_only) {
  GPTConfig c = tiny_llama();
  c.block_size = 8, c.n_head = 2, c.n_kv_head = 2;
  Generator g(4);
  GPT full(c, g);
  c.attention.s2_attn = true;
  Generator g2(4);
  GPT s2(c, g2);
  Tensor x = ids({1, 2, 3, 4, 5, 6, 7, 8, 2, 4, 6, 8, 1, 3, 5, 7}, {2, 8});
  // Evaluation attends fully: the same logits bit for bit.
  EXPECT_EQ(s2.forward(x, false).to_vector<float>(), full.forward(x, false).to_vector<float>());
  // Training attends within groups of T / 4 = 2 tokens: a different function.
  const std::vector<float> a = s2.forward(x, true).to_vector<float>();
  const std::vector<float> b = full.forward(x, true).to_vector<float>();
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, double(std::fabs(a[i] - b[i])));
  EXPECT_GT(diff, 1e-4);
}

TEST(GPT, recompute_matches_plain_forward_and_gradients) {
  for (GPTConfig c : {tiny_gpt2(), tiny_llama()}) {
    c.dropout = 0.1;
    auto run = [&](bool recompute) {
      c.recompute = recompute;
      Generator g(4);
      GPT m(c, g);
      manual_seed(9);
      Tensor loss = m.loss(ids({1, 2, 3, 4}, {1, 4}), ids({2, 3, 4, 5}, {1, 4}));
      loss.backward();
      std::vector<std::vector<float>> out{{float(loss.item())}};
      for (const auto& [name, t] : m.parameters()) out.push_back(t.grad().to_vector<float>());
      // The backward replays each block's dropout draws, then must hand the generator back where
      // the forward left it: else the next step's masks repeat counters of this one.
      const RngState after = default_generator().state();
      out.push_back({float(after.seed), float(after.offset)});
      return out;
    };
    EXPECT_EQ(run(false), run(true));
  }
}

namespace {
// A hook that changes nothing but says it adapts every projection but the head: the model then
// splits the attention heads instead of running attention off the fused projection
// (ops/packed_attention.h), and pads its logits as without a hook.
class SplitHeads : public nn::LinearHook {
 public:
  Tensor base(const std::string&, const Tensor& x, const Tensor& w, const Tensor& b) const override {
    return ops::linear(x, w, b);
  }
  Tensor adapt(nn::Proj, int64_t, const Tensor&, const Tensor& y, bool) const override { return y; }
  bool adapts(nn::Proj p, int64_t) const override { return p != nn::Proj::Head; }
};

// The loss and every gradient of a seeded f64 model on a fixed batch, under `hook` (or none), and
// the calls of `kernel` in that forward and backward.
struct ProfiledRun {
  std::vector<std::vector<double>> values;
  int64_t calls = 0;
};
ProfiledRun run_profiled(const GPTConfig& c, const nn::LinearHook* hook,
                         const std::string& kernel) {
  Generator g(4);
  GPT m(c, g, DType::F64);
  if (hook) m.set_hook(hook);
  profile::start();
  Tensor loss = m.loss(ids({1, 2, 3, 4, 9, 8, 7, 6}, {2, 4}), ids({2, 3, 4, 5, 8, 7, 6, 5}, {2, 4}));
  loss.backward();
  profile::stop();
  ProfiledRun r;
  for (const profile::Row& row : profile::rows())
    if (row.kernel == kernel) r.calls += row.calls;
  r.values.push_back({loss.item()});
  for (const auto& [name, t] : m.parameters()) r.values.push_back(t.grad().to_vector<double>());
  return r;
}
}  // namespace

TEST(GPT, attention_off_the_fused_projection_equals_split_heads_with_fewer_copies) {
  // GPT-2 names, learned positions and no hook adapting q, k, v: attention reads the heads where
  // c_attn left them. Same kernels, same values: loss and every gradient agree exactly with the
  // split path; the kernel profile shows the head split and merge copies gone.
  GPTConfig softmax = tiny_gpt2();
  softmax.n_kv_head = 1;  // grouped-query heads too
  GPTConfig sb = softmax;  // stick-breaking, which needs no positions
  sb.position = nn::PositionKind::None;
  sb.attention.kind = nn::AttentionKind::StickBreaking;
  sb.attention.sb_remainder = true;
  for (const GPTConfig& c : {softmax, sb}) {
    SCOPED_TRACE(ops::attention_kind_name(c.attention.kind));
    const SplitHeads split;
    const ProfiledRun packed = run_profiled(c, nullptr, "copy"),
                      split_run = run_profiled(c, &split, "copy");
    EXPECT_EQ(packed.values, split_run.values);
    // Per layer the split path copies 3 head splits and a merge forward, and at least as many
    // backward (here 3 copies in all against 23).
    EXPECT_LE(packed.calls + 8 * c.n_layer, split_run.calls)
        << "packed " << packed.calls << ", split " << split_run.calls;
  }
}

TEST(GPT, llama_attention_off_its_projections_makes_no_head_copies) {
  // Separate q, k, v projections and RoPE: ops::projected_causal_attention rotates q and k out of
  // the projections and attends in place (tests/ops/test_packed_attention.cpp shows it equals the
  // split path exactly). A 2-layer model's forward and backward then copies nothing per layer: at
  // most 5 copies in all (ids and targets, the logits' zero padding), against 13 when the heads
  // are copied out and merged back.
  const ProfiledRun r = run_profiled(tiny_llama(), nullptr, "copy");
  EXPECT_LE(r.calls, 5);
}

TEST(GPT, residual_adds_ride_the_output_projections_with_the_same_values) {
  // Without a hook (and without dropout) each block's two residual adds are done by its output
  // projections' kernels (linear_add, mlp_gelu's second Linear: on CUDA the gemm's C); with a
  // hook they are ops::add. The CPU kernel rounds as the adds do: loss and every gradient agree
  // exactly, and the fused run makes 2 binary calls fewer per layer.
  for (const GPTConfig& c : {tiny_gpt2(), tiny_llama()}) {
    const SplitHeads hook;
    const ProfiledRun fused = run_profiled(c, nullptr, "binary"),
                      split = run_profiled(c, &hook, "binary");
    EXPECT_EQ(fused.values, split.values);
    EXPECT_EQ(fused.calls + 2 * c.n_layer, split.calls)
        << "fused " << fused.calls << ", split " << split.calls;
  }
}

TEST(GPT, gelu_mlp_runs_c_fc_and_gelu_as_one_kernel_with_the_same_values) {
  // Without a hook a GELU MLP's c_fc and its activation are one kernel call (linear_gelu_forward;
  // on CUDA one gemm with GELU in its epilogue); a hook (which may adapt c_fc) gets the two ops.
  // The CPU kernel is those two ops: loss and every gradient agree exactly.
  const GPTConfig c = tiny_gpt2();
  const SplitHeads hook;
  const ProfiledRun fused = run_profiled(c, nullptr, "linear_gelu_forward"),
                    split = run_profiled(c, &hook, "linear_gelu_forward");
  EXPECT_EQ(fused.values, split.values);
  EXPECT_EQ(fused.calls, c.n_layer);
  EXPECT_EQ(split.calls, 0);
  EXPECT_EQ(run_profiled(c, nullptr, "gelu_forward").calls, 0);
  EXPECT_EQ(run_profiled(c, &hook, "gelu_forward").calls, c.n_layer);
}

namespace {
// Changes nothing, but adapting the head keeps the logits unpadded.
class UnpaddedHead : public SplitHeads {
 public:
  bool adapts(nn::Proj p, int64_t) const override { return p == nn::Proj::Head; }
};
}  // namespace

TEST(GPT, padded_logits_give_the_unpadded_loss_and_gradients) {
  // Vocabulary 11 computes 64 logit columns (zero rows under the head weight); the cross-entropy
  // leaves the padding out, so loss and gradients equal the unpadded model's up to the gemm's
  // rounding over a different column count (f64: 1e-14 of values of order 1).
  for (GPTConfig c : {tiny_gpt2(), tiny_llama()}) {
    const UnpaddedHead unpadded;
    auto run = [&](bool padded, std::string* ce_shapes) {
      Generator g(4);
      GPT m(c, g, DType::F64);
      if (!padded) m.set_hook(&unpadded);
      EXPECT_EQ(m.logit_columns(), padded ? 64 : 11);
      const Tensor x = ids({1, 2, 3, 4, 9, 8, 7, 6}, {2, 4});
      EXPECT_EQ(m.forward(x).shape(), (Shape{2, 4, 11}));
      profile::start();
      Tensor loss = m.loss(x, ids({2, 3, 4, 5, 8, 7, 6, 10}, {2, 4}));
      loss.backward();
      profile::stop();
      for (const profile::Row& r : profile::rows())
        if (r.kernel == "cross_entropy_backward") *ce_shapes = r.shapes;  // dlogits first
      std::vector<Tensor> out{loss.detach()};
      for (const auto& [name, t] : m.parameters()) out.push_back(t.grad());
      return out;
    };
    std::string padded_shapes, plain_shapes;
    const std::vector<Tensor> a = run(true, &padded_shapes), b = run(false, &plain_shapes);
    EXPECT_NE(padded_shapes.find("(8, 64)"), std::string::npos) << padded_shapes;
    EXPECT_NE(plain_shapes.find("(8, 11)"), std::string::npos) << plain_shapes;
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_LT(tessera::testing::max_abs_diff(a[i], b[i]), 1e-14) << "tensor " << i;
  }
}

TEST(GPT, learns_a_repeated_sequence_with_sgd) {
  GPTConfig c = tiny_llama();
  c.n_embd = 16, c.vocab_size = 11;
  Generator g(5);
  GPT m(c, g);
  Tensor x = ids({1, 2, 3, 4, 5, 6, 7, 8}, {2, 4}), y = ids({2, 3, 4, 5, 6, 7, 8, 9}, {2, 4});
  double first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    Tensor loss = m.loss(x, y);
    loss.backward();
    (step == 0 ? first : last) = loss.item();
    NoGradGuard ng;
    for (const auto& [name, p] : m.parameters()) {
      Tensor upd = ops::add(p, ops::scale(p.grad(), -0.5));
      Tensor(p).copy_(upd);
    }
    m.zero_grad();
  }
  EXPECT_LT(last, 0.1 * first) << "first " << first << ", last " << last;
}

TEST(GPT, sequence_longer_than_block_size_names_both) {
  Generator g(6);
  GPT m(tiny_gpt2(), g);
  std::string msg = error_of([&] { m.forward(ids(std::vector<int32_t>(5, 1), {1, 5})); });
  EXPECT_NE(msg.find("5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("block_size 4"), std::string::npos) << msg;
}

TEST(GPT, invalid_config_names_the_field) {
  GPTConfig c = tiny_gpt2();
  c.n_head = 3;
  Generator g(6);
  std::string msg = error_of([&] { GPT m(c, g); });
  EXPECT_NE(msg.find("n_head"), std::string::npos) << msg;
}

TEST(GPT, cached_decoding_matches_the_full_forward) {
  std::vector<GPTConfig> configs = stick_breaking_variants();
  configs.push_back(tiny_gpt2());
  configs.push_back(tiny_llama());
  for (GPTConfig c : configs) {
    Generator g(8);
    GPT m(c, g, DType::F64);
    std::vector<int32_t> seq{3, 1, 4, 1};
    Tensor full = m.forward(ids(seq, {1, 4}), false);  // (1, 4, V)
    nn::KVCache cache = m.make_cache(1, 4);
    // The prompt of two tokens at once, then one token at a time.
    Tensor a = m.forward_cached(ids({3, 1}, {1, 2}), cache);
    Tensor b = m.forward_cached(ids({4}, {1, 1}), cache);
    Tensor d = m.forward_cached(ids({1}, {1, 1}), cache);
    std::vector<double> got = ops::concat({a, b, d}, 1).to_vector<double>();
    std::vector<double> want = full.to_vector<double>();
    ASSERT_EQ(got.size(), want.size());
    // Same math in a different summation order, in double: agreement to ~1e-15 relative.
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << i;
  }
}

TEST(Sampling, greedy_top_k_and_temperature) {
  Generator g(1);
  std::vector<double> logits{0.0, 3.0, 1.0, 2.9};
  EXPECT_EQ(nn::sample_token(logits, {.temperature = 0}, g), 1);
  for (int i = 0; i < 50; ++i) {
    // only ids 1 and 3 are candidates
    int32_t t = nn::sample_token(logits, {.temperature = 1, .top_k = 2}, g);
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
  // A very low temperature concentrates on the argmax.
  for (int i = 0; i < 20; ++i) EXPECT_EQ(nn::sample_token(logits, {.temperature = 1e-3}, g), 1);
  // Same generator state, same draw.
  Generator h1(5), h2(5);
  EXPECT_EQ(nn::sample_token(logits, {.temperature = 1}, h1),
            nn::sample_token(logits, {.temperature = 1}, h2));
}

// Probabilities 0.5, 0.3, 0.15, 0.05 (ids shuffled): the nucleus of 0.75 is the two most likely,
// of 0.4 the most likely alone, of 0.9 three; 1 keeps all four. 400 draws each: every kept id
// shows up (the least likely of 0.05 is missed 400 times with probability 1e-9) and no other.
TEST(Sampling, top_p_keeps_the_smallest_set_holding_that_much_probability) {
  const std::vector<double> probs{0.15, 0.5, 0.05, 0.3};
  std::vector<double> logits;
  for (double p : probs) logits.push_back(std::log(p) + 7);  // a shift changes nothing
  const std::vector<std::pair<double, std::set<int32_t>>> cases = {
      {0.75, {1, 3}}, {0.4, {1}}, {0.9, {0, 1, 3}}, {1.0, {0, 1, 2, 3}}};
  Generator g(3);
  for (const auto& [top_p, want] : cases) {
    std::set<int32_t> seen;
    for (int i = 0; i < 400; ++i) seen.insert(nn::sample_token(logits, {.temperature = 1, .top_p = top_p}, g));
    EXPECT_EQ(seen, want) << "top_p " << top_p;
  }
  // top_k first, then the nucleus of what is left: of ids 1 and 3 (renormalised 0.625, 0.375),
  // 0.6 keeps id 1 only. A temperature sharpens before the cut: at 0.5 id 1 holds 0.685 of the
  // mass, so 0.65 keeps it alone (at temperature 1 it keeps two).
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(nn::sample_token(logits, {.temperature = 1, .top_k = 2, .top_p = 0.6}, g), 1);
    EXPECT_EQ(nn::sample_token(logits, {.temperature = 0.5, .top_p = 0.65}, g), 1);
  }
}

// Hugging Face's top-k removes only the tokens below the k-th: ties with it stay. Logits 3, 1, 1,
// 1, 0 at top_k 2 keep ids 0 to 3 (before: 0 and 1 only, id 1 standing for all three). 600 draws:
// each tied id has probability 0.096, so one is missed 600 times with probability 6e-27.
TEST(Sampling, top_k_keeps_every_token_tied_with_the_kth) {
  Generator g(11);
  for (const std::vector<double>& logits :
       {std::vector<double>{3, 1, 1, 1, 0}, std::vector<double>{1, 0, 1, 3, 1}}) {
    std::set<int32_t> seen;
    for (int i = 0; i < 600; ++i) seen.insert(nn::sample_token(logits, {.temperature = 1, .top_k = 2}, g));
    std::set<int32_t> want;
    for (int32_t i = 0; i < 5; ++i)
      if (logits[size_t(i)] >= 1) want.insert(i);
    EXPECT_EQ(seen, want);
  }
  // Without a tie at the k-th, exactly k.
  std::set<int32_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(nn::sample_token({3, 2, 1, 1}, {.temperature = 1, .top_k = 2}, g));
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
}

// The tests above check which tokens can come out; this one how often. Probabilities 0.15, 0.5,
// 0.05, 0.3: at temperature 2 they become proportional to sqrt(p); top_k 2 and top_p 0.75 both
// keep ids 1 and 3, renormalised to 0.625 and 0.375; top_p 0.9 keeps 1, 3, 0 over their 0.95.
// 20000 draws each: a frequency's standard deviation is at most 0.0035, and the bound is 5 of
// them (a fair sampler is outside it with probability 6e-7 per id; the draws are seeded anyway).
// A nucleus sampled against the whole mass instead of the kept one gives id 3 0.5, not 0.375.
TEST(Sampling, draws_follow_the_renormalised_probabilities) {
  const std::vector<double> probs{0.15, 0.5, 0.05, 0.3};
  std::vector<double> logits;
  for (double p : probs) logits.push_back(std::log(p) - 2);
  const double s = std::sqrt(0.15) + std::sqrt(0.5) + std::sqrt(0.05) + std::sqrt(0.3);
  const std::vector<std::pair<nn::SampleOptions, std::vector<double>>> cases = {
      {{.temperature = 1}, probs},
      {{.temperature = 2},
       {std::sqrt(0.15) / s, std::sqrt(0.5) / s, std::sqrt(0.05) / s, std::sqrt(0.3) / s}},
      {{.temperature = 1, .top_k = 2}, {0, 0.625, 0, 0.375}},
      {{.temperature = 1, .top_p = 0.75}, {0, 0.625, 0, 0.375}},
      {{.temperature = 1, .top_p = 0.9}, {0.15 / 0.95, 0.5 / 0.95, 0, 0.3 / 0.95}},
  };
  Generator g(21);
  constexpr int kDraws = 20000;
  for (size_t c = 0; c < cases.size(); ++c) {
    std::vector<int> count(probs.size(), 0);
    for (int i = 0; i < kDraws; ++i) ++count[size_t(nn::sample_token(logits, cases[c].first, g))];
    for (size_t id = 0; id < probs.size(); ++id) {
      const double want = cases[c].second[id], got = double(count[id]) / kDraws;
      const double sigma = std::sqrt(want * (1 - want) / kDraws);
      EXPECT_LE(std::abs(got - want), 5 * sigma) << "case " << c << " id " << id;
    }
  }
}

TEST(Sampling, generate_slides_past_the_learned_context) {
  Generator g(9);
  GPT m(tiny_gpt2(), g);  // block_size 4: the window slides three times over 12 tokens
  Generator s(1);
  std::vector<int32_t> out = nn::generate(m, {1, 2}, {.max_new_tokens = 10}, s);
  ASSERT_EQ(out.size(), 12u);
  EXPECT_EQ(out[0], 1);
  EXPECT_EQ(out[1], 2);
  for (int32_t t : out) EXPECT_LT(t, 11);
}

// A model whose vocabulary is padded past its tokenizer's (GPT-2's 50257 as 50304) must not draw
// the padding's ids, which no tokenizer decodes: opt.vocab keeps the draw below it.
TEST(Sampling, only_ids_below_the_vocabulary_drawn_from_come_out) {
  Generator g(9);
  GPT m(tiny_gpt2(), g);  // 11 ids
  Generator s(1);
  const std::vector<int32_t> all =
      nn::generate(m, {1, 2}, {.max_new_tokens = 200, .temperature = 5, .top_k = 0}, s);
  const std::vector<int32_t> four =
      nn::generate(m, {1, 2}, {.max_new_tokens = 200, .temperature = 5, .top_k = 0, .vocab = 4}, s);
  ASSERT_EQ(four.size(), 202u);
  EXPECT_GE(*std::max_element(all.begin(), all.end()), 4) << "at temperature 5 every id comes";
  EXPECT_LT(*std::max_element(four.begin(), four.end()), 4);
}

TEST(Sampling, out_of_range_options_are_errors_naming_the_flag_and_range) {
  Generator g(9);
  GPT m(tiny_gpt2(), g);
  Generator s(1);
  struct Case {
    nn::SampleOptions opt;
    std::string want;
  };
  const double nan = std::nan("");
  std::vector<Case> cases;  // one at a time: GCC 12 warns falsely on a braced list of them
  auto add = [&](const nn::SampleOptions& opt, const char* want) { cases.push_back({opt, want}); };
  add({.max_new_tokens = -1}, "--max-new-tokens must be in [0, 1048576], got -1");
  add({.max_new_tokens = -5000000000}, "--max-new-tokens must be in [0, 1048576]");
  add({.max_new_tokens = INT64_MAX}, "--max-new-tokens must be in [0, 1048576]");
  add({.max_new_tokens = 5, .temperature = -1}, "--temperature must be finite and >= 0");
  add({.max_new_tokens = 5, .temperature = nan}, "--temperature must be finite and >= 0");
  add({.max_new_tokens = 5, .top_k = -1},
      "--top-k must be >= 0 (0 = the whole vocabulary), got -1");
  add({.max_new_tokens = 5, .top_p = 0}, "--top-p must be in (0, 1] (1 = no cut), got 0");
  add({.max_new_tokens = 5, .top_p = 1.5}, "--top-p must be in (0, 1]");
  add({.max_new_tokens = 5, .top_p = nan}, "--top-p must be in (0, 1]");
  add({.max_new_tokens = 5, .vocab = -1}, "the vocabulary to draw from must be >= 0, got -1");
  for (const Case& c : cases) {
    const std::string msg = error_of([&] { nn::generate(m, {1, 2}, c.opt, s); });
    EXPECT_NE(msg.find(c.want), std::string::npos) << msg;
  }
  // 0 new tokens is the prompt alone; 0 temperature and 0 top-k are greedy and "all".
  EXPECT_EQ(nn::generate(m, {1, 2}, {.max_new_tokens = 0}, s), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(nn::generate(m, {1, 2}, {.max_new_tokens = 2, .temperature = 0, .top_k = 0}, s).size(),
            4u);
}

TEST(Sampling, greedy_generation_equals_argmax_of_the_full_forward) {
  // Greedy decoding through the cache must pick, at every step, the argmax of a plain forward over
  // the same context (the last block_size tokens after the window slides).
  GPTConfig c = tiny_gpt2();
  c.block_size = 6;
  Generator g(10);
  GPT m(c, g, DType::F64);
  Generator s(1);
  std::vector<int32_t> out = nn::generate(m, {4, 7, 1}, {.max_new_tokens = 5, .temperature = 0}, s);
  ASSERT_EQ(out.size(), 8u);
  size_t begin = 0;  // the cache holds out[begin, n) when token n is sampled
  for (size_t n = 3; n < out.size(); ++n) {
    std::vector<int32_t> ctx(out.begin() + int64_t(begin), out.begin() + int64_t(n));
    Tensor logits = m.forward(ids(ctx, {1, int64_t(ctx.size())}), false);
    std::vector<double> last = logits.narrow(1, int64_t(ctx.size()) - 1, 1).to_vector<double>();
    int32_t argmax = int32_t(std::max_element(last.begin(), last.end()) - last.begin());
    EXPECT_EQ(out[n], argmax) << "token " << n;
    if (n - begin == 6) begin = n + 1 - 3;  // full: refilled with the newest half (3 tokens)
  }
}

namespace {

// The shape rules GPT's constructor checks for itself (config validation checks them first for a
// YAML; a GPTConfig built in code reaches only these).
TEST(GptConfig, validate_refuses_shapes_no_model_has) {
  auto refused = [](GPTConfig c, const std::string& want) {
    const std::string m = error_of([&] { c.validate(); });
    EXPECT_NE(m.find(want), std::string::npos) << "expected '" << want << "' in: " << m;
  };
  const std::string positive =
      "n_layer, n_head, n_embd, block_size and vocab_size must be positive";
  for (auto edit : std::vector<std::function<void(GPTConfig&)>>{
           [](GPTConfig& c) { c.n_layer = 0; }, [](GPTConfig& c) { c.n_head = 0; },
           [](GPTConfig& c) { c.n_embd = 0; }, [](GPTConfig& c) { c.block_size = 0; },
           [](GPTConfig& c) { c.vocab_size = 0; }}) {
    GPTConfig c = tiny_gpt2();
    edit(c);
    refused(c, positive);
  }
  GPTConfig c = tiny_llama();
  c.n_kv_head = 3;  // n_head 2
  refused(c, "n_head 2 is not a multiple of n_kv_head 3");
  c = tiny_llama();
  c.n_embd = 6, c.n_head = 2;  // head_dim 3
  refused(c, "rope needs an even head dimension, got 3");
  c.position = nn::PositionKind::Learned;
  EXPECT_NO_THROW(c.validate());  // an odd head dimension is fine without RoPE
}

// The Hugging Face module each projection adapts (LoRA's names, hf_names.h): GPT-2's q, k and v
// are slices of the fused c_attn.
TEST(GptConfig, module_names_are_the_hugging_face_modules) {
  using nn::Proj;
  Generator g(1);
  const GPT gpt2(tiny_gpt2(), g), llama(tiny_llama(), g);
  struct Want {
    Proj p;
    const char *gpt2, *llama;  // layer 1 (the head: no layer)
  };
  for (const Want& w : {
           Want{Proj::Q, "transformer.h.1.attn.c_attn.q", "model.layers.1.self_attn.q_proj"},
           Want{Proj::K, "transformer.h.1.attn.c_attn.k", "model.layers.1.self_attn.k_proj"},
           Want{Proj::V, "transformer.h.1.attn.c_attn.v", "model.layers.1.self_attn.v_proj"},
           Want{Proj::O, "transformer.h.1.attn.c_proj", "model.layers.1.self_attn.o_proj"},
           Want{Proj::Gate, nullptr, "model.layers.1.mlp.gate_proj"},
           Want{Proj::Up, "transformer.h.1.mlp.c_fc", "model.layers.1.mlp.up_proj"},
           Want{Proj::Down, "transformer.h.1.mlp.c_proj", "model.layers.1.mlp.down_proj"},
           Want{Proj::Head, "lm_head", "lm_head"}}) {
    const int64_t layer = w.p == Proj::Head ? -1 : 1;
    if (w.gpt2) {
      EXPECT_EQ(gpt2.module_name(w.p, layer), w.gpt2);
    }
    EXPECT_EQ(llama.module_name(w.p, layer), w.llama);
  }
  EXPECT_NE(error_of([&] { gpt2.module_name(Proj::Gate, 0); }).find("a GELU MLP has no gate"),
            std::string::npos);
  for (int64_t layer : {-1, 2})
    EXPECT_NE(error_of([&] { gpt2.module_name(Proj::Up, layer); })
                  .find("module_name: layer " + std::to_string(layer) + " of 2"),
              std::string::npos);
}

}  // namespace
