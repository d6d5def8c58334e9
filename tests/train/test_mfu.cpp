// MFU: the FLOPs per token of a training step, GPUs' bf16 peaks by name, and the step line and
// metrics object that show it.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "core/rng.h"
#include "test_util.h"
#include "train/mfu.h"
#include "train/report.h"

using namespace tessera;
namespace fs = std::filesystem;

// 6 N + 12 L H Q T, with N counted by hand from GPT-2's layout: the token embedding (V C, also the
// head), per block 12 C^2 + 13 C (two LayerNorms 4 C, c_attn 3 C^2 + 3 C, c_proj C^2 + C, c_fc
// 4 C^2 + 4 C, the MLP's c_proj 4 C^2 + C), the final LayerNorm 2 C; the learned positions left
// out. For GPT-2 124M (V 50257, C 768, L 12) that N is 123,653,376: nanoGPT's "123.65M".
TEST(Mfu, flops_per_token_are_six_n_plus_the_attention_term) {
  nn::GPTConfig c;
  c.n_layer = 2, c.n_head = 4, c.n_embd = 64, c.vocab_size = 100, c.block_size = 32;
  Generator g(1);
  const nn::GPT gpt2(c, g);
  const int64_t C = 64, L = 2, V = 100, T = 32;
  const int64_t n = V * C + L * (12 * C * C + 13 * C) + 2 * C;
  EXPECT_EQ(train::flop_parameters(gpt2), n);
  EXPECT_DOUBLE_EQ(train::training_flops_per_token(gpt2, T), 6.0 * n + 12.0 * L * 4 * 16 * T);
  EXPECT_EQ(50257 * 768 + 12 * (12 * 768 * 768 + 13 * 768) + 2 * 768, 123653376);

  // Llama style: no learned positions, so every parameter counts.
  c.norm = nn::NormKind::RMSNorm, c.mlp = nn::MlpKind::SwiGLU, c.position = nn::PositionKind::RoPE;
  c.bias = false, c.tie_embeddings = false;
  const nn::GPT llama(c, g);
  EXPECT_EQ(train::flop_parameters(llama), llama.num_parameters());
}

TEST(Mfu, peaks_are_known_by_the_drivers_names_and_zero_otherwise) {
  EXPECT_DOUBLE_EQ(train::peak_bf16_flops("NVIDIA H100 80GB HBM3"), 989.5e12);
  EXPECT_DOUBLE_EQ(train::peak_bf16_flops("NVIDIA H200"), 989.5e12);
  EXPECT_DOUBLE_EQ(train::peak_bf16_flops("NVIDIA H100 PCIe"), 756e12);
  EXPECT_DOUBLE_EQ(train::peak_bf16_flops("NVIDIA H100 NVL"), 835.5e12);
  EXPECT_DOUBLE_EQ(train::peak_bf16_flops("NVIDIA A100-SXM4-80GB"), 312e12);
  EXPECT_DOUBLE_EQ(train::peak_bf16_flops("NVIDIA L40S"), 362e12);
  EXPECT_EQ(train::peak_bf16_flops("tessera CUDA emulator"), 0);
  EXPECT_EQ(train::peak_bf16_flops("NVIDIA GeForce RTX 3090"), 0);
}

// The step line and the metrics object carry the MFU when it is known, and nothing otherwise.
TEST(Mfu, the_step_line_and_metrics_show_it_only_when_known) {
  tessera::testing::TempDir dir{"tessera_mfu"};
  const fs::path metrics = dir.path / "metrics.jsonl";
  std::ostringstream log;
  {
    train::Report report(log, metrics, true, true);
    report.step({.step = 1,
                 .max_steps = 10,
                 .loss = 2.5,
                 .lr = 1e-3,
                 .grad_norm = 1.0,
                 .tokens_per_s = 1000,
                 .tokens = 64,
                 .eta_seconds = 9,
                 .mfu = 0.4123});
    report.step({.step = 2,
                 .max_steps = 10,
                 .loss = 2.4,
                 .lr = 1e-3,
                 .grad_norm = 1.0,
                 .tokens_per_s = 1000,
                 .tokens = 128,
                 .eta_seconds = 8});
  }
  const std::string text = log.str(), json = tessera::testing::read_file(metrics);
  const std::string first = text.substr(0, text.find('\n')), second = text.substr(first.size() + 1);
  EXPECT_NE(first.find("1000 tok/s | mfu 41.2% | eta"), std::string::npos) << first;
  EXPECT_EQ(second.find("mfu"), std::string::npos) << second;
  EXPECT_NE(second.find("1000 tok/s | eta"), std::string::npos) << second;
  const std::string json1 = json.substr(0, json.find('\n')), json2 = json.substr(json1.size() + 1);
  EXPECT_NE(json1.find("\"tokens_per_s\": 1000, \"mfu\": 0.4123, \"tokens\": 64"),
            std::string::npos)
      << json1;
  EXPECT_EQ(json2.find("mfu"), std::string::npos) << json2;
}
