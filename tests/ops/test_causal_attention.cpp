// ops::causal_attention and its spec: the kernel chosen for each attention kind, the query offset
// of KV-cached decoding (Tq < Tk queries equal the last Tq rows of full causal attention), the
// allowed kind names, and attention_support's reasons.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "backend/attention_shapes.h"
#include "backend/kernels.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::ops;
using tessera::testing::error_of;

namespace {

double max_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = tessera::testing::values(a), y = tessera::testing::values(b);
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

struct Qkv {
  Tensor q, k, v;
};
// q (B, H, T, D), k and v (B, Hkv, T, D) in f64, scaled so that scores are O(1).
Qkv random_qkv(int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t D, uint64_t seed) {
  Generator g(seed);
  return {ops::scale(randn({B, H, T, D}, g, DType::F64), 1.5),
          ops::scale(randn({B, Hkv, T, D}, g, DType::F64), 1.5),
          randn({B, Hkv, T, D}, g, DType::F64)};
}

std::vector<std::pair<std::string, AttentionSpec>> specs() {
  std::vector<std::pair<std::string, AttentionSpec>> out;
  out.push_back({"softmax", {}});
  AttentionSpec w;
  w.window = 3;
  out.push_back({"softmax_window3", w});
  for (bool current : {false, true})
    for (bool rem : {false, true}) {
      AttentionSpec s;
      s.kind = AttentionKind::StickBreaking;
      s.attend_current = current, s.sb_remainder = rem;
      out.push_back({std::string("stick_breaking") + (current ? "_current" : "") +
                         (rem ? "_remainder" : ""),
                     s});
    }
  return out;
}

}  // namespace

TEST(CausalAttention, offset_queries_equal_the_last_rows_of_full_attention) {
  const int64_t B = 2, H = 4, T = 9, D = 5;
  for (int64_t Hkv : {4, 2, 1})
    for (const auto& [name, spec] : specs()) {
      SCOPED_TRACE(name + " Hkv " + std::to_string(Hkv));
      NoGradGuard no_grad;
      const Qkv x = random_qkv(B, H, Hkv, T, D, 11);
      const Tensor full = causal_attention(x.q, x.k, x.v, spec);
      for (int64_t Tq : {int64_t(1), int64_t(3), T}) {
        const Tensor part = causal_attention(x.q.narrow(2, T - Tq, Tq), x.k, x.v, spec);
        ASSERT_EQ(part.shape(), (Shape{B, H, Tq, D}));
        // f64 on both sides (the full softmax runs the materialised kernel, the offset one the
        // flash kernel, in other row blocks: other summation orders): ~1e-16 relative.
        EXPECT_LT(max_diff(part, full.narrow(2, T - Tq, Tq)), 1e-12) << "Tq " << Tq;
      }
    }
}

TEST(CausalAttention, offset_keys_may_be_a_strided_view_of_a_longer_cache) {
  // forward_cached hands in cache.k.narrow(2, 0, L): a non-contiguous view of a larger buffer.
  NoGradGuard no_grad;
  const Qkv x = random_qkv(1, 2, 2, 8, 4, 3);
  Tensor cache_k = zeros({1, 2, 12, 4}, DType::F64), cache_v = zeros({1, 2, 12, 4}, DType::F64);
  cache_k.narrow(2, 0, 8).copy_(x.k);
  cache_v.narrow(2, 0, 8).copy_(x.v);
  for (const auto& [name, spec] : specs()) {
    SCOPED_TRACE(name);
    const Tensor want = causal_attention(x.q, x.k, x.v, spec).narrow(2, 6, 2);
    const Tensor got = causal_attention(x.q.narrow(2, 6, 2), cache_k.narrow(2, 0, 8),
                                        cache_v.narrow(2, 0, 8), spec);
    EXPECT_LT(max_diff(got, want), 1e-12);  // as above: f64, other summation orders
  }
}

TEST(CausalAttention, offset_path_refuses_to_record_a_backward) {
  const Qkv x = random_qkv(1, 2, 2, 6, 4, 5);
  Tensor q = x.q.narrow(2, 4, 2).contiguous().requires_grad_();
  for (const auto& [name, spec] : specs()) {
    const std::string e = error_of([&] { causal_attention(q, x.k, x.v, spec); });
    EXPECT_NE(e.find("inference only"), std::string::npos) << name << ": " << e;
  }
}

TEST(CausalAttention, more_queries_than_keys_names_the_shapes) {
  NoGradGuard no_grad;
  const Qkv x = random_qkv(1, 2, 2, 6, 4, 5);
  const std::string e = error_of([&] { causal_attention(x.q, x.k.narrow(2, 0, 4), x.v.narrow(2, 0, 4), {}); });
  EXPECT_NE(e.find("Tq <= T"), std::string::npos) << e;
  EXPECT_NE(e.find("got q (1, 2, 6, 4), k (1, 2, 4, 4)"), std::string::npos) << e;
}

TEST(CausalAttention, dispatches_each_kind_to_its_op_with_gradients) {
  const Qkv x = random_qkv(1, 2, 1, 8, 4, 8);
  AttentionSpec sb;
  sb.kind = AttentionKind::StickBreaking, sb.attend_current = true, sb.sb_remainder = true;
  StickBreakingOptions o;
  o.attend_current = true, o.remainder = StickBreakingRemainder::Current;
  // Same kernels on both sides: bit-equal.
  EXPECT_EQ(max_diff(causal_attention(x.q, x.k, x.v, sb), stick_breaking_attention(x.q, x.k, x.v, o)), 0.0);
  EXPECT_EQ(max_diff(causal_attention(x.q, x.k, x.v, {}), attention(x.q, x.k, x.v)), 0.0);
  AttentionSpec w;
  w.window = 2;
  EXPECT_EQ(max_diff(causal_attention(x.q, x.k, x.v, w), flash_attention(x.q, x.k, x.v, 0.0, 2)), 0.0);
  // The Tq == Tk path keeps its backward.
  Tensor q = x.q.detach().requires_grad_();
  ops::sum(causal_attention(q, x.k, x.v, sb, /*training=*/true)).backward();
  EXPECT_TRUE(q.grad().defined());
}

TEST(CausalAttention, s2_attn_applies_to_training_forwards_only) {
  const Qkv x = random_qkv(1, 2, 2, 8, 4, 9);
  AttentionSpec s2;
  s2.s2_attn = true;
  const Tensor train = causal_attention(x.q, x.k, x.v, s2, /*training=*/true);
  const Tensor eval = causal_attention(x.q, x.k, x.v, s2, /*training=*/false);
  EXPECT_EQ(max_diff(train, shifted_sparse_attention(x.q, x.k, x.v, 2)), 0.0);
  EXPECT_EQ(max_diff(eval, attention(x.q, x.k, x.v)), 0.0);
  EXPECT_GT(max_diff(train, eval), 1e-3);  // groups of 2 keys differ from full attention
}

TEST(CausalAttention, decoding_reads_a_caches_filled_prefix_in_place) {
  // k and v as a KV cache holds them: the first Tk of S positions of (B, Hkv, S, D) buffers. The
  // query-offset forwards read them where they lie (backend/attention_shapes.h's kv_row_stride),
  // with results identical to a contiguous copy's: the same kernel over the same values.
  NoGradGuard no_grad;
  const int64_t B = 2, H = 4, Hkv = 2, S = 13, Tk = 9, Tq = 2, D = 8;
  const Qkv full = random_qkv(B, H, Hkv, S, D, 21);
  const Tensor q = full.q.narrow(2, Tk - Tq, Tq).contiguous();
  const Tensor k = full.k.narrow(2, 0, Tk), v = full.v.narrow(2, 0, Tk);
  ASSERT_FALSE(k.is_contiguous());
  EXPECT_EQ(kv_row_stride(k), S);
  EXPECT_EQ(kv_row_stride(k.contiguous()), Tk);
  EXPECT_EQ(kv_row_stride(full.k.permute({0, 2, 1, 3})), 0);  // rows interleaved: not a prefix
  for (const auto& [name, spec] : specs()) {
    SCOPED_TRACE(name);
    const Tensor in_place = causal_attention(q, k, v, spec);
    const Tensor copied = causal_attention(q, k.contiguous(), v.contiguous(), spec);
    EXPECT_EQ(max_diff(in_place, copied), 0.0);
    // and they are the last rows of full attention over the Tk keys
    const Tensor rows = causal_attention(full.q.narrow(2, 0, Tk).contiguous(), k.contiguous(),
                                         v.contiguous(), spec)
                            .narrow(2, Tk - Tq, Tq);
    EXPECT_LT(max_diff(in_place, rows), 1e-12);
  }
  // The flash kernels take any layout whose rows are contiguous (backend/attention_shapes.h's
  // strided contract); rows with their values D apart are refused, naming the tensor.
  Tensor out = Tensor::empty(q.shape(), q.options()), lse = Tensor::empty({B, H, Tq}, q.options());
  const Tensor k_cols = full.k.narrow(2, 0, D).narrow(3, 0, Tq).transpose(2, 3);  // (B, Hkv, Tq, D)
  const std::string e = error_of([&] {
    TESSERA_KERNEL(q, flash_attention_forward)(out, lse, q, k_cols, v.narrow(2, 0, Tq), 0.0, 0);
  });
  EXPECT_NE(e.find("flash_attention_forward: q, k and v must hold each row's 8 values "
                   "contiguously, got k"),
            std::string::npos)
      << e;
}

TEST(AttentionSpec, kind_names_round_trip_and_unknown_names_list_the_allowed_ones) {
  for (const AttentionKindName& k : kAttentionKinds) {
    EXPECT_EQ(parse_attention_kind(k.name), k.kind);
    EXPECT_STREQ(attention_kind_name(k.kind), k.name);
  }
  EXPECT_EQ(attention_kind_names(), "softmax, stick_breaking, forgetting");
  EXPECT_FALSE(find_attention_kind("linear").has_value());
  const std::string e = error_of([] { parse_attention_kind("linear", "eval --attention"); });
  EXPECT_NE(
      e.find("eval --attention must be one of softmax, stick_breaking, forgetting; got 'linear'"),
      std::string::npos)
      << e;
}

TEST(AttentionSpec, support_states_why_a_combination_cannot_run) {
  AttentionSpec sb;
  sb.kind = AttentionKind::StickBreaking;
  const Device gpu = Device::cuda(0);
  // The CUDA stick-breaking kernels: bf16 tensor-core tiles for head dims 64 and 128 only.
  EXPECT_NE(attention_support(sb, gpu, DType::BF16, 32).find("head dim 64 or 128"), std::string::npos);
  EXPECT_EQ(attention_support(sb, gpu, DType::BF16, 64), "");
  EXPECT_EQ(attention_support(sb, gpu, DType::BF16, 128), "");
  EXPECT_EQ(attention_support(sb, gpu, DType::F32, 32), "");
  EXPECT_NE(attention_support(sb, gpu, DType::F32, 256).find("<= 128"), std::string::npos);
  EXPECT_EQ(attention_support(sb, Device::cpu(), DType::F32, 32), "");
  // Softmax falls back to the materialised CUDA kernel for other head dims.
  EXPECT_EQ(attention_support({}, gpu, DType::BF16, 32), "");
  EXPECT_NE(attention_support({}, gpu, DType::F64, 64).find("bf16 or f32"), std::string::npos);
  AttentionSpec sbw = sb;
  sbw.window = 4;
  EXPECT_NE(attention_support(sbw, Device::cpu(), DType::F32, 32).find("softmax attention only"),
            std::string::npos);
  AttentionSpec sm;
  sm.attend_current = true;
  EXPECT_NE(attention_support(sm, Device::cpu(), DType::F32, 32).find("stick_breaking"),
            std::string::npos);
  AttentionSpec neg;
  neg.window = -1;
  EXPECT_NE(attention_support(neg, Device::cpu(), DType::F32, 32).find("must be >= 0"),
            std::string::npos);
  EXPECT_NE(attention_support({}, Device::cpu(), DType::F32, 32, 5, 4).find("more queries (5)"),
            std::string::npos);
}

TEST(AttentionSpec, support_states_the_length_dependent_cuda_limits) {
  const Device gpu = Device::cuda(0);
  // KV-cached decoding (fewer queries than keys) runs the warp-per-row kernels: head dim <= 128
  // in either dtype, where the full-length softmax forward takes any head dim (the materialised
  // kernel beside the flash tiles). Stick-breaking's own limit is as tight already.
  for (const DType dt : {DType::BF16, DType::F32}) {
    EXPECT_EQ(attention_support({}, gpu, dt, 128, 1, 100), "");
    const std::string e = attention_support({}, gpu, dt, 192, 1, 100);
    EXPECT_NE(e.find("CUDA KV-cached decoding (1 queries over 100 keys) runs the warp-per-row "
                     "kernels, which need head dim <= 128, got head dim 192"),
              std::string::npos)
        << dtype_name(dt) << ": " << e;
    EXPECT_EQ(attention_support({}, gpu, dt, 192, 100, 100), "");  // materialised
    EXPECT_EQ(attention_support({}, Device::cpu(), dt, 192, 1, 100), "");
  }
  AttentionSpec sb;
  sb.kind = AttentionKind::StickBreaking;
  EXPECT_EQ(attention_support(sb, gpu, DType::BF16, 64, 1, 100), "");
  EXPECT_EQ(attention_support({}, gpu, DType::BF16, 256, 100, 100), "");  // materialised
  // The materialised softmax kernel keeps a row of T scores and q_i in shared memory:
  // T + D <= (48 KiB - 256 B) / 4 = 12224 floats.
  EXPECT_EQ(attention_support({}, gpu, DType::BF16, 32, 12192, 12192), "");
  const std::string e = attention_support({}, gpu, DType::BF16, 32, 12193, 12193);
  EXPECT_NE(e.find("T + head dim must be <= 12224, got T = 12193"), std::string::npos) << e;
  EXPECT_EQ(attention_support({}, gpu, DType::BF16, 64, 16384, 16384), "");  // flash: any T
  AttentionSpec win;
  win.window = 256;
  EXPECT_EQ(attention_support(win, gpu, DType::F32, 32, 16384, 16384), "");  // flash: any T
  EXPECT_EQ(attention_support({}, Device::cpu(), DType::F32, 32, 16384, 16384), "");
}

TEST(AttentionSpec, causal_attention_rejects_what_support_rejects) {
  NoGradGuard no_grad;
  const Qkv x = random_qkv(1, 2, 2, 4, 4, 1);
  AttentionSpec sbw;
  sbw.kind = AttentionKind::StickBreaking, sbw.window = 2;
  const std::string e = error_of([&] { causal_attention(x.q, x.k, x.v, sbw); });
  EXPECT_NE(e.find("causal_attention: a sliding window (2) applies to softmax attention only"),
            std::string::npos)
      << e;
}
