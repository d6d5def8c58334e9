// GPU parity of the NF4 kernels (kernels/nf4.cu) against the CPU reference: skipped without a GPU.
#include <gtest/gtest.h>

#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "ops/ops.h"
#include "peft/nf4.h"
#include "test_util.h"

namespace tessera::peft {
namespace {

using testing::bytes;
using testing::max_abs_diff;

NF4Tensor to_cuda(const NF4Tensor& q) {
  NF4Tensor d = q;
  const Device dev = Device::cuda(0);
  d.codes = q.codes.to(dev);
  if (q.absmax.defined()) d.absmax = q.absmax.to(dev);
  if (q.qabsmax.defined()) d.qabsmax = q.qabsmax.to(dev), d.absmax_scale = q.absmax_scale.to(dev);
  return d;
}

TEST(NF4Cuda, dequantization_matches_the_cpu_bit_for_bit) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator g(1);
  for (bool dq : {false, true}) {
    NF4Tensor q = nf4_quantize(randn({130, 96}, g), dq);
    // One f32 product of a level and an absmax (and, for dq, the same f32 absmax arithmetic):
    // identical on both sides.
    EXPECT_EQ(bytes(nf4_dequantize(to_cuda(q)).to(Device::cpu())), bytes(nf4_dequantize(q)));
    EXPECT_EQ(bytes(nf4_dequantize(to_cuda(q), DType::BF16).to(Device::cpu())),
              bytes(nf4_dequantize(q, DType::BF16)));
  }
}

TEST(NF4Cuda, linear_forward_and_input_gradient_match_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator g(2);
  // 200 x 136: neither dimension a multiple of the 64-wide tiles; 37 rows of activations.
  NF4Tensor q = nf4_quantize(ops::scale(randn({200, 136}, g), 0.1), true);
  NF4Tensor qd = to_cuda(q);
  Tensor x = randn({37, 136}, g), u = randn({37, 200}, g);
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor xc = x.to(Device::cuda(0)).to(dt).detach().requires_grad_();
    Tensor xr = xc.detach().to(Device::cpu()).to(DType::F32).requires_grad_();  // same inputs
    Tensor yc = nf4_linear(xc, qd), yr = nf4_linear(xr, q);
    backward(yc, u.to(Device::cuda(0)).to(dt));
    backward(yr, u.to(dt).to(DType::F32));
    // f32: sums of 136 products in another order, ~1e-6 relative. bf16: the output rounds to
    // 8 bits of mantissa (|y| ~ 1: 2^-8) after an f32 accumulation.
    const double tol = dt == DType::F32 ? 1e-4 : 2e-2;
    EXPECT_LT(max_abs_diff(yc.to(Device::cpu()).to(DType::F32), yr), tol) << dtype_name(dt);
    EXPECT_LT(max_abs_diff(xc.grad().to(Device::cpu()).to(DType::F32), xr.grad()), tol)
        << dtype_name(dt);
  }
}

}  // namespace
}  // namespace tessera::peft
