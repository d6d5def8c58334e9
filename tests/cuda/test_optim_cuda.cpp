// GPU parity of the optimizer kernels (kernels/optim.cu) and of AdamW and gradient clipping on CUDA
// tensors, against the CPU. Every test skips without a CUDA device.
//
// adamw_step and adamw_step_flat are compared bit for bit: the CUDA kernels perform the CPU twin's
// operations in the same order with one IEEE rounding each (explicit __f*_rn intrinsics, no fused
// multiply-add), and both round the bf16 working copy to nearest even, so any difference is a bug,
// not rounding.
// sum_squares accumulates in double in another order than the CPU: n positive terms summed in any
// order are within (n - 1) 2^-53 of each other, relatively, which is the tolerance used.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "backend/kernels.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::bytes;
using testing::values;

const Device kGpu = Device::cuda(0);

Tensor on_cpu(const Tensor& t) { return t.to(Device::cpu()); }

// A leaf parameter whose gradient is exactly g (the engine's part, done by hand).
Tensor param_with_grad(const Tensor& value, const Tensor& g) {
  Tensor p = value.detach().clone();
  p.requires_grad_();
  p.impl().autograd->grad = g.detach().clone();
  return p;
}

void set_grad(const Tensor& p, const Tensor& g) { p.impl().autograd->grad = g.detach().clone(); }

TEST(OptimCuda, adamw_step_matches_the_cpu_bit_for_bit) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator gen(21);
  const int64_t n = 100003;  // not a multiple of any block size
  const double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-8;
  for (DType pt : {DType::F32, DType::BF16, DType::F64}) {
    for (double wd : {0.0, 0.1}) {
      const DType st = pt == DType::F64 ? DType::F64 : DType::F32;
      const Tensor init = randn({n}, gen).to(pt);
      // CPU state; an f32/f64 parameter is its own master.
      Tensor p_c = init.clone();
      Tensor w_c = pt == DType::BF16 ? init.to(st) : p_c;
      Tensor m_c = zeros({n}, st), v_c = zeros({n}, st);
      Tensor p_g = p_c.to(kGpu);
      Tensor w_g = pt == DType::BF16 ? w_c.to(kGpu) : p_g;
      Tensor m_g = m_c.to(kGpu), v_g = v_c.to(kGpu);
      for (int t = 1; t <= 3; ++t) {
        // Gradients over many magnitudes, so m/sqrt(v) and the decay both matter.
        const Tensor g = ops::scale(randn({n}, gen), std::pow(10.0, -t)).to(pt);
        const double bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
        cpu::kernels().adamw_step(p_c, w_c, m_c, v_c, g, lr, b1, b2, eps, wd, bc1, bc2);
        TESSERA_KERNEL(p_g, adamw_step)
        (p_g, w_g, m_g, v_g, g.to(kGpu), lr, b1, b2, eps, wd, bc1, bc2);
        const std::string what = std::string(dtype_name(pt)) + " wd " + std::to_string(wd) +
                                 " step " + std::to_string(t);
        EXPECT_EQ(bytes(on_cpu(m_g)), bytes(m_c)) << what << ": m";
        EXPECT_EQ(bytes(on_cpu(v_g)), bytes(v_c)) << what << ": v";
        EXPECT_EQ(bytes(on_cpu(w_g)), bytes(w_c)) << what << ": master";
        EXPECT_EQ(bytes(on_cpu(p_g)), bytes(p_c)) << what << ": param";
      }
      // The step moved the weights (a kernel that wrote nothing would pass the checks above only
      // if the CPU also wrote nothing).
      EXPECT_NE(bytes(p_c), bytes(init)) << dtype_name(pt);
    }
  }
}

TEST(OptimCuda, adamw_step_flat_matches_the_cpu_bit_for_bit) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator gen(25);
  // 201 ragged parameters, two in three decayed: ~130 ranges for the binary search, adjacent ones
  // (decayed neighbours), an empty one (parameter 0 has no elements), boundaries inside the
  // kernel's 4-element groups, and a last one of 3 that leaves a tail past the last group.
  std::vector<int32_t> bounds;
  int64_t n = 0;
  for (int64_t k = 0; k < 201; ++k) {
    const int64_t len = k == 200 ? 3 : (k * 7919) % 5000;
    if (k % 3 != 1) {
      bounds.push_back(int32_t(n));
      bounds.push_back(int32_t(n + len));
    }
    n += len;
  }
  const Tensor ranges_c = from_vector(bounds, {int64_t(bounds.size())});
  const Tensor ranges_g = ranges_c.to(kGpu);
  const double b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  ASSERT_NE(n % 4, 0);
  // The buffers on the GPU start `shift` elements into their allocations: 0 (16-byte groups), 1
  // (element at a time; the emulator fails a misaligned 16-byte access).
  auto to_gpu_at = [](const Tensor& t, int64_t shift) {
    Tensor v = Tensor::empty({t.numel() + shift}, {t.dtype(), kGpu}).narrow(0, shift, t.numel());
    v.copy_(t);
    return v;
  };
  for (auto [pt, shift] : {std::pair{DType::F32, 0}, std::pair{DType::BF16, 0},
                           std::pair{DType::F64, 0}, std::pair{DType::F32, 1},
                           std::pair{DType::BF16, 1}}) {
    const DType st = pt == DType::F64 ? DType::F64 : DType::F32;
    const Tensor init = randn({n}, gen).to(pt);
    // An f32/f64 parameter is its own master; a bf16 one has an f32 master and f32 gradients.
    Tensor p_c = init.clone();
    Tensor w_c = pt == DType::BF16 ? init.to(st) : p_c;
    Tensor m_c = zeros({n}, st), v_c = zeros({n}, st);
    Tensor p_g = to_gpu_at(p_c, shift);
    Tensor w_g = pt == DType::BF16 ? to_gpu_at(w_c, shift) : p_g;
    Tensor m_g = to_gpu_at(m_c, shift), v_g = to_gpu_at(v_c, shift);
    for (int t = 1; t <= 3; ++t) {
      const Tensor g = ops::scale(randn({n}, gen), std::pow(10.0, -t)).to(st);
      const double lr = 1e-2 * t, bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
      const double clip = t == 2 ? 1.0 : 0.37 * t;  // the clipping coefficient, off at step 2
      cpu::kernels().adamw_step_flat(p_c, w_c, m_c, v_c, g, ranges_c, lr, b1, b2, eps, wd, bc1,
                                     bc2, clip);
      TESSERA_KERNEL(p_g, adamw_step_flat)
      (p_g, w_g, m_g, v_g, to_gpu_at(g, shift), ranges_g, lr, b1, b2, eps, wd, bc1, bc2, clip);
      const std::string what = std::string(dtype_name(pt)) + " step " + std::to_string(t) +
                               " at element offset " + std::to_string(shift);
      EXPECT_EQ(bytes(on_cpu(m_g)), bytes(m_c)) << what << ": m";
      EXPECT_EQ(bytes(on_cpu(v_g)), bytes(v_c)) << what << ": v";
      EXPECT_EQ(bytes(on_cpu(w_g)), bytes(w_c)) << what << ": master";
      EXPECT_EQ(bytes(on_cpu(p_g)), bytes(p_c)) << what << ": param";
    }
    EXPECT_NE(bytes(p_c), bytes(init)) << dtype_name(pt);
  }
}

TEST(OptimCuda, adamw_on_cuda_parameters_matches_the_cpu_bit_for_bit) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator gen(22);
  // A bf16 matrix (decayed, separate f32 master), a bf16 vector (not decayed), an f32 matrix.
  const std::vector<std::pair<std::string, Tensor>> init = {
      {"w", randn({64, 48}, gen).to(DType::BF16)},
      {"b", randn({48}, gen).to(DType::BF16)},
      {"w32", randn({10, 7}, gen)}};
  std::vector<NamedParam> cpu_params, gpu_params;
  for (const auto& [name, t] : init) {
    cpu_params.push_back({name, param_with_grad(t, zeros(t.shape(), t.dtype()))});
    gpu_params.push_back({name, param_with_grad(t.to(kGpu), zeros(t.shape(), {t.dtype(), kGpu}))});
  }
  AdamW cpu_opt(cpu_params, {.lr = 3e-3, .weight_decay = 0.1});
  AdamW gpu_opt(gpu_params, {.lr = 3e-3, .weight_decay = 0.1});
  for (int step = 0; step < 5; ++step) {
    for (size_t i = 0; i < init.size(); ++i) {
      const Tensor g = randn(init[i].second.shape(), gen).to(init[i].second.dtype());
      set_grad(cpu_params[i].param, g);
      set_grad(gpu_params[i].param, g.to(kGpu));
    }
    cpu_opt.step(3e-3 * (step + 1) / 5);
    gpu_opt.step(3e-3 * (step + 1) / 5);
    for (size_t i = 0; i < init.size(); ++i) {
      const std::string& name = init[i].first;
      EXPECT_EQ(bytes(on_cpu(gpu_params[i].param.detach())), bytes(cpu_params[i].param.detach()))
          << name << " step " << step;
      EXPECT_EQ(bytes(on_cpu(gpu_opt.master(name))), bytes(cpu_opt.master(name))) << name;
      EXPECT_EQ(bytes(on_cpu(gpu_opt.m(name))), bytes(cpu_opt.m(name))) << name;
      EXPECT_EQ(bytes(on_cpu(gpu_opt.v(name))), bytes(cpu_opt.v(name))) << name;
    }
  }
  EXPECT_EQ(gpu_opt.master("w").device(), kGpu);
  EXPECT_NE(gpu_opt.master("w").data_ptr(), gpu_params[0].param.data_ptr());
  EXPECT_EQ(gpu_opt.master("w32").data_ptr(), gpu_params[2].param.data_ptr());
}

TEST(OptimCuda, sum_squares_matches_the_cpu_and_repeats_exactly) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator gen(23);
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(65537), int64_t(3000001)}) {
    for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
      const Tensor x = randn({n}, gen).to(dt);
      Tensor ref = Tensor::empty({1}, DType::F64);
      cpu::kernels().sum_squares(ref, x);
      const Tensor xg = x.to(kGpu);
      Tensor out = Tensor::empty({3}, {DType::F64, kGpu});  // the sum goes into a view, slot 1
      TESSERA_KERNEL(out, sum_squares)(out.narrow(0, 1, 1), xg);
      Tensor again = Tensor::empty({1}, {DType::F64, kGpu});
      TESSERA_KERNEL(again, sum_squares)(again, xg);
      const double want = ref.item(), got = values(out)[1];
      const double tol = double(n) * std::ldexp(1.0, -53) * want;
      EXPECT_NEAR(got, want, tol) << dtype_name(dt) << " n " << n;
      EXPECT_EQ(bytes(on_cpu(again)), bytes(on_cpu(out.narrow(0, 1, 1))))
          << dtype_name(dt) << " n " << n;
      Tensor out32 = Tensor::empty({1}, {DType::F32, kGpu});  // f32 out: the double, rounded once
      TESSERA_KERNEL(out32, sum_squares)(out32, xg);
      EXPECT_EQ(values(out32)[0], double(float(got))) << dtype_name(dt) << " n " << n;
    }
  }
}

TEST(OptimCuda, clip_grad_norm_on_cuda_matches_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator gen(24);
  for (DType dt : {DType::F32, DType::BF16}) {
    std::vector<NamedParam> cpu_params, gpu_params;
    for (int i = 0; i < 4; ++i) {
      const Shape s{int64_t(1000 * (i + 1)), 3};
      const Tensor g = randn(s, gen).to(dt);
      std::string name = "p";  // (not "p" + to_string: GCC 12 warns falsely of overlap there)
      name += std::to_string(i);
      cpu_params.push_back({name, param_with_grad(zeros(s, dt), g)});
      gpu_params.push_back({name, param_with_grad(zeros(s, {dt, kGpu}), g.to(kGpu))});
    }
    const double cpu_norm = clip_grad_norm(cpu_params, 1.0);
    const double gpu_norm = clip_grad_norm(gpu_params, 1.0);
    // 30000 positive squares in double, in two orders (see the file comment).
    EXPECT_NEAR(gpu_norm, cpu_norm, 30000 * std::ldexp(1.0, -53) * cpu_norm) << dtype_name(dt);
    EXPECT_GT(cpu_norm, 100.0);  // so clipping scaled everything by ~1/cpu_norm
    // Scaled gradients: the CPU rounds g * s computed in double; axpby on the GPU computes in f32.
    // Both are within an ulp of the exact product: 2^-7 relative for bf16, 2^-22 for f32.
    const double rel = dt == DType::BF16 ? 1.0 / 128 : std::ldexp(1.0, -22);
    for (size_t i = 0; i < cpu_params.size(); ++i) {
      const std::vector<double> a = values(cpu_params[i].param.grad());
      const std::vector<double> b = values(on_cpu(gpu_params[i].param.grad()));
      double worst = 0;
      for (size_t j = 0; j < a.size(); ++j)
        worst = std::max(worst, std::fabs(a[j] - b[j]) / std::max(std::fabs(a[j]), 1e-30));
      EXPECT_LE(worst, rel) << dtype_name(dt) << " p" << i;
    }
  }
}

}  // namespace
}  // namespace tessera
