// build/bench_gpu --config configs/gpt2-124m.yaml --batch-size 8 [--steps 20] [--warmup 5]
//                 [--json FILE] [--no-kernels] [--profile N] [--device cuda|cpu] [--documents L]
//                 [--muon]
//
// A benchmark, not a test (speed is measured here, never asserted in a test): the time of one
// training step of the configured model on cuda:0 under the mixed-precision policy (train/device.h:
// bf16 weights and activations, f32 master weights and optimizer state), and the times of the fused
// kernels that step uses. scripts/bench_gpu.sh runs it beside its PyTorch twin
// (scripts/bench_gpu.py) and prints both.
//
// One step is what `train` runs for one micro-batch of optim.name adamw on one rank: forward + loss
// (read back to the host), backward into flat gradient buffers, the global gradient norm (read
// back: the spike check needs it) and clipping (max norm 1), one flat AdamW launch (lr 6e-4, betas
// 0.9/0.95, weight decay 0.1 on matrices), zero_grad. The batch is a fixed random (B, T) batch
// on the host, uploaded by GPT::loss as in train; reading shards is not timed. Timed steps follow
// warm-up steps; each step is bracketed by device synchronisation and the median is reported, with
// the number of times per step the host waited to read from the device (backend/cuda.h SyncStats).
//
// --documents L puts a document separator at every L-th position of each row and runs the model
// with attention within documents (data.windows: documents, ops/documents.h), against the same
// step without (the figures' only difference): on CUDA softmax takes every document in one launch
// a pass (kernels/doc_tiles.h; TESSERA_FLASH_DOCUMENTS=views, a launch a document), elsewhere a
// kernel call a document.
//
// --muon updates the blocks' matrices by Muon (optim.name muon, optim/muon.h: its Newton-Schulz
// gemms in f32) and the rest by AdamW, as train does: the step's cost of Muon at this batch.
//
// --profile N runs N more steps with the kernel profile on (backend/profile.h) and prints where
// their device time went, kernel by kernel (the timed steps above run without it). --device cpu
// runs the same step on the CPU reference backend in f32 (a dry run of this program and of the
// profile where there is no GPU; its figures say nothing about a GPU).
//
// FLOPs per token: 6 N + 12 L H Q T (PaLM, Chowdhery et al. 2022, appendix B; llm.c's and nanoGPT's
// estimate_mfu): N counts every parameter but the position embedding (the tied token embedding
// counts: it is also the output head's matmul), L layers, H heads of dimension Q, T the sequence
// length; the attention term is NOT halved for causal masking. MFU divides the achieved FLOP rate
// by the H100 SXM's dense bf16 peak, 989 TFLOP/s (NVIDIA's datasheet; ~800 is reached on a large
// matmul).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "backend/kernels.h"
#include "backend/profile.h"
#include "config/cli.h"
#include "core/rng.h"
#include "distributed/communicator.h"
#include "nn/gpt.h"
#include "nn/unfused.h"
#include "ops/ops.h"
#include "optim/flat.h"
#include "optim/flat_adamw.h"
#include "train/device.h"
#include "train/mfu.h"
#include "train/options.h"

namespace {

using namespace tessera;
using Clock = std::chrono::steady_clock;

constexpr double kPeakFlops = 989e12;  // H100 SXM dense bf16

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Mean time of one call of f over reps calls, after warm-up calls; the device is synchronised
// before the clock starts and after the last call.
double time_ms(const std::function<void()>& f, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) f();
  cuda::synchronize(0);
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) f();
  cuda::synchronize(0);
  return ms_since(t0) / reps;
}

std::string json_num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

struct KernelRow {
  std::string name, shape;
  double ms = NAN;
  double bytes = 0;  // the fewest bytes the kernel must move (each input read, output written once)
  std::string note;
};

KernelRow row(std::string name, std::string shape, double bytes) {
  KernelRow r;
  r.name = std::move(name), r.shape = std::move(shape), r.bytes = bytes;
  return r;
}

// The fused kernels of a GPT-2 step at its shapes: rows = B T, C channels, V vocabulary, hidden 4C.
std::vector<KernelRow> bench_kernels(int64_t rows, int64_t C, int64_t V, int64_t params) {
  const Device dev = Device::cuda(0);
  const Options bf{DType::BF16, dev}, f32{DType::F32, dev};
  Generator g(7);
  std::vector<KernelRow> out;
  auto run = [&](KernelRow r, const std::function<void()>& f) {
    try {
      r.ms = time_ms(f, 3, 20);
    } catch (const std::exception& e) {
      r.note = e.what();
    }
    out.push_back(r);
  };
  const auto shape = [](int64_t a, int64_t b) {
    return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
  };
  {
    Tensor x = randn({rows, C}, g).to(DType::BF16).to(dev), w = ones({C}, bf), b = zeros({C}, bf);
    Tensor y = Tensor::empty({rows, C}, bf), dy = randn({rows, C}, g).to(DType::BF16).to(dev);
    Tensor mean = Tensor::empty({rows}, f32), rstd = Tensor::empty({rows}, f32);
    Tensor dx = Tensor::empty({rows, C}, bf), dw = Tensor::empty({C}, bf),
           db = Tensor::empty({C}, bf);
    run(row("layernorm_fwd", shape(rows, C), 4.0 * rows * C), [&] {
      TESSERA_KERNEL(x, layernorm_forward)(y, mean, rstd, x, w, b, 1e-5);
    });
    run(row("layernorm_bwd", shape(rows, C), 6.0 * rows * C), [&] {
      TESSERA_KERNEL(x, layernorm_backward)(dx, dw, db, dy, x, w, mean, rstd, {});
    });
  }
  {
    Tensor x = randn({rows, 4 * C}, g).to(DType::BF16).to(dev);
    Tensor y = Tensor::empty({rows, 4 * C}, bf), dx = Tensor::empty({rows, 4 * C}, bf);
    run(row("gelu_fwd", shape(rows, 4 * C), 4.0 * rows * 4 * C), [&] {
      TESSERA_KERNEL(x, gelu_forward)(y, x);
    });
    run(row("gelu_bwd", shape(rows, 4 * C), 6.0 * rows * 4 * C), [&] {
      TESSERA_KERNEL(x, gelu_backward)(dx, y, x);
    });
  }
  {
    // The model's logits: the vocabulary padded to a multiple of 64 columns (GPT::logit_columns).
    const int64_t Vp = (V + 63) / 64 * 64;
    Tensor logits = randn({rows, Vp}, g).to(DType::BF16).to(dev);
    std::vector<int32_t> t(static_cast<size_t>(rows));
    for (size_t i = 0; i < t.size(); ++i) t[i] = int32_t((i * 7919) % size_t(V));
    Tensor targets = from_vector<int32_t>(t, {rows}, {DType::I32, dev});
    Tensor losses = Tensor::empty({rows}, f32), lse = Tensor::empty({rows}, f32);
    Tensor dlosses = full({rows}, 1.0 / double(rows), f32), dlogits = Tensor::empty({rows, Vp}, bf);
    run(row("cross_entropy_fwd", shape(rows, Vp), 2.0 * rows * V), [&] {
      TESSERA_KERNEL(logits, cross_entropy_forward)(losses, lse, logits, targets, -100, V);
    });
    run(row("cross_entropy_bwd", shape(rows, Vp), 4.0 * rows * Vp), [&] {
      TESSERA_KERNEL(logits, cross_entropy_backward)(dlogits, dlosses, logits, lse, targets, -100,
                                                     V);
    });
    // The fused classifier (the step's way): both in one kernel, the row's second read from L2
    // at best, so its time against the two rows' sum says what the fusion saves.
    run(row("cross_entropy_fused", shape(rows, Vp), 2.0 * rows * V + 2.0 * rows * Vp), [&] {
      TESSERA_KERNEL(logits, cross_entropy_fused)
      (losses, lse, dlogits, dlosses, logits, targets, -100, V);
    });
  }
  // A Linear's weight and bias gradients into f32 buffers, at c_fc's shape (N 4C, K C) and
  // c_proj's (N C, K 4C): the bias summed by the weight gradient's gemm (cuBLASLt's BGRADB
  // epilogue, the step's way) against the gemm then sum_dim (a second read of dy). If the fused
  // row is the slower, the epilogue costs the gemm more than the pass it saves.
  struct ParamGrad {
    const char* layer;
    int64_t N, K;
  };
  for (const auto& [layer, N, K] : {ParamGrad{"fc", 4 * C, C}, ParamGrad{"proj", C, 4 * C}}) {
    Tensor dy = randn({rows, N}, g).to(DType::BF16).to(dev),
           x = randn({rows, K}, g).to(DType::BF16).to(dev);
    Tensor dw = Tensor::empty({N, K}, f32), db = Tensor::empty({N}, f32);
    const std::string what =
        "(" + std::to_string(N) + ", " + std::to_string(K) + ") <- " + shape(rows, N);
    const double bytes = 2.0 * rows * (N + K) + 4.0 * (N * K + N);
    const cuda::BlasStats before = cuda::blas_stats();
    run(row(std::string("dw_db_bgrad_") + layer, what, bytes), [&] {
      TESSERA_KERNEL(dy, linear_param_backward)(dw, db, dy, x, false, false);
    });
    if (out.back().note.empty() && cuda::blas_stats().bgrad_epilogue == before.bgrad_epilogue)
      out.back().note = "cuBLASLt offered no BGRADB algorithm: the row is the fallback's";
    run(row(std::string("dw_db_sum_dim_") + layer, what, bytes + 2.0 * rows * N), [&] {
      TESSERA_KERNEL(dy, gemm)(dw, dy, x, true, false, 1.0, 0.0);
      TESSERA_KERNEL(dy, sum_dim)(db, dy, 1, rows, N, false);
    });
  }
  {
    // One flat tensor holding as many elements as the model: bf16 weights and gradient, f32
    // master, m and v -- 28 bytes per element (the training step runs one launch per parameter).
    Tensor p = randn({params}, g).to(DType::BF16).to(dev);
    Tensor master = p.to(DType::F32), m = zeros({params}, f32), v = zeros({params}, f32);
    Tensor grad = randn({params}, g).to(DType::BF16).to(dev);
    run(row("adamw_step", "(" + std::to_string(params) + ")", 28.0 * double(params)), [&] {
      TESSERA_KERNEL(p, adamw_step)(p, master, m, v, grad, 6e-4, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.5);
    });
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  return run_main("bench_gpu", [&] {
    cxxopts::Options options("bench_gpu", "Time a training step and the fused kernels on cuda:0");
    options.add_options()("steps", "timed steps", cxxopts::value<int>()->default_value("20"))(
        "warmup", "untimed steps first", cxxopts::value<int>()->default_value("5"))(
        "json", "write the results here as one JSON object", cxxopts::value<std::string>())(
        "no-kernels", "skip the per-kernel timings")(
        "profile", "profiled steps after the timed ones (0: none)",
        cxxopts::value<int>()->default_value("0"))(
        "unfused",
        "time the step without its fusions (split attention heads, unpadded logits, "
        "bias and GELU after the gemm, bias gradients summed apart, the loss's gradient in its "
        "backward): the before of a before-and-after")(
        "documents",
        "rows of documents of L tokens (a separator every L positions), attended within each "
        "(0: none)",
        cxxopts::value<int64_t>()->default_value("0"))(
        "muon", "Muon for the blocks' matrices, AdamW for the rest (optim.name muon)");
    CommandLine cl = parse_command_line(argc, argv, options, /*config_required=*/false);
    if (cl.help) {
      std::cout << options.help() << "\n";
      return 0;
    }
    const Config& cfg = cl.config;
    // cuda unless --device cpu is given (the config's train.device is not read: a benchmark of the
    // GPU step should not run on the CPU because a config says so).
    const bool on_gpu = !(cl.args.count("device") && cl.args["device"].as<std::string>() == "cpu");
    TESSERA_CHECK(!on_gpu || cuda::available(), "no CUDA device (or tessera was built without CUDA)");
    const int steps = cl.args["steps"].as<int>(), warmup = cl.args["warmup"].as<int>();
    const int profiled = cl.args["profile"].as<int>();
    TESSERA_CHECK(steps > 0 && warmup >= 0 && profiled >= 0,
                  "bench_gpu: --steps must be positive, --warmup and --profile not negative");
    const Device dev = on_gpu ? Device::cuda(0) : Device::cpu();
    const auto sync = [&] {
      if (on_gpu) cuda::synchronize(0);
    };
    const nn::GPTConfig mc = train::model_config(cfg.model, cfg.train);
    const int64_t B = cfg.train.batch_size, T = cfg.sequence_length();

    Generator init(uint64_t(cfg.train.seed));
    nn::GPT model(mc, init);
    train::place_model(model, dev, on_gpu ? DType::BF16 : DType::F32);
    // --unfused: the step as it ran before attention read the fused projection in place, the
    // logits were padded, the bias and GELU rode the gemm, the bias gradient the weight
    // gradient's gemm (nn/unfused.h) and the loss's forward computed its gradient.
    const bool is_unfused = cl.args.count("unfused") > 0;
    if (is_unfused) model.set_hook(&nn::unfused_linears());
    const int64_t documents = cl.args["documents"].as<int64_t>();
    TESSERA_CHECK(documents >= 0, "bench_gpu: --documents must not be negative, got ", documents);
    // The separator: the last id, which no other position then holds.
    const int32_t separator = int32_t(mc.vocab_size - 1);
    if (documents > 0) model.set_document_separator(separator);
    const int64_t n_flop_params = train::flop_parameters(model);
    const double flops_per_token = train::training_flops_per_token(model, T);
    // The optimizer train builds for optim.name adamw on one rank (train/trainer.cpp): parameters
    // and gradients in flat buffers, one AdamW launch, the gradient norm clipped inside.
    std::unique_ptr<dist::Communicator> comm =
        dist::make_communicator({.backend = "single", .init = "", .timeout_s = 300, .device = dev});
    const bool muon = cl.args.count("muon") > 0;
    FlatParams flat(named_params(model.parameters()), FlatOptions{});
    // GPT-2's hyperparameters (llm.c's); Muon's settings train's defaults.
    OptimConfig oc;
    oc.name = muon ? "muon" : "adamw";
    oc.lr = 6e-4, oc.beta1 = 0.9, oc.beta2 = 0.95, oc.eps = 1e-8, oc.weight_decay = 0.1;
    oc.grad_clip = 1.0;
    FlatAdamW opt(flat, *comm, train::flat_adamw_options(oc, mc, false));

    Generator data(1234);
    const std::vector<float> u = rand({2 * B * T}, data).to_vector<float>();
    std::vector<int32_t> ids(u.size());
    for (size_t i = 0; i < u.size(); ++i) {
      ids[i] = std::min(int32_t(mc.vocab_size - 1), int32_t(double(u[i]) * double(mc.vocab_size)));
      if (documents > 0) {
        const int64_t t = int64_t(i) % T;  // inputs are the first B T ids
        ids[i] = i < size_t(B * T) && t > 0 && t % documents == 0 ? separator
                                                                  : std::min(ids[i], separator - 1);
      }
    }
    // On the host, as train's loader gives it: GPT::loss uploads it (2 B T i32 per step) and checks
    // its ids from the host copies.
    const Tensor all = from_vector<int32_t>(ids, {2, B, T}, DType::I32);
    const Tensor x = all.narrow(0, 0, 1).view({B, T}).contiguous();
    const Tensor y = all.narrow(0, 1, 1).view({B, T}).contiguous();

    std::cout << "bench_gpu: " << model.num_parameters() << " parameters (" << n_flop_params
              << " in the FLOP count), L " << mc.n_layer << ", H " << mc.n_head << ", Q "
              << mc.head_dim() << ", T " << T << ", B " << B << ", attention "
              << cfg.model.attention << (cfg.train.recompute ? ", recompute" : "")
              << (is_unfused ? ", unfused" : "") << (muon ? ", muon" : "")
              << (documents > 0 ? ", documents of " + std::to_string(documents) + " tokens" : "")
              << ", " << model.logit_columns() << " logit columns\n";
    auto step = [&] {  // Trainer::train_steps' order, one micro-batch
      // The loss's gradient in its forward (the fused classifier), as train runs it.
      Tensor loss = model.loss(x, y, true, is_unfused ? 0.0 : 1.0);
      opt.backward(loss, /*last=*/true);
      const double l = loss.item();  // synchronises, after the backward as in train
      opt.grad_norm();                // read for the spike check before the update
      opt.step(6e-4);
      opt.zero_grad();
      return l;
    };
    const auto c0 = Clock::now();
    double first_loss = NAN, last_loss = NAN;
    for (int i = 0; i < warmup; ++i) {
      const double l = step();
      if (i == 0) first_loss = l;
    }
    std::cout << "bench_gpu: " << warmup << " warm-up steps in " << json_num(ms_since(c0) / 1000)
              << " s\n";
    reset_peak_memory(dev);
    std::vector<double> times;
    int64_t host_reads = 0;  // the step's own waits, not the bracketing synchronize calls
    const cuda::BlasStats blas0 = cuda::blas_stats();
    const cuda::FlashStats flash0 = cuda::flash_stats();
    for (int i = 0; i < steps; ++i) {
      sync();
      const int64_t reads0 = cuda::sync_stats().copies_to_host;
      const auto t0 = Clock::now();
      last_loss = step();
      sync();
      times.push_back(ms_since(t0));
      host_reads += cuda::sync_stats().copies_to_host - reads0;
    }
    const double ms = median(times);
    const double reads_per_step = double(host_reads) / steps;
    // Which attention kernels ran (families of the same bits differ only here: cuda.h).
    const cuda::FlashStats flash1 = cuda::flash_stats();
    const double two_stage_per_step =
        double(flash1.two_stage_forwards - flash0.two_stage_forwards) / steps;
    const double stored_ds_per_step =
        double(flash1.stored_ds_backwards - flash0.stored_ds_backwards) / steps;
    const double recomputed_ds_per_step =
        double(flash1.recomputed_ds_backwards - flash0.recomputed_ds_backwards) / steps;
    // --documents: softmax calls over every document at once (kernels/doc_tiles.h), forward and
    // backward.
    const double document_calls_per_step =
        double(flash1.document_forwards + flash1.document_backwards - flash0.document_forwards -
               flash0.document_backwards) /
        steps;
    const double tok_s = double(B * T) / (ms / 1000.0);
    // A GPU's peak says nothing of a CPU run's arithmetic rate: no MFU there.
    const double mfu = on_gpu ? flops_per_token * tok_s / kPeakFlops : NAN;
    char mfu_text[64] = "n/a (cpu: no peak to divide by)";
    if (on_gpu) std::snprintf(mfu_text, sizeof mfu_text, "%.1f%% (989 TFLOP/s peak)", 100 * mfu);
    const MemoryStats mem = memory_stats(dev);
    const cuda::DeviceMemoryStats pool = cuda::device_memory_stats(0);
    const double mib = double(1 << 20);
    std::printf(
        "bench_gpu: %.2f ms/step (median of %d), %.0f tokens/s, MFU %s, "
        "%.4g FLOP/token; peak %.0f MiB allocated, %.0f MiB reserved; "
        "loss %.4f -> %.4f; the host waited on %s device reads per step\n",
        ms, steps, tok_s, mfu_text, flops_per_token, double(mem.peak_bytes) / mib,
        double(pool.peak_reserved_bytes) / mib, first_loss, last_loss,
        on_gpu ? json_num(reads_per_step).c_str() : "(cpu: no)");
    if (on_gpu) {  // whether cuBLASLt ran the Linears' bias and GELU in its epilogue (cuda.h)
      const cuda::BlasStats b = cuda::blas_stats();
      const auto per_step = [&](int64_t now, int64_t then) { return json_num(double(now - then) / steps); };
      std::printf(
          "bench_gpu: per step, Linear biases in the gemm epilogue %s (fallback %s), "
          "GELUs in the epilogue %s (fallback %s), GELU gradients in the epilogue %s "
          "(fallback %s), bias gradients in the epilogue %s (fallback %s), residuals as "
          "the gemm's C %s (copied first %s), batched gemms run one per batch %s\n",
          per_step(b.bias_epilogue, blas0.bias_epilogue).c_str(),
          per_step(b.bias_fallback, blas0.bias_fallback).c_str(),
          per_step(b.gelu_epilogue, blas0.gelu_epilogue).c_str(),
          per_step(b.gelu_fallback, blas0.gelu_fallback).c_str(),
          per_step(b.dgelu_epilogue, blas0.dgelu_epilogue).c_str(),
          per_step(b.dgelu_fallback, blas0.dgelu_fallback).c_str(),
          per_step(b.bgrad_epilogue, blas0.bgrad_epilogue).c_str(),
          per_step(b.bgrad_fallback, blas0.bgrad_fallback).c_str(),
          per_step(b.residual_in_gemm, blas0.residual_in_gemm).c_str(),
          per_step(b.residual_fallback, blas0.residual_fallback).c_str(),
          per_step(b.per_batch_gemms, blas0.per_batch_gemms).c_str());
      std::printf(
          "bench_gpu: per step, attention forwards with K and V in two stages %s, backwards "
          "with dQ from the stored dS %s, recomputing it %s\n",
          json_num(two_stage_per_step).c_str(), json_num(stored_ds_per_step).c_str(),
          json_num(recomputed_ds_per_step).c_str());
      std::printf("bench_gpu: cuBLASLt from %s\n", cuda::cublaslt_library().c_str());
      if (const std::string tuning = train::gemm_tuning_summary(); !tuning.empty())
        std::printf("bench_gpu: %s\n", tuning.c_str());
    }

    if (profiled > 0) {
      sync();
      profile::start();
      const auto p0 = Clock::now();
      for (int i = 0; i < profiled; ++i) step();
      sync();
      const double wall = ms_since(p0) / profiled;
      profile::stop();
      std::cout << "\nbench_gpu: kernel profile of " << profiled << " more step"
                << (profiled == 1 ? "" : "s") << " on " << dev.str() << "\n"
                << profile::table(profile::rows(), profiled, wall, 40) << std::flush;
    }

    std::vector<KernelRow> kernels;
    if (on_gpu && !cl.args.count("no-kernels")) {
      kernels = bench_kernels(B * T, mc.n_embd, mc.vocab_size, model.num_parameters());
      for (const KernelRow& k : kernels) {
        if (std::isfinite(k.ms))
          std::printf("  %-19s %-18s %8.3f ms  %7.0f GB/s%s%s\n", k.name.c_str(), k.shape.c_str(),
                      k.ms, k.bytes / (k.ms * 1e6), k.note.empty() ? "" : "  ", k.note.c_str());
        else
          std::printf("  %-19s %-18s n/a (%s)\n", k.name.c_str(), k.shape.c_str(), k.note.c_str());
      }
    }

    if (cl.args.count("json")) {
      std::ostringstream js;
      js << "{\"impl\": \"" << (is_unfused ? "tessera-unfused" : "tessera")
         << "\", \"optimizer\": \"" << opt.name() << "\", \"batch\": " << B << ", \"seq\": " << T
         << ", \"documents\": " << documents << ", \"params\": " << model.num_parameters()
         << ", \"flop_params\": " << n_flop_params
         << ", \"flops_per_token\": " << json_num(flops_per_token)
         << ", \"ms_per_step\": " << json_num(ms) << ", \"tokens_per_s\": " << json_num(tok_s)
         << ", \"mfu\": " << json_num(mfu)
         << ", \"peak_alloc_mib\": " << json_num(double(mem.peak_bytes) / mib)
         << ", \"peak_reserved_mib\": " << json_num(double(pool.peak_reserved_bytes) / mib)
         << ", \"loss_first\": " << json_num(first_loss)
         << ", \"loss_last\": " << json_num(last_loss)
         << ", \"host_reads_per_step\": " << json_num(on_gpu ? reads_per_step : NAN)
         << ", \"two_stage_forwards_per_step\": " << json_num(on_gpu ? two_stage_per_step : NAN)
         << ", \"stored_ds_backwards_per_step\": " << json_num(on_gpu ? stored_ds_per_step : NAN)
         << ", \"recomputed_ds_backwards_per_step\": "
         << json_num(on_gpu ? recomputed_ds_per_step : NAN)
         << ", \"document_calls_per_step\": " << json_num(on_gpu ? document_calls_per_step : NAN)
         << ", \"kernels\": {";
      for (size_t i = 0; i < kernels.size(); ++i)
        js << (i ? ", " : "") << "\"" << kernels[i].name
           << "\": {\"ms\": " << json_num(kernels[i].ms)
           << ", \"bytes\": " << json_num(kernels[i].bytes) << "}";
      js << "}}";
      std::ofstream(cl.args["json"].as<std::string>()) << js.str() << "\n";
    }
    return 0;
  });
}
