// Forgetting Attention (Lin et al. 2025, arXiv:2503.02130: query head h adds c[i] - c[j] to its
// score for key j from the query at position i, c the running sum of its log forget gates) in the
// CUDA flash kernels against the CPU reference kernels (src/backend/cpu/attention.cpp) on the same
// rounded inputs, in f64: out, lse, dq, dk, dv and the gate's gradient dL/dc, for every mma.sync
// family (bf16, head dims 64 and 128), the f32 warp-per-row kernels, KV-cached decoding (Tq < Tk
// queries, bf16 and f32) and the stored-dS backward in passes over batch and kv-head slices; the
// families and launches without the gate refuse it; the op (its gate's logits included, over
// whole rows and within documents) and a whole model on CUDA follow the CPU. The sums are drawn as
// a model's gate gives them (ops::forget_gate of logits 2 N(0, 1): c falls by up to a few a
// position), over grouped-query heads, T not a multiple of the 64-row tiles, one case shifted by
// -3000 as a long sequence's sums are (the same differences, f32 values whose ulp is 2^-12). Every
// case also checks that the answer without the gate lies far outside the bound, so that a kernel
// ignoring it fails, and that the GPU's dL/dc sums to zero over each row as the exact gradient
// does (its rows' share, sum_j dS[i, j], with the columns'). Every test skips without a CUDA
// device; CI runs them on the emulator.
//
// Bounds (errors as max |gpu - ref| / max |ref| over a tensor, tests/test_util.h's rel_err): the
// fixture's (attention_fixture.h) for out, dq, dk and dv. bf16 out 2e-2: P rounded to bf16 before
// P V and the output to bf16; gradients 4e-2: dS rounded to bf16 and the cancellation in
// dP - rowsum(dO O), rowsum(dO O) taken from the bf16 output. dL/dc the same 4e-2: a row sum less
// a column sum of the f32 dS (before its rounding; the stored-dS families' of the stored bf16 dS),
// whose terms carry that cancellation's error. lse 1e-5 of its scale: f32 on both sides, the bias
// c[i] - c[j] an f32 difference of the same f32 sums (exact where they lie within a factor 2, as
// the shifted ones do), scaled by log2(e) in f32 (2^-24 relative). f32 paths 1e-4: f32 sums of a
// few hundred terms against f64 (~1e-6) and libm exp.
// The emulator measures at most 3.1e-3 (bf16 out), 6.8e-3 (gradients), 4.2e-3 (dL/dc), 2.3e-7
// (lse) and 7.7e-7 (f32); the ungated outputs lie 0.96 or more from the gated ones.
// dL/dc's sum over a row, against the sum of its |entries|, 1e-6: the GPU's rows' and columns'
// shares are f32 sums of the same dS (the f32 values, or the stored bf16 ones in the stored-dS
// families) in two orders, ~1e-7 of their scale at these lengths; the emulator measures at most
// 3.3e-8. Without the rows' share a bf16 row sums to the rounding of rowsum(dO O), 5.8e-4 to
// 9.0e-4 of its scale here (an f32 row to ~1e-7: each_rows_share_of_ds_reaches_the_gates_gradient
// checks those kernels' rows' share).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "attention_fixture.h"
#include "backend/attention_mask.h"
#include "backend/cuda.h"
#include "backend/kernels.h"
#include "cuda/cuda_fixture.h"
#include "nn/gpt.h"
#include "ops/documents.h"
#include "ops/ops.h"
#include "test_util.h"
#include "train/device.h"

using namespace tessera;
using namespace tessera::testing::attention;
using tessera::testing::error_of;
using tessera::testing::rel_err;

namespace {

constexpr double kLse = 1e-5;
constexpr double kBf16Dc = 4e-2;       // dL/dc in bf16: as the gradients (the header)
constexpr double kRowSum = 1e-6;       // dL/dc's sum over a row (the header)
constexpr double kBf16Dlogits = 1e-2;  // the gate's logits (the_op_and_its_gates_logits_...)

// The gate's sums (B, H, T) f32 from logits 2 N(0, 1) (B, T, H), as a model's gate gives them,
// plus `shift` (a long sequence's: the same differences, values far from 0).
Input make_sums(int64_t B, int64_t H, int64_t T, Generator& g, double shift = 0.0) {
  Tensor c = ops::forget_gate(ops::scale(randn({B, T, H}, g), 2.0));
  if (shift != 0.0) c = ops::add(c, full(c.shape(), shift));
  return {c.to(DType::F64), c.to(Device::cuda())};
}

struct Qkv {
  Input q, k, v, dout, c;
};
Qkv make_qkv(const Shape4& s, DType dtype, uint64_t seed, double shift = 0.0) {
  Generator g(seed);
  Qkv x{make_input({s.B, s.H, s.T, s.D}, g, dtype),
        make_input({s.B, s.Hkv, s.T, s.D}, g, dtype),
        make_input({s.B, s.Hkv, s.T, s.D}, g, dtype),
        make_input({s.B, s.H, s.T, s.D}, g, dtype),
        {}};
  x.c = make_sums(s.B, s.H, s.T, g, shift);
  return x;
}

// A forward and backward's results: on the CPU in f64 (the inputs' ref), or on the GPU; with the
// gate's sums c (dc its gradient), or without a gate (c undefined, dc too). The backward takes
// rowsum(dO out) from the forward's out, or from `given` where that is defined.
struct Pass {
  Tensor out, lse, dq, dk, dv, dc;
};
Pass run(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, const Tensor& c,
         const Tensor& given = Tensor()) {
  const DType t = q.dtype(), stat = t == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = q.device();
  const double scale = 1.0 / std::sqrt(double(q.size(3)));
  Pass r{Tensor::empty(q.shape(), {t, dev}),
         Tensor::empty({q.size(0), q.size(1), q.size(2)}, {stat, dev}),
         Tensor::empty(q.shape(), {t, dev}),
         Tensor::empty(k.shape(), {t, dev}),
         Tensor::empty(v.shape(), {t, dev}),
         Tensor()};
  AttentionMask mask;
  if (c.defined()) {
    mask.forget = c;
    mask.forget_grad = r.dc = Tensor::empty(c.shape(), {stat, dev});
  }
  TESSERA_KERNEL(q, flash_attention_forward)(r.out, r.lse, q, k, v, scale, mask);
  TESSERA_KERNEL(q, flash_attention_backward)
  (r.dq, r.dk, r.dv, dout, q, k, v, given.defined() ? given : r.out, r.lse, scale, mask);
  return r;
}
Pass run_cpu(const Qkv& in, bool gate = true) {
  return run(in.q.ref, in.k.ref, in.v.ref, in.dout.ref, gate ? in.c.ref : Tensor());
}
Pass run_gpu(const Qkv& in) { return run(in.q.gpu, in.k.gpu, in.v.gpu, in.dout.gpu, in.c.gpu); }

// The largest |sum_t dc[t]| / sum_t |dc[t]| over the rows (b, h) of dc (B, H, T).
double worst_row_sum(const Tensor& dc) {
  const std::vector<double> x = tessera::testing::values(dc.to(Device::cpu()));
  const size_t T = size_t(dc.size(2));
  double worst = 0;
  for (size_t r = 0; r + T <= x.size(); r += T) {
    double sum = 0, abs = 0;
    for (size_t t = r; t < r + T; ++t) sum += x[t], abs += std::abs(x[t]);
    worst = std::max(worst, std::abs(sum) / abs);
  }
  return worst;
}

void expect_close(const Pass& gpu, const Pass& ref, bool bf16, const std::string& what) {
  expect_pass_close(gpu, ref, bf16, kLse, what);
  EXPECT_LT(rel_err(gpu.dc, ref.dc), bf16 ? kBf16Dc : kF32) << "dc, " << what;
  EXPECT_LT(worst_row_sum(gpu.dc), kRowSum) << "dc summed over a row, " << what;
}

void expect_gated(const Tensor& gpu_out, const Tensor& plain_ref, bool bf16,
                  const std::string& what) {
  expect_biased(gpu_out, plain_ref, bf16, "the gate", what);
}

// A case: the CPU reference with and without the gate, once for every family run on it.
struct Case {
  Shape4 s;
  DType dtype;
  double shift;
  Qkv in;
  Pass ref, plain;
  Case(Shape4 s_, uint64_t seed, DType dtype_, double shift_ = 0.0)
      : s(s_),
        dtype(dtype_),
        shift(shift_),
        in(make_qkv(s_, dtype_, seed, shift_)),
        ref(run_cpu(in)),
        plain(run_cpu(in, false)) {}
  std::string str() const {
    return std::string(dtype_name(dtype)) + " " + s.str() + " sums shifted by " +
           std::to_string(shift);
  }
  void check(const std::string& family) const {
    const Pass gpu = run_gpu(in);
    const bool bf = dtype == DType::BF16;
    expect_close(gpu, ref, bf, family + ", " + str());
    expect_gated(gpu.out, plain.out, bf, family + ", " + str());
  }
};

struct Family {
  cuda::FlashKernels kernels;
  const char* name;
};

}  // namespace

TEST(ForgettingCuda, every_mma_family_matches_the_cpu_reference) {
  // The default family and each variant: 64- and 128-row forwards (D 64: the scale folded into
  // the exponent, the bias in raw-score units; D 128: in base-2 units), K and V in two stages, the
  // forwards compiled for 3 and 5 blocks an SM, dQ from the stored dS. Two batch rows (c's rows
  // b H + h), 8 query heads over 2 kv heads, and at D 128 6 over 3 with the shifted sums.
  SKIP_WITHOUT_CUDA();
  const Case cases[] = {Case(Shape4{2, 8, 2, 200, 64}, 11, DType::BF16),
                        Case(Shape4{1, 6, 3, 130, 128}, 12, DType::BF16, -3000.0)};
  const Family families[] = {{cuda::FlashKernels::Mma, "mma"},
                             {cuda::FlashKernels::MmaNarrow, "mma-narrow"},
                             {cuda::FlashKernels::Mma3Blocks, "mma-3blocks"},
                             {cuda::FlashKernels::Mma5Blocks, "mma-5blocks"},
                             {cuda::FlashKernels::Mma2Stage, "mma-2stage"},
                             {cuda::FlashKernels::MmaStoredDs, "mma-ds"},
                             {cuda::FlashKernels::Mma2StageDs, "mma-2stage-ds"}};
  for (const Family& f : families) {
    UseFlashKernels use(f.kernels);
    for (const Case& c : cases) c.check(f.name);
  }
}

TEST(ForgettingCuda, f32_warp_per_row_kernels_match_the_cpu_reference) {
  // Any head dim up to 128 (lanes l + 64, l + 96 at 128), keys in blocks of 32, 8 query heads over
  // 2 kv heads, the shifted sums.
  SKIP_WITHOUT_CUDA();
  Case(Shape4{1, 6, 2, 100, 48}, 21, DType::F32).check("f32");
  Case(Shape4{2, 8, 2, 77, 64}, 22, DType::F32).check("f32");
  Case(Shape4{1, 4, 1, 70, 128}, 23, DType::F32, -3000.0).check("f32");
}

TEST(ForgettingCuda, decoding_queries_take_the_sums_of_their_positions) {
  // Tq queries over Tk = 77 cached keys (the warp-per-row forward in bf16 and f32): query i sits
  // at position Tk - Tq + i, so its bias to key j is c[Tk - Tq + i] - c[j]. Taken at row i instead,
  // the bias moves by a constant a row, which leaves out alone and moves lse by c[Tk - Tq + i] -
  // c[i] (tens here): lse's bound finds it. Bounds as DecodingKernelsCuda's
  // (test_decoding_kernels_cuda.cpp): bf16 out 2e-2, f32 1e-4, lse 1e-5.
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, H = 8, Hkv = 2, Tk = 77;
  for (const DType dt : {DType::F32, DType::BF16})
    for (const int64_t D : {int64_t(64), int64_t(128)})
      for (const int64_t Tq : {int64_t(1), int64_t(3)}) {
        const std::string what =
            std::string(dtype_name(dt)) + " D " + std::to_string(D) + " Tq " + std::to_string(Tq);
        Generator g(uint64_t(5 * D + Tq));
        const Input q = make_input({B, H, Tq, D}, g, dt), k = make_input({B, Hkv, Tk, D}, g, dt),
                    v = make_input({B, Hkv, Tk, D}, g, dt);
        const Input c = make_sums(B, H, Tk, g);
        const double scale = 1.0 / std::sqrt(double(D));
        auto forward = [&](bool cpu, bool gate) {
          const Tensor& qq = cpu ? q.ref : q.gpu;
          AttentionMask m;
          if (gate) m.forget = cpu ? c.ref : c.gpu;
          Pass r;
          r.out = Tensor::empty(qq.shape(), qq.options());
          r.lse = Tensor::empty({B, H, Tq}, {cpu ? DType::F64 : DType::F32, qq.device()});
          TESSERA_KERNEL(qq, flash_attention_forward)
          (r.out, r.lse, qq, cpu ? k.ref : k.gpu, cpu ? v.ref : v.gpu, scale, m);
          return r;
        };
        const auto ref = forward(true, true), gpu = forward(false, true),
                   plain = forward(true, false);
        const bool bf = dt == DType::BF16;
        EXPECT_LT(rel_err(gpu.out, ref.out), bf ? kBf16Fwd : kF32) << "out, " << what;
        EXPECT_LT(rel_err(gpu.lse, ref.lse), kLse) << "lse, " << what;
        expect_gated(gpu.out, plain.out, bf, what);
      }
}

TEST(ForgettingCuda, stored_ds_passes_over_batch_and_kv_head_slices_keep_each_heads_sums) {
  // FlashKernels::MmaStoredDs under a dS budget of the whole (one pass), of one batch element (two
  // passes, the second's rows from b 1) and of one kv-head group (six passes, each on its slice's
  // 2 of 6 query heads, whose sums are heads 0-1, 2-3 and 4-5 of its batch element's, not of the
  // slice's own numbering): the same bits as one pass, and the CPU's values.
  SKIP_WITHOUT_CUDA();
  const Shape4 s{2, 6, 3, 130, 64};
  const int64_t tiles = (s.T + 63) / 64, head = tiles * (tiles + 1) / 2 * 64 * 64 * 2;  // dS bytes
  const Case c(s, 41, DType::BF16);
  UseFlashKernels use(cuda::FlashKernels::MmaStoredDs);
  const char* const kNames[] = {"dq", "dk", "dv", "dc"};
  std::vector<std::vector<unsigned char>> whole;
  const std::pair<std::string, int64_t> budgets[] = {
      {std::string(), 1},
      {std::to_string(s.H * head), s.B},
      {std::to_string(s.H / s.Hkv * head), s.B * s.Hkv}};
  for (const auto& [bytes, passes] : budgets) {
    tessera::testing::ScopedEnv env({{"TESSERA_FLASH_DS_BYTES", bytes.c_str()}});
    if (bytes.empty()) ::unsetenv("TESSERA_FLASH_DS_BYTES");
    const cuda::FlashStats before = cuda::flash_stats();
    const Pass gpu = run_gpu(c.in);
    EXPECT_EQ(cuda::flash_stats().stored_ds_passes - before.stored_ds_passes, passes);
    expect_close(gpu, c.ref, true, std::string("stored dS, budget '") + bytes + "'");
    std::vector<std::vector<unsigned char>> got;
    for (const Tensor* t : {&gpu.dq, &gpu.dk, &gpu.dv, &gpu.dc})
      got.push_back(tessera::testing::bytes(t->to(Device::cpu())));
    if (whole.empty())
      whole = got;
    else
      for (size_t i = 0; i < got.size(); ++i)
        EXPECT_TRUE(got[i] == whole[i]) << kNames[i] << ", budget '" << bytes << "'";
  }
}

TEST(ForgettingCuda, each_rows_share_of_ds_reaches_the_gates_gradient) {
  // The backward takes rowsum(dO out) from the out it is given. Given the forward's output plus
  // N(0, 1/4) (the same bf16 or f32 values to the GPU and the CPU), row i of dS sums to
  // dO_i . (O_i - out_i) (O the exact output): as large as dS itself, where the forward's own
  // bf16 output makes it ~1e-3 of that. dL/dc[i] has that row sum beside key i's column sum, so
  // a dQ pass that leaves it out, or adds it with the wrong sign, is off by the rows' sums,
  // checked here to be 5 times the bound or more: the mma dQ (D 64 and 128), the stored-dS dQ
  // (both), and the f32 warp-per-row kernels. Bounds as every_mma_family_...'s. The emulator
  // measures the rows' sums 0.43 or more of dL/dc's largest, and dL/dc's error at most 2.6e-3 in
  // bf16 (the stored dS's rounding; 2.2e-7 where dQ recomputes dS in f32, given the same out) and
  // 5.3e-7 in f32.
  SKIP_WITHOUT_CUDA();
  struct Run {
    cuda::FlashKernels kernels;
    const char* name;
    Shape4 s;
    DType dtype;
  };
  const Run runs[] = {
      {cuda::FlashKernels::Mma, "mma", Shape4{2, 4, 2, 130, 64}, DType::BF16},
      {cuda::FlashKernels::Mma, "mma", Shape4{1, 4, 2, 100, 128}, DType::BF16},
      {cuda::FlashKernels::MmaStoredDs, "mma-ds", Shape4{2, 4, 2, 130, 64}, DType::BF16},
      {cuda::FlashKernels::MmaStoredDs, "mma-ds", Shape4{1, 4, 2, 100, 128}, DType::BF16},
      {cuda::FlashKernels::Mma, "f32", Shape4{2, 4, 2, 77, 64}, DType::F32}};
  uint64_t seed = 51;
  for (const Run& r : runs) {
    UseFlashKernels use(r.kernels);
    const std::string what = std::string(r.name) + ", " + dtype_name(r.dtype) + " " + r.s.str();
    const Qkv in = make_qkv(r.s, r.dtype, seed++);
    const Tensor exact = run_cpu(in).out;
    Generator g(seed++);
    const Tensor off = ops::add(exact, ops::scale(randn(exact.shape(), g).to(DType::F64), 0.25))
                           .to(r.dtype)
                           .to(DType::F64);
    const Pass ref = run(in.q.ref, in.k.ref, in.v.ref, in.dout.ref, in.c.ref, off);
    const Pass gpu = run(in.q.gpu, in.k.gpu, in.v.gpu, in.dout.gpu, in.c.gpu,
                         off.to(r.dtype).to(Device::cuda()));
    const bool bf = r.dtype == DType::BF16;
    expect_close(gpu, ref, bf, what);
    // The rows' sums dO_i . (O_i - out_i), against dL/dc's largest.
    const std::vector<double> dout = tessera::testing::values(in.dout.ref),
                              o = tessera::testing::values(exact),
                              given = tessera::testing::values(off),
                              dc = tessera::testing::values(ref.dc);
    double rows = 0, scale = 0;
    for (size_t i = 0; i < dout.size(); i += size_t(r.s.D)) {
      double sum = 0;
      for (size_t e = i; e < i + size_t(r.s.D); ++e) sum += dout[e] * (o[e] - given[e]);
      rows = std::max(rows, std::abs(sum));
    }
    for (const double x : dc) scale = std::max(scale, std::abs(x));
    EXPECT_GT(rows / scale, 5 * (bf ? kBf16Dc : kF32)) << "the rows' sums are as small, " << what;
  }
}

TEST(ForgettingCuda, the_families_and_launches_without_the_gate_refuse_it) {
  // The wmma and wgmma families, and the documents launches (causal_attention refuses the gate
  // within documents before any kernel): a clear error naming them, not an answer without the
  // gate. The wgmma refusal comes before their device check, so it holds on any device.
  SKIP_WITHOUT_CUDA();
  const Shape4 s{1, 2, 1, 64, 64};
  const Qkv in = make_qkv(s, DType::BF16, 61);
  const Family refusing[] = {{cuda::FlashKernels::Wmma, "the wmma flash kernels"},
                             {cuda::FlashKernels::Wgmma, "the wgmma flash kernels"},
                             {cuda::FlashKernels::WgmmaNarrow, "the wgmma flash kernels"}};
  for (const Family& f : refusing) {
    UseFlashKernels use(f.kernels);
    const std::string e = error_of([&] { run_gpu(in); });
    EXPECT_NE(e.find(std::string(f.name) + " (TESSERA_FLASH_KERNELS="), std::string::npos) << e;
    EXPECT_NE(e.find("take no forget gate"), std::string::npos) << e;
    EXPECT_NE(e.find("set TESSERA_FLASH_KERNELS to an mma family"), std::string::npos) << e;
  }
  // The backward alone (its forward under the default family).
  Pass g = run_gpu(in);
  {
    UseFlashKernels use(cuda::FlashKernels::Wmma);
    AttentionMask m;
    m.forget = in.c.gpu, m.forget_grad = gpu_empty({s.B, s.H, s.T}, DType::F32);
    const std::string e = error_of([&] {
      TESSERA_KERNEL(in.q.gpu, flash_attention_backward)
      (g.dq, g.dk, g.dv, in.dout.gpu, in.q.gpu, in.k.gpu, in.v.gpu, g.out, g.lse, 0.125, m);
    });
    EXPECT_NE(e.find("the wmma flash kernels (TESSERA_FLASH_KERNELS=wmma) take no forget gate"),
              std::string::npos)
        << e;
  }
  const Kernels& kern = kernels_for(Device::cuda());
  const std::vector<DocumentSpan> spans = {{0, 0, 30}, {0, 30, 34}};
  AttentionMask m;
  m.forget = in.c.gpu, m.forget_grad = gpu_empty({s.B, s.H, s.T}, DType::F32);
  std::string e = error_of([&] {
    kern.flash_attention_forward_documents(g.out, g.lse, in.q.gpu, in.k.gpu, in.v.gpu, 0.125, m,
                                           spans);
  });
  EXPECT_NE(e.find("flash_attention_forward_documents: the documents launches take no forget gate"),
            std::string::npos)
      << e;
  e = error_of([&] {
    kern.flash_attention_backward_documents(g.dq, g.dk, g.dv, in.dout.gpu, in.q.gpu, in.k.gpu,
                                            in.v.gpu, g.out, g.lse, 0.125, m, spans);
  });
  EXPECT_NE(
      e.find("flash_attention_backward_documents: the documents launches take no forget gate"),
      std::string::npos)
      << e;
}

namespace {

// The op's output and the gradients of q, k, v and the gate's logits, of sum(out * w).
struct OpGrads {
  Tensor out, dq, dk, dv, dlogits;
};
OpGrads op_pass(const Input& q, const Input& k, const Input& v, const Input& w, const Input& logits,
                const ops::Documents* docs, bool cpu) {
  auto leaf = [&](const Input& x) {
    Tensor t = (cpu ? x.ref : x.gpu).detach();
    t.requires_grad_();
    return t;
  };
  ops::AttentionSpec spec;
  spec.kind = ops::AttentionKind::Forgetting;
  Tensor tq = leaf(q), tk = leaf(k), tv = leaf(v), tl = leaf(logits);
  Tensor out = ops::causal_attention(tq, tk, tv, spec, true, docs, ops::forget_gate(tl));
  ops::sum(ops::mul(out, cpu ? w.ref : w.gpu)).backward();
  return {out, tq.grad(), tk.grad(), tv.grad(), tl.grad()};
}

// The GPU's op in bf16 against the CPU's in f64 (bounds: the_op_and_its_gates_logits_...).
void expect_op_follows_the_cpu(const ops::Documents* docs, uint64_t seed) {
  const int64_t B = 2, T = 100, H = 4, Hkv = 2, D = 64;
  Generator g(seed);
  const Input q = make_input({B, H, T, D}, g, DType::BF16),
              k = make_input({B, Hkv, T, D}, g, DType::BF16),
              v = make_input({B, Hkv, T, D}, g, DType::BF16),
              w = make_input({B, H, T, D}, g, DType::BF16);
  const Input logits = make_input({B, T, H}, g, DType::F32, 2.0);
  const OpGrads ref = op_pass(q, k, v, w, logits, docs, true),
                gpu = op_pass(q, k, v, w, logits, docs, false);
  EXPECT_LT(rel_err(gpu.out, ref.out), kBf16Fwd) << "out";
  EXPECT_LT(rel_err(gpu.dq, ref.dq), kBf16Bwd) << "dq";
  EXPECT_LT(rel_err(gpu.dk, ref.dk), kBf16Bwd) << "dk";
  EXPECT_LT(rel_err(gpu.dv, ref.dv), kBf16Bwd) << "dv";
  EXPECT_LT(rel_err(gpu.dlogits, ref.dlogits), kBf16Dlogits) << "dlogits";
}

}  // namespace

TEST(ForgettingCuda, the_op_and_its_gates_logits_follow_the_cpu) {
  // ops::causal_attention of kind forgetting on the GPU in bf16, its sums from ops::forget_gate
  // of logits that take the gradient (the gate's kernels on the GPU too), against the same ops on
  // the CPU in f64. dL/dlogits[t] = sigmoid(-g[t]) sum_{s >= t} dL/dc[s]: suffix sums of dL/dc,
  // which cancel toward 0 at a row's start. With each row's share of dS in dL/dc beside the
  // columns', the suffix sum from t is the sum of dS[i, j] over the pairs i >= t > j alone, as
  // exactly; with the columns' alone it would also gather the rounding of rowsum(dO O) of every
  // row from t on (~sqrt(T) times dL/dc's error: 1.6e-2 to 4.3e-2 on the emulator over seeds
  // 71-80 at T 100, whole rows and documents). With both, 1.7e-3 to 4.1e-3 over those seeds (4.8e-3
  // with mma-ds's stored dS). Bound 1e-2, below every error without the rows' share; a gate left
  // out of the kernels gives no gradient at all, an error of 1.
  SKIP_WITHOUT_CUDA();
  ops::AttentionSpec spec;
  spec.kind = ops::AttentionKind::Forgetting;
  ASSERT_EQ(ops::attention_support(spec, Device::cuda(), DType::BF16, 64, 100, 100), "");
  expect_op_follows_the_cpu(nullptr, 71);
}

TEST(ForgettingCuda, the_op_within_documents_follows_the_cpu) {
  // causal_attention over documents attends each on its rows' views (the flash kernels on a view
  // of 1 to 100 rows, its sums a contiguous copy of the row's): documents of 1, 69, 4 and 26 rows
  // in row 0 (one across the first tile's edge), the whole of row 1. Bounds as the op's.
  SKIP_WITHOUT_CUDA();
  std::vector<int32_t> ids(200, 5);
  for (const int at : {0, 1, 70, 74, 100}) ids[size_t(at)] = 0;  // a document opens at each 0
  const ops::Documents docs = ops::Documents::at_token(ids.data(), 2, 100, 0);
  expect_op_follows_the_cpu(&docs, 72);
}

namespace {

class ForgettingModelCuda : public ::testing::TestWithParam<bool> {};  // false: GPT-2, true: Llama

}  // namespace

// A forgetting model (no positions), head dim 64, in bf16 on CUDA: the gate's Linear, its sums on
// the GPU, the flash kernels' Forget instances inside the model (GPT-2 style over 2 heads, Llama
// style over 2 query heads on one kv head), against the f32 model on the CPU. Bounds as
// test_model_cuda.cpp's (its header): every stored activation and weight rounded to bf16 (2^-9
// relative) through two blocks is ~1e-2 of a gradient; loss within 2%, each gradient's cosine
// with the CPU's above 0.99 and its norm within 10% (the emulator: cosines 0.997 and above, the
// lowest a gate's bias). A gate left out of the kernels, or its gradient dropped, moves the loss
// and the gate's gradients by O(1).
TEST_P(ForgettingModelCuda, bf16_loss_and_every_gradient_follow_the_f32_cpu) {
  SKIP_WITHOUT_CUDA();
  const bool llama = GetParam();
  nn::GPTConfig cfg = tessera::testing::tiny_gpu_model(llama);
  cfg.attention.kind = nn::AttentionKind::Forgetting, cfg.position = nn::PositionKind::None;
  Generator g1(7), g2(7), data(8);
  nn::GPT cpu(cfg, g1), gpu(cfg, g2);
  train::place_model(gpu, tessera::testing::kGpu, DType::BF16);
  const Tensor in = tessera::testing::random_tokens(3, 32, cfg.vocab_size, data),
               tg = tessera::testing::random_tokens(3, 32, cfg.vocab_size, data);
  Tensor lc = cpu.loss(in, tg),
         lg = gpu.loss(in.to(tessera::testing::kGpu), tg.to(tessera::testing::kGpu));
  lc.backward();
  lg.backward();
  EXPECT_NEAR(lg.item(), lc.item(), 0.02 * lc.item());
  int gates = 0;
  for (size_t i = 0; i < cpu.parameters().size(); ++i) {
    const auto& [name, pc] = cpu.parameters()[i];
    const Tensor& pg = gpu.parameters()[i].second;
    ASSERT_TRUE(pg.grad().defined()) << name;
    const tessera::testing::Compare c = tessera::testing::compare(pg.grad(), pc.grad());
    EXPECT_GT(c.cosine, 0.99) << name;
    EXPECT_NEAR(c.ratio, 1.0, 0.1) << name;
    gates += name.find(llama ? "self_attn.fgate_proj." : "attn.fgate.") != std::string::npos;
  }
  EXPECT_EQ(gates, 2 * cfg.n_layer) << "each block's gate weight and bias";
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const std::string gate = llama ? "model.layers." + std::to_string(l) + ".self_attn.fgate_proj"
                                   : "transformer.h." + std::to_string(l) + ".attn.fgate";
    EXPECT_NO_THROW(gpu.parameter(gate + ".weight")) << gate;
    EXPECT_NO_THROW(gpu.parameter(gate + ".bias")) << gate;
  }
}

INSTANTIATE_TEST_SUITE_P(Styles, ForgettingModelCuda, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "llama" : "gpt2"; });
