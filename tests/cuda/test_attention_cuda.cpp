// CUDA fused attention (kernels/flash_attention.cu, kernels/flash_mma.cu, kernels/stick_breaking.cu)
// against the CPU reference kernels of the same table entries. Every test skips without a CUDA device.
//
// Inputs are drawn in f32 and rounded to bf16 once; the CPU reference runs in f64 on exactly those
// rounded values, so the comparison measures only the GPU's own arithmetic. Errors are measured
// as max |gpu - ref| / max |ref| over a tensor (a norm-wise bound: single elements near zero would
// make elementwise relative errors meaningless).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "attention_fixture.h"
#include "backend/cuda.h"
#include "backend/kernels.h"
#include "ops/ops.h"
#include "ops/packed_attention.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::testing::attention;
using tessera::testing::rel_err;
using tessera::testing::values;

namespace {

// The families of bf16 flash kernels (backend/cuda.h): every bf16 flash test runs each; the choice
// is put back when the scope ends. Wgmma (sm_90a) has a test of its own below, so that a failure
// of it on a GPU names it alone.
std::vector<cuda::FlashKernels> flash_families() {
  return {cuda::FlashKernels::Mma, cuda::FlashKernels::MmaNarrow, cuda::FlashKernels::MmaStoredDs,
          cuda::FlashKernels::Wmma};
}
const char* flash_name(cuda::FlashKernels k) {
  switch (k) {
    case cuda::FlashKernels::Mma:
      return "mma kernels";
    case cuda::FlashKernels::MmaNarrow:
      return "mma kernels, 64-row forward";
    case cuda::FlashKernels::Mma3Blocks:
      return "mma kernels, 128-row forward at 3 blocks an SM";
    case cuda::FlashKernels::Mma5Blocks:
      return "mma kernels, forward at 5 blocks an SM";
    case cuda::FlashKernels::Mma2Stage:
      return "mma kernels, K and V in two stages";
    case cuda::FlashKernels::MmaStoredDs:
      return "mma kernels, dQ from the stored dS";
    case cuda::FlashKernels::Mma2StageDs:
      return "mma kernels, two-stage forward, dQ from the stored dS";
    case cuda::FlashKernels::Wmma:
      return "wmma kernels";
    case cuda::FlashKernels::Wgmma:
      return "wgmma kernels";
    case cuda::FlashKernels::WgmmaNarrow:
      return "wgmma kernels, fewer registers";
  }
  return "?";
}
struct Qkv {
  Input q, k, v, dout;
};
// q and k are N(0, spread^2) (scores spread^2 times larger), v and dout N(0, 1); key t is
// scaled by 1 + key_growth t / T.
Qkv make_qkv(Shape4 s, DType dtype, uint64_t seed, double spread = 1.0, double key_growth = 0.0) {
  Generator g(seed);
  return {make_input({s.B, s.H, s.T, s.D}, g, dtype, spread),
          make_input({s.B, s.Hkv, s.T, s.D}, g, dtype, spread, 0.0, key_growth),
          make_input({s.B, s.Hkv, s.T, s.D}, g, dtype), make_input({s.B, s.H, s.T, s.D}, g, dtype)};
}

// Where a (B, H, T, D) result is off, for a failure message: the largest error in each 64-row
// tile of T (over batch, heads and D), relative to the reference's largest value. (The wgmma
// backward at D 64 failed on the H200 at every T of more than one tile: docs/gpu-notes.md.)
std::string per_tile(const Tensor& got, const Tensor& ref) {
  const std::vector<double> g = values(got.to(Device::cpu())), r = values(ref);
  const int64_t T = ref.size(2), D = ref.size(3), rows = ref.size(0) * ref.size(1) * T;
  double scale = 1e-30;
  for (double x : r) scale = std::max(scale, std::fabs(x));
  std::vector<double> err(size_t((T + 63) / 64), 0.0);
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t d = 0; d < D; ++d) {
      const size_t i = size_t(row * D + d);
      double& e = err[size_t(row % T / 64)];
      e = std::max(e, std::isfinite(g[i]) ? std::fabs(g[i] - r[i]) / scale : INFINITY);
    }
  std::string out = " (error per 64-row tile of T:";
  for (double e : err) {  // (not " " + to_string: g++ 12 warns -Wrestrict, a false positive)
    out += ' ';
    out += std::to_string(e);
  }
  return out + ")";
}

void check_flash(Shape4 s, DType dtype, int64_t window, uint64_t seed, double key_growth = 0.0) {
  const std::string what = std::string(dtype_name(dtype)) + " T " + std::to_string(s.T) + " D " +
                           std::to_string(s.D) + " window " + std::to_string(window) +
                           " key growth " + std::to_string(key_growth);
  const double scale = 1.0 / std::sqrt(double(s.D));
  Qkv in = make_qkv(s, dtype, seed, 1.0, key_growth);
  const Shape qs{s.B, s.H, s.T, s.D}, ks{s.B, s.Hkv, s.T, s.D}, rows{s.B, s.H, s.T};

  Tensor out = Tensor::empty(qs, DType::F64), lse = Tensor::empty(rows, DType::F64);
  TESSERA_KERNEL(out, flash_attention_forward)(out, lse, in.q.ref, in.k.ref, in.v.ref, scale,
                                               window);
  Tensor dq = Tensor::empty(qs, DType::F64), dk = Tensor::empty(ks, DType::F64),
         dv = Tensor::empty(ks, DType::F64);
  TESSERA_KERNEL(out, flash_attention_backward)(dq, dk, dv, in.dout.ref, in.q.ref, in.k.ref,
                                                in.v.ref, out, lse, scale, window);

  Tensor gout = gpu_empty(qs, dtype), glse = gpu_empty(rows, DType::F32);
  TESSERA_KERNEL(gout, flash_attention_forward)(gout, glse, in.q.gpu, in.k.gpu, in.v.gpu, scale,
                                                window);
  Tensor gdq = gpu_empty(qs, dtype), gdk = gpu_empty(ks, dtype), gdv = gpu_empty(ks, dtype);
  TESSERA_KERNEL(gout, flash_attention_backward)(gdq, gdk, gdv, in.dout.gpu, in.q.gpu, in.k.gpu,
                                                 in.v.gpu, gout, glse, scale, window);
  const bool bf = dtype == DType::BF16;
  EXPECT_LT(rel_err(gout, out), bf ? kBf16Fwd : kF32) << "out, " << what;
  // lse is f32 on both paths (from fp32 scores of bf16 inputs): 1e-5 relative to its scale.
  EXPECT_LT(rel_err(glse, lse), 1e-5) << "lse, " << what;
  EXPECT_LT(rel_err(gdq, dq), bf ? kBf16Bwd : kF32) << "dq, " << what << per_tile(gdq, dq);
  EXPECT_LT(rel_err(gdk, dk), bf ? kBf16Bwd : kF32) << "dk, " << what << per_tile(gdk, dk);
  EXPECT_LT(rel_err(gdv, dv), bf ? kBf16Bwd : kF32) << "dv, " << what << per_tile(gdv, dv);
}

void check_stick_breaking(Shape4 s, DType dtype, bool current, bool remainder, uint64_t seed,
                          double spread = 1.0) {
  const std::string what = std::string(dtype_name(dtype)) + " T " + std::to_string(s.T) + " D " +
                           std::to_string(s.D) + (current ? " attend_current" : "") +
                           (remainder ? " remainder" : "") + " spread " + std::to_string(spread);
  const double scale = 1.0 / std::sqrt(double(s.D));
  Qkv in = make_qkv(s, dtype, seed, spread);
  const Shape qs{s.B, s.H, s.T, s.D}, ks{s.B, s.Hkv, s.T, s.D}, rows{s.B, s.H, s.T};

  Tensor out = Tensor::empty(qs, DType::F64), lr = Tensor::empty(rows, DType::F64),
         rem = Tensor::empty(rows, DType::F64);
  TESSERA_KERNEL(out, stick_breaking_forward)(out, lr, rem, in.q.ref, in.k.ref, in.v.ref, scale,
                                              current, remainder);
  Tensor dq = Tensor::empty(qs, DType::F64), dk = Tensor::empty(ks, DType::F64),
         dv = Tensor::empty(ks, DType::F64);
  TESSERA_KERNEL(out, stick_breaking_backward)(dq, dk, dv, in.dout.ref, in.q.ref, in.k.ref,
                                               in.v.ref, out, lr, scale, current, remainder);

  Tensor gout = gpu_empty(qs, dtype), glr = gpu_empty(rows, DType::F32),
         grem = gpu_empty(rows, dtype);
  TESSERA_KERNEL(gout, stick_breaking_forward)(gout, glr, grem, in.q.gpu, in.k.gpu, in.v.gpu, scale,
                                               current, remainder);
  Tensor gdq = gpu_empty(qs, dtype), gdk = gpu_empty(ks, dtype), gdv = gpu_empty(ks, dtype);
  TESSERA_KERNEL(gout, stick_breaking_backward)(gdq, gdk, gdv, in.dout.gpu, in.q.gpu, in.k.gpu,
                                                in.v.gpu, gout, glr, scale, current, remainder);
  const bool bf = dtype == DType::BF16;
  EXPECT_LT(rel_err(gout, out), bf ? kBf16Fwd : kF32) << "out, " << what;
  // log rem is a sum of T f32 softplus terms on the GPU (fast exp/log on the bf16 path, ~1e-7
  // absolute each): 1e-4 relative to the largest |log rem|.
  EXPECT_LT(rel_err(glr, lr), 1e-4) << "log_rem, " << what;
  EXPECT_LT(rel_err(grem, rem), bf ? kBf16Fwd : kF32) << "rem, " << what;
  EXPECT_LT(rel_err(gdq, dq), bf ? (spread > 1 ? kSbBf16BwdSharp : kSbBf16Bwd) : kF32)
      << "dq, " << what;
  EXPECT_LT(rel_err(gdk, dk), bf ? kBf16Bwd : kF32) << "dk, " << what;
  EXPECT_LT(rel_err(gdv, dv), bf ? kBf16Bwd : kF32) << "dv, " << what;
}

// ops::packed_causal_attention on the GPU against the same op on the CPU in f64, over the same
// rounded values: the flash kernels read q, k and v strided out of one (B, T, (H + 2 Hkv) D)
// tensor, write out as (B, T, H D) and dq, dk, dv into one gradient of qkv, all in place. Each of
// the three gradient slices is compared on its own scale.
void check_packed(int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, DType dtype,
                  const ops::AttentionSpec& spec, uint64_t seed) {
  const std::string what = std::string(dtype_name(dtype)) + " T " + std::to_string(T) + " H " +
                           std::to_string(H) + "/" + std::to_string(Hkv) + " D " +
                           std::to_string(D) + " " + ops::attention_kind_name(spec.kind) +
                           " window " + std::to_string(spec.window) +
                           (spec.attend_current ? " attend_current" : "") +
                           (spec.sb_remainder ? " remainder" : "");
  Generator g(seed);
  const Input qkv = make_input({B, T, (H + 2 * Hkv) * D}, g, dtype);
  const Input w = make_input({B, T, H * D}, g, dtype);
  ASSERT_TRUE(ops::packed_attention_runs(spec, Device::cuda(), dtype, D, true)) << what;
  auto run = [&](const Tensor& x_in, const Tensor& weights, Tensor& grad) {
    Tensor x = x_in.detach();
    x.requires_grad_();
    Tensor out = ops::packed_causal_attention(x, H, Hkv, spec, true);
    ops::sum(ops::mul(out, weights)).backward();  // dout = weights
    grad = x.grad();
    return out;
  };
  Tensor ref_grad, gpu_grad;
  const Tensor ref = run(qkv.ref, w.ref, ref_grad);
  const Tensor gpu = run(qkv.gpu, w.gpu, gpu_grad);
  const bool bf = dtype == DType::BF16;
  EXPECT_LT(rel_err(gpu, ref), bf ? kBf16Fwd : kF32) << "out, " << what;
  const int64_t first[3] = {0, H * D, (H + Hkv) * D}, width[3] = {H * D, Hkv * D, Hkv * D};
  const char* names[3] = {"dq", "dk", "dv"};
  const bool sb = spec.kind == ops::AttentionKind::StickBreaking;
  for (int i = 0; i < 3; ++i)
    EXPECT_LT(rel_err(gpu_grad.narrow(2, first[i], width[i]).contiguous(),
                      ref_grad.narrow(2, first[i], width[i]).contiguous()),
              !bf ? kF32 : sb && i == 0 ? kSbBf16Bwd : kBf16Bwd)
        << names[i] << ", " << what;
}
ops::AttentionSpec windowed(int64_t window) {
  ops::AttentionSpec s;
  s.window = window;
  return s;
}
ops::AttentionSpec stick_breaking(bool current, bool remainder) {
  ops::AttentionSpec s;
  s.kind = ops::AttentionKind::StickBreaking;
  s.attend_current = current, s.sb_remainder = remainder;
  return s;
}

// ops::projected_causal_attention (separate q, k, v projections, RoPE) on the GPU against the
// same op on the CPU in f64, over the same rounded values: the rope kernel reads q's and k's heads
// strided out of (B, T, H D) projections and writes their gradients back there; the flash kernels
// read v in place. The CPU op itself equals the split path exactly (tests/ops).
void check_projected(int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, int64_t window,
                     uint64_t seed) {
  const std::string what = "T " + std::to_string(T) + " H " + std::to_string(H) + "/" +
                           std::to_string(Hkv) + " D " + std::to_string(D) + " window " +
                           std::to_string(window);
  Generator g(seed);
  const Input q = make_input({B, T, H * D}, g, DType::BF16);
  const Input k = make_input({B, T, Hkv * D}, g, DType::BF16);
  const Input v = make_input({B, T, Hkv * D}, g, DType::BF16);
  const Input w = make_input({B, T, H * D}, g, DType::BF16);
  ops::AttentionSpec spec;
  spec.window = window;
  const ops::RopeFreqs freqs = ops::rope_freqs(D, 10000.0);
  auto run = [&](const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& weights,
                 std::vector<Tensor>& grads) {
    std::vector<Tensor> x = {q0.detach(), k0.detach(), v0.detach()};
    for (Tensor& t : x) t.requires_grad_();
    Tensor out = ops::projected_causal_attention(x[0], x[1], x[2], H, Hkv, spec, true, &freqs);
    ops::sum(ops::mul(out, weights)).backward();
    grads = {x[0].grad(), x[1].grad(), x[2].grad()};
    return out;
  };
  std::vector<Tensor> ref_grads, gpu_grads;
  const Tensor ref = run(q.ref, k.ref, v.ref, w.ref, ref_grads);
  const Tensor gpu = run(q.gpu, k.gpu, v.gpu, w.gpu, gpu_grads);
  EXPECT_LT(rel_err(gpu, ref), kBf16Fwd) << "out, " << what;
  const char* names[3] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; ++i)
    EXPECT_LT(rel_err(gpu_grads[size_t(i)], ref_grads[size_t(i)]), kBf16Bwd)
        << names[i] << ", " << what;
}

}  // namespace

// T values that are not multiples of the 64-row tiles (nor of the plain path's 32-key blocks)
// exercise the masked edges; H != Hkv the grouped-query mapping.
TEST(AttentionCuda, flash_bf16_matches_cpu_reference) {
  SKIP_WITHOUT_CUDA();
  for (cuda::FlashKernels kind : flash_families()) {
    SCOPED_TRACE(flash_name(kind));
    UseFlashKernels use(kind);
    check_flash({2, 4, 2, 200, 64}, DType::BF16, 0, 71);
    check_flash({1, 2, 1, 130, 128}, DType::BF16, 0, 72);
    check_flash({1, 2, 2, 64, 64}, DType::BF16, 0, 73);    // exactly one tile
    check_flash({1, 8, 1, 1024, 64}, DType::BF16, 0, 78);  // GPT-2's T, multi-query heads
  }
}

TEST(AttentionCuda, flash_bf16_sliding_window_matches_cpu_reference) {
  SKIP_WITHOUT_CUDA();
  for (cuda::FlashKernels kind : flash_families()) {
    SCOPED_TRACE(flash_name(kind));
    UseFlashKernels use(kind);
    check_flash({1, 4, 4, 257, 64}, DType::BF16, 50, 74);    // window inside a tile
    check_flash({1, 2, 1, 300, 128}, DType::BF16, 130, 75);  // window spanning tiles
    check_flash({1, 2, 2, 200, 64}, DType::BF16, 2, 79);     // itself and the key before
  }
}

TEST(AttentionCuda, flash_bf16_scores_rising_along_the_row_match_cpu_reference) {
  // Keys up to 41 times larger along the sequence: a row's maximum rises far past 2^127 times its
  // first tile's, so the forwards that rescale lazily (kernels/flash_mma.h: only when a maximum
  // moves by more than 2^8) must move it and rescale O in later tiles, after tiles where they did
  // not; a forward that kept its first maximum would overflow. TESSERA_FLASH_RESCALE=eager (the
  // before of a measurement) rescales at every tile.
  SKIP_WITHOUT_CUDA();
  std::vector<cuda::FlashKernels> kinds = flash_families();
  kinds.push_back(cuda::FlashKernels::Mma2Stage);
  for (const char* rescale : {"lazy", "eager"}) {
    tessera::testing::ScopedEnv env({{"TESSERA_FLASH_RESCALE", rescale}});
    for (cuda::FlashKernels kind : kinds) {
      SCOPED_TRACE(std::string(flash_name(kind)) + ", rescale " + rescale);
      UseFlashKernels use(kind);
      check_flash({1, 2, 1, 300, 64}, DType::BF16, 0, 76, 40.0);
      check_flash({1, 1, 1, 200, 128}, DType::BF16, 0, 77, 40.0);
    }
  }
  // The switch takes effect: on ordinary scores (a row's maximum seldom grows by 2^8 after its
  // first tile) lse is the same value by other roundings, so other bits. (On the rising scores
  // above both rescale at the last tiles and give the same bits.)
  {
    UseFlashKernels use(cuda::FlashKernels::Mma);
    const Qkv in = make_qkv({1, 2, 1, 300, 64}, DType::BF16, 76);
    auto forward = [&](const char* rescale) {
      tessera::testing::ScopedEnv env({{"TESSERA_FLASH_RESCALE", rescale}});
      Tensor out = gpu_empty({1, 2, 300, 64}, DType::BF16),
             lse = gpu_empty({1, 2, 300}, DType::F32);
      TESSERA_KERNEL(out, flash_attention_forward)
      (out, lse, in.q.gpu, in.k.gpu, in.v.gpu, 0.125, 0);
      return values(lse.to(Device::cpu()));
    };
    EXPECT_NE(forward("lazy"), forward("eager"));
  }
  tessera::testing::ScopedEnv bad({{"TESSERA_FLASH_RESCALE", "sometimes"}});
  const std::string msg = tessera::testing::error_of([] {
    check_flash({1, 1, 1, 64, 64}, DType::BF16, 0, 78);
  });
  EXPECT_NE(msg.find("TESSERA_FLASH_RESCALE='sometimes'"), std::string::npos) << msg;
}

TEST(AttentionCuda, flash_bf16_three_blocks_an_sm_match_cpu_reference) {
  // The same forward body as the mma kernels on 128-query blocks, compiled under another register
  // bound (D 64 only; the backward is Mma's): what could differ is the compiler's work, spills
  // included. Stick-breaking's forward takes 128-query blocks under this choice alone.
  SKIP_WITHOUT_CUDA();
  UseFlashKernels use(cuda::FlashKernels::Mma3Blocks);
  check_flash({2, 4, 2, 200, 64}, DType::BF16, 0, 71);
  check_flash({1, 4, 4, 257, 64}, DType::BF16, 50, 74);
  check_packed(2, 150, 4, 2, 64, DType::BF16, stick_breaking(false, true), 86);
}

TEST(AttentionCuda, flash_bf16_five_blocks_an_sm_match_cpu_reference) {
  // The 64-query forward compiled for five blocks an SM (D 64 only; the backward is Mma's): the
  // compiler's work under a tighter register bound, its spills included.
  SKIP_WITHOUT_CUDA();
  UseFlashKernels use(cuda::FlashKernels::Mma5Blocks);
  check_flash({2, 4, 2, 200, 64}, DType::BF16, 0, 71);
  check_flash({1, 4, 4, 257, 64}, DType::BF16, 50, 74);
}

TEST(AttentionCuda, flash_bf16_two_stage_forward_matches_cpu_reference) {
  // The forward with the next key tile's K and V streaming into a second stage (one barrier a
  // tile), at both head dims (64-row blocks at D 64, 128-row at D 128), through tile edges,
  // windows, a block of one key tile and heads read off a packed projection; the backward is
  // Mma's.
  SKIP_WITHOUT_CUDA();
  UseFlashKernels use(cuda::FlashKernels::Mma2Stage);
  check_flash({2, 4, 2, 200, 64}, DType::BF16, 0, 71);
  check_flash({1, 2, 1, 300, 128}, DType::BF16, 130, 75);
  check_flash({1, 4, 4, 257, 64}, DType::BF16, 50, 74);
  check_flash({1, 2, 2, 64, 64}, DType::BF16, 0, 73);
  check_flash({2, 2, 1, 3, 64}, DType::BF16, 0, 83);   // a partial first tile, nothing to stream
  check_flash({1, 2, 2, 5, 128}, DType::BF16, 0, 84);
  check_packed(2, 200, 4, 2, 64, DType::BF16, windowed(0), 81);
}

TEST(AttentionCuda, two_stage_and_stored_ds_family_runs_both) {
  // Mma2StageDs, the step with both changes measured in one call: Mma2Stage's forward and
  // MmaStoredDs's backward, bit for bit. Those paths give the bits of the ones they replace (the
  // two-stage forward by design, tests/kernels/test_flash_mma_emulated.cpp; the stored dS on the
  // emulator, whose products sum in one order either way), so cuda::flash_stats says which ran.
  SKIP_WITHOUT_CUDA();
  EXPECT_TRUE(cuda::two_stage_forward(cuda::FlashKernels::Mma2StageDs));
  EXPECT_TRUE(cuda::stored_ds_backward(cuda::FlashKernels::Mma2StageDs));
  EXPECT_FALSE(cuda::two_stage_forward(cuda::FlashKernels::MmaStoredDs));
  EXPECT_FALSE(cuda::stored_ds_backward(cuda::FlashKernels::Mma2Stage));
  EXPECT_EQ(cuda::flash_kernels_named("mma-2stage-ds"), cuda::FlashKernels::Mma2StageDs);
  EXPECT_EQ(cuda::flash_kernels_named(""), cuda::FlashKernels::Mma);
  try {
    cuda::flash_kernels_named("mma-2stage+ds");
    ADD_FAILURE() << "an unknown family was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("got 'mma-2stage+ds'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mma-2stage-ds"), std::string::npos) << e.what();
  }

  const Shape4 s{1, 2, 1, 200, 64};
  Qkv in = make_qkv(s, DType::BF16, 93);
  const Shape qs{s.B, s.H, s.T, s.D}, ks{s.B, s.Hkv, s.T, s.D}, rows{s.B, s.H, s.T};
  struct Ran {
    int64_t two_stage, stored, recomputed;
  };
  auto ran = [](const cuda::FlashStats& a, const cuda::FlashStats& b) {
    return Ran{b.two_stage_forwards - a.two_stage_forwards,
               b.stored_ds_backwards - a.stored_ds_backwards,
               b.recomputed_ds_backwards - a.recomputed_ds_backwards};
  };
  auto run = [&](cuda::FlashKernels kind, Ran want) {  // the bytes of out, lse, dq, dk and dv
    SCOPED_TRACE(flash_name(kind));
    UseFlashKernels use(kind);
    const cuda::FlashStats before = cuda::flash_stats();
    Tensor out = gpu_empty(qs, DType::BF16), lse = gpu_empty(rows, DType::F32);
    TESSERA_KERNEL(out, flash_attention_forward)(out, lse, in.q.gpu, in.k.gpu, in.v.gpu, 0.125, 0);
    Tensor dq = gpu_empty(qs, DType::BF16), dk = gpu_empty(ks, DType::BF16),
           dv = gpu_empty(ks, DType::BF16);
    TESSERA_KERNEL(out, flash_attention_backward)
    (dq, dk, dv, in.dout.gpu, in.q.gpu, in.k.gpu, in.v.gpu, out, lse, 0.125, 0);
    const Ran r = ran(before, cuda::flash_stats());
    EXPECT_EQ(r.two_stage, want.two_stage) << "two-stage forwards";
    EXPECT_EQ(r.stored, want.stored) << "stored-dS backwards";
    EXPECT_EQ(r.recomputed, want.recomputed) << "recomputing backwards";
    std::vector<std::vector<unsigned char>> got;
    for (const Tensor* t : {&out, &lse, &dq, &dk, &dv})
      got.push_back(tessera::testing::bytes(t->to(Device::cpu())));
    return got;
  };
  const auto both = run(cuda::FlashKernels::Mma2StageDs, {1, 1, 0});
  const auto two_stage = run(cuda::FlashKernels::Mma2Stage, {1, 0, 1});
  const auto stored = run(cuda::FlashKernels::MmaStoredDs, {0, 1, 0});
  run(cuda::FlashKernels::Mma, {0, 0, 1});
  EXPECT_TRUE(both[0] == two_stage[0] && both[1] == two_stage[1]) << "forward";
  EXPECT_TRUE(both[2] == stored[2] && both[3] == stored[3] && both[4] == stored[4]) << "backward";
}

TEST(AttentionCuda, flash_bf16_wgmma_kernels_match_cpu_reference) {
  // The forward and backward on Hopper's wgmma (kernels/flash_wgmma.cu), on the cases the other
  // families run: tile edges, grouped and multi-query heads, GPT-2's T, windows, and heads read
  // straight off a packed projection (strided rows). The D 64 forward runs 128-query blocks (a
  // warpgroup's two groups of 64 rows), so T 64 and 200 leave a block part empty.
  SKIP_WITHOUT_CUDA();
  if (!cuda::flash_wgmma_available()) GTEST_SKIP() << "no sm_90a build or no 9.0 device";
  UseFlashKernels use(cuda::FlashKernels::Wgmma);
  check_flash({2, 4, 2, 200, 64}, DType::BF16, 0, 71);
  check_flash({1, 2, 1, 130, 128}, DType::BF16, 0, 72);
  check_flash({1, 2, 2, 64, 64}, DType::BF16, 0, 73);
  check_flash({1, 8, 1, 1024, 64}, DType::BF16, 0, 78);
  check_flash({1, 4, 4, 257, 64}, DType::BF16, 50, 74);
  check_flash({1, 2, 1, 300, 128}, DType::BF16, 130, 75);
  check_flash({1, 2, 2, 200, 64}, DType::BF16, 2, 79);
  check_packed(2, 200, 4, 2, 64, DType::BF16, windowed(0), 81);
  check_packed(1, 130, 2, 1, 128, DType::BF16, windowed(0), 82);
  check_packed(1, 257, 4, 4, 64, DType::BF16, windowed(50), 83);
}

TEST(AttentionCuda, flash_bf16_wgmma_narrow_kernels_match_cpu_reference) {
  // WgmmaNarrow, which differs from Wgmma at D 64 only: the forward on 64-query blocks (one group
  // a warp) and dK dV reading K and V from shared memory at every query tile.
  SKIP_WITHOUT_CUDA();
  if (!cuda::flash_wgmma_available()) GTEST_SKIP() << "no sm_90a build or no 9.0 device";
  UseFlashKernels use(cuda::FlashKernels::WgmmaNarrow);
  check_flash({2, 4, 2, 200, 64}, DType::BF16, 0, 71);
  check_flash({1, 4, 4, 257, 64}, DType::BF16, 50, 74);
  check_packed(2, 200, 4, 2, 64, DType::BF16, windowed(0), 81);
}

TEST(AttentionCuda, flash_f32_matches_cpu_reference) {
  SKIP_WITHOUT_CUDA();
  check_flash({1, 4, 2, 100, 48}, DType::F32, 0, 76);
  check_flash({2, 2, 1, 77, 64}, DType::F32, 33, 77);
  // Head dimension 128: each lane's dimensions l + 64 and l + 96 too (the cases above reach 64).
  check_flash({1, 2, 1, 70, 128}, DType::F32, 0, 80);
}

TEST(AttentionCuda, packed_projection_attention_matches_cpu_reference) {
  SKIP_WITHOUT_CUDA();
  for (cuda::FlashKernels kind : flash_families()) {
    SCOPED_TRACE(flash_name(kind));
    UseFlashKernels use(kind);
    check_packed(2, 200, 4, 2, 64, DType::BF16, windowed(0), 81);   // tensor-core tiles, GQA
    check_packed(1, 130, 2, 1, 128, DType::BF16, windowed(0), 82);  // head dim 128, one kv head
    check_packed(1, 257, 4, 4, 64, DType::BF16, windowed(50), 83);  // sliding window
    // Stick-breaking's register-tile kernels (64-row forward blocks).
    check_packed(2, 150, 4, 2, 64, DType::BF16, stick_breaking(false, true), 86);
  }
  check_packed(1, 100, 4, 2, 64, DType::F32, windowed(0), 84);   // f32 warp-per-row kernels
  check_packed(2, 77, 2, 1, 48, DType::F32, windowed(33), 85);   // any head dim with a window
  check_packed(1, 130, 2, 1, 128, DType::BF16, stick_breaking(true, false), 87);
  check_packed(1, 70, 2, 1, 40, DType::F32, stick_breaking(true, true), 88);  // plain kernels
}

TEST(AttentionCuda, projected_attention_with_rope_matches_cpu_reference) {
  SKIP_WITHOUT_CUDA();
  for (cuda::FlashKernels kind : flash_families()) {
    SCOPED_TRACE(flash_name(kind));
    UseFlashKernels use(kind);
    check_projected(2, 200, 4, 2, 64, 0, 87);    // grouped queries
    check_projected(1, 130, 2, 1, 128, 50, 88);  // head dim 128, a window
  }
}

TEST(AttentionCuda, stick_breaking_bf16_matches_cpu_reference) {
  SKIP_WITHOUT_CUDA();
  // The forward on 64-row blocks (Mma), on 128-row ones at D 64 (Mma3Blocks), and with K and V in
  // two stages (Mma2Stage).
  for (cuda::FlashKernels kind :
       {cuda::FlashKernels::Mma, cuda::FlashKernels::Mma3Blocks, cuda::FlashKernels::Mma2Stage}) {
    SCOPED_TRACE(flash_name(kind));
    UseFlashKernels use(kind);
    if (kind != cuda::FlashKernels::Mma3Blocks) {  // which changes nothing at D 128
      check_stick_breaking({1, 2, 1, 130, 128}, DType::BF16, true, true, 82);
      check_stick_breaking({1, 2, 2, 65, 128}, DType::BF16, true, false, 84);
    }
    check_stick_breaking({2, 4, 2, 200, 64}, DType::BF16, false, false, 81);
    check_stick_breaking({1, 2, 2, 129, 64}, DType::BF16, false, true, 83);
    // Scores near +-10: products of 16 sticks below f32's range in some rows, whose logs
    // (log rem, and the checkpoints) come from stick_exact_log2.
    check_stick_breaking({1, 1, 1, 150, 64}, DType::BF16, true, false, 85, 3.0);
  }
}

// A backward whose checkpoints pass TESSERA_SB_CKPT_BYTES runs in passes over slices of the batch,
// or of one batch element's groups of query heads with their kv head (kernels/stick_breaking.cu):
// bit for bit the one-pass result, since every row is computed as before. Budgets that fit two
// batch elements (B 3: passes of 2 and 1), one, one group, and less than a group (then a group
// per pass anyway).
void check_stick_breaking_chunks(Shape4 s, DType dtype, int64_t head_bytes) {
  const double scale = 1.0 / std::sqrt(double(s.D));
  Qkv in = make_qkv(s, dtype, 91);
  const Shape qs{s.B, s.H, s.T, s.D}, ks{s.B, s.Hkv, s.T, s.D}, rows{s.B, s.H, s.T};
  Tensor out = gpu_empty(qs, dtype), lr = gpu_empty(rows, DType::F32);
  TESSERA_KERNEL(out, stick_breaking_forward)(out, lr, Tensor(), in.q.gpu, in.k.gpu, in.v.gpu,
                                              scale, false, true);
  auto backward = [&](const char* budget) {
    // Gone again even when the backward throws (the bad budget below), so that no later test in
    // the process runs under it.
    tessera::testing::ScopedEnv env({{"TESSERA_SB_CKPT_BYTES", budget ? budget : ""}});
    if (!budget) ::unsetenv("TESSERA_SB_CKPT_BYTES");
    std::vector<Tensor> g = {gpu_empty(qs, dtype), gpu_empty(ks, dtype), gpu_empty(ks, dtype)};
    TESSERA_KERNEL(out, stick_breaking_backward)
    (g[0], g[1], g[2], in.dout.gpu, in.q.gpu, in.k.gpu, in.v.gpu, out, lr, scale, false, true);
    for (Tensor& t : g) t = t.to(Device::cpu()).to(DType::F64);
    return g;
  };
  const std::vector<Tensor> whole = backward(nullptr);
  const int64_t G = s.H / s.Hkv;
  for (int64_t budget : {2 * s.H * head_bytes, s.H * head_bytes, G * head_bytes, int64_t(100)}) {
    const std::vector<Tensor> parts = backward(std::to_string(budget).c_str());
    for (size_t i = 0; i < 3; ++i)
      EXPECT_EQ(values(parts[i]), values(whole[i]))
          << "d" << "qkv"[i] << ", " << dtype_name(dtype) << ", budget " << budget;
  }
  const std::string bad = tessera::testing::error_of([&] { backward("12abc"); });
  EXPECT_NE(bad.find("TESSERA_SB_CKPT_BYTES='12abc'"), std::string::npos) << bad;
}

TEST(AttentionCuda, stick_breaking_backward_in_chunks_matches_one_pass_exactly) {
  SKIP_WITHOUT_CUDA();
  // Checkpoint bytes per query head: bf16 ceil(T / 64) T 32, f32 T ceil(T / 32) 8.
  check_stick_breaking_chunks({3, 4, 2, 130, 64}, DType::BF16, 3 * 130 * 32);
  check_stick_breaking_chunks({3, 4, 2, 70, 40}, DType::F32, 70 * 3 * 8);
}

// The stored-dS backward (MmaStoredDs) in passes whose dS stays within TESSERA_FLASH_DS_BYTES
// (kernels/head_slices.h): the one-pass bits at every budget that holds a kv-head group, with the
// passes counted; under one group, the recomputing backward (Mma's kernels, so Mma's bits).
void check_stored_ds_passes(Shape4 s, int64_t window, uint64_t seed) {
  const int64_t tiles = (s.T + 63) / 64, head = tiles * (tiles + 1) / 2 * 64 * 64 * 2;  // dS bytes
  Qkv in = make_qkv(s, DType::BF16, seed);
  const Shape qs{s.B, s.H, s.T, s.D}, ks{s.B, s.Hkv, s.T, s.D}, rows{s.B, s.H, s.T};
  const double scale = 1.0 / std::sqrt(double(s.D));
  Tensor out = gpu_empty(qs, DType::BF16), lse = gpu_empty(rows, DType::F32);
  TESSERA_KERNEL(out, flash_attention_forward)
  (out, lse, in.q.gpu, in.k.gpu, in.v.gpu, scale, window);
  struct Ran {
    std::vector<std::vector<unsigned char>> grads;  // dq, dk, dv
    int64_t stored, passes, recomputed;
  };
  auto backward = [&](cuda::FlashKernels kind, const char* budget) {
    tessera::testing::ScopedEnv env({{"TESSERA_FLASH_DS_BYTES", budget ? budget : ""}});
    if (!budget) ::unsetenv("TESSERA_FLASH_DS_BYTES");
    UseFlashKernels use(kind);
    const cuda::FlashStats a = cuda::flash_stats();
    std::vector<Tensor> g = {gpu_empty(qs, DType::BF16), gpu_empty(ks, DType::BF16),
                             gpu_empty(ks, DType::BF16)};
    TESSERA_KERNEL(out, flash_attention_backward)
    (g[0], g[1], g[2], in.dout.gpu, in.q.gpu, in.k.gpu, in.v.gpu, out, lse, scale, window);
    const cuda::FlashStats b = cuda::flash_stats();
    Ran r{{},
          b.stored_ds_backwards - a.stored_ds_backwards,
          b.stored_ds_passes - a.stored_ds_passes,
          b.recomputed_ds_backwards - a.recomputed_ds_backwards};
    for (const Tensor& t : g) r.grads.push_back(tessera::testing::bytes(t.to(Device::cpu())));
    return r;
  };
  const Ran whole = backward(cuda::FlashKernels::MmaStoredDs, nullptr);
  EXPECT_EQ(whole.stored, 1);
  EXPECT_EQ(whole.passes, 1);
  const int64_t G = s.H / s.Hkv;
  const struct {
    int64_t budget, passes;
  } cases[] = {{s.B * s.H * head, 1}, {s.H * head, s.B}, {G * head, s.B * s.Hkv}};
  for (const auto& c : cases) {
    SCOPED_TRACE("budget " + std::to_string(c.budget));
    const Ran r = backward(cuda::FlashKernels::MmaStoredDs, std::to_string(c.budget).c_str());
    EXPECT_EQ(r.stored, 1);
    EXPECT_EQ(r.passes, c.passes);
    for (size_t i = 0; i < 3; ++i)
      EXPECT_TRUE(r.grads[i] == whole.grads[i]) << "d"
                                                << "qkv"[i];
  }
  const std::string under = std::to_string(G * head - 1);
  const Ran recomputed = backward(cuda::FlashKernels::MmaStoredDs, under.c_str());
  EXPECT_EQ(recomputed.stored, 0);
  EXPECT_EQ(recomputed.recomputed, 1);
  const Ran mma = backward(cuda::FlashKernels::Mma, under.c_str());
  for (size_t i = 0; i < 3; ++i)
    EXPECT_TRUE(recomputed.grads[i] == mma.grads[i]) << "d"
                                                     << "qkv"[i] << " under one group";
  const std::string bad =
      tessera::testing::error_of([&] { backward(cuda::FlashKernels::MmaStoredDs, "12abc"); });
  EXPECT_NE(bad.find("TESSERA_FLASH_DS_BYTES='12abc'"), std::string::npos) << bad;
}

TEST(AttentionCuda, stored_ds_backward_in_passes_matches_one_pass_exactly) {
  SKIP_WITHOUT_CUDA();
  check_stored_ds_passes({3, 4, 2, 130, 64}, 0, 96);   // 6 tile pairs a head: 49152 bytes
  check_stored_ds_passes({2, 2, 1, 70, 128}, 40, 97);  // a window, head dim 128
}

TEST(AttentionCuda, stick_breaking_f32_matches_cpu_reference) {
  SKIP_WITHOUT_CUDA();
  check_stick_breaking({1, 4, 2, 100, 40}, DType::F32, false, false, 85);
  check_stick_breaking({1, 2, 1, 70, 64}, DType::F32, true, true, 86);
  // Head dimension 128: the plain kernels' lanes l + 64 and l + 96 too.
  check_stick_breaking({1, 2, 1, 70, 128}, DType::F32, false, true, 87);
}

TEST(AttentionCuda, plain_kernels_take_more_heads_than_a_grid_dimension_of_65535) {
  // The warp-per-row kernels put B * H (B * Hkv for dK dV) on the grid's x, which holds 2^31 - 1
  // blocks; on y, which holds 65535, 65537 heads would fail to launch. Two query rows a head keep
  // it small (with one, dq and dk are zero and rounding is all there is to compare). The
  // stick-breaking kernels take the same grids (plain_row_grid, plain_key_grid); a kernel reading
  // its head from the wrong axis fails their small tests, so flash alone runs at this size (the
  // CUDA emulator takes ~10 s a kernel family here).
  SKIP_WITHOUT_CUDA();
  check_flash({65537, 1, 1, 2, 4}, DType::F32, 0, 95);
}

TEST(AttentionCuda, plain_kernels_refuse_more_query_rows_than_their_grid_holds) {
  // Row blocks of 4 on the grid's y (at most 65535): 262140 rows. More is an error naming the
  // limit and q's shape, checked before anything is allocated or launched.
  SKIP_WITHOUT_CUDA();
  const Shape qs{1, 1, 262141, 1}, rows{1, 1, 262141};
  Tensor q = gpu_empty(qs, DType::F32), out = gpu_empty(qs, DType::F32),
         lse = gpu_empty(rows, DType::F32);
  const std::string e = tessera::testing::error_of(
      [&] { TESSERA_KERNEL(q, flash_attention_forward)(out, lse, q, q, q, 1.0, 0); });
  EXPECT_NE(e.find("at most 262140 query rows"), std::string::npos) << e;
  EXPECT_NE(e.find("(1, 1, 262141, 1)"), std::string::npos) << e;
  const std::string s = tessera::testing::error_of([&] {
    TESSERA_KERNEL(q, stick_breaking_forward)(out, lse, Tensor(), q, q, q, 1.0, false, false);
  });
  EXPECT_NE(s.find("at most 262140 query rows"), std::string::npos) << s;
}

TEST(AttentionCuda, backward_passes_are_deterministic) {
  // No float atomics: two runs of each backward give the same bits.
  SKIP_WITHOUT_CUDA();
  const Shape4 s{1, 4, 2, 300, 64};
  Qkv in = make_qkv(s, DType::BF16, 91);
  const Shape qs{s.B, s.H, s.T, s.D}, ks{s.B, s.Hkv, s.T, s.D}, rows{s.B, s.H, s.T};
  Tensor out = gpu_empty(qs, DType::BF16), stat = gpu_empty(rows, DType::F32);
  // The backward is the same for Mma and MmaNarrow; the last pass is stick-breaking's.
  const cuda::FlashKernels kinds[] = {cuda::FlashKernels::Mma, cuda::FlashKernels::MmaStoredDs,
                                      cuda::FlashKernels::Wmma, cuda::FlashKernels::Mma};
  for (int pass = 0; pass < 4; ++pass) {
    const bool flash = pass < 3;
    UseFlashKernels use(kinds[pass]);
    if (flash) {
      TESSERA_KERNEL(out, flash_attention_forward)(out, stat, in.q.gpu, in.k.gpu, in.v.gpu, 0.125,
                                                   0);
    } else {
      TESSERA_KERNEL(out, stick_breaking_forward)(out, stat, Tensor(), in.q.gpu, in.k.gpu, in.v.gpu,
                                                  0.125, false, true);
    }
    std::vector<std::vector<unsigned char>> first;
    for (int run = 0; run < 2; ++run) {
      Tensor dq = gpu_empty(qs, DType::BF16), dk = gpu_empty(ks, DType::BF16),
             dv = gpu_empty(ks, DType::BF16);
      if (flash) {
        TESSERA_KERNEL(out, flash_attention_backward)(dq, dk, dv, in.dout.gpu, in.q.gpu, in.k.gpu,
                                                      in.v.gpu, out, stat, 0.125, 0);
      } else {
        TESSERA_KERNEL(out, stick_breaking_backward)(dq, dk, dv, in.dout.gpu, in.q.gpu, in.k.gpu,
                                                     in.v.gpu, out, stat, 0.125, false, true);
      }
      std::vector<std::vector<unsigned char>> now;
      for (const Tensor* t : {&dq, &dk, &dv})
        now.push_back(tessera::testing::bytes(t->to(Device::cpu())));
      if (run == 0) {
        first = now;
      } else {
        for (size_t n = 0; n < now.size(); ++n)
          EXPECT_TRUE(now[n] == first[n])
              << (flash ? flash_name(cuda::flash_kernels()) : "stick-breaking") << " grad " << n;
      }
    }
  }
}

TEST(AttentionCuda, stick_breaking_long_context_sticks_sum_to_one) {
  // As the CPU long-context test, at T = 4096 on the tensor-core path: z about +8, so rem_j is
  // exp(-8 j) (zero in f32 for j > 12) while log rem stays an ordinary number, and with v = 1 the
  // output is sum_i A[i, j]; sum_i A + rem = 1 holds to bf16's rounding of out (2^-8 = 4e-3 near
  // 1).
  SKIP_WITHOUT_CUDA();
  const int64_t T = 4096, D = 64;
  Generator g(92);
  Tensor q = ops::add(ops::scale(randn({1, 1, T, D}, g), 0.3), full({1, 1, T, D}, 1.0))
                 .to(DType::BF16)
                 .to(Device::cuda());
  Tensor k = ops::add(ops::scale(randn({1, 1, T, D}, g), 0.3), full({1, 1, T, D}, 1.0))
                 .to(DType::BF16)
                 .to(Device::cuda());
  Tensor v = ones({1, 1, T, D}).to(DType::BF16).to(Device::cuda());
  Tensor out = gpu_empty({1, 1, T, D}, DType::BF16), lr = gpu_empty({1, 1, T}, DType::F32),
         rem = gpu_empty({1, 1, T}, DType::BF16);
  TESSERA_KERNEL(out, stick_breaking_forward)(out, lr, rem, q, k, v, 1.0 / 8.0, false, false);
  std::vector<double> o = values(out.to(Device::cpu())), l = values(lr.to(Device::cpu())),
                      r = values(rem.to(Device::cpu()));
  for (int64_t j = 1; j < T; ++j) {
    ASSERT_TRUE(std::isfinite(l[size_t(j)]) && l[size_t(j)] < 0) << "log rem at " << j;
    for (int64_t e = 0; e < D; e += 17) ASSERT_TRUE(std::isfinite(o[size_t(j * D + e)])) << j;
    EXPECT_NEAR(o[size_t(j * D)] + r[size_t(j)], 1.0, 1e-2) << "row " << j;
  }
  EXPECT_LT(l[size_t(T - 1)], -1000.0);  // far below what an f32 product of sticks can hold
}

TEST(AttentionCuda, op_runs_on_cuda_tensors) {
  // The ops route CUDA tensors to these kernels and allocate their statistics on the device
  // (forward only, under NoGradGuard: this checks the routing, the kernels are checked above).
  SKIP_WITHOUT_CUDA();
  Qkv in = make_qkv({1, 2, 1, 96, 64}, DType::BF16, 93);
  NoGradGuard ng;
  Tensor a = ops::flash_attention(in.q.gpu, in.k.gpu, in.v.gpu);
  EXPECT_LT(rel_err(a, ops::attention(in.q.ref, in.k.ref, in.v.ref)), kBf16Fwd);
  Tensor rem;
  Tensor b = ops::stick_breaking_attention(in.q.gpu, in.k.gpu, in.v.gpu, {}, &rem);
  EXPECT_LT(rel_err(b, ops::stick_breaking_attention(in.q.ref, in.k.ref, in.v.ref)), kBf16Fwd);
  EXPECT_EQ(rem.device(), Device::cuda());
}
