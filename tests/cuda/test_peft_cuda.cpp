// LoRA and QLoRA on CUDA against the CPU reference: one training step of a tiny GPT with adapters
// (plain, NF4, NF4 with double quantisation), a CUDA LoRA run resumed bit for bit, and `merge`'s
// path (train::load_model + merge_into) reading a CUDA run's checkpoint. Every test skips without a
// CUDA device.
//
// The policy under test (train/device.h): the frozen base is bf16 on the GPU (NF4 codes stay codes,
// quantised on the host from the f32 weights before placement, so they are the CPU's codes bit for
// bit), the adapters and their AdamW state are f32.
//
// Tolerances: the GPU computes activations in bf16 (8 significant bits, 2^-9 relative per
// rounding), the CPU in f32. Through two blocks that is ~1e-2 of a gradient (test_model_cuda.cpp),
// so: loss within 2%, each adapter gradient's cosine with the CPU's above 0.99 and its norm within
// 10%. A wrong adapter wiring (a missing scale, a transposed A, the wrong slice of c_attn) changes a
// gradient by O(1) of its norm. After one AdamW step the losses again agree within 2%.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "checkpoint/checkpoint.h"
#include "core/rng.h"
#include "nn/gpt.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "peft/lora.h"
#include "cuda/cuda_fixture.h"
#include "test_util.h"
#include "train/device.h"
#include "train/load.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using testing::Compare;
using testing::compare;
using testing::kGpu;
using testing::random_tokens;
using testing::tiny_gpu_model;
using testing::values;

// A model with adapters on every projection, B made non-zero (B = 0 would leave A without a
// gradient), built on the host; `device` places it the way the trainer does.
struct Adapted {
  std::unique_ptr<nn::GPT> model;
  std::unique_ptr<peft::Lora> lora;
  Adapted(const nn::GPTConfig& cfg, const std::string& quantize, bool gpu) {
    Generator g(21), ga(22), gb(23);
    model = std::make_unique<nn::GPT>(cfg, g);
    lora = std::make_unique<peft::Lora>(
        *model, peft::LoraOptions{.rank = 4, .alpha = 8, .targets = peft::parse_targets("all"),
                                  .quantize = quantize}, ga);
    std::vector<Tensor> ts;
    for (const auto& [name, t] : lora->parameters()) {
      Tensor x = name.ends_with("lora_B.weight") ? ops::scale(randn(t.shape(), gb), 0.02)
                                                 : t.detach().clone();
      x.requires_grad_();
      x.set_name(name);
      ts.push_back(x);
    }
    lora->replace_parameters(ts);
    if (gpu) {
      train::place_model(*model, kGpu, DType::BF16);
      lora->place(kGpu);
    }
  }
};

struct PeftCase {
  bool llama;
  const char* quantize;
};
class PeftCuda : public ::testing::TestWithParam<PeftCase> {};

TEST_P(PeftCuda, one_adapter_step_on_cuda_follows_the_cpu_step) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const nn::GPTConfig cfg = tiny_gpu_model(GetParam().llama);
  Adapted cpu(cfg, GetParam().quantize, false), gpu(cfg, GetParam().quantize, true);
  // The policy: a frozen bf16 base without gradients, f32 adapters on the device.
  for (const auto& [name, t] : gpu.model->parameters()) {
    EXPECT_EQ(t.device(), kGpu) << name;
    EXPECT_EQ(t.dtype(), DType::BF16) << name;
    EXPECT_FALSE(t.requires_grad()) << name << " stays frozen";
  }
  for (const auto& [name, t] : gpu.lora->parameters()) {
    EXPECT_EQ(t.device(), kGpu) << name;
    EXPECT_EQ(t.dtype(), DType::F32) << name;
    EXPECT_TRUE(t.is_leaf() && t.requires_grad()) << name;
  }
  EXPECT_EQ(gpu.lora->quantized(), std::string(GetParam().quantize) != "none");
  EXPECT_EQ(gpu.lora->base_bytes() < cpu.lora->base_bytes(), true) << "bf16 (and NF4) base";

  Generator data(24);
  const Tensor in = random_tokens(3, 32, cfg.vocab_size, data);
  const Tensor tg = random_tokens(3, 32, cfg.vocab_size, data);
  Tensor lc = cpu.model->loss(in, tg), lg = gpu.model->loss(in.to(kGpu), tg.to(kGpu));
  lc.backward();
  lg.backward();
  EXPECT_NEAR(lg.item(), lc.item(), 0.02 * lc.item());
  for (size_t i = 0; i < cpu.lora->parameters().size(); ++i) {
    const auto& [name, pc] = cpu.lora->parameters()[i];
    const Tensor& pg = gpu.lora->parameters()[i].second;
    ASSERT_TRUE(pg.grad().defined()) << name;
    EXPECT_EQ(pg.grad().dtype(), DType::F32) << name;
    const Compare c = compare(pg.grad(), pc.grad());
    EXPECT_GT(c.cosine, 0.99) << name;
    EXPECT_NEAR(c.ratio, 1.0, 0.1) << name;
  }
  for (const auto& [name, t] : gpu.model->parameters())
    EXPECT_FALSE(t.grad().defined()) << name << ": no gradient for the base";

  AdamW oc(named_params(cpu.lora->parameters()), {.lr = 1e-2});
  AdamW og(named_params(gpu.lora->parameters()), {.lr = 1e-2});
  oc.step();
  og.step();
  const double ac = cpu.model->loss(in, tg).item();
  const double ag = gpu.model->loss(in.to(kGpu), tg.to(kGpu)).item();
  EXPECT_LT(ac, lc.item()) << "the CPU step lowered the loss";
  EXPECT_NEAR(ag, ac, 0.02 * ac);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, PeftCuda,
    ::testing::Values(PeftCase{false, "none"}, PeftCase{true, "none"}, PeftCase{false, "nf4"},
                      PeftCase{true, "nf4-dq"}),
    [](const auto& info) {
      std::string q = info.param.quantize;
      std::replace(q.begin(), q.end(), '-', '_');
      return std::string(info.param.llama ? "llama_" : "gpt2_") + q;
    });

TEST(PeftCuda, nf4_codes_on_the_device_are_the_hosts_and_stay_codes) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const nn::GPTConfig cfg = tiny_gpu_model(true);
  Adapted cpu(cfg, "nf4-dq", false), gpu(cfg, "nf4-dq", true);
  Generator g(1);
  const std::vector<std::string> linears = nn::GPT(cfg, g).block_linear_weights();
  ASSERT_FALSE(linears.empty());
  for (const std::string& n : linears) {
    // The weight left the model: no bf16 or f32 copy of it exists on the device.
    for (const auto& [name, t] : gpu.model->parameters()) EXPECT_NE(name, n);
    const peft::NF4Tensor* qc = cpu.lora->nf4(n);
    const peft::NF4Tensor* qg = gpu.lora->nf4(n);
    ASSERT_TRUE(qc && qg) << n;
    EXPECT_EQ(qg->device(), kGpu) << n;
    EXPECT_EQ(testing::bytes(qg->codes.to(Device::cpu())), testing::bytes(qc->codes)) << n;
    EXPECT_EQ(testing::bytes(qg->qabsmax.to(Device::cpu())), testing::bytes(qc->qabsmax)) << n;
    EXPECT_EQ(testing::bytes(qg->absmax_scale.to(Device::cpu())), testing::bytes(qc->absmax_scale))
        << n;
  }
}

// A CUDA LoRA run (QLoRA nf4 on a base trained on the CPU), stopped after 4 steps and resumed,
// ends with the uninterrupted run's adapters, optimizer state and losses, bit for bit; its
// checkpoint then loads on the host for `merge`, and the merged plain model computes what the
// adapted model computes.
TEST(PeftCuda, cuda_lora_run_resumes_bit_exactly_and_merges_on_the_host) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  testing::TempRun run;
  std::ostringstream log;
  Config c = run.config(5);
  c.model.n_embd = 128;  // head dimension 64
  c.train.run_name = "base";
  c.checkpoint.interval = 5;
  train::run_training(c, log);  // the base, on the CPU

  c.train.max_steps = 8;
  c.train.device = "cuda";
  c.checkpoint.init = (run.dir / "ckpt" / "base").string();
  c.lora.rank = 4, c.lora.targets = "all", c.lora.quantize = "nf4";
  c.model.dropout = 0.1;  // the adapters' dropout stream crosses the resume
  c.lora.dropout = 0.1;
  c.checkpoint.interval = 4, c.log.interval = 1;
  c.train.run_name = "full";
  const train::TrainResult a = train::run_training(c, log);
  const train::TrainResult b = testing::run_split(c, 4, log);
  ASSERT_EQ(b.steps, 8);
  const CheckpointData x = load_checkpoint(a.last_checkpoint),
                       y = load_checkpoint(b.last_checkpoint);
  ASSERT_EQ(x.model.size(), y.model.size());
  for (size_t i = 0; i < x.model.size(); ++i) {
    EXPECT_EQ(x.model[i].second.dtype(), DType::F32) << x.model[i].first << ": f32 adapters";
    EXPECT_EQ(testing::bytes(x.model[i].second), testing::bytes(y.model[i].second))
        << x.model[i].first;
  }
  ASSERT_EQ(x.optimizer.size(), y.optimizer.size());
  for (size_t i = 0; i < x.optimizer.size(); ++i)
    EXPECT_EQ(testing::bytes(x.optimizer[i].second), testing::bytes(y.optimizer[i].second))
        << x.optimizer[i].first;
  EXPECT_EQ(testing::metric(run.dir / "ckpt" / "full" / "metrics.jsonl", "loss"),
            testing::metric(run.dir / "ckpt" / "split" / "metrics.jsonl", "loss"));

  // merge's path: the adapters and their base on the host (the fingerprint is the f32 base's).
  train::LoadedModel m = train::load_model(a.last_checkpoint);
  ASSERT_TRUE(m.lora);
  Generator g0(0);
  nn::GPT merged(train::model_config(m.config.model, m.config.train), g0);
  m.lora->merge_into(merged);
  Generator data(25);
  const Tensor in = random_tokens(2, 16, 257, data), tg = random_tokens(2, 16, 257, data);
  NoGradGuard no_grad;
  const double adapted = m.model->loss(in, tg, false).item();
  const double plain = merged.loss(in, tg, false).item();
  EXPECT_NEAR(plain, adapted, 1e-4 * adapted);  // dequantised NF4 + s B A, summed in f32
}

}  // namespace
}  // namespace tessera
