// ops::packed_causal_attention: attention straight off a fused (B, T, (H + 2 Hkv) D) projection
// equals causal_attention on the split heads, forward and backward, for multi-head, grouped-query
// and multi-query heads, softmax with and without a sliding window (the CPU's materialised and flash
// kernels) and stick-breaking (each query attending itself or not, with and without the
// remainder); when it runs and what it refuses. ops::projected_causal_attention likewise off three
// projections, with and without RoPE.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "backend/kernels.h"
#include "gradcheck.h"
#include "ops/ops.h"
#include "ops/packed_attention.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::ops;
using tessera::testing::error_of;
using tessera::testing::max_abs_diff;

namespace {

struct Heads {
  int64_t H, Hkv;
};

// The split path the model runs without packed attention: slices of qkv, heads split by permute
// copies, causal_attention, heads merged back to (B, T, H D).
Tensor split_path(const Tensor& qkv, int64_t H, int64_t Hkv, const AttentionSpec& spec) {
  const int64_t B = qkv.size(0), T = qkv.size(1), D = qkv.size(2) / (H + 2 * Hkv);
  auto heads = [&](int64_t first, int64_t n) {
    return qkv.narrow(2, first * D, n * D).reshape({B, T, n, D}).permute({0, 2, 1, 3}).contiguous();
  };
  const Tensor y = causal_attention(heads(0, H), heads(H, Hkv), heads(H + Hkv, Hkv), spec, true);
  return y.permute({0, 2, 1, 3}).reshape({B, T, H * D});
}

// Output, and the gradient of sum(out * w) with respect to qkv.
struct Result {
  Tensor out, grad;
};
template <typename F>
Result run(const Tensor& qkv_in, const Tensor& w, F&& attend) {
  Tensor qkv = qkv_in.detach();
  qkv.requires_grad_();
  Tensor out = attend(qkv);
  ops::sum(ops::mul(out, w)).backward();
  return {out.detach(), qkv.grad()};
}

}  // namespace

TEST(PackedAttention, equals_split_heads_forward_and_backward) {
  // The same kernels over the same values in the same order: only where they read and write
  // differs, so the results agree exactly (a wrong stride reads another head or position).
  const int64_t B = 2, T = 7, D = 5;
  AttentionSpec softmax, flash, sb, sb_current;
  flash.window = 3;
  sb.kind = sb_current.kind = AttentionKind::StickBreaking;
  sb.sb_remainder = true;
  sb_current.attend_current = true;
  for (const Heads hs : {Heads{3, 3}, Heads{4, 2}, Heads{2, 1}}) {
    for (const AttentionSpec& spec : {softmax, flash, sb, sb_current}) {
      SCOPED_TRACE("H " + std::to_string(hs.H) + " Hkv " + std::to_string(hs.Hkv) + " " +
                   attention_kind_name(spec.kind) + " window " + std::to_string(spec.window) +
                   (spec.attend_current ? " attend_current" : "") +
                   (spec.sb_remainder ? " remainder" : ""));
      Generator g(11);
      const Tensor qkv = randn({B, T, (hs.H + 2 * hs.Hkv) * D}, g, DType::F64);
      const Tensor w = randn({B, T, hs.H * D}, g, DType::F64);
      const Result packed = run(qkv, w, [&](const Tensor& x) {
        return packed_causal_attention(x, hs.H, hs.Hkv, spec, true);
      });
      const Result split = run(qkv, w, [&](const Tensor& x) { return split_path(x, hs.H, hs.Hkv, spec); });
      EXPECT_EQ(packed.out.shape(), (Shape{B, T, hs.H * D}));
      EXPECT_TRUE(packed.out.is_contiguous());
      EXPECT_EQ(max_abs_diff(packed.out, split.out), 0.0);
      EXPECT_EQ(max_abs_diff(packed.grad, split.grad), 0.0);
    }
  }
}

TEST(PackedAttention, gradcheck_against_finite_differences) {
  Generator g(5);
  const Tensor qkv = randn({1, 5, (4 + 2 * 2) * 3}, g, DType::F64);
  AttentionSpec softmax, flash, sb;
  flash.window = 2;
  sb.kind = AttentionKind::StickBreaking;
  sb.sb_remainder = true;
  for (const AttentionSpec& spec : {softmax, flash, sb}) {
    EXPECT_TRUE(tessera::testing::gradcheck(
        [&](const std::vector<Tensor>& p) {
          return ops::sum(ops::mul(packed_causal_attention(p[0], 4, 2, spec, true),
                                   ops::gelu(p[0].narrow(2, 0, 4 * 3))));
        },
        {qkv}));
  }
}

TEST(PackedAttention, an_offset_projection_view_is_read_where_it_lies) {
  // qkv as a narrow of a wider buffer (a non-zero storage offset) and in f32.
  Generator g(3);
  const Tensor wide = randn({2, 6, 2 + 4 * 4}, g, DType::F32);
  const Tensor qkv = wide.narrow(2, 2, 4 * 4).contiguous();
  const Tensor view = randn({2 * 6 * 20}, g, DType::F32).narrow(0, 4, 2 * 6 * 16).reshape({2, 6, 16});
  view.detach().copy_(qkv);
  AttentionSpec spec;
  const Tensor a = packed_causal_attention(qkv, 2, 1, spec);
  const Tensor b = packed_causal_attention(view, 2, 1, spec);
  EXPECT_NE(view.offset(), 0);
  EXPECT_EQ(max_abs_diff(a, b), 0.0);
  EXPECT_EQ(max_abs_diff(a, split_path(qkv, 2, 1, spec)), 0.0);
}

TEST(PackedAttention, runs_on_kernels_that_take_strided_views) {
  AttentionSpec softmax, windowed, sb, s2;
  windowed.window = 4;
  sb.kind = AttentionKind::StickBreaking;
  s2.s2_attn = true;
  const Device cpu = Device::cpu(), gpu = Device::cuda(0);
  EXPECT_TRUE(packed_attention_runs(softmax, cpu, DType::F32, 7, true));
  EXPECT_TRUE(packed_attention_runs(windowed, cpu, DType::F64, 7, true));
  EXPECT_TRUE(packed_attention_runs(sb, cpu, DType::F32, 8, true));
  EXPECT_FALSE(packed_attention_runs(s2, cpu, DType::F32, 8, true));  // S^2-Attn groups
  EXPECT_TRUE(packed_attention_runs(s2, cpu, DType::F32, 8, false));  // evaluation attends fully
  // CUDA: the flash kernels (bf16 tiles at 64 and 128, f32 rows up to 128) take the layout; the
  // materialised kernel for other head dims does not.
  EXPECT_TRUE(packed_attention_runs(softmax, gpu, DType::BF16, 64, true));
  EXPECT_TRUE(packed_attention_runs(softmax, gpu, DType::BF16, 128, true));
  EXPECT_TRUE(packed_attention_runs(softmax, gpu, DType::F32, 64, true));
  EXPECT_FALSE(packed_attention_runs(softmax, gpu, DType::BF16, 32, true));
  EXPECT_FALSE(packed_attention_runs(softmax, gpu, DType::F32, 32, true));
  EXPECT_TRUE(packed_attention_runs(windowed, gpu, DType::F32, 32, true));
  EXPECT_FALSE(packed_attention_runs(windowed, gpu, DType::BF16, 32, true));  // no kernel at all
  // Every CUDA stick-breaking kernel takes the layout: bf16 tiles at 64 and 128, f32 rows.
  EXPECT_TRUE(packed_attention_runs(sb, gpu, DType::BF16, 64, true));
  EXPECT_TRUE(packed_attention_runs(sb, gpu, DType::F32, 32, true));
  EXPECT_FALSE(packed_attention_runs(sb, gpu, DType::BF16, 32, true));  // no kernel at all
}

TEST(PackedAttention, refuses_a_projection_width_the_heads_do_not_divide_and_s2_attn_training) {
  Generator g(1);
  const Tensor qkv = randn({1, 4, 20}, g, DType::F32);
  AttentionSpec softmax, s2;
  s2.s2_attn = true;
  std::string e = error_of([&] { packed_causal_attention(qkv, 3, 3, softmax); });
  EXPECT_NE(e.find("expected qkv (B, T, (H + 2 Hkv) D) with H = 3 a multiple of Hkv = 3, got "
                   "Tensor(f32, cpu, (1, 4, 20))"),
            std::string::npos)
      << e;
  e = error_of([&] { packed_causal_attention(qkv, 3, 2, softmax); });
  EXPECT_NE(e.find("H = 3 a multiple of Hkv = 2"), std::string::npos) << e;
  e = error_of([&] { packed_causal_attention(qkv, 2, 1, s2, /*training=*/true); });
  EXPECT_NE(e.find("softmax attention with head dim 5 and S^2-Attn has no strided kernel"),
            std::string::npos)
      << e;
}

TEST(PackedAttention, kernels_refuse_an_output_view_whose_rows_overlap) {
  // Under the strided contract an output may be any view with contiguous rows, but rows written
  // in parallel must not share elements: positions 2 apart with rows of 4 values overlap.
  Generator g(2);
  const Tensor q = randn({1, 2, 3, 4}, g), k = randn({1, 2, 3, 4}, g), v = randn({1, 2, 3, 4}, g);
  const Tensor buf = zeros({24});
  const Tensor out = make_view(buf, {1, 2, 3, 4}, {24, 8, 2, 1}, 0);
  const Tensor lse = Tensor::empty({1, 2, 3});
  const std::string e = error_of(
      [&] { TESSERA_KERNEL(q, flash_attention_forward)(out, lse, q, k, v, 0.0, 0); });
  EXPECT_NE(e.find("flash_attention_forward: out must be a f32 (1, 2, 3, 4) view holding each "
                   "row contiguously, no two rows overlapping, got"),
            std::string::npos)
      << e;
  // The same values in a view whose rows interleave without overlapping are accepted.
  const Tensor spread = make_view(zeros({48}), {1, 2, 3, 4}, {24, 4, 8, 1}, 0);
  TESSERA_KERNEL(q, flash_attention_forward)(spread, lse, q, k, v, 0.0, 0);
  Tensor dense = Tensor::empty({1, 2, 3, 4});
  TESSERA_KERNEL(q, flash_attention_forward)(dense, lse, q, k, v, 0.0, 0);
  EXPECT_EQ(max_abs_diff(spread, dense), 0.0);
}

namespace {

// The split path of a model with separate q, k, v projections (B, T, n D): heads copied out,
// rotated (RoPE, positions 0..T-1), attended, merged back to (B, T, H D).
Tensor split_projected(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t Hkv,
                       const AttentionSpec& spec, const RopeFreqs* rope) {
  const int64_t B = q.size(0), T = q.size(1), D = q.size(2) / H;
  auto heads = [&](const Tensor& t, int64_t n) {
    return t.reshape({B, T, n, D}).permute({0, 2, 1, 3}).contiguous();
  };
  Tensor qh = heads(q, H), kh = heads(k, Hkv);
  if (rope) {
    qh = ops::rope(qh, *rope, 0);
    kh = ops::rope(kh, *rope, 0);
  }
  const Tensor y = causal_attention(qh, kh, heads(v, Hkv), spec, true);
  return y.permute({0, 2, 1, 3}).reshape({B, T, H * D});
}

// Output, and the gradients of sum(out * w) with respect to q, k and v.
template <typename F>
std::vector<Tensor> run3(const std::vector<Tensor>& in, const Tensor& w, F&& attend) {
  std::vector<Tensor> x;
  for (const Tensor& t : in) x.push_back(t.detach().requires_grad_());
  Tensor out = attend(x[0], x[1], x[2]);
  ops::sum(ops::mul(out, w)).backward();
  return {out.detach(), x[0].grad(), x[1].grad(), x[2].grad()};
}

}  // namespace

TEST(ProjectedAttention, equals_split_heads_with_and_without_rope_forward_and_backward) {
  // The same kernels (rope's and attention's) over the same values in the same order, reading and
  // writing the heads where the projections keep them: exact agreement.
  const int64_t B = 2, T = 7, D = 6;
  for (const Heads hs : {Heads{3, 3}, Heads{4, 2}, Heads{2, 1}}) {
    for (const int64_t window : {int64_t(0), int64_t(3)}) {  // materialised, flash
      for (const bool with_rope : {false, true}) {
        SCOPED_TRACE("H " + std::to_string(hs.H) + " Hkv " + std::to_string(hs.Hkv) + " window " +
                     std::to_string(window) + (with_rope ? " rope" : ""));
        AttentionSpec spec;
        spec.window = window;
        RopeFreqs freqs = rope_freqs(D, 500.0);
        freqs.scale = 1.25;  // a YaRN-style attention factor: not an orthogonal rotation
        const RopeFreqs* rope = with_rope ? &freqs : nullptr;
        Generator g(12);
        const std::vector<Tensor> in = {randn({B, T, hs.H * D}, g, DType::F64),
                                        randn({B, T, hs.Hkv * D}, g, DType::F64),
                                        randn({B, T, hs.Hkv * D}, g, DType::F64)};
        const Tensor w = randn({B, T, hs.H * D}, g, DType::F64);
        const auto projected = run3(in, w, [&](const Tensor& q, const Tensor& k, const Tensor& v) {
          return projected_causal_attention(q, k, v, hs.H, hs.Hkv, spec, true, rope);
        });
        const auto split = run3(in, w, [&](const Tensor& q, const Tensor& k, const Tensor& v) {
          return split_projected(q, k, v, hs.H, hs.Hkv, spec, rope);
        });
        for (size_t i = 0; i < projected.size(); ++i)
          EXPECT_EQ(max_abs_diff(projected[i], split[i]), 0.0) << "output, dq, dk, dv: " << i;
      }
    }
  }
}

TEST(ProjectedAttention, gradcheck_with_rope_against_finite_differences) {
  Generator g(6);
  const std::vector<Tensor> in = {randn({1, 5, 4 * 4}, g, DType::F64),
                                  randn({1, 5, 2 * 4}, g, DType::F64),
                                  randn({1, 5, 2 * 4}, g, DType::F64)};
  const RopeFreqs freqs = rope_freqs(4, 100.0);
  for (const int64_t window : {int64_t(0), int64_t(2)}) {
    AttentionSpec spec;
    spec.window = window;
    EXPECT_TRUE(tessera::testing::gradcheck(
        [&](const std::vector<Tensor>& p) {
          return ops::sum(ops::mul(projected_causal_attention(p[0], p[1], p[2], 4, 2, spec, true,
                                                              &freqs),
                                   ops::gelu(p[0])));
        },
        in));
  }
}

TEST(ProjectedAttention, refuses_projections_the_heads_do_not_fit) {
  Generator g(7);
  const Tensor q = randn({1, 4, 8}, g, DType::F64), k = randn({1, 4, 4}, g, DType::F64);
  AttentionSpec spec;
  try {
    projected_causal_attention(q, k, randn({1, 4, 6}, g, DType::F64), 2, 1, spec);
    FAIL() << "v of another width than k was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("projected_causal_attention"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("(1, 4, 6)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(projected_causal_attention(q, k, k, 2, 2, spec), Error);  // k too narrow for Hkv 2
  const RopeFreqs wrong = rope_freqs(2, 100.0);  // one pair, for head dim 2, not 4
  EXPECT_THROW(projected_causal_attention(q, k, k, 2, 1, spec, false, &wrong), Error);
}
