// KV-cached decoding (GPT::forward_cached) runs the same attention kernels as the full forward,
// with a query offset, on the cache's device: for every attention variant the logits of a prefill
// followed by one token at a time equal the full forward's, and a decoding step reads nothing out
// of tensor storage into host memory (core/storage.h's transfer counters).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "core/storage.h"
#include "nn/gpt.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using nn::GPT;
using nn::GPTConfig;

namespace {

struct Variant {
  std::string name;
  GPTConfig cfg;
};

GPTConfig base() {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 4, c.n_embd = 32, c.block_size = 16, c.vocab_size = 23;
  return c;
}

std::vector<Variant> variants() {
  std::vector<Variant> out;
  out.push_back({"softmax_gpt2", base()});
  GPTConfig llama = base();  // RoPE, RMSNorm, SwiGLU, grouped-query attention (2 kv heads)
  llama.norm = nn::NormKind::RMSNorm, llama.mlp = nn::MlpKind::SwiGLU;
  llama.position = nn::PositionKind::RoPE, llama.n_kv_head = 2;
  llama.tie_embeddings = false, llama.bias = false;
  out.push_back({"softmax_rope_gqa", llama});
  for (bool current : {false, true})
    for (bool rem : {false, true}) {
      GPTConfig c = base();
      c.position = nn::PositionKind::None;
      c.attention.kind = nn::AttentionKind::StickBreaking;
      c.attention.attend_current = current, c.attention.sb_remainder = rem;
      out.push_back({std::string("stick_breaking") + (current ? "_current" : "") +
                         (rem ? "_remainder" : ""),
                     c});
    }
  GPTConfig sb_gqa = out.back().cfg;  // stick-breaking with 1 kv head (multi-query)
  sb_gqa.n_kv_head = 1;
  out.push_back({"stick_breaking_mqa", sb_gqa});
  GPTConfig s2 = llama;  // S^2-Attn acts on training forwards only: decoding attends fully
  s2.attention.s2_attn = true;
  out.push_back({"softmax_s2_attn", s2});
  GPTConfig window = llama;  // a sliding window of 3 keys: the 11-token test slides it 8 times
  window.attention.window = 3;
  out.push_back({"softmax_sliding_window", window});
  GPTConfig alibi = base();  // ALiBi off GPT-2's fused projection (the packed attention path)
  alibi.position = nn::PositionKind::ALiBi, alibi.attention.alibi = true;
  out.push_back({"softmax_alibi", alibi});
  GPTConfig alibi_gqa = llama;  // and off separate projections, 2 kv heads, a window of 3
  alibi_gqa.position = nn::PositionKind::ALiBi, alibi_gqa.attention.alibi = true;
  alibi_gqa.attention.window = 3;
  out.push_back({"softmax_alibi_gqa_window", alibi_gqa});
  GPTConfig fox = base();  // forgetting attention: the cache continues the gate's sums
  fox.position = nn::PositionKind::None, fox.attention.kind = nn::AttentionKind::Forgetting;
  out.push_back({"forgetting", fox});
  GPTConfig fox_gqa = llama;  // with RoPE (the paper's option) and 2 kv heads
  fox_gqa.attention.kind = nn::AttentionKind::Forgetting;
  out.push_back({"forgetting_rope_gqa", fox_gqa});
  GPTConfig dropout = base();  // dropout acts on training forwards only: decoding has none
  dropout.dropout = 0.5;
  out.push_back({"softmax_dropout", dropout});
  return out;
}

// The model with weights of std 0.3 instead of the 0.02 init, so attention is peaked and the
// logits are O(1): a wrong mask or offset then moves them by far more than the tolerance.
GPT sharp_model(const GPTConfig& cfg, uint64_t seed) {
  Generator g(seed);
  GPT m(cfg, g);
  std::vector<Tensor> p;
  for (const auto& [name, t] : m.parameters()) p.push_back(ops::scale(randn(t.shape(), g), 0.3));
  m.replace_parameters(p);
  return m;
}

Tensor tokens(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  std::vector<int32_t> ids(size_t(B * T));
  uint64_t x = seed;
  for (int32_t& id : ids) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;  // an LCG: fixed, portable ids
    id = int32_t((x >> 33) % uint64_t(V));
  }
  return from_vector<int32_t>(ids, {B, T});
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : tessera::testing::values(t)) m = std::max(m, std::abs(v));
  return m;
}

// Tolerance for f32 on the CPU: the full forward's attention and decoding's flash kernel sum in
// f32 (BLAS per head) over other row blocks, and the full forward's Linears are one (B T, C) GEMM
// while decoding runs (B, C) ones, whose f32 sums go in other orders: a few ulps (~1e-7 relative)
// per op, ~1e-6 of the O(1) logits through two blocks (measured: at most 1.13e-6 over the
// variants, softmax with RoPE and GQA).
// 1e-5 leaves an order of margin and is far below what a wrong mask or position does (the
// sensitivity check in the test: a changed earlier token moves the logits by more than 1e-3).
constexpr double kTol = 1e-5;

}  // namespace

TEST(CachedDecoding, prefill_then_single_tokens_equals_the_full_forward_for_every_variant) {
  const int64_t B = 2, T = 11, prefill = 4;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    NoGradGuard no_grad;
    GPT m = sharp_model(v.cfg, 5);
    const Tensor x = tokens(B, T, v.cfg.vocab_size, 9);
    const Tensor full = m.forward(x, false);  // (B, T, V)
    ASSERT_GT(max_abs(full), 0.5) << "logits too small for the tolerance to mean anything";

    nn::KVCache cache = m.make_cache(B, v.cfg.block_size);
    std::vector<Tensor> steps{m.forward_cached(x.narrow(1, 0, prefill), cache)};
    for (int64_t t = prefill; t < T; ++t) steps.push_back(m.forward_cached(x.narrow(1, t, 1), cache));
    EXPECT_EQ(cache.length, T);
    const Tensor got = ops::concat(steps, 1);
    ASSERT_EQ(got.shape(), full.shape());
    EXPECT_LT(max_abs(ops::sub(got, full)), kTol);

    // The tolerance discriminates: changing the previous token changes the last position's
    // logits by far more.
    std::vector<int32_t> ids = x.to_vector<int32_t>();
    ids[size_t(T - 2)] = (ids[size_t(T - 2)] + 1) % int32_t(v.cfg.vocab_size);
    const Tensor x2 = from_vector<int32_t>(ids, {B, T});
    const Tensor moved = ops::sub(m.forward(x2, false).narrow(1, T - 1, 1), full.narrow(1, T - 1, 1));
    EXPECT_GT(max_abs(moved), 100 * kTol);
  }
}

// last_only: a prefill's logits at each row's last position alone, (B, 1, V), those of the whole
// prefill's last position (the head over one position per row instead of Tn; the same tolerance).
TEST(CachedDecoding, a_prefill_for_sampling_gives_the_last_positions_logits_alone) {
  const int64_t B = 2, T = 7;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    NoGradGuard no_grad;
    GPT m = sharp_model(v.cfg, 5);
    const Tensor x = tokens(B, T, v.cfg.vocab_size, 9);
    nn::KVCache all_cache = m.make_cache(B, v.cfg.block_size);
    nn::KVCache last_cache = m.make_cache(B, v.cfg.block_size);
    const Tensor all = m.forward_cached(x, all_cache);
    const Tensor last = m.forward_cached(x, last_cache, /*last_only=*/true);
    ASSERT_EQ(last.shape(), (Shape{B, 1, all.size(2)}));
    EXPECT_EQ(last_cache.length, T);
    EXPECT_LT(max_abs(ops::sub(last, all.narrow(1, T - 1, 1))), kTol);
    // Its cache is the whole prefill's: the next token's logits are the same.
    const Tensor next = tokens(B, 1, v.cfg.vocab_size, 3);
    EXPECT_LT(
        max_abs(ops::sub(m.forward_cached(next, last_cache), m.forward_cached(next, all_cache))),
        kTol);
  }
}

// The bytes a decoding step may read out: the token (and, with learned positions, position) ids
// that ops::embedding validates on the host, 4 bytes each. One layer of the cache is
// 2 * B * Hkv * capacity * hd * 4 bytes, >= 1024 here.
// The token ids, checked on the host by the embedding. Learned positions add nothing: they are
// rows of the position table, with no ids to build or check.
int64_t id_bytes(int64_t B, int64_t Tn) { return B * Tn * int64_t(sizeof(int32_t)); }

TEST(CachedDecoding, a_decoding_step_reads_only_the_token_ids_out_to_host_memory) {
  // The replaced implementation converted the whole cache to host doubles (to_vector) every
  // token; the counters would see its bytes.
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    NoGradGuard no_grad;
    GPT m = sharp_model(v.cfg, 6);
    const Tensor x = tokens(1, 6, v.cfg.vocab_size, 3);
    nn::KVCache cache = m.make_cache(1, v.cfg.block_size);
    m.forward_cached(x.narrow(1, 0, 5), cache);
    const Tensor next = x.narrow(1, 5, 1).contiguous();
    const TransferStats before = transfer_stats();
    const Tensor logits = m.forward_cached(next, cache);
    const TransferStats after = transfer_stats();
    EXPECT_EQ(after.host_readout_bytes - before.host_readout_bytes, id_bytes(1, 1));
    EXPECT_EQ(after.device_to_host_bytes, before.device_to_host_bytes);  // a CPU run: none
    EXPECT_EQ(logits.shape(), (Shape{1, 1, v.cfg.vocab_size}));
  }
}

TEST(CachedDecoding, a_decoding_step_reads_the_cache_in_place) {
  // The attention kernels read the cache's filled prefix where it lies; copying it out for a
  // contiguous view would allocate 2 * B * Hkv * length * hd floats per layer per step. The
  // step's own temporaries (one token's activations and logits) are far smaller.
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    NoGradGuard no_grad;
    GPTConfig cfg = v.cfg;
    cfg.block_size = 256;
    GPT m = sharp_model(cfg, 10);
    const int64_t L = 200;
    const Tensor x = tokens(1, L + 1, cfg.vocab_size, 4);
    nn::KVCache cache = m.make_cache(1, cfg.block_size);
    m.forward_cached(x.narrow(1, 0, L), cache);
    const Tensor next = x.narrow(1, L, 1).contiguous();
    const int64_t prefix = 2 * cache.k[0].size(1) * (L + 1) * cache.k[0].size(3) *
                           int64_t(sizeof(float));  // one layer's k and v, as a copy would take
    reset_peak_memory(Device::cpu());
    const int64_t before = memory_stats(Device::cpu()).current_bytes;
    m.forward_cached(next, cache);
    const int64_t step_peak = memory_stats(Device::cpu()).peak_bytes - before;
    EXPECT_LT(step_peak, prefix / 2) << "peak " << step_peak << " bytes against a layer's "
                                     << prefix << "-byte prefix";
  }
}

TEST(CachedDecoding, the_transfer_counter_sees_a_readout) {
  // The counter the test above relies on does count: reading one cache layer out counts its bytes.
  GPT m = sharp_model(base(), 7);
  nn::KVCache cache = m.make_cache(1, 8);
  const TransferStats before = transfer_stats();
  (void)cache.k[0].to_vector<float>();
  EXPECT_EQ(transfer_stats().host_readout_bytes - before.host_readout_bytes,
            int64_t(cache.k[0].numel() * sizeof(float)));
}

TEST(CachedDecoding, overflowing_the_cache_names_both_lengths) {
  GPT m = sharp_model(base(), 8);
  nn::KVCache cache = m.make_cache(1, 4);
  const std::string e = tessera::testing::error_of([&] { m.forward_cached(tokens(1, 5, 23, 1), cache); });
  EXPECT_NE(e.find("5 positions exceed the cache capacity 4"), std::string::npos) << e;
}
