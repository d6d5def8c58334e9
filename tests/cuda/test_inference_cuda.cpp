// eval and generate with --device cuda (train/load.h place_loaded): the checkpoint of a short CPU
// run evaluated on the GPU in bf16 gives the CPU's f32 loss to bf16 accuracy, also at a context
// past the trained one (RoPE), and per position; generate samples with the KV cache on the GPU,
// one sample and three as a batch, and a file of prompts; eval answers prompts greedily. A
// CUDA-less build refuses --device cuda by name (tests/train covers the CPU side of both
// binaries).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda.h"
#include "checkpoint/json.h"
#include "cuda_fixture.h"
#include "train/train_fixture.h"

namespace tessera {
namespace {

using testing::bin_dir;
using testing::run_command;

// The loss a "loss L" or a contexts row prints, from eval's output.
double loss_in(const std::string& out, const std::string& after) {
  const size_t at = out.find(after);
  EXPECT_NE(at, std::string::npos) << out;
  return at == std::string::npos ? 0 : std::stod(out.substr(at + after.size()));
}

TEST(InferenceCuda, eval_and_generate_run_on_the_gpu_with_the_cpus_results) {
  testing::TempRun run;
  Config c = run.config(20);
  c.model.n_embd = 128, c.model.n_head = 2, c.model.position = "rope";  // head dim 64: flash
  std::ostringstream log;
  const std::string ck = train::run_training(c, log).last_checkpoint;
  const std::string eval = bin_dir() + "/eval --checkpoint " + ck + " --batches 1 ";
  std::string cpu, gpu;
  ASSERT_EQ(run_command(eval + "--contexts 16,32", &cpu), 0) << cpu;
  if (!cuda::available()) {
    EXPECT_EQ(run_command(eval + "--device cuda", &gpu), 1);
    EXPECT_NE(gpu.find("--device cuda, but"), std::string::npos) << gpu;
    GTEST_SKIP() << "no CUDA device";
  }
  ASSERT_EQ(run_command(eval + "--contexts 16,32 --device cuda", &gpu), 0) << gpu;
  // bf16 weights and activations over two layers: about 1e-3 of a loss near 4 (the emulator
  // measured 1e-4); 0.02 leaves room and still fails a wrong kernel, whose losses move by units.
  for (const char* row : {"        16 ", "        32 "})
    EXPECT_NEAR(loss_in(gpu, row), loss_in(cpu, row), 0.02) << cpu << gpu;
  std::string text;
  ASSERT_EQ(run_command(bin_dir() + "/generate --checkpoint " + ck +
                            " --prompt in --max-new-tokens 40 --device cuda 2>/dev/null",
                        &text),
            0)
      << text;
  EXPECT_GT(text.size(), 2u) << text;
  // Three samples as one batch through the GPU's cache.
  ASSERT_EQ(run_command(bin_dir() + "/generate --checkpoint " + ck +
                            " --prompt in --max-new-tokens 40 --num-samples 3 --device cuda",
                        &text),
            0)
      << text;
  for (const char* head :
       {"--- sample 1 of 3 (--seed 42) ---\n", "--- sample 3 of 3 (--seed 44) ---\n"})
    EXPECT_NE(text.find(head), std::string::npos) << text;
  // Each position's loss (ops::token_losses on the device, (B, T) values read back) against the
  // CPU's: a position's mean is over 8 rows, so a bf16 model's error is larger than the whole
  // window's mean; 0.05 still fails a wrong target or position, which moves a loss by units.
  const std::string csv = (run.dir / "positions").string();
  ASSERT_EQ(run_command(eval + "--per-position " + csv + "_cpu.csv", &cpu), 0) << cpu;
  ASSERT_EQ(run_command(eval + "--per-position " + csv + "_gpu.csv --device cuda", &gpu), 0) << gpu;
  const std::string want = testing::read_file(csv + "_cpu.csv");
  const std::string got = testing::read_file(csv + "_gpu.csv");
  std::istringstream a(want), b(got);
  std::string la, lb;
  int rows = 0;
  while (std::getline(a, la) && std::getline(b, lb)) {
    if (la.find_first_not_of("0123456789,.") != std::string::npos) continue;  // the header
    EXPECT_EQ(la.substr(0, la.rfind(',')), lb.substr(0, lb.rfind(',')));
    EXPECT_NEAR(std::stod(lb.substr(lb.rfind(',') + 1)), std::stod(la.substr(la.rfind(',') + 1)),
                0.05)
        << la << " | " << lb;
    ++rows;
  }
  EXPECT_EQ(rows, 16) << want;
  // A file of prompts (two of one length: one batch) continued on the GPU, a JSON line each in
  // the file's order, and the same examples answered greedily (eval --answers): bf16 greedy
  // answers may differ from the CPU's, so the lines are checked, not their text.
  const std::string prompts = (run.dir / "prompts.jsonl").string();
  {
    std::ofstream f(prompts);
    f << "{\"prompt\": \"in the\", \"response\": \" word\"}\n"
         "{\"prompt\": \"was wi\", \"response\": \"th\"}\n"
         "{\"prompt\": \"the\", \"response\": \" light\"}\n";
  }
  ASSERT_EQ(run_command(bin_dir() + "/generate --checkpoint " + ck + " --prompts " + prompts +
                            " --max-new-tokens 6 --batch-size 2 --device cuda 2>/dev/null",
                        &text),
            0)
      << text;
  std::istringstream lines(text);
  std::vector<std::string> got_prompts;
  for (std::string line; std::getline(lines, line);)
    got_prompts.push_back(parse_json(line, "generate's line").at("prompt").str());
  EXPECT_EQ(got_prompts, (std::vector<std::string>{"in the", "was wi", "the"})) << text;
  ASSERT_EQ(run_command(
                bin_dir() + "/eval --checkpoint " + ck + " --answers " + prompts + " --device cuda",
                &text),
            0)
      << text;
  EXPECT_NE(text.find(" (3 items of " + prompts + "; the commonest response 0.3333)"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace tessera
