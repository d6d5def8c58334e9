// KV-cached decoding on CUDA: the attention kernels' query-offset path (flash_forward_plain and
// sb_forward_plain, bf16 and f32) against the same model's full forward on the GPU, and a
// decoding step moves nothing from the device to the host but the token ids ops::embedding
// validates (core/storage.h's transfer counters, counted in Tensor::copy_, the one place that
// calls cudaMemcpy between host and device). Every test skips without a CUDA device.
//
// Tolerances: the full forward and the decoding steps run the same math on the same device, but
// the full forward's attention is the tensor-core (bf16, head dim 64) or materialised kernel while
// decoding runs the plain kernels, and the Linears run (B T, C) vs (B, C) GEMMs.
//  - f32: ~1e-6 relative per op in other summation orders; logits within 1e-4 of their largest.
//  - bf16: activations rounded to 8 significant bits (2^-9) at each op, differently on the two
//    paths: relative difference of the logits below 5e-2 (a wrong mask or offset gives O(1)).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "core/storage.h"
#include "nn/gpt.h"
#include "ops/ops.h"
#include "test_util.h"
#include "train/device.h"

namespace tessera {
namespace {

const Device kGpu = Device::cuda(0);

struct Variant {
  std::string name;
  nn::GPTConfig cfg;
  DType dtype;
};

std::vector<Variant> variants() {
  nn::GPTConfig base;
  base.n_layer = 2, base.n_head = 2, base.n_embd = 128, base.block_size = 32, base.vocab_size = 97;
  std::vector<Variant> out;
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string d = dt == DType::F32 ? "_f32" : "_bf16";
    nn::GPTConfig llama = base;  // head dim 64, grouped-query attention, RoPE
    llama.norm = nn::NormKind::RMSNorm, llama.mlp = nn::MlpKind::SwiGLU;
    llama.position = nn::PositionKind::RoPE, llama.n_kv_head = 1;
    llama.tie_embeddings = false, llama.bias = false;
    out.push_back({"softmax_rope_gqa" + d, llama, dt});
    nn::GPTConfig hd32 = base;  // head dim 32: materialised full forward, flash decoding
    hd32.n_head = 4;
    out.push_back({"softmax_hd32" + d, hd32, dt});
    for (bool current : {false, true})
      for (bool rem : {false, true}) {
        nn::GPTConfig sb = base;
        sb.position = nn::PositionKind::None, sb.attention.kind = nn::AttentionKind::StickBreaking;
        sb.attention.attend_current = current, sb.attention.sb_remainder = rem;
        out.push_back({std::string("stick_breaking") + (current ? "_current" : "") +
                           (rem ? "_remainder" : "") + d,
                       sb, dt});
      }
  }
  return out;
}

Tensor tokens(int64_t B, int64_t T, int64_t V) {
  std::vector<int32_t> ids(size_t(B * T));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 37 + 11) % size_t(V));
  return from_vector<int32_t>(ids, {B, T});
}

double rel_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = testing::values(a.to(Device::cpu())),
                            y = testing::values(b.to(Device::cpu()));
  double d = 0, m = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    d = std::max(d, std::abs(x[i] - y[i]));
    m = std::max(m, std::abs(y[i]));
  }
  return d / m;
}

}  // namespace

TEST(CachedDecodingCuda, prefill_then_single_tokens_equals_the_full_forward_on_the_gpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 2, T = 20, prefill = 7;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    NoGradGuard no_grad;
    Generator g(3);
    nn::GPT m(v.cfg, g);
    train::place_model(m, kGpu, v.dtype);
    const Tensor x = tokens(B, T, v.cfg.vocab_size).to(kGpu);
    const Tensor full = m.forward(x, false);
    nn::KVCache cache = m.make_cache(B, v.cfg.block_size);
    EXPECT_EQ(cache.k[0].device(), kGpu);
    std::vector<Tensor> steps{m.forward_cached(x.narrow(1, 0, prefill).contiguous(), cache)};
    for (int64_t t = prefill; t < T; ++t) {
      const Tensor next = x.narrow(1, t, 1).contiguous();
      const TransferStats before = transfer_stats();
      steps.push_back(m.forward_cached(next, cache));
      const TransferStats after = transfer_stats();
      // Only the B token ids that ops::embedding validates on the host, never the cache (learned
      // positions are one broadcast row of the table: no position ids to read).
      EXPECT_EQ(after.device_to_host_bytes - before.device_to_host_bytes,
                B * int64_t(sizeof(int32_t)));
    }
    const double tol = v.dtype == DType::F32 ? 1e-4 : 5e-2;
    EXPECT_LT(rel_diff(ops::concat(steps, 1), full), tol);
  }
}

// Rows of different lengths (KVCache::lengths, prompts of 3, 9 and 5 tokens decoded as one batch):
// each row filled alone through its view of the cache, then one token a row for all three, each
// at its own position; every row's logits against the full forward of that row alone on the GPU.
// The variants' models, plus learned positions (each row its own row of the table) and a forget
// gate (each row's sums continued from its own last position). Bounds as above; each step reads
// back only the three token ids.
TEST(CachedDecodingCuda, rows_of_different_lengths_each_follow_their_full_forward) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  std::vector<Variant> all = variants();
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string d = dt == DType::F32 ? "_f32" : "_bf16";
    nn::GPTConfig learned = all.front().cfg;
    learned.norm = nn::NormKind::LayerNorm, learned.mlp = nn::MlpKind::GELU, learned.bias = true;
    learned.position = nn::PositionKind::Learned, learned.n_kv_head = 0;
    all.push_back({"learned" + d, learned, dt});
    nn::GPTConfig fox = learned;
    fox.position = nn::PositionKind::None, fox.attention.kind = nn::AttentionKind::Forgetting;
    all.push_back({"forgetting" + d, fox, dt});
  }
  const std::vector<int64_t> prompt = {3, 9, 5};
  const int64_t B = 3, steps = 6;
  for (const Variant& v : all) {
    SCOPED_TRACE(v.name);
    NoGradGuard no_grad;
    Generator g(5);
    nn::GPT m(v.cfg, g);
    train::place_model(m, kGpu, v.dtype);
    const Tensor x = tokens(B, 16, v.cfg.vocab_size);  // row r's sequence: x[r]
    nn::KVCache cache = m.make_cache(B, v.cfg.block_size);
    cache.lengths.assign(B, 0);
    double worst = 0;
    auto full = [&](int64_t r, int64_t n) {  // the last row of the forward over x[r][0, n)
      return m.forward(x.narrow(0, r, 1).narrow(1, 0, n).contiguous().to(kGpu), false)
          .narrow(1, n - 1, 1);
    };
    for (int64_t r = 0; r < B; ++r) {
      nn::KVCache row = cache.rows(r);
      const Tensor got = m.forward_cached(
          x.narrow(0, r, 1).narrow(1, 0, prompt[size_t(r)]).contiguous().to(kGpu), row, true);
      cache.lengths[size_t(r)] = row.length;
      worst = std::max(worst, rel_diff(got, full(r, prompt[size_t(r)])));
    }
    for (int64_t s = 0; s < steps; ++s) {
      std::vector<Tensor> next;
      for (int64_t r = 0; r < B; ++r)
        next.push_back(x.narrow(0, r, 1).narrow(1, prompt[size_t(r)] + s, 1));
      const Tensor ids = ops::concat(next, 0).contiguous().to(kGpu);
      const TransferStats before = transfer_stats();
      const Tensor got = m.forward_cached(ids, cache);
      EXPECT_EQ(transfer_stats().device_to_host_bytes - before.device_to_host_bytes,
                B * int64_t(sizeof(int32_t)));
      for (int64_t r = 0; r < B; ++r)
        worst = std::max(worst, rel_diff(got.narrow(0, r, 1), full(r, prompt[size_t(r)] + s + 1)));
    }
    EXPECT_EQ(cache.lengths, (std::vector<int64_t>{9, 15, 11}));
    EXPECT_LT(worst, v.dtype == DType::F32 ? 1e-4 : 5e-2);
  }
}

}  // namespace tessera
