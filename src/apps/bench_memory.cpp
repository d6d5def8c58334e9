// build/bench_memory: peak memory and time of one training step on the same GPT with AdamW,
// LOMO and AdaLomo (optim/lomo.h), the last two also with norm clipping (two backward passes), and
// with LoRA and QLoRA (peft/lora.h: AdamW on rank-r adapters of every block Linear over a frozen
// base, in f32 or in NF4 with and without double quantisation).
//
//   build/bench_memory                                     # 8 x 512, GPT-2 vocabulary, B 1, T 64
//   build/bench_memory --n-layer 4 --n-embd 256 --batch 8 --recompute=false --lora-rank 64
//   build/bench_memory --device cuda                       # a CUDA build, on cuda:0
//
// A step is what a fine-tuning loop runs: forward, backward, then for AdamW clip_grad_norm(1.0),
// step() and zero_grad() (gradients dropped right after the update, AdamW's best case); for
// LOMO/AdaLomo backward_step(), which updates inside backward. Each optimizer gets a fresh model
// (same seed, same batch of random tokens), one warmup step, then one step between
// reset_peak_memory() and memory_stats(): "peak" is the most bytes the tessera CPU allocator held
// at once during that step, counted from before the model was built, so it includes parameters,
// optimizer state, gradients, activations and every temporary tensor (not std::vector scratch,
// BLAS workspace or the process itself). Then --steps steps are timed.
//
// --device cuda places every model as train.device cuda does (train/device.h: bf16 weights, f32
// masters for AdamW and LOMO, f32 adapters over a bf16 or NF4 base, built on the host first) and
// adds the caching allocator's view: "reserved" is what it held from the driver at the end of the
// measured step after empty_cache() before the row began. The cache only grows between
// empty_cache() calls, so that is the row's high-water mark of device memory, fragmentation and
// size-class rounding included (what nvidia-smi would show, less the CUDA context).
#include <chrono>
#include <cstdio>
#include <cxxopts.hpp>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "apps/gpt_shape_flags.h"
#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "config/cli.h"
#include "core/error.h"
#include "core/storage.h"
#include "core/tensor.h"
#include "nn/gpt.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/lomo.h"
#include "peft/lora.h"
#include "train/device.h"

using namespace tessera;

namespace {

struct Row {
  std::string name;
  int64_t peak = 0, params = 0, grads = 0, state = 0, reserved = 0;
  double ms = 0;
};

int64_t bytes_of(const std::vector<NamedParam>& ps) {
  int64_t b = 0;
  for (const auto& np : ps) b += int64_t(np.param.nbytes());
  return b;
}

int64_t grad_bytes(const std::vector<NamedParam>& ps) {
  int64_t b = 0;
  for (const auto& np : ps)
    if (np.param.grad().defined()) b += int64_t(np.param.grad().nbytes());
  return b;
}

// The model's placement for --device: nothing on the CPU; bf16 on cuda:0 (train/device.h).
void place(nn::GPT& model, Device dev) {
  if (dev.is_cuda()) train::place_model(model, dev, DType::BF16);
}

// One optimizer's run: `setup` places the model (place()), builds the optimizer over its
// parameters, fills row.params and row.state and returns the step function (which records the
// gradient peak into row.grads).
using StepFn = std::function<void()>;
Row measure(const std::string& name, const nn::GPTConfig& cfg, int steps, Device dev,
            const std::function<StepFn(nn::GPT&, Row&)>& setup) {
  Row row;
  row.name = name;
  if (dev.is_cuda()) cuda::empty_cache(dev.index);  // reserved grows from here: see the header
  const int64_t base = memory_stats(dev).current_bytes;
  {
    Generator gen(1337);
    nn::GPT model(cfg, gen);
    StepFn step = setup(model, row);
    step();  // warmup: the measured and timed steps start from a warm heap
    reset_peak_memory(dev);
    step();
    row.peak = memory_stats(dev).peak_bytes - base;
    if (dev.is_cuda()) row.reserved = cuda::device_memory_stats(dev.index).reserved_bytes;
    const auto t0 = std::chrono::steady_clock::now();
    for (int s = 0; s < steps; ++s) step();
    if (dev.is_cuda()) cuda::synchronize(dev.index);
    const auto t1 = std::chrono::steady_clock::now();
    row.ms = std::chrono::duration<double, std::milli>(t1 - t0).count() / steps;
  }
  return row;
}

std::string mib(int64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", double(b) / (1024.0 * 1024.0));
  return buf;
}

int run(int argc, char** argv) {
  cxxopts::Options options("bench_memory",
                           "Peak memory and time of a training step: AdamW vs LOMO vs AdaLomo");
  add_gpt_shape_flags(options,
                      {.n_layer = 8, .n_embd = 512, .n_head = 8, .vocab = 50257, .seq = 64});
  // clang-format off
  options.add_options()
      ("batch", "sequences per step B", cxxopts::value<int64_t>()->default_value("1"), "B")
      ("recompute", "activation checkpointing per block",
       cxxopts::value<bool>()->default_value("true"), "BOOL")
      ("untied", "separate output head instead of tied embeddings")
      ("steps", "timed steps per optimizer", cxxopts::value<int>()->default_value("3"), "N")
      ("lora-rank", "rank of the LoRA / QLoRA adapters", cxxopts::value<int64_t>()->default_value("16"), "R")
      ("device", "cpu, or cuda (cuda:0, the train.device cuda placement)",
       cxxopts::value<std::string>()->default_value("cpu"), "DEV")
      ("h,help", "print this help");
  // clang-format on
  cxxopts::ParseResult args;
  if (!parse_flags_or_help(options, argc, argv, args)) return 0;

  nn::GPTConfig cfg = gpt_shape(args);
  cfg.recompute = args["recompute"].as<bool>();
  cfg.tie_embeddings = !args.count("untied");
  cfg.validate();
  const int64_t B = args["batch"].as<int64_t>(), T = cfg.block_size;
  const int steps = args["steps"].as<int>();
  TESSERA_CHECK(B > 0 && steps > 0, "command line: --batch and --steps must be positive");
  const std::string device = args["device"].as<std::string>();
  TESSERA_CHECK(device == "cpu" || device == "cuda", "command line: --device must be cpu or cuda, "
                "got '", device, "'");
  TESSERA_CHECK(device == "cpu" || cuda::available(), "command line: --device cuda, but no CUDA "
                "device is usable (tessera built without CUDA, or none visible to this process)");
  const Device dev = device == "cuda" ? Device::cuda(0) : Device::cpu();

  // Random tokens: memory and time do not depend on what the model reads.
  Generator data_gen(7);
  std::vector<float> u = rand({2 * B * T}, data_gen).to_vector<float>();
  std::vector<int32_t> xs(size_t(B * T)), ys(size_t(B * T));
  for (size_t i = 0; i < xs.size(); ++i) {
    xs[i] = std::min(int32_t(u[i] * float(cfg.vocab_size)), int32_t(cfg.vocab_size - 1));
    ys[i] =
        std::min(int32_t(u[xs.size() + i] * float(cfg.vocab_size)), int32_t(cfg.vocab_size - 1));
  }
  const Tensor x = from_vector(xs, {B, T}).to(dev), y = from_vector(ys, {B, T}).to(dev);
  const double lr = 1e-5;  // small: the weights barely move between the measured steps

  std::vector<Row> rows;
  rows.push_back(measure("adamw", cfg, steps, dev, [&](nn::GPT& m, Row& r) {
    place(m, dev);
    auto params = std::make_shared<std::vector<NamedParam>>(named_params(m.parameters()));
    r.params = bytes_of(*params);
    auto opt = std::make_shared<AdamW>(*params, AdamWOptions{.lr = lr, .weight_decay = 0.1});
    for (const StateEntry& e : opt->state()) {
      r.state += int64_t(e.m.nbytes() + e.v.nbytes());
      if (e.master.data_ptr() != m.parameter(e.name).data_ptr())
        r.state += int64_t(e.master.nbytes());
    }
    return StepFn([&m, params, &r, &x, &y, opt, lr] {
      Tensor loss = m.loss(x, y);
      backward(loss);
      r.grads = std::max(r.grads, grad_bytes(*params));  // every gradient is alive here
      clip_grad_norm(*params, 1.0);
      opt->step(lr);
      opt->zero_grad();
    });
  }));
  for (const char* name : {"lomo", "adalomo"}) {
    for (const double max_norm : {0.0, 1.0}) {
      const std::string label = std::string(name) + (max_norm > 0 ? " +clip (2 passes)" : "");
      rows.push_back(measure(label, cfg, steps, dev, [&](nn::GPT& m, Row& r) {
        place(m, dev);
        r.params = bytes_of(named_params(m.parameters()));
        auto opt = std::make_shared<FusedOptimizer>(
            named_params(m.parameters()),
            LomoOptions{.name = name, .weight_decay = 0.1, .max_norm = max_norm});
        for (const auto& [key, t] : opt->state()) r.state += int64_t(t.nbytes());
        return StepFn([&m, &r, &x, &y, opt, lr] {
          opt->backward_step(m.loss(x, y), lr);
          r.grads = std::max(r.grads, opt->peak_grad_bytes());
        });
      }));
    }
  }

  const int64_t rank = args["lora-rank"].as<int64_t>();
  for (const char* quantize : {"none", "nf4", "nf4-dq"}) {
    const std::string label = std::string(quantize) == "none" ? "lora r" + std::to_string(rank)
                                                              : std::string("qlora ") + quantize;
    rows.push_back(measure(label, cfg, steps, dev, [&](nn::GPT& m, Row& r) {
      Generator g(2);
      // Built on the host in f32 (NF4 codes from the f32 weights), then placed, as the trainer does.
      auto lora = std::make_shared<peft::Lora>(
          m, peft::LoraOptions{.rank = rank, .targets = peft::parse_targets("all"),
                               .quantize = quantize}, g);
      place(m, dev);
      lora->place(dev);
      auto adapters = std::make_shared<std::vector<NamedParam>>(named_params(lora->parameters()));
      auto opt = std::make_shared<AdamW>(*adapters, AdamWOptions{.lr = lr, .weight_decay = 0});
      r.params = lora->base_bytes() + lora->adapter_bytes();
      for (const StateEntry& e : opt->state()) r.state += int64_t(e.m.nbytes() + e.v.nbytes());
      return StepFn([&m, &r, &x, &y, lora, adapters, opt, lr] {
        backward(m.loss(x, y));
        r.grads = std::max(r.grads, grad_bytes(*adapters));
        clip_grad_norm(*adapters, 1.0);
        opt->step(lr);
        opt->zero_grad();
      });
    }));
  }

  const int64_t n_params = rows[0].params / (dev.is_cuda() ? 2 : 4);  // bf16 on CUDA, else f32
  std::cout << "GPT " << cfg.n_layer << " layers x " << cfg.n_embd << " channels, " << cfg.n_head
            << " heads, vocab " << cfg.vocab_size << ", "
            << (cfg.tie_embeddings ? "tied" : "untied") << " embeddings, " << n_params
            << " parameters (" << (dev.is_cuda() ? "bf16 on cuda:0" : "f32 on the CPU") << "); batch "
            << B << " x " << T << " tokens; recompute "
            << (cfg.recompute ? "on" : "off") << "\n"
            << "peak: tessera " << (dev.is_cuda() ? "CUDA" : "CPU")
            << " allocator high-water mark of tensor bytes during one step (parameters, optimizer "
               "state, gradients, activations, temporaries)\n"
            << (dev.is_cuda() ? "reserved: the caching allocator's device memory at the end of "
                                "the row's measured step (its high-water mark for the row)\n"
                              : "")
            << "grads: most gradient bytes alive at once; state: optimizer state bytes\n\n";
  std::printf("%-24s %12s %12s %12s %12s %10s %12s", "method", "peak MiB", "params MiB",
              "grads MiB", "state MiB", "ms/step", "peak/AdamW");
  if (dev.is_cuda()) std::printf(" %14s %16s", "reserved MiB", "reserved/AdamW");
  std::printf("\n");
  for (const Row& r : rows) {
    std::printf("%-24s %12s %12s %12s %12s %10.1f %12.3f", r.name.c_str(), mib(r.peak).c_str(),
                mib(r.params).c_str(), mib(r.grads).c_str(), mib(r.state).c_str(), r.ms,
                double(r.peak) / double(rows[0].peak));
    if (dev.is_cuda())
      std::printf(" %14s %16.3f", mib(r.reserved).c_str(),
                  double(r.reserved) / double(rows[0].reserved));
    std::printf("\n");
  }
  const Row& lora = rows[rows.size() - 3];
  for (size_t i = rows.size() - 2; i < rows.size(); ++i)
    std::printf("%s step time / %s step time: %.2fx\n", rows[i].name.c_str(), lora.name.c_str(),
                rows[i].ms / lora.ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_main("bench_memory", [&] { return run(argc, argv); });
}
