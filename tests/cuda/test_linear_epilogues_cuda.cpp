// The Linear entries of kernels/blas.cu against the CPU reference in f64, in the GemmCuda suite
// (gemm_fixture.h; test_blas_cuda.cpp has the plain gemm's tests and the error bound they share):
// the bias, residual, GELU, GELU-gradient and bias-gradient fusions in cuBLASLt's epilogues, their
// fallbacks where an epilogue is not offered or is switched off (TESSERA_GEMM_EPILOGUES), and the
// rounding each path may add (product_rounding: cuBLASLt may round a bf16 product before its
// epilogue adds). Every test skips without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "backend/cuda.h"
#include "backend/kernels.h"
#include "core/rng.h"
#include "gemm_fixture.h"
#include "ops/elementwise.h"
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

// A Linear's problem for the epilogue tests: x (R, K), w (N, K) scaled by w_scale, a bias placed
// bias_offset elements into its buffer (an offset of 1 leaves it 2- or 4-byte aligned: no
// epilogue), all rounded to dtype, as exact f64 values; the f64 reference x w^T + bias and the
// magnitude term |x| |w|^T + |bias| of the error bound; the bias on the GPU, a view into its
// buffer.
struct LinearProblem {
  int64_t R, N, K, bias_offset;
};
struct LinearCase {
  std::string what;
  Tensor x, w, ref, bound, gpu_bias;
  std::vector<double> product, bias_rows;  // x w^T and the bias, (R, N) in f64
};
const LinearProblem kLinearProblems[] = {{256, 768, 384, 0}, {37, 29, 45, 0}, {64, 96, 64, 1}};
LinearCase linear_case(const LinearProblem& s, DType dt, Generator& g, double w_scale) {
  LinearCase c;
  c.what = std::string(dtype_name(dt)) + " R=" + std::to_string(s.R) + " N=" + std::to_string(s.N) +
           " K=" + std::to_string(s.K) + " bias offset " + std::to_string(s.bias_offset);
  c.x = random({s.R, s.K}, dt, g);
  c.w = ops::scale(randn({s.N, s.K}, g), w_scale).to(dt).to(DType::F64);
  const Tensor bias_all = random({s.N + s.bias_offset}, dt, g);
  const Tensor bias = bias_all.narrow(0, s.bias_offset, s.N).contiguous();
  c.ref = Tensor::empty({s.R, s.N}, DType::F64);
  c.bound = Tensor::empty({s.R, s.N}, DType::F64);
  cpu::kernels().linear_forward(c.ref, c.x, c.w, bias, Tensor());
  cpu::kernels().linear_forward(c.bound, abs_of(c.x), abs_of(c.w), abs_of(bias), Tensor());
  Tensor product = Tensor::empty({s.R, s.N}, DType::F64);
  cpu::kernels().linear_forward(product, c.x, c.w, Tensor(), Tensor());
  c.product = values(product);
  const std::vector<double> b = values(bias);
  for (int64_t i = 0; i < s.R * s.N; ++i) c.bias_rows.push_back(b[size_t(i % s.N)]);
  c.gpu_bias = bias_all.to(dt).to(kGpu).narrow(0, s.bias_offset, s.N);
  EXPECT_TRUE(c.gpu_bias.is_contiguous());
  return c;
}

// Elements of got (R, N) outside check()'s bound around c.ref, the bias adding |bias| to the
// magnitude term, and the product's own rounding; *note says how many of them are the product
// and the bias rounded twice.
int64_t out_of_bounds(const std::vector<double>& got, const LinearCase& c, DType dt, int64_t K,
                      std::string* note) {
  const double r = dt == DType::BF16 ? 1.0 / 256 : 0.0;
  const double e = dt == DType::F64 ? 1e-13 : std::ldexp(4.0 * double(K + 1), -24);
  const std::vector<double> want = values(c.ref), lim = values(c.bound);
  std::vector<char> out(want.size());
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i)
    bad += out[i] =
        !(std::fabs(got[i] - want[i]) <=
          r * std::fabs(want[i]) + e * lim[i] + product_rounding(dt, c.product[i]) + 1e-30);
  if (bad > 0) *note = testing::rounded_twice_note(got, c.product, c.bias_rows, out, dt);
  return bad;
}

TEST_P(GemmCuda, linear_forward_adds_the_bias_in_the_epilogue_or_after) {
  // y = x w^T + bias: through cuBLASLt's bias epilogue (an aligned bias, bf16 and f32), or the
  // bias copied into y and the gemm adding onto it (f64; a bias one element into its buffer, 2- or
  // 4-byte aligned; odd sizes). Either way y is rounded once (in bf16 the product may be rounded
  // before the bias is added: product_rounding), so the same per-element bound as check(), the
  // bias adding |bias| to the magnitude term.
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Generator g(16);
  for (const LinearProblem& s : kLinearProblems) {
    const LinearCase c = linear_case(s, dt, g, 1.0);
    Tensor yg = Tensor::empty({s.R, s.N}, {dt, kGpu});
    yg.fill_(std::nan(""));  // written, never read
    const cuda::BlasStats before = cuda::blas_stats();
    TESSERA_KERNEL(yg, linear_forward)
    (yg, c.x.to(dt).to(kGpu), c.w.to(dt).to(kGpu), c.gpu_bias, Tensor());
    const cuda::BlasStats after = cuda::blas_stats();
    // The epilogue where the bias is 16-byte aligned and the dtype is not f64 (cuBLASLt offers
    // it there; tests/emu's cuBLASLt always does), the fallback elsewhere.
    const bool epilogue = dt != DType::F64 && s.bias_offset == 0;
    EXPECT_EQ(after.bias_epilogue - before.bias_epilogue, epilogue ? 1 : 0) << c.what;
    EXPECT_EQ(after.bias_fallback - before.bias_fallback, epilogue ? 0 : 1) << c.what;

    std::string note;
    const int64_t bad = out_of_bounds(values(yg.to(Device::cpu())), c, dt, s.K, &note);
    EXPECT_EQ(bad, 0) << c.what << ": " << bad << " of " << s.R * s.N << " elements out of bounds"
                      << note;
  }
}

TEST_P(GemmCuda, linear_forward_adds_a_residual_as_the_gemms_c) {
  // y = x w^T + bias + residual, the residual read as cuBLASLt's C (beta 1, apart from D), with
  // and without the bias. One rounding of the f32 sum where the bias rides the epilogue or there
  // is none: the bound of the bias test (product_rounding too) with |residual| added to the
  // magnitude term. The bias fallback (bias one element into its buffer, f64) forms residual +
  // bias first, rounded: in bf16 one more 2^-8 |residual + bias| <= 2^-8 of the magnitude term.
  // Where no algorithm writes D apart from C, the residual is copied into y and the gemm adds in
  // place: the same roundings. The emulator's heuristic ranks an in-place-only algorithm first
  // (TESSERA_EMU_CUBLASLT_OUT_OF_PLACE=second, its default), so there the residual must ride the
  // gemm through the second; "no" leaves none, and the fallback must run (new shapes: plans are
  // cached per problem). On a GPU the variable changes nothing and either path may run, once.
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Generator g(17);
  for (const char* mode : {"second", "no"}) {
    ::setenv("TESSERA_EMU_CUBLASLT_OUT_OF_PLACE", mode, 1);
    const bool apart = std::string(mode) != "no";
    for (LinearProblem s : kLinearProblems) {
      if (!apart) s.R += 3;
      for (const bool with_bias : {true, false}) {
        LinearCase c = linear_case(s, dt, g, 1.0);
        const Tensor res = random({s.R, s.N}, dt, g);
        const Tensor bias = with_bias ? c.gpu_bias.to(Device::cpu()).to(DType::F64) : Tensor();
        cpu::kernels().linear_forward(c.ref, c.x, c.w, bias, res);
        cpu::kernels().linear_forward(c.bound, abs_of(c.x), abs_of(c.w),
                                      with_bias ? abs_of(bias) : Tensor(), abs_of(res));
        const Tensor res_g = res.to(dt).to(kGpu);
        Tensor yg = Tensor::empty({s.R, s.N}, {dt, kGpu});
        yg.fill_(std::nan(""));  // written, never read
        const cuda::BlasStats before = cuda::blas_stats();
        TESSERA_KERNEL(yg, linear_forward)
        (yg, c.x.to(dt).to(kGpu), c.w.to(dt).to(kGpu), with_bias ? c.gpu_bias : Tensor(), res_g);
        const cuda::BlasStats after = cuda::blas_stats();
        const std::string what = c.what + (with_bias ? "" : " without the bias") + ", " + mode;
        const bool epilogue = with_bias && dt != DType::F64 && s.bias_offset == 0;
        EXPECT_EQ(after.bias_epilogue - before.bias_epilogue, epilogue ? 1 : 0) << what;
        EXPECT_EQ(after.bias_fallback - before.bias_fallback, with_bias && !epilogue ? 1 : 0)
            << what;
        const int64_t in_gemm = after.residual_in_gemm - before.residual_in_gemm;
        const int64_t copied = after.residual_fallback - before.residual_fallback;
        EXPECT_EQ(in_gemm + copied, 1) << what;
#if TESSERA_CUDA_EMU
        // The epilogue's fallback copies the residual too (it reads no C apart from D).
        EXPECT_EQ(in_gemm, apart && (!with_bias || epilogue) ? 1 : 0) << what;
#endif
        const std::vector<double> got = values(yg.to(Device::cpu()));
        const std::vector<double> want = values(c.ref), lim = values(c.bound);
        const bool two_roundings = with_bias && !epilogue;
        const double r = dt == DType::BF16 ? 1.0 / 256 : 0.0;
        const double e = (dt == DType::F64 ? 1e-13 : std::ldexp(4.0 * double(s.K + 2), -24)) +
                         (two_roundings ? r : 0.0);
        int64_t bad = 0;
        for (size_t i = 0; i < want.size(); ++i)
          if (!(std::fabs(got[i] - want[i]) <=
                r * std::fabs(want[i]) + e * lim[i] + product_rounding(dt, c.product[i]) + 1e-30))
            ++bad;
        EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << s.R * s.N
                          << " elements out of bounds";
        // The residual is read, not written.
        EXPECT_EQ(values(res_g.to(Device::cpu())), values(res.to(dt).to(Device::cpu()))) << what;
      }
    }
  }
  ::unsetenv("TESSERA_EMU_CUBLASLT_OUT_OF_PLACE");
  // A residual that overlaps y, or is not y's shape, is refused by name.
  Tensor y = Tensor::empty({4, 6}, {dt, kGpu});
  const Tensor x = Tensor::empty({4, 3}, {dt, kGpu}), w = Tensor::empty({6, 3}, {dt, kGpu});
  const std::string alias =
      error_of([&] { TESSERA_KERNEL(y, linear_forward)
                     (y, x, w, Tensor(), y); });
  EXPECT_NE(alias.find("residual"), std::string::npos) << alias;
  const std::string shape = error_of([&] {
    TESSERA_KERNEL(y, linear_forward)(y, x, w, Tensor(), Tensor::empty({4, 5}, {dt, kGpu}));
  });
  EXPECT_NE(shape.find("residual"), std::string::npos) << shape;
}

TEST_P(GemmCuda, linear_gelu_forward_writes_the_pre_activation_and_its_gelu) {
  // pre = x w^T + bias against the f64 reference under linear_forward's bound; y against GELU's
  // tanh form of the GPU's own pre, which isolates the epilogue's GELU from the gemm's rounding:
  //  - f32: within 2e-3 (1 + |y|). An epilogue may evaluate tanh with the hardware approximation
  //    (tanh.approx.f32, about 2^-11), which moves y by up to ~7e-4 near |x| = 2.7; a wrong
  //    element is off by O(1). That also admits GELU's erf form, which differs from the tanh form
  //    by up to 4.7e-4 there: the test prints, for pre in [2.2, 3.2], the mean of y minus the tanh
  //    form beside the mean of the erf form minus the tanh form, which says which one cuBLAS
  //    computes (documented in docs/gpu-notes.md once seen).
  //  - bf16: the epilogue applies GELU to the f32 sum and rounds both outputs, so y and
  //    gelu(pre) differ by the two roundings: 2^-8 (|y| + 1.13 |pre|) (1.13 bounds GELU's slope).
  // The aligned bf16 and f32 cases must run in the gemm's epilogue (no separate GELU kernel); N =
  // 29 (an aux leading dimension not a multiple of 8) and a bias one element into its buffer take
  // the fallback (linear_forward, then the GELU kernel). f64 is an error naming the dtype: the
  // CUDA GELU kernel takes f32 and bf16 only.
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Generator g(17);
  for (const LinearProblem& s : kLinearProblems) {
    const LinearCase c = linear_case(s, dt, g, 0.1);
    Tensor yg = Tensor::empty({s.R, s.N}, {dt, kGpu}), pg = Tensor::empty({s.R, s.N}, {dt, kGpu});
    if (dt == DType::F64) {
      const std::string msg = error_of([&] {
        TESSERA_KERNEL(yg, linear_gelu_forward)
        (yg, pg, c.x.to(dt).to(kGpu), c.w.to(dt).to(kGpu), c.gpu_bias);
      });
      EXPECT_NE(msg.find("dtype f64 is not supported"), std::string::npos) << msg;
      continue;
    }
    yg.fill_(std::nan(""));  // written, never read
    pg.fill_(std::nan(""));
    const cuda::BlasStats before = cuda::blas_stats();
    TESSERA_KERNEL(yg, linear_gelu_forward)
    (yg, pg, c.x.to(dt).to(kGpu), c.w.to(dt).to(kGpu), c.gpu_bias);
    const cuda::BlasStats after = cuda::blas_stats();
    const bool epilogue = s.N % 8 == 0 && s.bias_offset == 0;
    EXPECT_EQ(after.gelu_epilogue - before.gelu_epilogue, epilogue ? 1 : 0)
        << c.what << ": GELU " << (epilogue ? "did not run" : "ran") << " in the epilogue";
    EXPECT_EQ(after.gelu_fallback - before.gelu_fallback, epilogue ? 0 : 1) << c.what;

    const std::vector<double> pre = values(pg.to(Device::cpu())), y = values(yg.to(Device::cpu()));
    std::string note;
    const int64_t bad_pre = out_of_bounds(pre, c, dt, s.K, &note);
    Tensor gelu_pre = Tensor::empty({s.R, s.N}, DType::F64);
    cpu::kernels().gelu_forward(gelu_pre, from_vector<double>(pre, {s.R, s.N}));
    const std::vector<double> gy = values(gelu_pre);
    const double r = dt == DType::BF16 ? 1.0 / 256 : 0.0;
    int64_t bad_y = 0, band = 0;
    double worst_y = 0, vs_tanh = 0, erf_vs_tanh = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      const double d = std::fabs(y[i] - gy[i]);
      const double tol = dt == DType::BF16
                             ? r * (std::fabs(gy[i]) + 1.13 * std::fabs(pre[i])) + 1e-6
                             : (dt == DType::F32 ? 2e-3 : 1e-12) * (1 + std::fabs(gy[i]));
      if (!(d <= tol)) ++bad_y;
      worst_y = std::max(worst_y, d);
      if (pre[i] >= 2.2 && pre[i] <= 3.2) {
        ++band;
        vs_tanh += y[i] - gy[i];
        erf_vs_tanh += 0.5 * pre[i] * (1 + std::erf(pre[i] / std::sqrt(2.0))) - gy[i];
      }
    }
    if (dt == DType::F32 && epilogue && band > 0)
      std::cout << "[ GELU form ] " << c.what << ": over " << band
                << " elements with pre in [2.2, 3.2], mean of epilogue - tanh form "
                << vs_tanh / double(band) << ", mean of erf form - tanh form "
                << erf_vs_tanh / double(band) << "\n";
    EXPECT_EQ(bad_pre, 0) << c.what << ": " << bad_pre << " of " << y.size()
                          << " pre-activations out of bounds" << note;
    EXPECT_EQ(bad_y, 0) << c.what << ": " << bad_y << " of " << y.size()
                        << " outputs differ from GELU's tanh form of pre (largest difference "
                        << worst_y << ")";
  }
}

TEST_P(GemmCuda, linear_dgelu_backward_is_the_gemm_times_gelus_derivative) {
  // dpre = (dy @ w) * gelu'(pre) against the f64 CPU twin: in the gemm's DGELU epilogue where pre
  // (its aux) is 16-byte aligned and K a multiple of 8 (bf16, f32), else the gemm then the GELU
  // backward kernel (K = 29; pre one element into its buffer). Per element, the product's
  // rounding bound (4 (N + 1) 2^-24 of |dy| @ |w|) times GELU's slope (at most 1.13), 2e-3
  // (1 + |pre|) of the product for an epilogue's approximate tanh (as the forward's test), and in
  // bf16 two roundings of the result (the fallback rounds the product, then dpre). f64 is an
  // error naming the dtype, as linear_gelu_forward's.
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Generator g(18);
  struct Problem {
    int64_t R, N, K, pre_offset;
  };
  for (const Problem& s :
       {Problem{256, 384, 768, 0}, Problem{37, 45, 29, 0}, Problem{64, 64, 96, 1}}) {
    const std::string what = std::string(dtype_name(dt)) + " R=" + std::to_string(s.R) +
                             " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K) +
                             " pre offset " + std::to_string(s.pre_offset);
    const Tensor dy = random({s.R, s.N}, dt, g), w = random({s.N, s.K}, dt, g);
    const Tensor pre = ops::scale(random({s.R, s.K}, dt, g), 2.0).to(dt).to(DType::F64);
    Tensor pre_g = Tensor::empty({s.R * s.K + s.pre_offset}, {dt, kGpu})
                       .narrow(0, s.pre_offset, s.R * s.K)
                       .view({s.R, s.K});
    pre_g.copy_(pre);
    Tensor dg = Tensor::empty({s.R, s.K}, {dt, kGpu});
    if (dt == DType::F64) {
      const std::string msg = error_of([&] {
        TESSERA_KERNEL(dg, linear_dgelu_backward)(dg, dy.to(kGpu), w.to(kGpu), pre_g);
      });
      EXPECT_NE(msg.find("dtype f64 is not supported"), std::string::npos) << msg;
      continue;
    }
    dg.fill_(std::nan(""));  // written, never read
    const cuda::BlasStats before = cuda::blas_stats();
    TESSERA_KERNEL(dg, linear_dgelu_backward)(dg, dy.to(dt).to(kGpu), w.to(dt).to(kGpu), pre_g);
    const cuda::BlasStats after = cuda::blas_stats();
    const bool epilogue = s.K % 8 == 0 && s.pre_offset == 0;
    EXPECT_EQ(after.dgelu_epilogue - before.dgelu_epilogue, epilogue ? 1 : 0)
        << what << ": the GELU gradient " << (epilogue ? "did not run" : "ran")
        << " in the epilogue";
    EXPECT_EQ(after.dgelu_fallback - before.dgelu_fallback, epilogue ? 0 : 1) << what;

    Tensor ref = Tensor::empty({s.R, s.K}, DType::F64),
           prod = Tensor::empty({s.R, s.K}, DType::F64);
    Tensor lim = Tensor::empty({s.R, s.K}, DType::F64);
    cpu::kernels().linear_dgelu_backward(ref, dy, w, pre);
    cpu::kernels().gemm(prod, dy, w, false, false, 1.0, 0.0);
    cpu::kernels().gemm(lim, abs_of(dy), abs_of(w), false, false, 1.0, 0.0);
    const std::vector<double> got = values(dg.to(Device::cpu())), want = values(ref),
                              p = values(prod), l = values(lim), x = values(pre);
    const double r = dt == DType::BF16 ? 2.0 / 256 : 0.0,
                 e = std::ldexp(4.0 * double(s.N + 1), -24);
    int64_t bad = 0;
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double d = std::fabs(got[i] - want[i]);
      const double tol = r * std::fabs(want[i]) + 1.13 * e * l[i] +
                         2e-3 * (1 + std::fabs(x[i])) * std::fabs(p[i]) + 1e-30;
      if (!(d <= tol)) ++bad;
      worst = std::max(worst, d);
    }
    EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size()
                      << " elements out of bounds (largest difference " << worst << ")";
  }
}

TEST_P(GemmCuda, linear_param_backward_sums_the_bias_gradient_in_the_weight_gemm) {
  // dw = dy^T x and db = the sum of dy's rows against the f64 CPU twin, each written (over NaN) or
  // added onto what it held; both, dw alone, db alone; in the dtype, and under bf16 into f32 (both
  // widened, or dw alone: two dtypes, so two kernels). Where both are defined, of one dtype other
  // than f64, and db 16-byte aligned or accumulating (the epilogue then writes an aligned scratch
  // vector), one gemm computes them (the BGRADB epilogue: the emulator's heuristic offers it; a
  // GPU's may not, and then the test prints so and the fallback must run). f64 sums (sum_dim) are
  // not a CUDA kernel: a db in f64 is an error naming the dtype.
  // Bounds per element: dw as the gemm test's, e = 2^-24 4 (R + 2) of |dy|^T @ |x|; db the same e
  // of the sum of |dy| over rows; for bf16 outputs r = 2^-8 (one rounding) of |result|, and where
  // dw or db accumulates a second rounding, of the product, before the add (db: sum_dim's and the
  // scratch's; dw: cuBLASLt's C, as on the H200, product_rounding).
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  Generator g(19);
  struct Problem {
    int64_t R, N, K, db_offset;
  };
  struct Outputs {
    DType w, b;
  };
  std::vector<Outputs> outputs{{dt, dt}};
  if (dt == DType::BF16)
    outputs.insert(outputs.end(), {{DType::F32, DType::F32}, {DType::F32, dt}});
  const Problem problems[] = {{256, 384, 128, 0}, {37, 45, 29, 0}, {64, 64, 96, 1}};
  for (const Problem& s : problems)
    for (const Outputs& o : outputs)
      for (const int present : {3, 1, 2})  // bits: 1 dw, 2 db
        for (const bool accumulate : {false, true}) {
          const bool has_w = present & 1, has_b = present & 2;
          const std::string what = std::string(dtype_name(dt)) + " R=" + std::to_string(s.R) +
                                   " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K) +
                                   " db offset " + std::to_string(s.db_offset) +
                                   (has_w ? " dw " + std::string(dtype_name(o.w)) : "") +
                                   (has_b ? " db " + std::string(dtype_name(o.b)) : "") +
                                   (accumulate ? " accumulated" : " written");
          const Tensor dy = random({s.R, s.N}, dt, g), x = random({s.R, s.K}, dt, g);
          const Tensor w0 = random({s.N, s.K}, o.w, g), b0 = random({s.N}, o.b, g);
          Tensor dw_g, db_g;
          if (has_w) {
            dw_g = Tensor::empty({s.N, s.K}, {o.w, kGpu});
            dw_g.copy_(accumulate ? w0 : full({s.N, s.K}, std::nan(""), Options(DType::F64)));
          }
          if (has_b) {
            db_g = Tensor::empty({s.N + s.db_offset}, {o.b, kGpu}).narrow(0, s.db_offset, s.N);
            db_g.copy_(accumulate ? b0 : full({s.N}, std::nan(""), Options(DType::F64)));
          }
          const Tensor dy_g = dy.to(dt).to(kGpu), x_g = x.to(dt).to(kGpu);
          if (dt == DType::F64 && has_b) {
            const std::string msg = error_of([&] {
              TESSERA_KERNEL(dy_g, linear_param_backward)
              (dw_g, db_g, dy_g, x_g, accumulate, accumulate);
            });
            EXPECT_NE(msg.find("dtype f64 is not supported"), std::string::npos) << what << msg;
            continue;
          }
          const cuda::BlasStats before = cuda::blas_stats();
          const Kernels& gpu = kernels_for(kGpu);
          gpu.linear_param_backward(dw_g, db_g, dy_g, x_g, accumulate, accumulate);
          const cuda::BlasStats after = cuda::blas_stats();
          const int64_t fused = after.bgrad_epilogue - before.bgrad_epilogue;
          const int64_t apart = after.bgrad_fallback - before.bgrad_fallback;
          const bool both = has_w && has_b, fusable = both && o.w == o.b;
          EXPECT_EQ(fused + apart, both ? 1 : 0) << what;
#if TESSERA_CUDA_EMU
          EXPECT_EQ(fused, fusable && (s.db_offset == 0 || accumulate) ? 1 : 0) << what;
#else
          if (fusable && (s.db_offset == 0 || accumulate) && fused == 0)
            std::cout << "[ bias gradient epilogue ] " << what
                      << ": cuBLASLt offered no BGRADB algorithm; sum_dim ran\n";
#endif
          // The f64 references: the result, the magnitudes it sums, and what it was added onto.
          Tensor ref_w = Tensor::empty({s.N, s.K}, DType::F64), lim_w = ref_w.clone();
          Tensor ref_b = Tensor::empty({s.N}, DType::F64), lim_b = ref_b.clone();
          cpu::kernels().linear_param_backward(ref_w, ref_b, dy, x, false, false);
          cpu::kernels().linear_param_backward(lim_w, lim_b, abs_of(dy), abs_of(x), false, false);
          const double e = dt == DType::F64 ? 1e-13 : std::ldexp(4.0 * double(s.R + 2), -24);
          auto check = [&](const Tensor& got_g, const Tensor& ref, const Tensor& lim,
                           const Tensor& held, const char* name) {
            const std::vector<double> got = values(got_g.to(Device::cpu())), want = values(ref),
                                      l = values(lim), h = values(held);
            const double r = got_g.dtype() == DType::BF16 ? 1.0 / 256 : 0.0;
            int64_t bad = 0;
            double worst = 0;
            std::vector<char> out(got.size());
            std::vector<double> prior(got.size());
            for (size_t i = 0; i < got.size(); ++i) {
              prior[i] = accumulate ? h[i] : 0.0;
              const double w = want[i] + prior[i], d = std::fabs(got[i] - w);
              const double first = accumulate ? product_rounding(got_g.dtype(), want[i]) : 0.0;
              bad += out[i] = !(d <= r * std::fabs(w) + first + e * l[i] + 1e-30);
              worst = std::max(worst, d);
            }
            EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements of "
                              << name << " out of bounds (largest difference " << worst << ")"
                              << (bad > 0 ? testing::rounded_twice_note(got, want, prior, out,
                                                                        got_g.dtype())
                                          : "");
          };
          if (has_w) check(dw_g, ref_w, lim_w, w0, "dw");
          if (has_b) check(db_g, ref_b, lim_b, b0, "db");
        }
}

// TESSERA_GEMM_EPILOGUES switches each cuBLASLt fusion off by name (kernels/blas.cu): a fusion
// left out never runs, its fallback does, and the outputs are the all-fusions run's up to the
// fallbacks' extra roundings. Those are at most three of intermediates under 2 in magnitude (the
// residual and bias are scaled to keep them there): 3 2^-9 2 < 2^-6 in bf16; in f32, 2e-3 covers
// an epilogue's tanh.approx GELU (linear_gelu_forward's test); a wrong element is off by O(1). On
// the emulator an allowed fusion must run (a GPU's heuristic may not offer it). A residual rides
// the gemm with the bias epilogue, so it needs bias allowed too. An unknown name is an error
// naming the variable and the name; blanks around a name are not part of it.
TEST(GemmCudaSwitch, tessera_gemm_epilogues_switches_each_fusion_off_by_name) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  struct Unset {
    ~Unset() { ::unsetenv("TESSERA_GEMM_EPILOGUES"); }
  } unset;
  using Counter = int64_t cuda::BlasStats::*;
  const struct {
    const char* name;
    Counter fused, apart;
  } fusions[] = {
      {"bias", &cuda::BlasStats::bias_epilogue, &cuda::BlasStats::bias_fallback},
      {"gelu", &cuda::BlasStats::gelu_epilogue, &cuda::BlasStats::gelu_fallback},
      {"dgelu", &cuda::BlasStats::dgelu_epilogue, &cuda::BlasStats::dgelu_fallback},
      {"bgrad", &cuda::BlasStats::bgrad_epilogue, &cuda::BlasStats::bgrad_fallback},
      {"residual", &cuda::BlasStats::residual_in_gemm, &cuda::BlasStats::residual_fallback}};
  const int64_t R = 64, N = 96, K = 64;
  Generator g(23);
  for (const DType dt : {DType::F32, DType::BF16}) {
    auto gpu = [&](const Shape& shape, double scale) {
      return ops::scale(randn(shape, g), scale).to(dt).to(kGpu);
    };
    const Tensor x = gpu({R, K}, 1.0), w = gpu({N, K}, 0.1), bias = gpu({N}, 0.25);
    const Tensor residual = gpu({R, N}, 0.25), dy = gpu({R, N}, 1.0), pre_in = gpu({R, K}, 1.0);
    const Kernels& k = kernels_for(kGpu);
    // Every fused entry once; its outputs, and each counter's change.
    auto run = [&](const char* setting, cuda::BlasStats& moved) {
      ::setenv("TESSERA_GEMM_EPILOGUES", setting, 1);
      auto out = [&](const Shape& shape) { return Tensor::empty(shape, {dt, kGpu}); };
      Tensor y = out({R, N}), y2 = out({R, N}), pre = out({R, N}), dpre = out({R, K});
      Tensor dw = out({N, K}), db = out({N});
      const cuda::BlasStats before = cuda::blas_stats();
      k.linear_forward(y, x, w, bias, residual);
      k.linear_gelu_forward(y2, pre, x, w, bias);
      k.linear_dgelu_backward(dpre, dy, w, pre_in);
      k.linear_param_backward(dw, db, dy, x, false, false);
      const cuda::BlasStats after = cuda::blas_stats();
      for (const auto& f : fusions) moved.*f.fused = after.*f.fused - before.*f.fused;
      for (const auto& f : fusions) moved.*f.apart = after.*f.apart - before.*f.apart;
      std::vector<std::vector<double>> v;
      for (const Tensor* t : {&y, &y2, &pre, &dpre, &dw, &db})
        v.push_back(values(t->to(Device::cpu())));
      return v;
    };
    cuda::BlasStats all_moved;
    const auto all = run("all", all_moved);
    const double tol = dt == DType::BF16 ? 1.0 / 64 : 2e-3;
    for (const char* setting :
         {"none", "bias", "gelu", "dgelu", "bgrad", "residual", "bias,residual", ""}) {
      const std::string list =
          std::string(",") + (*setting ? setting : "bias,gelu,dgelu,bgrad,residual") + ",";
      auto allowed = [&](const char* name) {
        return list.find(std::string(",") + name + ",") != std::string::npos;
      };
      cuda::BlasStats moved;
      const auto got = run(setting, moved);
      const std::string what =
          std::string(dtype_name(dt)) + " TESSERA_GEMM_EPILOGUES='" + setting + "'";
      for (const auto& f : fusions) {
        const bool on =
            allowed(f.name) && (std::strcmp(f.name, "residual") != 0 || allowed("bias"));
        if (!on) {
          EXPECT_EQ(moved.*f.fused, 0) << what << ": " << f.name << " ran in the epilogue";
          EXPECT_GT(moved.*f.apart, 0) << what << ": " << f.name << "'s fallback did not run";
        }
#if TESSERA_CUDA_EMU
        if (on) {
          EXPECT_GT(moved.*f.fused, 0) << what << ": " << f.name << " did not run fused";
        }
#endif
      }
      const char* names[] = {"y", "gelu y", "pre", "dpre", "dw", "db"};
      for (size_t o = 0; o < all.size(); ++o) {
        int64_t bad = 0;
        for (size_t i = 0; i < all[o].size(); ++i)
          if (!(std::fabs(got[o][i] - all[o][i]) <= tol * (1 + std::fabs(all[o][i])))) ++bad;
        EXPECT_EQ(bad, 0) << what << ": " << bad << " elements of " << names[o]
                          << " differ from the all-fusions run's";
      }
    }
    // Blanks around the names and the words are ignored.
    for (const auto& [spaced, plain] :
         {std::pair{" bias , residual ", "bias,residual"}, std::pair{" none\t", "none"}}) {
      cuda::BlasStats with_blanks, without;
      run(spaced, with_blanks);
      run(plain, without);
      for (const auto& f : fusions) {
        EXPECT_EQ(with_blanks.*f.fused, without.*f.fused) << "'" << spaced << "': " << f.name;
        EXPECT_EQ(with_blanks.*f.apart, without.*f.apart) << "'" << spaced << "': " << f.name;
      }
    }
  }
  ::setenv("TESSERA_GEMM_EPILOGUES", "bias,fused", 1);
  Tensor y = Tensor::empty({4, 8}, {DType::F32, kGpu});
  const std::string msg = error_of([&] {
    kernels_for(kGpu).linear_forward(y, zeros({4, 8}).to(kGpu), zeros({8, 8}).to(kGpu),
                                     zeros({8}).to(kGpu), Tensor());
  });
  EXPECT_NE(msg.find("TESSERA_GEMM_EPILOGUES='bias,fused': unknown fusion 'fused'"),
            std::string::npos)
      << msg;
}

}  // namespace
}  // namespace tessera
