// Muon (optim/muon.h) on CUDA tensors against the CPU. Skips without a CUDA device.
//
// Newton-Schulz runs its gemms in f32 on both (cuBLASLt's CUBLAS_COMPUTE_32F, OpenBLAS's sgemm),
// summing in other orders: each product is within a few units of 2^-24 relatively, and five
// iterations of the quintic amplify a difference by at most its slope (a = 3.4) each, so results
// of size ~1 agree within 1e-4. The momentum and the AdamW parameters beside the matrix are axpby's
// and adamw_step_flat's, which round as the CPU does: bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "core/rng.h"
#include "cuda/cuda_fixture.h"
#include "distributed/communicator.h"
#include "optim/flat.h"
#include "optim/flat_adamw.h"
#include "optim/muon.h"
#include "test_util.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

namespace tessera {
namespace {

using testing::bytes;
using testing::values;

const Device kGpu = Device::cuda(0);

double max_abs_difference(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = values(a.to(Device::cpu())), y = values(b.to(Device::cpu()));
  EXPECT_EQ(x.size(), y.size());
  double d = 0;
  for (size_t i = 0; i < x.size(); ++i) d = std::max(d, std::abs(x[i] - y[i]));
  return d;
}

TEST(MuonCuda, newton_schulz_matches_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator gen(31);
  const MuonOptions o;
  for (const Shape& shape : {Shape{96, 40}, Shape{40, 96}, Shape{64, 64}}) {
    const Tensor x = randn(shape, gen);
    double norm = 0;
    for (double v : values(x)) norm += v * v;
    norm = std::sqrt(norm);
    const Tensor cpu = newton_schulz(x, norm, o), gpu = newton_schulz(x.to(kGpu), norm, o);
    EXPECT_EQ(gpu.device(), kGpu);
    EXPECT_LT(max_abs_difference(cpu, gpu), 1e-4) << shape[0] << " x " << shape[1];
    EXPECT_GT(max_abs_difference(cpu, zeros(shape)), 0.3);  // values of size ~1, not zeros
  }
}

std::unique_ptr<dist::Communicator> single() {
  dist::CommOptions o;
  o.backend = "single";
  return dist::make_communicator(o, dist::LaunchInfo{});
}

// bf16 parameters (a CUDA run's) with f32 masters: a Muon matrix between two AdamW vectors.
TEST(MuonCuda, a_bf16_flat_step_matches_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator gen(32);
  const std::vector<std::pair<std::string, Shape>> shapes = {
      {"b", {64}}, {"w", {48, 64}}, {"ln", {48}}};
  std::vector<NamedParam> cpu, gpu;
  Tensor w0;
  for (const auto& [name, shape] : shapes) {
    const Tensor v = randn(shape, gen).to(DType::BF16);
    Tensor c = v.clone(), g = v.to(kGpu);
    c.requires_grad_();
    g.requires_grad_();
    if (name == "w") w0 = v.to(DType::F32);
    cpu.push_back({name, c});
    gpu.push_back({name, g});
  }
  auto comm = single();
  FlatParams fc(cpu), fg(gpu);
  // No clipping: the gradient norms, summed in other orders, would scale the two runs apart.
  const FlatAdamWOptions opts{
      .adam = {.lr = 0.02, .weight_decay = 0.1}, .max_norm = 0, .muon = {"w"}};
  FlatAdamW oc(fc, *comm, opts), og(fg, *comm, opts);
  for (int step = 0; step < 3; ++step) {
    const Tensor g = randn({fc.numel()}, gen);
    Tensor(fc.grads()).copy_(g);
    Tensor(fg.grads()).copy_(g.to(kGpu));
    oc.step(0.02);
    og.step(0.02);
  }
  const std::vector<StateTensor> sc = oc.state(), sg = og.state();
  ASSERT_EQ(sc.size(), sg.size());
  for (size_t i = 0; i < sc.size(); ++i) {
    const Tensor a = sc[i].get(), b = sg[i].get().to(Device::cpu());
    if (sc[i].key == "w/master") {
      // Three steps of lr 0.02 x ratio 0.2 sqrt(64) = 1.6 times O's 1e-4: within 1e-5.
      EXPECT_LT(max_abs_difference(a, b), 1e-5) << sc[i].key;
      EXPECT_GT(max_abs_difference(a, w0), 5e-3);  // it moved: ~0.0045 a step
    } else {
      EXPECT_EQ(bytes(a), bytes(b)) << sc[i].key;
    }
  }
  EXPECT_EQ(bytes(cpu[0].param.detach()), bytes(gpu[0].param.detach().to(Device::cpu())));
  EXPECT_EQ(bytes(cpu[2].param.detach()), bytes(gpu[2].param.detach().to(Device::cpu())));
}

// The trainer with optim.name muon on both devices: the bf16 run follows the CPU's loss curve
// (cuda_fixture.h's band, as TrainCuda's AdamW runs).
TEST(MuonCuda, twenty_bf16_training_steps_follow_the_cpu_loss_curve) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  testing::TempRun run;
  std::ostringstream log;
  Config c = run.config(20);
  c.model.n_embd = 128;  // head dimension 64, as the bf16 attention kernels need
  c.optim.name = "muon";
  c.log.interval = 1;
  const train::TrainResult r = testing::train_cpu_then_cuda(c, log);
  EXPECT_EQ(r.steps, 20) << log.str();
  const std::vector<double> b = testing::cuda_losses_following_the_cpu(c, 20);
  ASSERT_EQ(b.size(), 20u);
  EXPECT_LT(b.back(), 0.8 * b.front()) << "the GPU run learned";
}

}  // namespace
}  // namespace tessera
