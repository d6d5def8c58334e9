// Loss-masked training (tokenize --format sft) on CUDA against the CPU: the masked targets reach
// the device as the ignore index, and the fused classifier's loss and gradient (its forward writes
// the gradient over the logits, the mean over the scored rows only) follow the CPU's. Skips
// without a CUDA device; CI runs it on the emulator.
#include <gtest/gtest.h>

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

TEST(SftCuda, masked_bf16_steps_follow_the_cpu_and_score_the_responses_only) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  testing::TempRun run;
  const fs::path data = run.dir / "sft";
  fs::create_directories(data);
  testing::write_sft_examples(data, "train", 100, 1);
  const int64_t val_scored = testing::write_sft_examples(data, "val", 22, 2);
  Config c = run.config(40);
  c.model.n_embd = 128;  // head dimension 64, as the bf16 attention kernels need
  c.data.train = (data / "train_*.bin").string();
  c.data.val = (data / "val_*.bin").string();
  c.eval.steps = 2, c.eval.interval = 20, c.log.interval = 1;
  std::ostringstream log;
  const train::TrainResult r = testing::train_cpu_then_cuda(c, log);
  ASSERT_EQ(r.steps, 40);
  const fs::path cpu = run.dir / "ckpt" / "cpu" / "metrics.jsonl";
  const fs::path gpu = run.dir / "ckpt" / "cuda" / "metrics.jsonl";
  const std::vector<double> a = testing::metric_values(cpu, "loss"),
                            b = testing::metric_values(gpu, "loss");
  ASSERT_EQ(a.size(), 40u);
  ASSERT_EQ(b.size(), 40u);
  // The first step from the same weights: within bf16's 2% (the file header of
  // test_model_cuda.cpp), near ln 257 = 5.55 on both; a device that ignored every target would
  // report 0. Then the curves fall fast (the CPU's to 0.003 by step 40, measured) and drift apart
  // by a step or so where they are steepest, so the end is compared, not each step: a device that
  // scored the prompts too would stay above 2 (8 of 12 targets at ln 26).
  std::printf("[ sft ] cpu %.4f -> %.4f, cuda %.4f -> %.4f\n", a[0], a.back(), b[0], b.back());
  EXPECT_NEAR(b[0], a[0], 0.02 * a[0]);
  EXPECT_GT(b[0], 5.0);
  EXPECT_LT(a.back(), 0.1);
  EXPECT_LT(b.back(), 0.1);
  // The same scored targets on both devices: all of the first 16 windows' but the last example's.
  EXPECT_EQ(testing::metric(gpu, "val_tokens"), testing::metric(cpu, "val_tokens"));
  EXPECT_EQ(std::stoll(testing::metric(gpu, "val_tokens").at(40)), val_scored - 3);
  const std::vector<double> vb = testing::metric_values(gpu, "val_loss");
  ASSERT_EQ(vb.size(), 2u);
  EXPECT_LT(vb.back(), 0.1);
}

}  // namespace
}  // namespace tessera
