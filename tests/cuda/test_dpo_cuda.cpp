// train.objective dpo on CUDA against the CPU (train/dpo.h): the sequences' log-probabilities from
// the per-position losses on the device, the loss's gradient sent back to it, the reference placed
// beside the policy in bf16 (full fine-tuning) or the policy's own base with its adapters off
// (LoRA). Skips without a CUDA device; CI runs it on the emulator.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda.h"
#include "cuda/cuda_fixture.h"
#include "train/train_fixture.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

TEST(DpoCuda, bf16_steps_prefer_the_chosen_responses_as_the_cpu_does) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  testing::TempRun run;
  Config base = run.config(10);
  base.model.n_embd = 128;  // head dimension 64, as the bf16 attention kernels need
  base.train.run_name = "base";
  std::ostringstream log;
  const std::string init = train::run_training(base, log).last_checkpoint;  // on the CPU, f32
  testing::write_preference_pairs(run.dir, 80);
  for (const bool lora : {false, true}) {
    SCOPED_TRACE(lora ? "lora" : "full");
    Config c = run.config(12);
    c.model.n_embd = 128;
    c.checkpoint.dir = (run.dir / (lora ? "lora" : "full")).string();
    c.data.train = (run.dir / "pairs" / "train_*.bin").string();
    c.data.val = (run.dir / "pairs" / "val_*.bin").string();
    c.data.windows = "pairs", c.train.objective = "dpo", c.train.dpo_beta = 0.5;
    c.checkpoint.init = init;
    c.log.interval = 1, c.eval.interval = 12;
    if (lora) c.lora.rank = 4, c.lora.alpha = 8, c.lora.dropout = 0, c.optim.lr = 1e-2;
    const train::TrainResult r = testing::train_cpu_then_cuda(c, log);
    ASSERT_EQ(r.steps, 12);
    const fs::path cpu = fs::path(c.checkpoint.dir) / "cpu" / "metrics.jsonl";
    const fs::path gpu = fs::path(c.checkpoint.dir) / "cuda" / "metrics.jsonl";
    const std::vector<double> a = testing::metric_values(cpu, "loss"),
                              b = testing::metric_values(gpu, "loss");
    ASSERT_EQ(b.size(), 12u);
    std::printf("[ dpo cuda %s ] cpu %.7f -> %.4f, cuda %.7f -> %.4f\n", lora ? "lora" : "full",
                a[0], a.back(), b[0], b.back());
    // Step 1: the policy is its reference on both devices (the same bf16 weights on the GPU, run
    // by the same kernels, dropout off): ln 2 but for the rounding of sums of bf16 logits'
    // log-probabilities, each pair's z a difference of such (the emulator logged 0.6931470 on
    // both devices, ln 2 to the 7 digits written).
    EXPECT_NEAR(b[0], std::log(2.0), 0.01);
    // Then both learn the preference (step 12 on the emulator: 0.0002 in full on both devices,
    // 0.0786 and 0.0787 under LoRA); a device whose gradient lost its sign or its pairing stays
    // at or above ln 2.
    EXPECT_LT(a.back(), 0.2);
    EXPECT_LT(b.back(), 0.2);
    EXPECT_EQ(testing::metric_values(gpu, "val_reward_accuracy").back(), 1.0);
  }
}

}  // namespace
}  // namespace tessera
