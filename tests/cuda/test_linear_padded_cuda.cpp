// ops::linear_padded on a GPU (src/ops/matmul.cpp). There the logits' product runs over the
// padded width, with the weight padded by zero rows, so that cuBLASLt sees aligned dimensions
// (GPT-2's head: V 50257 of 50304 columns); on the CPU it is linear's product bit for bit
// (tests/ops/test_matmul.cpp). The GPU's contract, checked here: the first V columns are x w^T
// to the gemm's rounding, the padding columns are zeros, the gradients are linear's, and dy's
// padding columns change neither gradient. Every test skips without a CUDA device.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backend/cuda.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::bytes;
using testing::rel_err;

const Device kGpu = Device::cuda(0);

struct Outcome {
  Tensor y, dx, dw;  // on the CPU
};
// f(x, w) on `device` in x's dtype, and x's and w's gradients for the output gradient dy.
template <typename F>
Outcome forward_backward(const Tensor& x0, const Tensor& w0, const Tensor& dy, const Device& device,
                         F f) {
  const Tensor x = x0.to(device).detach().requires_grad_(),
               w = w0.to(device).detach().requires_grad_();
  const Tensor y = f(x, w);
  ops::sum(ops::mul(y, dy.to(device))).backward();
  return {y.to(Device::cpu()), x.grad().to(Device::cpu()), w.grad().to(Device::cpu())};
}

TEST(LinearPaddedCuda, is_linear_then_zero_columns_and_drops_the_paddings_gradient) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const int64_t R = 37, K = 96, V = 77, Vp = 128;
  for (const DType dt : {DType::F32, DType::BF16}) {
    const std::string what = dtype_name(dt);
    Generator g(23);
    const Tensor x0 = randn({R, K}, g).to(dt), w0 = randn({V, K}, g).to(dt);
    const Tensor dy = randn({R, Vp}, g).to(dt);
    Tensor dy_zeroed = dy.clone();
    dy_zeroed.narrow(1, V, Vp - V).fill_(0.0);
    auto padded = [Vp](const Tensor& x, const Tensor& w) { return ops::linear_padded(x, w, Vp); };

    const Outcome gpu = forward_backward(x0, w0, dy, kGpu, padded);
    const Outcome zeroed = forward_backward(x0, w0, dy_zeroed, kGpu, padded);
    // The reference: linear in f64 on the CPU, for dy's first V columns.
    const Outcome ref = forward_backward(
        x0.to(DType::F64), w0.to(DType::F64), dy.narrow(1, 0, V).contiguous().to(DType::F64),
        Device::cpu(), [](const Tensor& x, const Tensor& w) { return ops::linear(x, w); });

    // bf16: each output rounded once to 8 significant bits (2^-9 relative at most, 2^-8 of an
    // element below the largest); f32: K products summed in f32.
    const double tol = dt == DType::BF16 ? 8e-3 : 1e-5;
    ASSERT_EQ(gpu.y.shape(), (Shape{R, Vp})) << what;
    EXPECT_LT(rel_err(gpu.y.narrow(1, 0, V).contiguous(), ref.y), tol) << what;
    for (double v : testing::values(gpu.y.narrow(1, V, Vp - V).contiguous()))
      ASSERT_EQ(v, 0.0) << what << ": a padding column is not zero";
    EXPECT_LT(rel_err(gpu.dx, ref.dx), tol) << what << " dx";
    EXPECT_LT(rel_err(gpu.dw, ref.dw), tol) << what << " dw";
    // dy's padding meets the weight's zero rows (dx) and is not read at all (dw).
    EXPECT_EQ(bytes(gpu.dx), bytes(zeroed.dx)) << what << " dx";
    EXPECT_EQ(bytes(gpu.dw), bytes(zeroed.dw)) << what << " dw";
  }
}

}  // namespace
}  // namespace tessera
