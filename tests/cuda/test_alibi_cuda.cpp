// ALiBi (Press et al. 2022, arXiv:2108.12409: query head h adds -m_h (i - j) to its score for key
// j from the query at position i) in the CUDA flash kernels against the CPU reference kernels
// (src/backend/cpu/attention.cpp) on the same rounded inputs, in f64: out, lse, dq, dk and dv, for
// every family of bf16 kernels (mma.sync and its variants, wmma, wgmma), the f32 warp-per-row
// kernels, KV-cached decoding (Tq < Tk queries), a documents launch and the stored-dS backward in
// passes over kv-head slices. Head counts 8 (slopes 1/2 .. 1/256) and 6 (the rule for a count that
// is not a power of two), grouped-query heads (the slope is the query head's), T not a multiple of
// the 64-row tiles. Every case also checks that the no-ALiBi answer lies far outside the bound, so
// that a kernel ignoring the flag fails. Every test skips without a CUDA device; CI runs them on
// the emulator.
//
// Bounds (errors as max |gpu - ref| / max |ref| over a tensor, tests/test_util.h's rel_err): the
// fixture's (attention_fixture.h). bf16 out 2e-2: P rounded to bf16 before P V and the output to
// bf16; gradients 4e-2: dS rounded to bf16 and the cancellation in dP - rowsum(dO O). lse 1e-5 of
// its scale: f32 on both sides, the bias m_h (i - j) an f32 product of the slope rounded once to
// f32 (2^-24 relative) and an exact distance. f32 paths 1e-4: f32 sums of a few hundred terms
// against f64 (~1e-6) and libm exp. The emulator measures at most 3.7e-3 (bf16 out), 5.8e-3
// (gradients), 1.5e-7 (lse) and 1.1e-6 (f32); the no-ALiBi outputs lie 0.53 or more from the ALiBi
// ones.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "attention_fixture.h"
#include "backend/attention_mask.h"
#include "backend/cuda.h"
#include "backend/kernels.h"
#include "ops/ops.h"
#include "ops/packed_attention.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::testing::attention;
using tessera::testing::rel_err;

namespace {

constexpr double kLse = 1e-5;

struct Qkv {
  Input q, k, v, dout;
};
Qkv make_qkv(const Shape4& s, DType dtype, uint64_t seed) {
  Generator g(seed);
  return {make_input({s.B, s.H, s.T, s.D}, g, dtype), make_input({s.B, s.Hkv, s.T, s.D}, g, dtype),
          make_input({s.B, s.Hkv, s.T, s.D}, g, dtype), make_input({s.B, s.H, s.T, s.D}, g, dtype)};
}

// A forward and backward's results: on the CPU in f64 (the inputs' ref), or on the GPU.
struct Pass {
  Tensor out, lse, dq, dk, dv;
};
Pass run(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
         const AttentionMask& mask, DType dtype) {
  const bool cpu = q.device().is_cpu();
  const DType t = cpu ? DType::F64 : dtype, stat = cpu ? DType::F64 : DType::F32;
  const Device dev = q.device();
  const double scale = 1.0 / std::sqrt(double(q.size(3)));
  Pass r{Tensor::empty(q.shape(), {t, dev}),
         Tensor::empty({q.size(0), q.size(1), q.size(2)}, {stat, dev}),
         Tensor::empty(q.shape(), {t, dev}), Tensor::empty(k.shape(), {t, dev}),
         Tensor::empty(v.shape(), {t, dev})};
  TESSERA_KERNEL(q, flash_attention_forward)(r.out, r.lse, q, k, v, scale, mask);
  TESSERA_KERNEL(q, flash_attention_backward)
  (r.dq, r.dk, r.dv, dout, q, k, v, r.out, r.lse, scale, mask);
  return r;
}
Pass run_cpu(const Qkv& in, const AttentionMask& mask) {
  return run(in.q.ref, in.k.ref, in.v.ref, in.dout.ref, mask, DType::F64);
}
Pass run_gpu(const Qkv& in, const AttentionMask& mask, DType dtype) {
  return run(in.q.gpu, in.k.gpu, in.v.gpu, in.dout.gpu, mask, dtype);
}

void expect_close(const Pass& gpu, const Pass& ref, bool bf16, const std::string& what) {
  expect_pass_close(gpu, ref, bf16, kLse, what);
}

// A case: the CPU reference with and without ALiBi, once for every family run on it.
struct Case {
  Shape4 s;
  int64_t window;
  DType dtype;
  Qkv in;
  Pass ref, plain;
  Case(Shape4 s_, int64_t window_, uint64_t seed, DType dtype_)
      : s(s_),
        window(window_),
        dtype(dtype_),
        in(make_qkv(s_, dtype_, seed)),
        ref(run_cpu(in, {window_, true})),
        plain(run_cpu(in, {window_, false})) {}
  std::string str() const {
    return std::string(dtype_name(dtype)) + " " + s.str() + " window " + std::to_string(window);
  }
  void check(const std::string& family) const {
    const Pass gpu = run_gpu(in, {window, true}, dtype);
    const bool bf = dtype == DType::BF16;
    expect_close(gpu, ref, bf, family + ", " + str());
    expect_biased(gpu.out, plain.out, bf, "ALiBi", family + ", " + str());
  }
};

// H 8 (slopes 2^-1 .. 2^-8), H 6 (2^-2, 2^-4, 2^-6, 2^-8 and 2^-1, 2^-3) over grouped kv heads,
// a window inside a row's tiles, tiles left part empty (T 200, 257), D 64 (the forward's scale
// folded into the exponent: the bias in raw-score units) and D 128 (in base-2 units).
std::vector<Case> bf16_cases() {
  std::vector<Case> c;
  c.emplace_back(Shape4{2, 8, 8, 200, 64}, 0, 11, DType::BF16);
  c.emplace_back(Shape4{1, 6, 2, 200, 128}, 0, 12, DType::BF16);
  c.emplace_back(Shape4{1, 8, 2, 257, 64}, 50, 13, DType::BF16);
  c.emplace_back(Shape4{1, 6, 3, 130, 128}, 70, 14, DType::BF16);
  return c;
}

const char* family_name(cuda::FlashKernels k) {
  switch (k) {
    case cuda::FlashKernels::Mma:
      return "mma";
    case cuda::FlashKernels::MmaNarrow:
      return "mma-narrow";
    case cuda::FlashKernels::Mma3Blocks:
      return "mma-3blocks";
    case cuda::FlashKernels::Mma5Blocks:
      return "mma-5blocks";
    case cuda::FlashKernels::Mma2Stage:
      return "mma-2stage";
    case cuda::FlashKernels::MmaStoredDs:
      return "mma-ds";
    case cuda::FlashKernels::Mma2StageDs:
      return "mma-2stage-ds";
    case cuda::FlashKernels::Wmma:
      return "wmma";
    case cuda::FlashKernels::Wgmma:
      return "wgmma";
    case cuda::FlashKernels::WgmmaNarrow:
      return "wgmma-narrow";
  }
  return "?";
}

void check_families(const std::vector<cuda::FlashKernels>& families) {
  const std::vector<Case> cases = bf16_cases();
  for (cuda::FlashKernels f : families) {
    UseFlashKernels use(f);
    for (const Case& c : cases) c.check(family_name(f));
  }
}

}  // namespace

TEST(AlibiCuda, every_mma_family_matches_the_cpu_reference) {
  // The default family and each variant: 64- and 128-row forwards, K and V in two stages, the
  // forwards compiled for 3 and 5 blocks an SM, dQ from the stored dS.
  SKIP_WITHOUT_CUDA();
  check_families({cuda::FlashKernels::Mma, cuda::FlashKernels::MmaNarrow,
                  cuda::FlashKernels::Mma3Blocks, cuda::FlashKernels::Mma5Blocks,
                  cuda::FlashKernels::Mma2Stage, cuda::FlashKernels::MmaStoredDs,
                  cuda::FlashKernels::Mma2StageDs});
}

TEST(AlibiCuda, wmma_kernels_match_the_cpu_reference) {
  SKIP_WITHOUT_CUDA();
  check_families({cuda::FlashKernels::Wmma});
}

TEST(AlibiCuda, wgmma_kernels_match_the_cpu_reference) {
  SKIP_WITHOUT_CUDA();
  if (!cuda::flash_wgmma_available()) GTEST_SKIP() << "no sm_90a build or no 9.0 device";
  check_families({cuda::FlashKernels::Wgmma, cuda::FlashKernels::WgmmaNarrow});
}

TEST(AlibiCuda, f32_warp_per_row_kernels_match_the_cpu_reference) {
  // Any head dim up to 128 (lanes l + 64, l + 96 at 128), a window, keys in blocks of 32.
  SKIP_WITHOUT_CUDA();
  Case(Shape4{1, 6, 2, 100, 48}, 0, 21, DType::F32).check("f32");
  Case(Shape4{2, 8, 8, 77, 64}, 33, 22, DType::F32).check("f32");
  Case(Shape4{1, 4, 1, 70, 128}, 0, 23, DType::F32).check("f32");
}

TEST(AlibiCuda, decoding_queries_take_the_bias_of_their_positions) {
  // Tq queries over Tk = 77 cached keys (the warp-per-row forward in bf16 and f32): query i sits
  // at position Tk - Tq + i, so its bias to key j is -m_h (Tk - Tq + i - j), not -m_h (i - j).
  // Bounds as DecodingKernelsCuda's (test_decoding_kernels_cuda.cpp): bf16 out 2e-2, f32 1e-4.
  SKIP_WITHOUT_CUDA();
  const int64_t B = 1, H = 6, Hkv = 2, Tk = 77;
  for (const DType dt : {DType::F32, DType::BF16})
    for (const int64_t D : {int64_t(64), int64_t(128)})
      for (const int64_t Tq : {int64_t(1), int64_t(3)})
        for (const int64_t window : {int64_t(0), int64_t(20)}) {
          const std::string what = std::string(dtype_name(dt)) + " D " + std::to_string(D) +
                                   " Tq " + std::to_string(Tq) + " window " +
                                   std::to_string(window);
          Generator g(uint64_t(5 * D + Tq + window));
          const Input q = make_input({B, H, Tq, D}, g, dt), k = make_input({B, Hkv, Tk, D}, g, dt),
                      v = make_input({B, Hkv, Tk, D}, g, dt);
          const double scale = 1.0 / std::sqrt(double(D));
          auto forward = [&](const Input& x, bool cpu, bool alibi, Tensor& lse) {
            const DType t = cpu ? DType::F64 : dt;
            const Device dev = cpu ? Device::cpu() : Device::cuda();
            Tensor out = Tensor::empty({B, H, Tq, D}, {t, dev});
            lse = Tensor::empty({B, H, Tq}, {cpu ? DType::F64 : DType::F32, dev});
            const Tensor& kk = cpu ? k.ref : k.gpu;
            const Tensor& vv = cpu ? v.ref : v.gpu;
            TESSERA_KERNEL(out, flash_attention_forward)
            (out, lse, cpu ? x.ref : x.gpu, kk, vv, scale, AttentionMask{window, alibi});
            return out;
          };
          Tensor lse, glse, plain_lse;
          const Tensor out = forward(q, true, true, lse), gout = forward(q, false, true, glse);
          const Tensor plain = forward(q, true, false, plain_lse);
          const bool bf = dt == DType::BF16;
          EXPECT_LT(rel_err(gout, out), bf ? kBf16Fwd : kF32) << "out, " << what;
          EXPECT_LT(rel_err(glse, lse), kLse) << "lse, " << what;
          expect_biased(gout, plain, bf, "ALiBi", what);
        }
}

TEST(AlibiCuda, a_documents_launch_biases_by_positions_within_each_document) {
  // One launch over documents packed in a batch's rows (kernels/doc_tiles.h): each document's
  // rows attend as a sequence of their own, positions from its start, so each matches the CPU
  // reference run on that document's rows alone (the bias depends on i - j only). Documents of 1,
  // 69, 64 and 26 rows in row 0 (shorter than a tile, across a tile edge, a whole tile starting
  // mid-tile), one of 160 in row 1.
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, T = 160, H = 6, Hkv = 2;
  const std::vector<DocumentSpan> spans = {
      {0, 0, 1}, {0, 1, 69}, {0, 70, 64}, {0, 134, 26}, {1, 0, T}};
  const Kernels& kern = kernels_for(Device::cuda());
  for (const int64_t D : {int64_t(64), int64_t(128)}) {
    const Shape4 s{B, H, Hkv, T, D};
    const Qkv in = make_qkv(s, DType::BF16, uint64_t(31 + D));
    const double scale = 1.0 / std::sqrt(double(D));
    const AttentionMask mask{0, true};
    Pass g{gpu_empty({B, H, T, D}, DType::BF16), gpu_empty({B, H, T}, DType::F32),
           gpu_empty({B, H, T, D}, DType::BF16), gpu_empty({B, Hkv, T, D}, DType::BF16),
           gpu_empty({B, Hkv, T, D}, DType::BF16)};
    const cuda::FlashStats before = cuda::flash_stats();
    ASSERT_TRUE(kern.flash_attention_forward_documents(g.out, g.lse, in.q.gpu, in.k.gpu, in.v.gpu,
                                                       scale, mask, spans));
    ASSERT_TRUE(kern.flash_attention_backward_documents(g.dq, g.dk, g.dv, in.dout.gpu, in.q.gpu,
                                                        in.k.gpu, in.v.gpu, g.out, g.lse, scale,
                                                        mask, spans));
    const cuda::FlashStats after = cuda::flash_stats();
    EXPECT_EQ(after.document_forwards - before.document_forwards, 1);
    EXPECT_EQ(after.document_backwards - before.document_backwards, 1);
    for (const DocumentSpan& d : spans) {
      const std::string what = "D " + std::to_string(D) + ", document (" + std::to_string(d.b) +
                               ", " + std::to_string(d.start) + ", " + std::to_string(d.length) +
                               ")";
      auto rows = [&](const Tensor& t) {
        return t.narrow(0, d.b, 1).narrow(2, d.start, d.length).contiguous();
      };
      const Pass ref =
          run(rows(in.q.ref), rows(in.k.ref), rows(in.v.ref), rows(in.dout.ref), mask, DType::F64);
      if (d.length == 1) {
        // One key: P = 1, out = v, and dq, dk are exactly 0 (dS = dO.v - dO.O): on the GPU the
        // f32 rounding of two dot products of D terms of O(1) (~1e-6), times |k| or |q|.
        EXPECT_LT(rel_err(rows(g.out), ref.out), kBf16Fwd) << "out, " << what;
        EXPECT_LT(rel_err(rows(g.lse), ref.lse), kLse) << "lse, " << what;
        EXPECT_LT(rel_err(rows(g.dv), ref.dv), kBf16Bwd) << "dv, " << what;
        EXPECT_LT(tessera::testing::max_abs_diff(rows(g.dq).to(Device::cpu()), ref.dq), 1e-3)
            << "dq, " << what;
        EXPECT_LT(tessera::testing::max_abs_diff(rows(g.dk).to(Device::cpu()), ref.dk), 1e-3)
            << "dk, " << what;
        continue;
      }
      expect_close({rows(g.out), rows(g.lse), rows(g.dq), rows(g.dk), rows(g.dv)}, ref, true, what);
      const Pass plain = run(rows(in.q.ref), rows(in.k.ref), rows(in.v.ref), rows(in.dout.ref),
                             AttentionMask{0, false}, DType::F64);
      expect_biased(rows(g.out), plain.out, true, "ALiBi", what);
    }
  }
}

TEST(AlibiCuda, stored_ds_passes_over_kv_head_slices_keep_each_heads_slope) {
  // FlashKernels::MmaStoredDs under a dS budget of one kv-head group: three passes, each launched
  // on its slice's heads (2 of 6 query heads), which take the slopes of heads 0-1, 2-3 and 4-5 of
  // the model, not of the slice's own numbering: the same bits as one pass, and the CPU's values.
  SKIP_WITHOUT_CUDA();
  const Shape4 s{1, 6, 3, 130, 64};
  const int64_t tiles = (s.T + 63) / 64, head = tiles * (tiles + 1) / 2 * 64 * 64 * 2;  // dS bytes
  const Case c(s, 0, 41, DType::BF16);
  UseFlashKernels use(cuda::FlashKernels::MmaStoredDs);
  std::vector<std::vector<unsigned char>> whole;
  for (const std::string& bytes : {std::string(), std::to_string(s.H / s.Hkv * head)}) {
    tessera::testing::ScopedEnv env({{"TESSERA_FLASH_DS_BYTES", bytes.c_str()}});
    if (bytes.empty()) ::unsetenv("TESSERA_FLASH_DS_BYTES");
    const cuda::FlashStats before = cuda::flash_stats();
    const Pass gpu = run_gpu(c.in, {0, true}, DType::BF16);
    EXPECT_EQ(cuda::flash_stats().stored_ds_passes - before.stored_ds_passes,
              bytes.empty() ? 1 : s.Hkv);
    expect_close(gpu, c.ref, true, std::string("stored dS, budget '") + bytes + "'");
    std::vector<std::vector<unsigned char>> got;
    for (const Tensor* t : {&gpu.dq, &gpu.dk, &gpu.dv})
      got.push_back(tessera::testing::bytes(t->to(Device::cpu())));
    if (whole.empty())
      whole = got;
    else
      for (size_t i = 0; i < 3; ++i)
        EXPECT_TRUE(got[i] == whole[i]) << "d"
                                        << "qkv"[i];
  }
}

TEST(AlibiCuda, the_op_runs_alibi_on_cuda_and_matches_the_cpu) {
  // ops::packed_causal_attention with spec.alibi (model.position alibi) on the GPU, q, k and v
  // read strided out of one projection, against the same op on the CPU in f64.
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, T = 150, H = 6, Hkv = 2, D = 64;
  ops::AttentionSpec spec;
  spec.alibi = true;
  ASSERT_TRUE(ops::packed_attention_runs(spec, Device::cuda(), DType::BF16, D, true));
  Generator g(51);
  const Input qkv = make_input({B, T, (H + 2 * Hkv) * D}, g, DType::BF16);
  const Input w = make_input({B, T, H * D}, g, DType::BF16);
  auto pass = [&](const Tensor& x_in, const Tensor& weights, Tensor& grad) {
    Tensor x = x_in.detach();
    x.requires_grad_();
    Tensor out = ops::packed_causal_attention(x, H, Hkv, spec, true);
    ops::sum(ops::mul(out, weights)).backward();
    grad = x.grad();
    return out;
  };
  Tensor ref_grad, gpu_grad;
  const Tensor ref = pass(qkv.ref, w.ref, ref_grad), gpu = pass(qkv.gpu, w.gpu, gpu_grad);
  EXPECT_LT(rel_err(gpu, ref), kBf16Fwd) << "out";
  const int64_t first[3] = {0, H * D, (H + Hkv) * D}, width[3] = {H * D, Hkv * D, Hkv * D};
  for (int i = 0; i < 3; ++i)
    EXPECT_LT(rel_err(gpu_grad.narrow(2, first[i], width[i]).contiguous(),
                      ref_grad.narrow(2, first[i], width[i]).contiguous()),
              kBf16Bwd)
        << "d"
        << "qkv"[i];
}
