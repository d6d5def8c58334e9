// cuBLASLt algorithm timing (TESSERA_GEMM_TUNE, kernels/blas.cu): a new plan times the heuristic's
// candidates on its first call and keeps the fastest. Skips without a CUDA device.
//
// Operands are small integers in [-2, 2] and K is 32, so every product and sum is exact in f32 and
// every result (|r| <= 4 * 32 + 4) in bf16, whose integers are exact up to 256: whichever
// algorithm runs, split-K or not,
// the result must equal the CPU's exactly, and a gemm run more than once into its own D (a
// timing run left in a gemm that adds into D) shows as a multiple of the product.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda.h"
#include "backend/kernels.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;
using testing::ScopedEnv;
using testing::values;

const Device kGpu = Device::cuda(0);

// (rows, cols) of integers in [-2, 2] (f64 on the CPU, exact in every dtype).
Tensor integers(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<double> v(size_t(rows * cols));
  for (size_t i = 0; i < v.size(); ++i) v[i] = double(int64_t((i * 7 + seed * 13) % 5) - 2);
  return from_vector<double>(v, {rows, cols});
}

// Each case a new problem (plans are cached per shape, alignment and epilogue): M grows by one.
struct Problem {
  int64_t M, N, K;
};

// c = a b^T (+ c when adding), on the GPU in dtype and on the CPU in f64.
void expect_gemm_exact(const Problem& p, DType dt, bool add, const std::string& what) {
  const Tensor a = integers(p.M, p.K, 1), b = integers(p.N, p.K, 2), c0 = integers(p.M, p.N, 3);
  Tensor ref = c0.clone();
  cpu::kernels().gemm(ref, a, b, false, true, 1.0, add ? 1.0 : 0.0);
  Tensor c = c0.to(dt).to(kGpu);
  TESSERA_KERNEL(c, gemm)(c, a.to(dt).to(kGpu), b.to(dt).to(kGpu), false, true, 1.0,
                          add ? 1.0 : 0.0);
  EXPECT_EQ(values(c.to(Device::cpu())), values(ref)) << what;
}

TEST(GemmTuning, each_new_plan_times_its_candidates_once_and_computes_what_any_algorithm_does) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  // Four results offered by the emulator's heuristic, three of them writing D apart from C.
  ScopedEnv env{{"TESSERA_GEMM_TUNE", "4"}, {"TESSERA_EMU_CUBLASLT_ALGOS", "4"}};
  int64_t M = 41;
  for (const DType dt : {DType::F32, DType::BF16}) {
    for (const bool add : {false, true}) {
      const std::string what = std::string(dtype_name(dt)) + (add ? ", adding into c" : "");
      const cuda::BlasStats before = cuda::blas_stats();
      const Problem p{M++, 24, 32};
      expect_gemm_exact(p, dt, add, what);
      const cuda::BlasStats first = cuda::blas_stats();
      expect_gemm_exact(p, dt, add, what + ", again");  // the cached, timed plan
      const cuda::BlasStats again = cuda::blas_stats();
      EXPECT_EQ(again.tuned_plans, first.tuned_plans) << what << ": timed a second time";
#if TESSERA_CUDA_EMU
      EXPECT_EQ(first.tuned_plans - before.tuned_plans, 1) << what;
#else  // a GPU's heuristic may offer a single algorithm, which is not timed
      EXPECT_LE(first.tuned_plans - before.tuned_plans, 1) << what;
#endif
      EXPECT_EQ(first.tune_skipped, before.tune_skipped) << what;
    }
  }
  // A Linear with the bias epilogue and the residual as C apart from D, and the GELU epilogue,
  // whose aux output (the pre-activation) every timing run writes.
  for (const DType dt : {DType::F32, DType::BF16}) {
    const std::string what = dtype_name(dt);
    const Problem p{M++, 32, 32};
    const Tensor x = integers(p.M, p.K, 4), w = integers(p.N, p.K, 5), res = integers(p.M, p.N, 6);
    const Tensor bias = integers(1, p.N, 7).view({p.N});
    Tensor ref = Tensor::empty({p.M, p.N}, {DType::F64});
    cpu::kernels().linear_forward(ref, x, w, bias, res);
    const Tensor xg = x.to(dt).to(kGpu), wg = w.to(dt).to(kGpu), bg = bias.to(dt).to(kGpu);
    Tensor y = Tensor::empty({p.M, p.N}, {dt, kGpu});
    const cuda::BlasStats before = cuda::blas_stats();
    TESSERA_KERNEL(y, linear_forward)(y, xg, wg, bg, res.to(dt).to(kGpu));
    EXPECT_EQ(values(y.to(Device::cpu())), values(ref)) << what << " linear_forward";

    Tensor pre_ref = Tensor::empty({p.M, p.N}, {DType::F64});
    cpu::kernels().linear_forward(pre_ref, x, w, bias, Tensor());
    Tensor gelu_ref = Tensor::empty({p.M, p.N}, {DType::F64});
    cpu::kernels().gelu_forward(gelu_ref, pre_ref);
    Tensor pre = Tensor::empty({p.M, p.N}, {dt, kGpu}), g = Tensor::empty({p.M, p.N}, {dt, kGpu});
    TESSERA_KERNEL(g, linear_gelu_forward)(g, pre, xg, wg, bg);
    const cuda::BlasStats after = cuda::blas_stats();
    EXPECT_EQ(values(pre.to(Device::cpu())), values(pre_ref)) << what << " GELU's aux";
    // GELU itself, under GemmCuda.linear_gelu_forward_*'s bounds (the tanh or erf form, the
    // hardware's tanh approximation, then the output's rounding): f32 2e-3 (1 + |y|); bf16
    // 2^-8 (|y| + 1.13 |pre|).
    const std::vector<double> got = values(g.to(Device::cpu())), want = values(gelu_ref),
                              pre_v = values(pre_ref);
    int64_t bad = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double tol = dt == DType::BF16
                             ? (std::fabs(want[i]) + 1.13 * std::fabs(pre_v[i])) / 256 + 1e-6
                             : 2e-3 * (1 + std::fabs(want[i]));
      if (!(std::fabs(got[i] - want[i]) <= tol)) ++bad;
    }
    EXPECT_EQ(bad, 0) << what << ": GELU outputs out of bounds";
#if TESSERA_CUDA_EMU
    EXPECT_EQ(after.tuned_plans - before.tuned_plans, 2) << what;
#else
    EXPECT_LE(after.tuned_plans - before.tuned_plans, 2) << what;
#endif
  }
}

#if TESSERA_CUDA_EMU
// The emulator's TESSERA_EMU_CUBLASLT_FAST=i slows every algorithm but the heuristic's i-th by
// 20 ms a product: the timing must keep the first when it is the fast one, and another when not.
TEST(GemmTuning, the_fastest_candidate_is_kept) {
  ScopedEnv env{{"TESSERA_GEMM_TUNE", "4"}, {"TESSERA_EMU_CUBLASLT_ALGOS", "4"}};
  int64_t M = 61;
  for (const char* fast : {"0", "2"}) {
    ScopedEnv slow{{"TESSERA_EMU_CUBLASLT_FAST", fast}};
    const cuda::BlasStats before = cuda::blas_stats();
    expect_gemm_exact({M++, 16, 32}, DType::F32, true, std::string("fast ") + fast);
    const cuda::BlasStats after = cuda::blas_stats();
    EXPECT_EQ(after.tuned_plans - before.tuned_plans, 1) << fast;
    EXPECT_EQ(after.tuned_not_first - before.tuned_not_first, std::string(fast) == "0" ? 0 : 1)
        << "TESSERA_EMU_CUBLASLT_FAST=" << fast;
  }
}

// Without memory for its scratch D (the emulator's TESSERA_EMU_MALLOC_MAX), an adding gemm runs
// the heuristic's first untimed, adds once, and leaves no error behind for the next launch.
TEST(GemmTuning, an_adding_gemm_without_memory_for_its_scratch_runs_untimed) {
  ScopedEnv env{{"TESSERA_GEMM_TUNE", "4"}, {"TESSERA_EMU_CUBLASLT_ALGOS", "4"}};
  expect_gemm_exact({71, 16, 32}, DType::F32, false, "first gemm: the handle and its workspace");
  const Problem p{81, 64, 32};  // D: 81 x 64 f32, 20736 bytes
  const Tensor a = integers(p.M, p.K, 1), b = integers(p.N, p.K, 2), c0 = integers(p.M, p.N, 3);
  Tensor ref = c0.clone();
  cpu::kernels().gemm(ref, a, b, false, true, 1.0, 1.0);
  Tensor c = c0.to(DType::F32).to(kGpu);
  const Tensor ag = a.to(DType::F32).to(kGpu), bg = b.to(DType::F32).to(kGpu);
  const cuda::BlasStats before = cuda::blas_stats();
  {
    ScopedEnv small{{"TESSERA_EMU_MALLOC_MAX", "4096"}};
    TESSERA_KERNEL(c, gemm)(c, ag, bg, false, true, 1.0, 1.0);
    TESSERA_KERNEL(c, axpby)(c, 1.0, c, 0.0, Tensor());  // a launch after it: no stale error
  }
  const cuda::BlasStats after = cuda::blas_stats();
  EXPECT_EQ(after.tune_skipped - before.tune_skipped, 1);
  EXPECT_EQ(after.tuned_plans, before.tuned_plans);
  EXPECT_EQ(values(c.to(Device::cpu())), values(ref));
}
#endif

TEST(GemmTuning, a_malformed_setting_is_an_error_naming_it) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  for (const char* bad : {"fast", "17", "-2"}) {
    ScopedEnv env{{"TESSERA_GEMM_TUNE", bad}};
    const Tensor a = zeros({71, 8}, {DType::F32, kGpu}), b = zeros({9, 8}, {DType::F32, kGpu});
    Tensor c = zeros({71, 9}, {DType::F32, kGpu});
    const std::string e =
        error_of([&] { TESSERA_KERNEL(c, gemm)(c, a, b, false, true, 1.0, 0.0); });
    EXPECT_NE(e.find(std::string("TESSERA_GEMM_TUNE='") + bad + "'"), std::string::npos) << e;
  }
}

}  // namespace
}  // namespace tessera
