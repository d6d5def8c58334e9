// The fused classifier's kernels on the GPU (kernels/softmax.cu): cross_entropy_fused against the
// forward and backward kernels it fuses, and cross_entropy_rescale. The fused kernel stores the lse
// and reads it back for the gradient, as the backward kernel loads it, so the two ways must give
// the same bits: losses, lse and dlogits, out of place and written over the logits, f32 and bf16
// logits with f32 per-row values and bf16 ones, a padded vocabulary, ignored rows, a row length
// that takes the 16-byte path and one that does not, and a row of 20000 (the held-row kernel, and
// under TESSERA_CE_STREAMED=on the streaming ones with many groups a thread).
// Then ops::token_losses on the GPU against the CPU. Every test skips without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "backend/kernels.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::bytes;
using testing::values;

const Device kGpu = Device::cuda(0);

std::vector<unsigned char> host_bytes(const Tensor& t) {
  return testing::bytes(t.to(Device::cpu()));
}

// The fused kernel against the forward and backward kernels on N rows of V logits (classes of
// them counted, every fifth row ignored): the same bits, out of place and in place.
void expect_fused_bits(DType dt, DType stat, int64_t V, int64_t classes) {
  const Kernels& k = kernels_for(kGpu);
  const int64_t N = 29, ignore = -100;
  const std::string what = std::string(dtype_name(dt)) + " logits, " + dtype_name(stat) +
                           " rows, V " + std::to_string(V) + ", classes " + std::to_string(classes);
  Generator g(uint64_t(V + classes));
  const Tensor logits = ops::scale(randn({N, V}, g), 3.0).to(dt).to(kGpu);
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n)
    t[size_t(n)] = n % 5 == 4 ? int32_t(ignore) : int32_t(n * 97 % classes);
  const Tensor targets = from_vector(t, {N}).to(kGpu);
  const Tensor dlosses = ops::scale(rand({N}, g), 0.1).to(stat).to(kGpu);
  auto row = [&] { return Tensor::empty({N}, {stat, kGpu}); };

  Tensor losses = row(), lse = row(), dlogits = Tensor::empty({N, V}, {dt, kGpu});
  k.cross_entropy_forward(losses, lse, logits, targets, ignore, classes);
  k.cross_entropy_backward(dlogits, dlosses, logits, lse, targets, ignore, classes);

  Tensor f_losses = row(), f_lse = row(), f_dlogits = Tensor::empty({N, V}, {dt, kGpu});
  f_dlogits.fill_(std::nan(""));  // every element written
  k.cross_entropy_fused(f_losses, f_lse, f_dlogits, dlosses, logits, targets, ignore, classes);
  EXPECT_EQ(host_bytes(f_losses), host_bytes(losses)) << what;
  EXPECT_EQ(host_bytes(f_lse), host_bytes(lse)) << what;
  EXPECT_EQ(host_bytes(f_dlogits), host_bytes(dlogits)) << what;

  Tensor over = logits.clone();  // the op's way: the gradient written over the logits
  k.cross_entropy_fused(f_losses, f_lse, over, dlosses, over, targets, ignore, classes);
  EXPECT_EQ(host_bytes(f_losses), host_bytes(losses)) << what << ", in place";
  EXPECT_EQ(host_bytes(over), host_bytes(dlogits)) << what << ", in place";
}

TEST(CrossEntropyFusedCuda, the_fused_kernel_gives_the_forward_and_backward_kernels_bits) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  for (const DType dt : {DType::F32, DType::BF16})
    for (const DType stat : {DType::F32, dt})
      for (const int64_t V : {int64_t(1024), int64_t(1001), int64_t(20000)})
        for (const int64_t classes : {V, V - 13}) expect_fused_bits(dt, stat, V, classes);
}

// TESSERA_CE_STREAMED=on: the rows the held-row kernel takes go to the streaming kernels, forward
// and fused alike (else their bits would differ); a value other than on or off is an error
// naming the variable.
TEST(CrossEntropyFusedCuda, the_streamed_switch_takes_forward_and_fused_kernels_alike) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  {
    testing::ScopedEnv env({{"TESSERA_CE_STREAMED", "on"}});
    for (const DType dt : {DType::F32, DType::BF16})
      expect_fused_bits(dt, DType::F32, 20000, 19987);
  }
  testing::ScopedEnv env({{"TESSERA_CE_STREAMED", "yes"}});
  Tensor losses = Tensor::empty({1}, {DType::F32, kGpu}), lse = losses.clone();
  const Tensor logits = zeros({1, 20000}, {DType::BF16, kGpu});
  const Tensor targets = from_vector(std::vector<int32_t>{3}, {1}).to(kGpu);
  const std::string e = testing::error_of(
      [&] { kernels_for(kGpu).cross_entropy_forward(losses, lse, logits, targets, -100, 20000); });
  EXPECT_NE(e.find("TESSERA_CE_STREAMED='yes'"), std::string::npos) << e;
}

// dlogits *= dy / expected, unless dy, in its dtype, is expected rounded to that dtype: then not
// one element is written (NaN stays NaN). Where it differs, one rounding of the product: 3x in f32
// is exact before its rounding to bf16, so the bits are the host's.
TEST(CrossEntropyFusedCuda, rescale_scales_only_when_dy_is_not_the_promised_one) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const Kernels& k = kernels_for(kGpu);
  Generator g(5);
  for (const DType dt : {DType::F32, DType::BF16})
    for (const DType stat : {DType::F32, dt}) {
      const std::string what =
          std::string(dtype_name(dt)) + " dlogits, " + dtype_name(stat) + " dy";
      const Tensor x = randn({37, 101}, g).to(dt);
      Tensor gx = x.to(kGpu);
      Tensor with_nan = gx.narrow(0, 3, 1);
      with_nan.fill_(std::nan(""));
      const Tensor before = gx.to(Device::cpu());
      // 0.1 is not a bf16 value: dy holds it rounded, and so is expected before the comparison.
      k.cross_entropy_rescale(gx, full({1}, 0.1, stat).to(kGpu), 0.1);
      EXPECT_EQ(host_bytes(gx), host_bytes(before)) << what << ": dy equal to expected";

      Tensor gy = x.to(kGpu);
      k.cross_entropy_rescale(gy, full({1}, 0.75, stat).to(kGpu), 0.25);
      std::vector<double> want = values(x);
      for (double& v : want) v *= 3;
      EXPECT_EQ(host_bytes(gy), host_bytes(from_vector<double>(want, x.shape()).to(dt))) << what;
    }
}

// ops::token_losses (what eval reads back) on the GPU against the CPU, through the forward and
// backward kernels above: f32 and bf16 logits, a padded vocabulary, ignored rows, an upstream
// gradient per row. The GPU sums the lse in f32 where the CPU sums in double: losses of order 10
// agree to a few f32 ulps (1e-5 relative); dlogits to 1e-6 in f32, and in bf16 to the rounding of
// the GPU's f32 result to bf16 (half an ulp, 2^-9 relative; 2^-8 allowed).
TEST(TokenLossesCuda, losses_and_their_gradient_match_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator g(11);
  for (const DType dt : {DType::F32, DType::BF16}) {
    const int64_t N = 23, V = 1001, classes = 990;
    const Tensor x = ops::scale(randn({N, V}, g), 3.0).to(dt);
    std::vector<int32_t> t(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) t[size_t(n)] = n % 4 == 3 ? -100 : int32_t(n * 131 % classes);
    const Tensor targets = from_vector(t, {N});
    const Tensor dy = rand({N}, g);
    std::vector<std::vector<double>> losses, grads;
    for (const Device dev : {Device::cpu(), kGpu}) {
      // The CPU backend takes f32 logits: bf16's values widened, exactly.
      Tensor logits = (dev.is_cpu() ? x.to(DType::F32).clone() : x.to(dev)).requires_grad_();
      const Tensor l = ops::token_losses(logits, targets.to(dev), -100, targets, classes);
      EXPECT_EQ(l.dtype(), DType::F32);
      backward(l, dy.to(dev));
      losses.push_back(values(l.detach().to(Device::cpu())));
      grads.push_back(values(logits.grad().to(Device::cpu())));
    }
    const std::string what = dtype_name(dt);
    for (size_t n = 0; n < losses[0].size(); ++n)
      EXPECT_NEAR(losses[1][n], losses[0][n], 1e-5 * (1 + std::abs(losses[0][n])))
          << what << " row " << n;
    const double rel = dt == DType::BF16 ? 1.0 / 256 : 0.0;
    for (size_t i = 0; i < grads[0].size(); ++i)
      ASSERT_NEAR(grads[1][i], grads[0][i], 1e-6 + rel * std::abs(grads[0][i]))
          << what << " element " << i;
  }
}

}  // namespace
}  // namespace tessera
