// The attention forwards of KV-cached decoding on the GPU (kernels/flash_attention.cu's
// flash_forward_plain and kernels/stick_breaking.cu's sb_forward_plain: q (B, H, Tq, D) over
// Tk > Tq cached keys, query i at position Tk - Tq + i) against the CPU reference in f64 on the
// same rounded values, at the shapes the model tests do not reach: a sliding window (the first
// visible key counted from the query's position, not its row) and head dimension 128 (lanes
// 64..127 of a warp's row). Every test skips without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "backend/cuda.h"
#include "backend/kernels.h"
#include "ops/ops.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::rel_err;

// out: bf16 inputs and output (8 significant bits, 2^-9 relative per element) with f32 sums, as
// the flash tests' forward bound (tests/cuda/test_attention_cuda.cpp): 2e-2 is a 5x margin over
// the ~4e-3 measured there; f32: f32 sums of at most 100 keys and 128 dimensions against f64,
// ~1e-6 of scale, 1e-4 a wide margin. lse is f32 on both paths: 1e-5 of its scale. A key seen
// outside the window, or an output lane left unwritten, is off by O(1).
constexpr double kBf16Out = 2e-2, kF32Out = 1e-4, kLse = 1e-5;

Tensor draw(const Shape& s, Generator& g, DType dt) { return randn(s, g).to(dt).to(DType::F64); }

TEST(DecodingKernelsCuda, windowed_and_head_dim_128_decoding_match_the_cpu_reference) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 1, H = 4, Hkv = 2, Tk = 100;
  for (const DType dt : {DType::F32, DType::BF16})
    for (const int64_t D : {int64_t(64), int64_t(128)})
      for (const int64_t Tq : {int64_t(1), int64_t(5)})
        for (const int64_t window : {int64_t(0), int64_t(17)}) {
          const std::string what = std::string(dtype_name(dt)) + " D " + std::to_string(D) +
                                   " Tq " + std::to_string(Tq) + " window " +
                                   std::to_string(window);
          Generator g(uint64_t(7 * D + Tq + window));
          const Tensor q = draw({B, H, Tq, D}, g, dt), k = draw({B, Hkv, Tk, D}, g, dt),
                       v = draw({B, Hkv, Tk, D}, g, dt);
          const double scale = 1.0 / std::sqrt(double(D));
          Tensor out = Tensor::empty({B, H, Tq, D}, DType::F64),
                 lse = Tensor::empty({B, H, Tq}, DType::F64);
          TESSERA_KERNEL(out, flash_attention_forward)(out, lse, q, k, v, scale, window);
          const Device gpu = Device::cuda(0);
          Tensor gout = Tensor::empty({B, H, Tq, D}, {dt, gpu}),
                 glse = Tensor::empty({B, H, Tq}, {DType::F32, gpu});
          TESSERA_KERNEL(gout, flash_attention_forward)(gout, glse, q.to(dt).to(gpu),
                                                        k.to(dt).to(gpu), v.to(dt).to(gpu), scale,
                                                        window);
          EXPECT_LT(rel_err(gout, out), dt == DType::BF16 ? kBf16Out : kF32Out) << "out, " << what;
          EXPECT_LT(rel_err(glse, lse), kLse) << "lse, " << what;
        }
}

// Stick-breaking: the remainder's value is the query's own position's (row Tk - Tq + i of v).
// out and rem as the softmax bound above (bf16: products of up to 100 sigmoids rounded to 8 bits,
// ~5e-3 measured on the training shapes' tests); log rem is an f32 sum of up to 100 softplus terms
// (fast exp/log on the GPU, ~1e-7 absolute each): 1e-4 relative to the largest |log rem|.
TEST(DecodingKernelsCuda, stick_breaking_decoding_at_head_dim_128_matches_the_cpu_reference) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 1, H = 4, Hkv = 2, Tk = 100;
  for (const DType dt : {DType::F32, DType::BF16})
    for (const int64_t D : {int64_t(64), int64_t(128)})
      for (const int64_t Tq : {int64_t(1), int64_t(5)})
        for (const bool current : {false, true}) {
          const std::string what = std::string(dtype_name(dt)) + " D " + std::to_string(D) +
                                   " Tq " + std::to_string(Tq) +
                                   (current ? " attend_current" : "");
          Generator g(uint64_t(11 * D + Tq + current));
          const Tensor q = draw({B, H, Tq, D}, g, dt), k = draw({B, Hkv, Tk, D}, g, dt),
                       v = draw({B, Hkv, Tk, D}, g, dt);
          const double scale = 1.0 / std::sqrt(double(D));
          Tensor out = Tensor::empty({B, H, Tq, D}, DType::F64),
                 lr = Tensor::empty({B, H, Tq}, DType::F64),
                 rem = Tensor::empty({B, H, Tq}, DType::F64);
          TESSERA_KERNEL(out, stick_breaking_forward)(out, lr, rem, q, k, v, scale, current, true);
          const Device gpu = Device::cuda(0);
          Tensor gout = Tensor::empty({B, H, Tq, D}, {dt, gpu}),
                 glr = Tensor::empty({B, H, Tq}, {DType::F32, gpu}),
                 grem = Tensor::empty({B, H, Tq}, {dt, gpu});
          TESSERA_KERNEL(gout, stick_breaking_forward)(gout, glr, grem, q.to(dt).to(gpu),
                                                       k.to(dt).to(gpu), v.to(dt).to(gpu), scale,
                                                       current, true);
          const double bound = dt == DType::BF16 ? kBf16Out : kF32Out;
          EXPECT_LT(rel_err(gout, out), bound) << "out, " << what;
          EXPECT_LT(rel_err(grem, rem), bound) << "rem, " << what;
          EXPECT_LT(rel_err(glr, lr), 1e-4) << "log_rem, " << what;
        }
}

}  // namespace
}  // namespace tessera
