// The whole model and training loop on CUDA against the CPU reference: loss and every parameter
// gradient of a tiny GPT (GPT-2 style and Llama style), the training loss curve under the
// mixed-precision policy (train/device.h), exact resume of a CUDA run, and the caching allocator
// (no cudaMalloc once a training loop's shapes repeat). Every test skips without a CUDA device.
//
// Tolerances, each set from what the arithmetic can do and far below what a wrong kernel does (a
// wrong index, mask or missing term changes gradients by O(1) of their norm):
//  - f32 on the GPU vs f32 on the CPU: the same math with f32 accumulation (the CPU accumulates
//    row statistics in double) in other orders: ~1e-6 relative per op, ~1e-5 through the model.
//    Loss within 1e-5 relative; each gradient within 1e-4 of its norm.
//  - bf16 on the GPU vs f32 on the CPU: every stored activation is rounded to 8 significant bits
//    (2^-9 relative) and the weights are bf16 too; through two blocks that is ~1e-2 of a gradient.
//    Loss within 2%; each gradient's cosine with the CPU's above 0.99 and its norm within 10%.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "checkpoint/checkpoint.h"
#include "core/rng.h"
#include "cuda/cuda_fixture.h"
#include "nn/gpt.h"
#include "ops/elementwise.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "test_util.h"
#include "train/device.h"
#include "train/mfu.h"
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


class ModelCuda : public ::testing::TestWithParam<bool> {};  // false: GPT-2 style, true: Llama

void expect_f32_matches_the_cpu(const nn::GPTConfig& cfg) {
  Generator g1(5), g2(5), data(6);
  nn::GPT cpu(cfg, g1), gpu(cfg, g2);  // the same seed: the same initial weights
  train::place_model(gpu, kGpu, DType::F32);
  const Tensor in = random_tokens(3, 32, cfg.vocab_size, data), tg = random_tokens(3, 32, cfg.vocab_size, data);
  Tensor lc = cpu.loss(in, tg), lg = gpu.loss(in.to(kGpu), tg.to(kGpu));
  lc.backward();
  lg.backward();
  EXPECT_EQ(lg.dtype(), DType::F32);
  EXPECT_NEAR(lg.item(), lc.item(), 1e-5 * lc.item());
  ASSERT_EQ(cpu.parameters().size(), gpu.parameters().size());
  for (size_t i = 0; i < cpu.parameters().size(); ++i) {
    const auto& [name, pc] = cpu.parameters()[i];
    const Tensor& pg = gpu.parameters()[i].second;
    ASSERT_TRUE(pg.grad().defined()) << name;
    EXPECT_EQ(pg.grad().device(), kGpu) << name;
    EXPECT_LT(compare(pg.grad(), pc.grad()).rel, 1e-4) << name;
  }
}

TEST_P(ModelCuda, f32_loss_and_every_gradient_match_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  expect_f32_matches_the_cpu(tiny_gpu_model(GetParam()));
}

// GPT::loss of a host batch on a GPU model: uploaded once and checked from the host copies, so the
// forward and backward read nothing back; the same loss and gradients as the batch uploaded first.
TEST_P(ModelCuda, a_host_batch_is_checked_on_the_host_and_nothing_is_read_back) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const nn::GPTConfig cfg = tiny_gpu_model(GetParam());
  Generator g1(5), g2(5), data(6);
  nn::GPT a(cfg, g1), b(cfg, g2);
  train::place_model(a, kGpu, DType::BF16);
  train::place_model(b, kGpu, DType::BF16);
  const Tensor in = random_tokens(3, 32, cfg.vocab_size, data), tg = random_tokens(3, 32, cfg.vocab_size, data);
  const int64_t reads = cuda::sync_stats().copies_to_host;
  Tensor la = a.loss(in, tg);
  la.backward();
  EXPECT_EQ(cuda::sync_stats().copies_to_host, reads);
  Tensor lb = b.loss(in.to(kGpu), tg.to(kGpu));
  lb.backward();
  // The same computation twice; bf16's 2^-8 bounds any difference in summation order between the
  // runs, while a wrong id or target would move the loss by O(1).
  EXPECT_NEAR(la.item(), lb.item(), 4e-3 * lb.item());
  for (size_t i = 0; i < a.parameters().size(); ++i)
    EXPECT_LT(compare(a.parameters()[i].second.grad(), b.parameters()[i].second.grad()).rel, 1e-2)
        << a.parameters()[i].first;
}

void expect_bf16_follows_the_f32_cpu(const nn::GPTConfig& cfg) {
  Generator g1(7), g2(7), data(8);
  nn::GPT cpu(cfg, g1), gpu(cfg, g2);
  train::place_model(gpu, kGpu, DType::BF16);
  const Tensor in = random_tokens(3, 32, cfg.vocab_size, data), tg = random_tokens(3, 32, cfg.vocab_size, data);
  Tensor lc = cpu.loss(in, tg), lg = gpu.loss(in.to(kGpu), tg.to(kGpu));
  lc.backward();
  lg.backward();
  EXPECT_EQ(lg.dtype(), DType::F32);  // the policy: the loss is f32 even with bf16 activations
  EXPECT_NEAR(lg.item(), lc.item(), 0.02 * lc.item());
  for (size_t i = 0; i < cpu.parameters().size(); ++i) {
    const auto& [name, pc] = cpu.parameters()[i];
    const Tensor& pg = gpu.parameters()[i].second;
    ASSERT_TRUE(pg.grad().defined()) << name;
    EXPECT_EQ(pg.grad().dtype(), DType::BF16) << name;
    const Compare c = compare(pg.grad(), pc.grad());
    EXPECT_GT(c.cosine, 0.99) << name;
    EXPECT_NEAR(c.ratio, 1.0, 0.1) << name;
  }
}

TEST_P(ModelCuda, bf16_loss_and_every_gradient_follow_the_f32_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  expect_bf16_follows_the_f32_cpu(tiny_gpu_model(GetParam()));
}

// Qwen3's attention: two heads of 128 on a width of 128 (q and the output projection 256 wide),
// each head's q and k RMS-normalised by the norm kernels over rows of 128 before RoPE, the flash
// kernels at D 128; then the same heads without the norms, where attention reads them straight
// off the projections (packed or projected). Bounds as the plain model's (the header).
TEST_P(ModelCuda, qk_norm_and_a_head_dim_apart_from_the_width_follow_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  nn::GPTConfig cfg = tiny_gpu_model(GetParam());
  cfg.explicit_head_dim = 128;
  for (bool qk_norm : {true, false}) {
    SCOPED_TRACE(qk_norm ? "qk_norm" : "without qk_norm");
    cfg.qk_norm = qk_norm;
    expect_f32_matches_the_cpu(cfg);
    expect_bf16_follows_the_f32_cpu(cfg);
  }
}

// A mixture of experts in each block (nn/moe.h): the router's softmax read back, each expert's
// tokens gathered and its outputs scatter-added by the embedding kernels, the weights expanded over
// the rows, the balancing loss in the gradient. In f32 4 experts, top 2: the GPU's probabilities
// are the CPU's within ~1e-6, so every token goes where it goes on the CPU (a tie that close
// among 96 tokens is ~1e-3 likely) and the bounds are the plain model's. In bf16 a probability
// moves by 2^-9 and may send a token to another expert than the CPU's, whose gradients then differ
// by O(1) of that token's share: there 2 experts of 2 (no choice to differ) take the plain bounds,
// and 4 of 2 the loss's alone.
TEST_P(ModelCuda, a_mixture_of_experts_follows_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  nn::GPTConfig cfg = tiny_gpu_model(GetParam());
  cfg.n_expert = 4, cfg.expert_top_k = 2, cfg.mlp_hidden = 64;
  expect_f32_matches_the_cpu(cfg);
  {
    Generator g1(7), g2(7), data(8);
    nn::GPT cpu(cfg, g1), gpu(cfg, g2);
    train::place_model(gpu, kGpu, DType::BF16);
    const Tensor in = random_tokens(3, 32, cfg.vocab_size, data),
                 tg = random_tokens(3, 32, cfg.vocab_size, data);
    EXPECT_NEAR(gpu.loss(in.to(kGpu), tg.to(kGpu)).item(), cpu.loss(in, tg).item(),
                0.02 * cpu.loss(in, tg).item());
  }
  cfg.n_expert = 2;
  expect_bf16_follows_the_f32_cpu(cfg);
}

// A mixture with a shared expert behind its sigmoid gate (Qwen2-MoE's block; the gate a two-way
// softmax, ops::sigmoid) and, in the Llama style, Qwen2's biases on q, k and v: f32 within the
// plain bounds, 4 experts of 2 routed as on the CPU (the mixture test's reasoning above).
TEST_P(ModelCuda, a_shared_expert_and_qkv_biases_follow_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  nn::GPTConfig cfg = tiny_gpu_model(GetParam());
  cfg.n_expert = 4, cfg.expert_top_k = 2, cfg.mlp_hidden = 64;
  cfg.shared_expert_hidden = 96, cfg.shared_expert_gate = true;
  cfg.qkv_bias = GetParam();
  expect_f32_matches_the_cpu(cfg);
}

// A stick-breaking model (no positions) in bf16, head dim 64: the register-tile stick-breaking
// kernels (kernels/stick_mma.h) inside the model, with its head split and merge, log rem saved
// for the backward and the remainder term.
TEST(ModelCudaStickBreaking, bf16_loss_and_every_gradient_follow_the_f32_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  nn::GPTConfig cfg = tiny_gpu_model(false);
  cfg.position = nn::PositionKind::None;
  cfg.attention.kind = nn::AttentionKind::StickBreaking;
  cfg.attention.sb_remainder = true;
  expect_bf16_follows_the_f32_cpu(cfg);
}

// ALiBi (no position parameters), head dim 64: the flash kernels' kAlibi instances inside the
// model, off GPT-2's fused projection (the packed path) and off Llama's three (the projected one).
TEST_P(ModelCuda, bf16_alibi_loss_and_every_gradient_follow_the_f32_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  nn::GPTConfig cfg = tiny_gpu_model(GetParam());
  cfg.position = nn::PositionKind::ALiBi, cfg.attention.alibi = true;
  expect_bf16_follows_the_f32_cpu(cfg);
}

TEST_P(ModelCuda, bf16_gradients_accumulated_in_f32_buffers_are_the_sums_of_their_passes) {
  // Two backward passes into f32 gradient buffers (as the trainer's flat buffers take a bf16
  // model's micro-batches) against each pass alone, summed: every contribution that adds onto a
  // held gradient (gemm beta 1, the bias sums, the norms' dw and db, the embedding's scatter-add,
  // the learned positions' row sums) runs with zero = false in the second pass. The first pass's
  // gradient rounded to f32, then each contribution added with one rounding (a gemm's in its
  // epilogue, from its f32 sum): within a few f32 ulps of the sum of the separate passes, 1e-5 of
  // each gradient's largest element; a contribution dropped or written over is off by O(1) of it.
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const nn::GPTConfig cfg = tiny_gpu_model(GetParam());
  Generator g(9), data(10);
  nn::GPT gpu(cfg, g);
  train::place_model(gpu, kGpu, DType::BF16);
  const Tensor in1 = random_tokens(2, 32, cfg.vocab_size, data).to(kGpu),
               tg1 = random_tokens(2, 32, cfg.vocab_size, data).to(kGpu),
               in2 = random_tokens(2, 32, cfg.vocab_size, data).to(kGpu),
               tg2 = random_tokens(2, 32, cfg.vocab_size, data).to(kGpu);
  auto grads_after = [&](std::vector<std::pair<Tensor, Tensor>> batches) {
    for (const auto& [name, p] : gpu.parameters()) {
      Tensor(p).zero_grad();
      attach_grad(p, zeros(p.shape(), {DType::F32, kGpu}), /*zero=*/true);
    }
    for (const auto& [in, tg] : batches) gpu.loss(in, tg).backward();
    std::vector<std::vector<double>> out;
    for (const auto& [name, p] : gpu.parameters()) {
      EXPECT_EQ(p.grad().dtype(), DType::F32) << name;
      out.push_back(values(p.grad()));
    }
    return out;
  };
  const auto both = grads_after({{in1, tg1}, {in2, tg2}});
  const auto first = grads_after({{in1, tg1}}), second = grads_after({{in2, tg2}});
  for (size_t i = 0; i < both.size(); ++i) {
    double largest = 0, worst = 0;
    for (size_t j = 0; j < both[i].size(); ++j) {
      const double sum = first[i][j] + second[i][j];
      largest = std::max(largest, std::fabs(sum));
      worst = std::max(worst, std::fabs(both[i][j] - sum));
    }
    EXPECT_GT(largest, 0.0) << gpu.parameters()[i].first;
    EXPECT_LE(worst, 1e-5 * largest) << gpu.parameters()[i].first;
  }
}

// A bf16 position table's gradient is dy summed over the sequences straight into its f32 buffer:
// 1 + 2^-8 (sequences 0 and 1 of its row) is an f32 but not a bf16 (whose step at 1 is 2^-7), so
// a sum rounded to bf16 on its way would read 1.
TEST(AddRowsCuda, a_bf16_tables_gradient_is_summed_into_its_f32_buffer_unrounded) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 4, T = 3, C = 8, P = 5;
  Tensor table = zeros({P, C}, {DType::BF16, kGpu}).requires_grad_();
  attach_grad(table, zeros({P, C}, {DType::F32, kGpu}), /*zero=*/true);
  const Tensor x = zeros({B, T, C}, {DType::BF16, kGpu});
  std::vector<double> dy(size_t(B * T * C), 0.0);
  for (size_t i = 0; i < size_t(T * C); ++i) dy[i] = 1.0, dy[size_t(T * C) + i] = 1.0 / 256;
  const Tensor y = ops::add_rows(x, table, 2);
  backward(y, from_vector<double>(dy, {B, T, C}).to(DType::BF16).to(kGpu));
  const std::vector<double> g = values(table.grad());
  for (size_t i = 0; i < g.size(); ++i) {
    const bool read = i >= size_t(2 * C) && i < size_t((2 + T) * C);
    EXPECT_EQ(g[i], read ? 1.0 + 1.0 / 256 : 0.0) << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Styles, ModelCuda, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "llama" : "gpt2"; });

TEST(TrainCuda, fifty_bf16_steps_follow_the_cpu_loss_curve) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  testing::TempRun run;
  std::ostringstream log;
  Config c = run.config(50);
  c.model.n_embd = 128;  // head dimension 64, as the bf16 attention kernels need
  c.log.interval = 1;
  const train::TrainResult r = testing::train_cpu_then_cuda(c, log);
  EXPECT_EQ(r.steps, 50);
  EXPECT_GT(r.last_val_loss, 0.0) << "evaluation ran on the GPU";
  // The CPU curve falls from ln 257 = 5.55 to about half of that in 50 steps.
  const std::vector<double> b = testing::cuda_losses_following_the_cpu(c, 50);
  ASSERT_EQ(b.size(), 50u);
  EXPECT_LT(b.back(), 0.7 * b.front()) << "the GPU run learned";
  EXPECT_NE(log.str().find("cudaMalloc calls"), std::string::npos) << "reserved memory reported";
  // The GPU run's steps report the MFU where the device's peak is known (the emulator's is not),
  // the CPU run's never.
  const std::string name = cuda::device_name(0);
  const bool known = train::peak_bf16_flops(name) > 0;
  std::printf("[ device ] %s: bf16 peak %s\n", name.c_str(),
              known ? (std::to_string(train::peak_bf16_flops(name) / 1e12) + " TFLOP/s").c_str()
                    : "not known (no MFU)");
  EXPECT_FALSE(name.empty());
  EXPECT_EQ(testing::metric(run.dir / "ckpt" / "cuda" / "metrics.jsonl", "mfu").size(),
            known ? 50u : 0u);
  EXPECT_EQ(testing::metric(run.dir / "ckpt" / "cpu" / "metrics.jsonl", "mfu").size(), 0u);
}

TEST(TrainCuda, resumed_run_repeats_the_uninterrupted_one_bit_for_bit) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  testing::TempRun run;
  std::ostringstream log;
  Config c = run.config(20);
  c.model.n_embd = 128;  // head dimension 64, as the bf16 attention kernels need
  c.train.device = "cuda";
  c.model.dropout = 0.1;                  // the RNG state crosses the resume
  c.train.total_batch_size = 2 * 8 * 16;  // two micro-batches per step
  c.checkpoint.interval = 5, c.eval.interval = 10, c.log.interval = 1;
  // Samples after steps 10 and 20 (train/samples.h): generation through the KV cache on the bf16
  // model the run trains, which the resumed run must repeat too.
  c.log.sample_interval = 10, c.log.sample_tokens = 12, c.log.sample_prompt = "in the ";
  // The weights' moving average (train/ema.h): f32 beside the bf16 weights on the device, scored
  // at each evaluation, saved and resumed.
  c.train.ema_decay = 0.9;
  c.train.run_name = "full";
  const train::TrainResult a = train::run_training(c, log);
  // The interrupted run saves in the background (checkpoint.async): its device state copied to
  // the host at each save, the file written by a thread that makes no CUDA call, the resume read
  // from it.
  Config split = c;
  split.checkpoint.async = true;
  const train::TrainResult b = testing::run_split(split, 10, log);
  ASSERT_EQ(b.steps, 20);
  EXPECT_NE(log.str().find("written in the background"), std::string::npos) << log.str();
  const CheckpointData x = load_checkpoint(a.last_checkpoint),
                       y = load_checkpoint(b.last_checkpoint);
  ASSERT_EQ(x.model.size(), y.model.size());
  for (size_t i = 0; i < x.model.size(); ++i) {
    EXPECT_EQ(x.model[i].second.dtype(), DType::BF16) << x.model[i].first;
    EXPECT_EQ(testing::bytes(x.model[i].second), testing::bytes(y.model[i].second))
        << x.model[i].first;
  }
  // bf16 weights: the f32 masters are saved beside m and v, and came back exactly.
  int masters = 0;
  ASSERT_EQ(x.optimizer.size(), y.optimizer.size());
  for (size_t i = 0; i < x.optimizer.size(); ++i) {
    masters += x.optimizer[i].first.ends_with("/master");
    EXPECT_EQ(testing::bytes(x.optimizer[i].second), testing::bytes(y.optimizer[i].second))
        << x.optimizer[i].first;
  }
  EXPECT_EQ(masters, int(x.model.size()));
  size_t averaged = 0;
  ASSERT_EQ(x.trainer_tensors.size(), y.trainer_tensors.size());
  for (size_t i = 0; i < x.trainer_tensors.size(); ++i) {
    const auto& [name, t] = x.trainer_tensors[i];
    if (!name.starts_with("ema/")) continue;
    ++averaged;
    EXPECT_EQ(t.dtype(), DType::F32) << name;
    EXPECT_EQ(testing::bytes(t), testing::bytes(y.trainer_tensors[i].second)) << name;
  }
  EXPECT_EQ(averaged, x.model.size());
  const fs::path ma = run.dir / "ckpt" / "full" / "metrics.jsonl";
  const fs::path mb = run.dir / "ckpt" / "split" / "metrics.jsonl";
  EXPECT_EQ(testing::metric(ma, "loss"), testing::metric(mb, "loss"));
  EXPECT_EQ(testing::metric(ma, "val_loss"), testing::metric(mb, "val_loss"));
  EXPECT_EQ(testing::metric(ma, "val_loss_ema").size(), 2u);
  EXPECT_EQ(testing::metric(ma, "val_loss_ema"), testing::metric(mb, "val_loss_ema"));
  const std::map<int64_t, std::string> sa = testing::samples_in(ma), sb = testing::samples_in(mb);
  ASSERT_EQ(sa.size(), 2u) << log.str();
  for (const auto& [step, text] : sa)
    EXPECT_EQ(text.rfind("in the ", 0), 0u) << step << ": " << text;
  EXPECT_EQ(sa, sb);
}

TEST(TrainCuda, steady_state_training_steps_call_cudaMalloc_zero_times) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  if (!cuda::caching_enabled()) GTEST_SKIP() << "TESSERA_CUDA_CACHE=0: the cache is off";
  const nn::GPTConfig cfg = tiny_gpu_model(false);
  Generator g(9), data(10);
  nn::GPT model(cfg, g);
  train::place_model(model, kGpu, DType::BF16);
  AdamW opt(named_params(model.parameters()), {.lr = 1e-3});
  const Tensor in = random_tokens(4, 32, cfg.vocab_size, data).to(kGpu);
  const Tensor tg = random_tokens(4, 32, cfg.vocab_size, data).to(kGpu);
  auto step = [&] {
    Tensor loss = model.loss(in, tg);
    loss.backward();
    clip_grad_norm(opt.params(), 1.0);
    opt.step();
    opt.zero_grad();
    return loss.item();
  };
  for (int i = 0; i < 3; ++i) step();  // the first steps fill the cache
  const cuda::DeviceMemoryStats before = cuda::device_memory_stats(0);
  const int64_t held = memory_stats(kGpu).current_bytes;
  double first = 0, last = 0;
  for (int i = 0; i < 10; ++i) (i == 0 ? first : last) = step();
  const cuda::DeviceMemoryStats after = cuda::device_memory_stats(0);
  EXPECT_EQ(after.cuda_malloc_calls, before.cuda_malloc_calls);
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes);
  EXPECT_GT(after.cache_hits, before.cache_hits + 10 * 20) << "every step allocates many blocks";
  EXPECT_EQ(memory_stats(kGpu).current_bytes, held) << "the step frees what it allocates";
  EXPECT_LT(last, first) << "the steps trained";
}

TEST(TrainCuda, freed_blocks_are_reused_and_empty_cache_returns_them) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  if (!cuda::caching_enabled()) GTEST_SKIP() << "TESSERA_CUDA_CACHE=0: the cache is off";
  cuda::empty_cache(0);
  const cuda::DeviceMemoryStats s0 = cuda::device_memory_stats(0);
  { Tensor t = Tensor::empty({3 << 20}, {DType::F32, kGpu}); }  // 12 MiB, freed at once
  const cuda::DeviceMemoryStats s1 = cuda::device_memory_stats(0);
  EXPECT_EQ(s1.cuda_malloc_calls, s0.cuda_malloc_calls + 1);
  EXPECT_GE(s1.cached_bytes, s0.cached_bytes + (12 << 20));
  // 11.5 MiB falls in the same size class (eight per power of two above 1 MiB: 12 MiB here).
  { Tensor t = Tensor::empty({(23 << 20) / 8}, {DType::F32, kGpu}); }
  const cuda::DeviceMemoryStats s2 = cuda::device_memory_stats(0);
  EXPECT_EQ(s2.cuda_malloc_calls, s1.cuda_malloc_calls);
  EXPECT_EQ(s2.cache_hits, s1.cache_hits + 1);
  cuda::empty_cache(0);
  const cuda::DeviceMemoryStats s3 = cuda::device_memory_stats(0);
  EXPECT_EQ(s3.cached_bytes, 0);
  EXPECT_EQ(s3.reserved_bytes, s3.in_use_bytes);
  EXPECT_GT(s3.cuda_free_calls, s2.cuda_free_calls);
}

#ifdef TESSERA_CUDA_EMU
// A request whose size class does not fit but whose own size does (the class rounds 11 MiB + 4
// bytes up to 12 MiB) is allocated at its own size, and freed, not cached, when released: the
// emulator's TESSERA_EMU_MALLOC_MAX plays the nearly full GPU.
TEST(TrainCuda, a_request_that_fits_only_unrounded_is_allocated_unrounded) {
  if (!cuda::caching_enabled()) GTEST_SKIP() << "TESSERA_CUDA_CACHE=0: the cache is off";
  cuda::empty_cache(0);
  const cuda::DeviceMemoryStats s0 = cuda::device_memory_stats(0);
  {
    const int64_t bytes = (11 << 20) + 4;
    testing::ScopedEnv full{{"TESSERA_EMU_MALLOC_MAX", std::to_string(bytes).c_str()}};
    Tensor t = Tensor::empty({bytes / 4}, {DType::F32, kGpu});
    const cuda::DeviceMemoryStats s1 = cuda::device_memory_stats(0);
    EXPECT_EQ(s1.in_use_bytes - s0.in_use_bytes, bytes);
  }
  const cuda::DeviceMemoryStats s2 = cuda::device_memory_stats(0);
  EXPECT_EQ(s2.cached_bytes, s0.cached_bytes);
  EXPECT_EQ(s2.reserved_bytes, s0.reserved_bytes);
  EXPECT_EQ(s2.cuda_free_calls, s0.cuda_free_calls + 1);
}
#endif

}  // namespace
}  // namespace tessera
