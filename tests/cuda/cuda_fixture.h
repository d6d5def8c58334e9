// What the GPU parity tests share: the small model they run, the comparison of a GPU tensor with
// its CPU reference, and a training run done on the CPU and then on the GPU.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <ostream>
#include <vector>

#include "config/config.h"
#include "core/tensor.h"
#include "nn/gpt.h"
#include "test_util.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

namespace tessera::testing {

inline const Device kGpu = Device::cuda(0);

// Two layers, head dimension 64 (the bf16 flash-attention kernels take 64 or 128); GPT-2 style, or
// Llama style (RMSNorm, SwiGLU, RoPE, one kv head, untied, no biases).
inline nn::GPTConfig tiny_gpu_model(bool llama = false) {
  nn::GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 128, c.block_size = 32, c.vocab_size = 97;
  if (llama) {
    c.norm = nn::NormKind::RMSNorm, c.mlp = nn::MlpKind::SwiGLU;
    c.position = nn::PositionKind::RoPE, c.n_kv_head = 1;
    c.tie_embeddings = false, c.bias = false;
  }
  return c;
}

struct Compare {
  double rel = 0;     // ||gpu - cpu|| / ||cpu||
  double cosine = 0;  // <gpu, cpu> / (||gpu|| ||cpu||)
  double ratio = 0;   // ||gpu|| / ||cpu||
};

inline Compare compare(const Tensor& gpu, const Tensor& cpu) {
  const std::vector<double> a = values(gpu.to(Device::cpu())), b = values(cpu);
  double d2 = 0, b2 = 0, a2 = 0, ab = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d2 += (a[i] - b[i]) * (a[i] - b[i]);
    a2 += a[i] * a[i], b2 += b[i] * b[i], ab += a[i] * b[i];
  }
  return {std::sqrt(d2 / b2), ab / std::sqrt(a2 * b2), std::sqrt(a2 / b2)};
}

// Trains c on the CPU (run name "cpu"), then on the GPU ("cuda"); returns the GPU run's result.
// The loss curves are <checkpoint.dir>/{cpu,cuda}/metrics.jsonl.
inline train::TrainResult train_cpu_then_cuda(Config c, std::ostream& log) {
  c.train.run_name = "cpu";
  train::run_training(c, log);
  c.train.device = "cuda";
  c.train.run_name = "cuda";
  return train::run_training(c, log);
}

// The two loss curves of train_cpu_then_cuda(c, ...), `steps` of each, step by step: the GPU's
// within 5% (plus 0.05 nats near the start) of the CPU's. bf16 activations move each step's loss
// by ~1% and the two runs drift apart slowly: loose for rounding, tight for a kernel bug, which
// stalls or diverges. Returns the GPU run's losses.
inline std::vector<double> cuda_losses_following_the_cpu(const Config& c, size_t steps) {
  const std::filesystem::path dir = c.checkpoint.dir;
  const std::vector<double> a = metric_values(dir / "cpu" / "metrics.jsonl", "loss");
  const std::vector<double> b = metric_values(dir / "cuda" / "metrics.jsonl", "loss");
  EXPECT_EQ(a.size(), steps);
  EXPECT_EQ(b.size(), steps);
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    EXPECT_NEAR(b[i], a[i], 0.05 * a[i] + 0.05) << "step " << i + 1;
  return b;
}

}  // namespace tessera::testing
