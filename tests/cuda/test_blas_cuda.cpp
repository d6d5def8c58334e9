// GPU parity of gemm (kernels/blas.cu, cuBLASLt) against the CPU reference: every combination of
// transposes, 2-D and batched operands, a broadcast batch of 1 on either side, alpha/beta, K = 0,
// and operands at unaligned offsets; test_linear_epilogues_cuda.cpp has the Linear entries' fused
// epilogues, in the same GemmCuda suite (gemm_fixture.h). Every test skips without a CUDA device.
//
// The reference is the CPU gemm run in f64 on exactly the values the GPU sees (inputs are rounded
// to the dtype under test first). Each element is checked against an error bound of its own:
//   |c_gpu - c_ref| <= r * |c_ref| + e * (|alpha| (|op(a)| @ |op(b)|) + |beta c0|)
// e covers accumulation: K products summed in f32 carry at most ~K * 2^-24 of the sum of their
// magnitudes (in any order, split-K included); K <= 512 here, so e = 2^-24 * 4 K is a safe margin,
// and TF32 (10-bit products, ~5e-4) or a wrong element (O(1)) fails it. r covers the output
// rounding: bf16 stores 8 significant bits, within 2^-9 of the value; r = 2^-8. f64: e = 1e-13.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "backend/cuda.h"
#include "backend/kernels.h"
#include "core/rng.h"
#include "gemm_fixture.h"
#include "rounding.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;
using testing::product_rounding;
using testing::values;

using testing::gemm::abs_of;
using testing::gemm::kGpu;
using testing::gemm::random;

struct Case {
  int64_t Bc, Ba, Bb;  // Ba/Bb 0: a 2-D operand
  int64_t M, N, K;
  bool ta, tb;
};

std::string name_of(const Case& c, DType dt) {
  return std::string(dtype_name(dt)) + " Bc=" + std::to_string(c.Bc) +
         " Ba=" + std::to_string(c.Ba) + " Bb=" + std::to_string(c.Bb) +
         " M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
         (c.ta ? " a^T" : "") + (c.tb ? " b^T" : "");
}

Shape operand_shape(int64_t batch, int64_t rows, int64_t cols) {
  return batch == 0 ? Shape{rows, cols} : Shape{batch, rows, cols};
}

// t in dtype on the GPU; with pad > 0 and t 2-D, as the first columns of a buffer `pad` columns
// wider (rows apart: the gemm's leading dimension), the rest of each row holding 7.
struct OnGpu {
  Tensor view, buffer;
};
OnGpu on_gpu(const Tensor& t, DType dtype, int64_t pad) {
  if (pad == 0 || t.dim() != 2) {
    Tensor d = t.to(dtype).to(kGpu);
    return {d, d};
  }
  Tensor buffer = full({t.size(0), t.size(1) + pad}, 7.0, Options(dtype, kGpu));
  Tensor view = buffer.narrow(1, 0, t.size(1));
  view.copy_(t.to(dtype).to(kGpu));
  return {view, buffer};
}

// Runs one case on the GPU and checks it against the f64 CPU reference; c in `out` (dt's by
// default; f32 under bf16 operands is the other pair gemm takes). pad: 2-D operands' rows lie
// that many columns further apart than their width, and c's extra columns must keep their values.
void check(const Case& c, DType dt, double alpha, double beta, Generator& g,
           std::optional<DType> out_dtype = std::nullopt, int64_t pad = 0) {
  const DType out = out_dtype.value_or(dt);
  const Shape as = c.ta ? operand_shape(c.Ba, c.K, c.M) : operand_shape(c.Ba, c.M, c.K);
  const Shape bs = c.tb ? operand_shape(c.Bb, c.N, c.K) : operand_shape(c.Bb, c.K, c.N);
  const Shape cs = c.Bc == 0 ? Shape{c.M, c.N} : Shape{c.Bc, c.M, c.N};
  const Tensor a = random(as, dt, g), b = random(bs, dt, g), c0 = random(cs, out, g);

  Tensor ref = c0.clone();
  cpu::kernels().gemm(ref, a, b, c.ta, c.tb, alpha, beta);
  Tensor bound = abs_of(c0);  // e * (|alpha| |a||b| + |beta c0|), assembled below
  cpu::kernels().gemm(bound, abs_of(a), abs_of(b), c.ta, c.tb, std::fabs(alpha), std::fabs(beta));

  const OnGpu cb = on_gpu(c0, out, pad);
  Tensor cg = cb.view;
  // beta == 0: c must be written, not read: NaN in it must not leak into the result.
  if (beta == 0) cg.fill_(std::nan(""));
  TESSERA_KERNEL(cg, gemm)(cg, on_gpu(a, dt, pad).view, on_gpu(b, dt, pad).view, c.ta, c.tb, alpha,
                           beta);
  if (cb.buffer.numel() != cg.numel()) {
    const std::vector<double> rest = values(cb.buffer.narrow(1, c.N, pad).to(Device::cpu()));
    EXPECT_EQ(rest, std::vector<double>(rest.size(), 7.0))
        << name_of(c, dt) << ": the rest of c's rows was written";
  }

  const double r = out == DType::BF16 ? 1.0 / 256 : 0.0;
  const double e =
      dt == DType::F64 ? 1e-13 : std::ldexp(4.0 * double(std::max<int64_t>(c.K, 1)), -24);
  const std::vector<double> got = values(cg.to(Device::cpu())), want = values(ref),
                            lim = values(bound);
  int64_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]);
    const double tol = r * std::fabs(want[i]) + e * lim[i] + 1e-30;
    if (!(err <= tol)) ++bad;  // NaN fails
    if (std::isfinite(err)) worst = std::max(worst, err / tol);
  }
  EXPECT_EQ(bad, 0) << name_of(c, dt) << " into " << dtype_name(out) << " alpha=" << alpha << " beta=" << beta << ": " << bad
                    << " of " << want.size() << " elements out of bounds (worst error " << worst
                    << " x the bound)";
}

TEST_P(GemmCuda, every_transpose_and_batch_layout_matches_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Generator g(11);
  // Odd sizes: no dimension a multiple of 8, so rows start at unaligned addresses.
  const int64_t M = 37, N = 29, K = 45;
  const std::vector<std::array<int64_t, 3>> batches = {
      {0, 0, 0},  // plain 2-D
      {3, 3, 3},  // batched
      {3, 0, 3},  // a 2-D: broadcast over c's batches
      {3, 3, 0},  // b 2-D: broadcast (a Linear); folds into one gemm unless a is transposed
      {3, 1, 1},  // both batch 1 (3-D): every c batch gets the same product
      {4, 4, 1},  // b batch 1 given as 3-D
  };
  for (const auto& [Bc, Ba, Bb] : batches)
    for (bool ta : {false, true})
      for (bool tb : {false, true}) check({Bc, Ba, Bb, M, N, K, ta, tb}, dt, 1.0, 0.0, g);
}

TEST_P(GemmCuda, row_strided_operands_match_the_cpu_and_keep_the_rest_of_their_rows) {
  // 2-D views of wider buffers (GPT's padded logits: the vocabulary's columns of rows padded to 64):
  // every operand's rows `pad` columns further apart than its width, 3 (unaligned rows) or 8.
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Generator g(18);
  for (const int64_t pad : {int64_t(3), int64_t(8)})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        check({0, 0, 0, 37, 29, 45, ta, tb}, dt, 1.0, 0.0, g, std::nullopt, pad);
        check({0, 0, 0, 64, 50, 32, ta, tb}, dt, -1.5, 2.0, g, std::nullopt, pad);
      }
  if (dt == DType::BF16)  // a weight's gradient into its f32 buffer off strided bf16 logits
    check({0, 0, 0, 50, 32, 64, true, false}, dt, 1.0, 1.0, g, DType::F32, 8);
}

TEST_P(GemmCuda, alpha_and_beta_scale_the_product_and_the_old_c) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Generator g(12);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check({0, 0, 0, 33, 17, 40, ta, tb}, dt, 0.5, 0.0, g);
      check({0, 0, 0, 33, 17, 40, ta, tb}, dt, -1.5, 2.0, g);
      check({2, 2, 0, 33, 17, 40, ta, tb}, dt, 1.0, 1.0, g);  // the accumulate-into-c form
    }
}

TEST_P(GemmCuda, tensor_core_sized_problems_match_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Generator g(13);
  // A Linear's three gemms at a small GPT's shapes (B 4, T 64, C 256 -> 384).
  check({4, 4, 0, 64, 384, 256, false, true}, dt, 1.0, 0.0, g);   // y = x W^T
  check({4, 4, 0, 64, 256, 384, false, false}, dt, 1.0, 0.0, g);  // dx = dy W
  check({0, 0, 0, 384, 256, 256, true, false}, dt, 1.0, 0.0, g);  // dW = dy^T x (rows folded)
  check({8, 8, 8, 64, 64, 512, false, true}, dt, 1.0, 0.0, g);    // q k^T per head
}

// bf16 operands into an f32 c (a bf16 weight's gradient into its f32 buffer): held to f32's bound,
// which an output rounded to bf16 on the way (2^-9 of each element) would break.
TEST(GemmCudaWidened, bf16_operands_into_an_f32_c_match_the_cpu_unrounded) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator g(16);
  for (const double beta : {0.0, 1.0}) {
    check({0, 0, 0, 384, 256, 256, true, false}, DType::BF16, 1.0, beta, g, DType::F32);  // dW
    check({3, 3, 0, 37, 29, 45, true, false}, DType::BF16, 1.0, beta, g, DType::F32);
    check({3, 3, 3, 37, 29, 45, false, true}, DType::BF16, 1.0, beta, g, DType::F32);
  }
  // No other mixed pair: f32 operands into a bf16 c, or operands that differ.
  const Tensor a = Tensor::empty({4, 8}, {DType::F32, kGpu}), b = Tensor::empty({8, 4}, {DType::F32, kGpu});
  Tensor c = Tensor::empty({4, 4}, {DType::BF16, kGpu});
  std::string e = error_of([&] { TESSERA_KERNEL(c, gemm)(c, a, b, false, false, 1.0, 0.0); });
  EXPECT_NE(e.find("dtypes differ"), std::string::npos) << e;
  Tensor c32 = Tensor::empty({4, 4}, {DType::F32, kGpu});
  e = error_of([&] { TESSERA_KERNEL(c32, gemm)(c32, a.to(DType::BF16), b, false, false, 1.0, 0.0); });
  EXPECT_NE(e.find("dtypes differ"), std::string::npos) << e;
}

// Where cuBLASLt offers no algorithm for a batched layout, each batch runs as a gemm of its own
// (kernels/blas.cu's fallback), with the same results; an f32 c under bf16 operands steps by its
// own element size. The emulator offers none for any batched layout under
// TESSERA_EMU_CUBLASLT_BATCHED=no; a GPU's cuBLASLt ignores the variable and runs them batched.
TEST(GemmCudaPerBatch, without_a_batched_algorithm_each_batch_is_a_gemm_of_its_own) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  ::setenv("TESSERA_EMU_CUBLASLT_BATCHED", "no", 1);
  struct Unset {
    ~Unset() { ::unsetenv("TESSERA_EMU_CUBLASLT_BATCHED"); }
  } unset;
  Generator g(17);
  const int64_t before = cuda::blas_stats().per_batch_gemms;
  // Sizes no other test takes, so that no plan cached before the switch answers for them.
  for (const DType dt : {DType::F32, DType::BF16})
    for (bool ta : {false, true}) check({3, 3, 3, 21, 19, 23, ta, !ta}, dt, 1.0, 0.5, g);
  check({3, 3, 3, 21, 19, 23, true, false}, DType::BF16, 1.0, 0.0, g, DType::F32);
  check({4, 4, 0, 21, 19, 23, true, false}, DType::F32, 1.0, 0.0, g);  // a Linear's dW shape
  if (cuda::device_name(0).find("emulator") != std::string::npos) {
    EXPECT_EQ(cuda::blas_stats().per_batch_gemms - before, 6);
  }
}

TEST_P(GemmCuda, zero_inner_dimension_gives_beta_times_c) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Generator g(14);
  check({0, 0, 0, 5, 7, 0, false, false}, dt, 1.0, 0.0, g);
  check({2, 2, 2, 5, 7, 0, true, true}, dt, 1.0, 0.5, g);
  // Empty outputs are a no-op.
  Tensor c = Tensor::empty({0, 7}, {dt, kGpu});
  TESSERA_KERNEL(c, gemm)
  (c, Tensor::empty({0, 3}, {dt, kGpu}), Tensor::empty({3, 7}, {dt, kGpu}), false, false, 1.0, 0.0);
}

TEST_P(GemmCuda, operands_at_unaligned_offsets_are_handled) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Generator g(15);
  // Rows of 45 elements: a view starting one row in is aligned to 2 (bf16) or 4 (f32) bytes only.
  const int64_t M = 21, N = 19, K = 45;
  const Tensor a_all = random({M + 1, K}, dt, g), b_all = random({N + 1, K}, dt, g);
  const Tensor a = a_all.narrow(0, 1, M), b = b_all.narrow(0, 1, N);
  Tensor ref = Tensor::empty({M, N}, DType::F64);
  cpu::kernels().gemm(ref, a.contiguous(), b.contiguous(), false, true, 1.0, 0.0);
  Tensor c_all = Tensor::empty({M * N + 1}, {dt, kGpu});
  Tensor cg = c_all.narrow(0, 1, M * N).view({M, N});
  const Tensor ag = a_all.to(dt).to(kGpu).narrow(0, 1, M),
               bg = b_all.to(dt).to(kGpu).narrow(0, 1, N);
  ASSERT_TRUE(ag.is_contiguous() && bg.is_contiguous());
  TESSERA_KERNEL(cg, gemm)(cg, ag, bg, false, true, 1.0, 0.0);
  // |c| <~ 25 (sums of 45 products of N(0, 1) values): bf16 rounding <= 25 * 2^-9 = 0.05.
  const double tol = dt == DType::BF16 ? 0.1 : dt == DType::F32 ? 2e-4 : 1e-12;
  EXPECT_LT(testing::max_abs_diff(cg.to(Device::cpu()).to(DType::F64), ref), tol);
}

TEST_P(GemmCuda, mismatched_shapes_are_errors_naming_them) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Tensor c = Tensor::empty({4, 5}, {dt, kGpu});
  const std::string msg = error_of([&] {
    TESSERA_KERNEL(c, gemm)
    (c, Tensor::empty({4, 3}, {dt, kGpu}), Tensor::empty({2, 5}, {dt, kGpu}), false, false, 1.0,
     0.0);
  });
  EXPECT_NE(msg.find("(4, 3)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 5)"), std::string::npos) << msg;
  const std::string batch = error_of([&] {
    Tensor cb = Tensor::empty({3, 4, 5}, {dt, kGpu});
    TESSERA_KERNEL(cb, gemm)
    (cb, Tensor::empty({2, 4, 3}, {dt, kGpu}), Tensor::empty({3, 5}, {dt, kGpu}), false, false, 1.0,
     0.0);
  });
  EXPECT_NE(batch.find("batch"), std::string::npos) << batch;
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GemmCuda, ::testing::Values(DType::F32, DType::BF16, DType::F64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace

}  // namespace tessera
