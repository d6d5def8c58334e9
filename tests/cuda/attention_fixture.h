// What the CUDA attention parity tests share (test_attention_cuda.cpp,
// test_document_attention_cuda.cpp, test_document_launch_cuda.cpp, test_alibi_cuda.cpp): the skip
// without a device, the tolerances of bf16 and f32 kernels against the CPU reference in f64,
// inputs drawn once and held on both devices, the kernel family for a scope.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "backend/cuda.h"
#include "ops/ops.h"
#include "test_util.h"

namespace tessera::testing::attention {

#define SKIP_WITHOUT_CUDA() \
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device"

// bf16 tolerances. The GPU rounds P (or A) to bf16 before the P V product (relative 2^-9 per
// weight, with random signs across keys) and rounds outputs to bf16 (2^-9 relative); accumulation
// is fp32. That puts forward errors near 4e-3 of the output's scale: 2e-2 is a 5x margin, while a
// wrong mask, tile or head mapping is off by O(1). Gradients also round dS (or dz) to bf16 and
// subtract rowsum(dout * out) computed from the bf16 output, a cancellation that can cost a few
// more bits: 4e-2.
constexpr double kBf16Fwd = 2e-2;
constexpr double kBf16Bwd = 4e-2;
// Stick-breaking's dq sums dz over every earlier key with both signs (the derivative of a product
// of sticks), so the bf16 rounding of dz grows with the row's length relative to dq's largest
// element: the CUDA emulator (kernels/emu: exact bf16 products, f32 sums, exact exp) measures
// 0.051 at T 200 and 0.044 at T 130, spread over all rows and growing with the position, not
// clustered at a tile edge. 1e-1 is twice that; a wrong mask or tile is off by O(1).
constexpr double kSbBf16Bwd = 1e-1;
// With q and k three times larger (scores near +-10, sticks near 0 and 1) the same rounding makes
// dq's error 0.112 on the emulator (T 150, seed 85; the same before and after the forward's exact
// logs, which dq does not read): 2e-1 for those cases. A wrong row scan is off by O(1).
constexpr double kSbBf16BwdSharp = 2e-1;
// f32 path: fp32 sums over at most a few hundred keys and D terms against f64, plus libm
// exp/log (1-2 ulp): ~1e-6 of scale; 1e-4 leaves room for unlucky cancellations.
constexpr double kF32 = 1e-4;

// A random tensor in `dtype` (bf16 or f32) on the CPU, its values as f64 for the reference, and
// the same values on the GPU.
struct Input {
  Tensor ref, gpu;
};
// growth: row t of the last two dimensions (T, D) is scaled by 1 + growth t / T.
inline Input make_input(const Shape& shape, Generator& g, DType dtype, double mul = 1.0,
                        double add = 0.0, double growth = 0.0) {
  Tensor x = ops::add(ops::scale(randn(shape, g), mul), full(shape, add));
  if (growth != 0.0) x = tessera::testing::rows_growing(x, growth);
  x = x.to(dtype);
  return {x.to(DType::F64), x.to(Device::cuda())};
}

// A flash kernel family (backend/cuda.h's FlashKernels) for a scope; the earlier one put back.
struct UseFlashKernels {
  cuda::FlashKernels prev = cuda::flash_kernels();
  explicit UseFlashKernels(cuda::FlashKernels k) { cuda::set_flash_kernels(k); }
  ~UseFlashKernels() { cuda::set_flash_kernels(prev); }
};

inline Tensor gpu_empty(const Shape& s, DType t) { return Tensor::empty(s, {t, Device::cuda()}); }

// A case's shape: q (B, H, T, D), k and v (B, Hkv, T, D).
struct Shape4 {
  int64_t B, H, Hkv, T, D;
  std::string str() const {
    return "B " + std::to_string(B) + " H " + std::to_string(H) + "/" + std::to_string(Hkv) +
           " T " + std::to_string(T) + " D " + std::to_string(D);
  }
};

// A forward and backward's out, lse, dq, dk and dv (fields of any struct P) against the
// reference's, at the bounds above for bf16 or f32; lse at lse_bound of its scale.
template <class P>
void expect_pass_close(const P& gpu, const P& ref, bool bf16, double lse_bound,
                       const std::string& what) {
  EXPECT_LT(rel_err(gpu.out, ref.out), bf16 ? kBf16Fwd : kF32) << "out, " << what;
  EXPECT_LT(rel_err(gpu.lse, ref.lse), lse_bound) << "lse, " << what;
  EXPECT_LT(rel_err(gpu.dq, ref.dq), bf16 ? kBf16Bwd : kF32) << "dq, " << what;
  EXPECT_LT(rel_err(gpu.dk, ref.dk), bf16 ? kBf16Bwd : kF32) << "dk, " << what;
  EXPECT_LT(rel_err(gpu.dv, ref.dv), bf16 ? kBf16Bwd : kF32) << "dv, " << what;
}

// A biased output (ALiBi's, a forget gate's) is not the unbiased one: more than 5 times the bound
// away from it, so that a kernel ignoring the bias fails. bias: what is left out, for the message.
inline void expect_biased(const Tensor& gpu_out, const Tensor& plain_ref, bool bf16,
                          const char* bias, const std::string& what) {
  EXPECT_GT(rel_err(gpu_out, plain_ref), 5 * (bf16 ? kBf16Fwd : kF32))
      << "out without " << bias << " is as close: " << what;
}

}  // namespace tessera::testing::attention
