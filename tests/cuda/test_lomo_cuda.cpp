// LOMO and AdaLomo on CUDA against the CPU reference: the kernel-table entries one parameter at a
// time (lomo_grad_sum_squares, lomo_step, adalomo_step), a fused step of a tiny GPT with two-pass
// norm clipping, the trainer with optim lomo / adalomo on train.device cuda, and the allocator's
// view of a LOMO backward (no full set of gradients is ever alive). Every test skips without a
// CUDA device.
//
// Tolerances:
//  - lomo_step: the CUDA kernel performs the CPU twin's operations in its order with one rounding
//    each (kernels/optim.cu), so the masters and bf16 parameters are compared bit for bit.
//  - adalomo_step: the same element operations, but RMS(p), RMS(U) and the row means are summed in
//    double as trees instead of the CPU's sequential blocks: the sums differ by ~1e-16 relative,
//    which, once rounded to f32 scalars, moves a weight by at most an f32 ulp or two. 1e-6 relative
//    of the update's norm is ten times that and a million times smaller than a wrong index.
//  - lomo_grad_sum_squares: double sums in another order, 1e-12 relative.
//  - whole model, f32 on both devices: the gradients agree to ~1e-5 of their norm
//    (test_model_cuda.cpp); an update is a smooth function of them, so 1e-3 of its norm.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "backend/kernels.h"
#include "core/rng.h"
#include "core/storage.h"
#include "nn/gpt.h"
#include "ops/ops.h"
#include "optim/lomo.h"
#include "cuda/cuda_fixture.h"
#include "test_util.h"
#include "train/device.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

namespace tessera {
namespace {

using testing::kGpu;
using testing::random_tokens;
using testing::tiny_gpu_model;
using testing::values;

// ||a - b|| / ||b|| over two tensors of the same shape (any devices and floating dtypes).
double rel_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = values(a.to(Device::cpu())), y = values(b.to(Device::cpu()));
  double d2 = 0, y2 = 0;
  for (size_t i = 0; i < x.size(); ++i) d2 += (x[i] - y[i]) * (x[i] - y[i]), y2 += y[i] * y[i];
  return std::sqrt(d2 / std::max(y2, 1e-300));
}

bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(Device::cpu()).contiguous(), y = b.to(Device::cpu()).contiguous();
  return x.nbytes() == y.nbytes() && std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

struct Case {
  DType dtype;  // the parameter's: f32 (its own master) or bf16 (an f32 master)
  Shape shape;
  LomoGrad prep;
};

// The parameter, its master and its gradient on the CPU, and copies on the GPU.
struct Operands {
  Tensor param, master, grad;
  Operands to(Device d) const {
    Operands o{param.to(d).clone(), {}, grad.to(d).clone()};
    o.master = param.dtype() == DType::BF16 ? master.to(d).clone() : o.param;
    return o;
  }
};

Operands operands(const Case& c, uint64_t seed) {
  Generator g(seed);
  Operands o;
  const Tensor w = randn(c.shape, g);
  o.master = w.clone();
  o.param = c.dtype == DType::BF16 ? w.to(DType::BF16) : o.master;
  o.grad = ops::scale(randn(c.shape, g), 0.1).to(c.dtype);
  return o;
}

const std::vector<Case> kCases = {
    {DType::F32, {37, 70}, {}},
    {DType::BF16, {37, 70}, {.loss_scale = 4.0, .clip_value = 0.05, .clip_coef = 0.5}},
    {DType::F32, {300, 9}, {.clip_coef = 0.25}},  // two blocks of column sums
    {DType::F32, {129}, {}},
    {DType::BF16, {1000}, {.loss_scale = 2.0}},
};

TEST(LomoCuda, lomo_step_gives_the_cpu_bits) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  for (const Case& c : kCases) {
    Operands cpu = operands(c, 1), gpu = cpu.to(kGpu);
    for (int step = 0; step < 3; ++step) {
      TESSERA_KERNEL(cpu.param, lomo_step)(cpu.param, cpu.master, cpu.grad, c.prep, 0.01, 0.999);
      TESSERA_KERNEL(gpu.param, lomo_step)(gpu.param, gpu.master, gpu.grad, c.prep, 0.01, 0.999);
    }
    EXPECT_TRUE(same_bits(gpu.master, cpu.master)) << shape_str(c.shape);
    EXPECT_TRUE(same_bits(gpu.param, cpu.param)) << shape_str(c.shape);
  }
}

TEST(LomoCuda, adalomo_step_follows_the_cpu_to_rounding_of_its_sums) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  for (const Case& c : kCases) {
    Operands cpu = operands(c, 2), gpu = cpu.to(kGpu);
    const Tensor before = cpu.master.clone();
    const bool matrix = c.shape.size() == 2;
    auto state = [&](Device d) {
      std::vector<Tensor> s;
      if (matrix) {
        s = {zeros({c.shape[0]}, {DType::F32, d}), zeros({c.shape[1]}, {DType::F32, d}), Tensor()};
      } else {
        s = {Tensor(), Tensor(), zeros(c.shape, {DType::F32, d})};
      }
      return s;
    };
    std::vector<Tensor> sc = state(Device::cpu()), sg = state(kGpu);
    for (int t = 1; t <= 3; ++t) {
      const double beta2 = 1.0 - std::pow(double(t), -0.8);
      TESSERA_KERNEL(cpu.param, adalomo_step)(cpu.param, cpu.master, cpu.grad, sc[0], sc[1], sc[2],
                                             c.prep, beta2, 1e-2, 0.1);
      TESSERA_KERNEL(gpu.param, adalomo_step)(gpu.param, gpu.master, gpu.grad, sg[0], sg[1], sg[2],
                                             c.prep, beta2, 1e-2, 0.1);
    }
    const Tensor dc = ops::sub(cpu.master, before), dg = ops::sub(gpu.master.to(Device::cpu()), before);
    EXPECT_LT(rel_diff(dg, dc), 1e-6) << shape_str(c.shape);
    for (int k = 0; k < 3; ++k) {
      if (!sc[k].defined()) continue;
      EXPECT_LT(rel_diff(sg[k], sc[k]), 1e-6) << shape_str(c.shape) << " state " << k;
    }
  }
}

TEST(LomoCuda, gradient_sum_of_squares_lands_in_its_device_slot) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  for (const Case& c : kCases) {
    const Operands cpu = operands(c, 3), gpu = cpu.to(kGpu);
    Tensor oc = zeros({3}, DType::F64), og = zeros({3}, {DType::F64, kGpu});
    TESSERA_KERNEL(cpu.grad, lomo_grad_sum_squares)(oc.narrow(0, 1, 1), cpu.grad, c.prep.loss_scale);
    TESSERA_KERNEL(gpu.grad, lomo_grad_sum_squares)(og.narrow(0, 1, 1), gpu.grad, c.prep.loss_scale);
    const std::vector<double> a = values(oc), b = values(og.to(Device::cpu()));
    EXPECT_EQ(b[0], 0.0);
    EXPECT_EQ(b[2], 0.0);
    EXPECT_NEAR(b[1], a[1], 1e-12 * a[1]) << shape_str(c.shape);
  }
}

class FusedCuda : public ::testing::TestWithParam<const char*> {};  // lomo | adalomo

TEST_P(FusedCuda, one_clipped_step_of_a_tiny_gpt_follows_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const nn::GPTConfig cfg = tiny_gpu_model();
  Generator g1(11), g2(11), data(12);
  nn::GPT cpu(cfg, g1), gpu(cfg, g2);
  train::place_model(gpu, kGpu, DType::F32);
  std::vector<Tensor> before;
  for (const auto& [name, t] : cpu.parameters()) before.push_back(t.detach().clone());
  const LomoOptions o{.name = GetParam(), .weight_decay = 0.1, .max_norm = 0.5};
  FusedOptimizer oc(named_params(cpu.parameters()), o), og(named_params(gpu.parameters()), o);
  // AdaLomo's first step (beta2_1 = 0) makes a vector's update G / |G|: a gradient element near 0
  // could round to either sign on the two devices. From step 11 with the moments at 1 the update is
  // a smooth function of G, which is what a tolerance can compare.
  for (FusedOptimizer* opt : {&oc, &og}) {
    opt->set_step_count(10);
    for (auto& [key, t] : opt->state()) Tensor(t).fill_(1.0);  // f32 parameters: no masters
  }
  const Tensor in = random_tokens(2, 32, cfg.vocab_size, data);
  const Tensor tg = random_tokens(2, 32, cfg.vocab_size, data);
  const double nc = oc.backward_step(cpu.loss(in, tg), 1e-2);
  const double ng = og.backward_step(gpu.loss(in.to(kGpu), tg.to(kGpu)), 1e-2);
  EXPECT_NEAR(ng, nc, 1e-4 * nc) << "the global norm of pass 1";
  EXPECT_GT(nc, 0.5) << "the norm clipping was active";
  for (size_t i = 0; i < before.size(); ++i) {
    const auto& [name, pc] = cpu.parameters()[i];
    const Tensor& pg = gpu.parameters()[i].second;
    EXPECT_FALSE(pg.grad().defined()) << name << ": freed in its hook";
    const Tensor dc = ops::sub(pc.detach(), before[i]);
    const Tensor dg = ops::sub(pg.detach().to(Device::cpu()), before[i]);
    EXPECT_LT(rel_diff(dg, dc), 1e-3) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Optimizers, FusedCuda, ::testing::Values("lomo", "adalomo"),
                         [](const auto& info) { return std::string(info.param); });

// Without any optimizer a backward leaves every gradient alive at its end; LOMO frees each in its
// hook. On a model whose parameters dwarf its activations (T = 8) the allocator's peak shows it.
TEST(LomoCuda, no_full_set_of_gradients_is_alive_during_a_lomo_backward) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  nn::GPTConfig cfg = tiny_gpu_model();
  cfg.n_layer = 4, cfg.n_embd = 256, cfg.block_size = 8;
  Generator g(13), data(14);
  nn::GPT model(cfg, g);
  train::place_model(model, kGpu, DType::F32);  // f32: no master copies, LOMO holds no state
  const Tensor in = random_tokens(1, 8, cfg.vocab_size, data).to(kGpu);
  const Tensor tg = random_tokens(1, 8, cfg.vocab_size, data).to(kGpu);
  int64_t grads = 0, largest = 0;
  for (const auto& [name, t] : model.parameters())
    grads += int64_t(t.nbytes()), largest = std::max(largest, int64_t(t.nbytes()));

  // Built first: its hooks stay idle in a plain backward, and its small norm buffer is then part of
  // what is held.
  FusedOptimizer opt(named_params(model.parameters()), {.name = "lomo"});
  const int64_t held = memory_stats(kGpu).current_bytes;
  reset_peak_memory(kGpu);
  model.loss(in, tg).backward();
  const int64_t plain = memory_stats(kGpu).peak_bytes - held;
  model.zero_grad();
  EXPECT_GT(plain, grads) << "a plain backward holds every gradient at its end";

  reset_peak_memory(kGpu);
  opt.backward_step(model.loss(in, tg), 1e-3);
  const int64_t lomo = memory_stats(kGpu).peak_bytes - held;
  // Activations at T = 8 are a few hundred KiB; gradients are ~13 MiB. At most the largest one
  // (the tied embedding, which waits for its second contribution) and one block's worth are alive.
  EXPECT_LT(lomo, grads / 4) << "peak above what was held: " << lomo << " bytes; all gradients "
                             << grads << " bytes";
  EXPECT_LE(opt.peak_grad_bytes(), 2 * largest);
  EXPECT_EQ(memory_stats(kGpu).current_bytes, held) << "every gradient and temporary was freed";
}

// The trainer with optim lomo / adalomo on train.device cuda: the refusal is gone and the loss
// curve follows the CPU's (bf16 on the GPU: cuda_fixture.h's 5% + 0.05 band).
TEST_P(FusedCuda, trainer_runs_on_cuda_and_follows_the_cpu_loss_curve) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  testing::TempRun run;
  std::ostringstream log;
  Config c = run.config(20);
  c.model.n_embd = 128;  // head dimension 64, as the bf16 attention kernels need
  c.optim.name = GetParam();
  c.optim.lr = 3e-2, c.optim.min_lr = 3e-3;  // from scratch: LOMO's SGD and AdaLomo want ~3e-2
  c.optim.grad_clip = 1.0;
  c.log.interval = 1;
  const train::TrainResult r = testing::train_cpu_then_cuda(c, log);
  EXPECT_EQ(r.steps, 20);
  const std::vector<double> b = testing::cuda_losses_following_the_cpu(c, 20);
  ASSERT_EQ(b.size(), 20u);
  EXPECT_LT(b.back(), b.front()) << "it learned";
}

}  // namespace
}  // namespace tessera
