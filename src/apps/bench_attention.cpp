// build/bench_attention: time of the fused CUDA attention kernels (kernels/flash_mma.cu, and the
// wmma kernels of kernels/flash_attention.cu beside them; kernels/stick_breaking.cu), forward and
// forward + backward, bf16, causal.
//
//   build/bench_attention                                   # T = 1k..16k, D = 64 and 128
//   build/bench_attention --seqlens 4096 --dims 128 --iters 20
//   build/bench_attention --list-impls                      # the rows' ids: mma, wgmma, sb, ...
//   build/bench_attention --impls wgmma,wgmma-narrow        # those rows only
//
// Shapes follow the FlashAttention-2 paper's benchmark (Dao 2023, section 4.1): B x T = 16k tokens
// and H x D = 2048 channels, so B = 16k / T and H = 2048 / D. FLOPs are counted the same way for
// both kernels: forward 4 T^2 D H B, halved for causal; backward 2.5x the forward (so forward +
// backward is 3.5x). Stick-breaking does more arithmetic than that per score (softplus, a scan);
// counting it as softmax attention makes the TFLOP/s of the two directly comparable as speed.
//
// The kernels are called through the kernel table on preallocated outputs; what a call allocates
// itself (rowsum(dout * out), stick-breaking's checkpoints) is included, as in training. Each
// timing is the mean over --iters calls after --warmup calls, with the device synchronised around
// the timed loop. Prints markdown table rows; scripts/bench_attention.sh runs each row's kernels
// in a process of its own (a kernel that faults on a GPU loses its own rows only), adds the
// header and PyTorch's scaled_dot_product_attention for comparison.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cxxopts.hpp>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda.h"
#include "backend/kernels.h"
#include "config/cli.h"
#include "core/error.h"
#include "core/tensor.h"
#include "ops/ops.h"

using namespace tessera;

namespace {

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    TESSERA_CHECK(!item.empty(), "empty item in list '", s, "'");
    out.push_back(std::stoll(item));
  }
  return out;
}

double time_ms(const std::function<void()>& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  cuda::synchronize(0);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) fn();
  cuda::synchronize(0);
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(t1 - t0).count() / iters;
}

Tensor random_bf16(const Shape& shape, Generator& g) {
  return randn(shape, g, {DType::F32, Device::cuda()}).to(DType::BF16);
}

// The kernels timed, a row each per shape: flash softmax attention under each family of
// FlashKernels, and stick-breaking.
struct Impl {
  const char* id;    // for --impls
  const char* name;  // the table's
  bool stick_breaking;
  cuda::FlashKernels flash;
  bool d64_only;  // differs from another row only at D 64
  const char* env = nullptr;  // NAME=VALUE set in the environment for this row's calls
  bool alibi = false;         // softmax with ALiBi's bias (backend/attention_mask.h)
  bool forget = false;        // softmax with a forget gate's bias (Forgetting Attention, the same)
};
constexpr Impl kImpls[] = {
    {"mma", "tessera flash (softmax)", false, cuda::FlashKernels::Mma, false},
    {"mma-narrow", "tessera flash, 64-row forward", false, cuda::FlashKernels::MmaNarrow, false},
    {"mma-eager", "tessera flash, O rescaled at every key tile", false, cuda::FlashKernels::Mma,
     false, "TESSERA_FLASH_RESCALE=eager"},
    {"mma-3blocks", "tessera flash, 128-row forward at 3 blocks/SM", false,
     cuda::FlashKernels::Mma3Blocks, true},
    {"mma-5blocks", "tessera flash, 64-row forward at 5 blocks/SM", false,
     cuda::FlashKernels::Mma5Blocks, true},
    {"mma-2stage", "tessera flash, K and V in two stages", false, cuda::FlashKernels::Mma2Stage,
     false},
    {"mma-ds", "tessera flash, dQ from the stored dS", false, cuda::FlashKernels::MmaStoredDs,
     false},
    {"alibi", "tessera flash with ALiBi", false, cuda::FlashKernels::Mma, false, nullptr, true},
    {"forgetting", "tessera flash with a forget gate", false, cuda::FlashKernels::Mma, false,
     nullptr, false, true},
    {"wmma", "tessera flash, wmma kernels", false, cuda::FlashKernels::Wmma, false},
    {"wgmma", "tessera flash, wgmma kernels", false, cuda::FlashKernels::Wgmma, false},
    {"wgmma-narrow", "tessera flash, wgmma, fewer registers", false,
     cuda::FlashKernels::WgmmaNarrow, true},
    {"sb", "tessera stick-breaking", true, cuda::FlashKernels::Mma, false},
    {"sb-128", "tessera stick-breaking, 128-row forward", true, cuda::FlashKernels::Mma3Blocks,
     true},
    {"sb-2stage", "tessera stick-breaking, K and V in two stages", true,
     cuda::FlashKernels::Mma2Stage, false},
};

// Whether an impl can run on this device: the wgmma kernels need sm_90a code and a 9.0 GPU.
bool runs_here(const Impl& impl) {
  const bool wgmma =
      impl.flash == cuda::FlashKernels::Wgmma || impl.flash == cuda::FlashKernels::WgmmaNarrow;
  return !wgmma || cuda::flash_wgmma_available();
}

// The impls --impls names (every one that runs here when it is empty), in the table's order.
std::vector<const Impl*> chosen_impls(const std::string& list) {
  std::vector<const Impl*> out;
  std::vector<std::string> ids;
  std::stringstream ss(list);
  for (std::string id; std::getline(ss, id, ',');) ids.push_back(id);
  for (const std::string& id : ids) {
    const Impl* found = nullptr;
    std::string known;
    for (const Impl& impl : kImpls) {
      if (id == impl.id) found = &impl;
      known += std::string(known.empty() ? "" : ", ") + impl.id;
    }
    TESSERA_CHECK(found, "--impls: unknown '", id, "' (known: ", known, ")");
    TESSERA_CHECK(runs_here(*found), "--impls: '", id,
                  "' cannot run here (no sm_90a build or no 9.0 device)");
  }
  for (const Impl& impl : kImpls)
    if (ids.empty() ? runs_here(impl) : std::find(ids.begin(), ids.end(), impl.id) != ids.end())
      out.push_back(&impl);
  return out;
}

int run(int argc, char** argv) {
  cxxopts::Options options("bench_attention",
                           "Time the fused CUDA attention kernels (flash softmax, stick-breaking)");
  // clang-format off
  options.add_options()
      ("seqlens", "sequence lengths T", cxxopts::value<std::string>()->default_value(
          "1024,2048,4096,8192,16384"), "LIST")
      ("dims", "head dims D", cxxopts::value<std::string>()->default_value("64,128"), "LIST")
      ("tokens", "B x T", cxxopts::value<int64_t>()->default_value("16384"), "N")
      ("hidden", "H x D", cxxopts::value<int64_t>()->default_value("2048"), "N")
      ("iters", "timed calls per measurement", cxxopts::value<int>()->default_value("10"), "N")
      ("warmup", "untimed calls first", cxxopts::value<int>()->default_value("3"), "N")
      ("impls", "the rows to time, by id (default: every one that runs here; --list-impls)",
       cxxopts::value<std::string>()->default_value(""), "LIST")
      ("list-impls", "print the ids of the rows that run here, one a line, and exit")
      ("no-header", "print table rows only")
      ("h,help", "print this help");
  // clang-format on
  cxxopts::ParseResult args;
  if (!parse_flags_or_help(options, argc, argv, args)) return 0;
  if (!cuda::available()) {
    std::cerr << "bench_attention: no CUDA device (the fused attention kernels are CUDA only)\n";
    return 1;
  }
  const std::vector<const Impl*> impls = chosen_impls(args["impls"].as<std::string>());
  if (args.count("list-impls")) {
    for (const Impl* impl : impls) std::printf("%s\n", impl->id);
    return 0;
  }
  const int iters = args["iters"].as<int>(), warmup = args["warmup"].as<int>();
  const int64_t tokens = args["tokens"].as<int64_t>(), hidden = args["hidden"].as<int64_t>();
  TESSERA_CHECK(iters > 0 && warmup >= 0, "--iters must be positive");

  if (!args.count("no-header")) {
    std::printf("| impl | T | D | B x H | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
  }
  const Kernels& kern = kernels_for(Device::cuda());
  for (int64_t D : parse_list(args["dims"].as<std::string>())) {
    for (int64_t T : parse_list(args["seqlens"].as<std::string>())) {
      const int64_t B = std::max<int64_t>(1, tokens / T), H = std::max<int64_t>(1, hidden / D);
      Generator g(1);
      const Shape shape{B, H, T, D}, rows{B, H, T};
      Tensor q = random_bf16(shape, g), k = random_bf16(shape, g), v = random_bf16(shape, g),
             dout = random_bf16(shape, g);
      Tensor out = Tensor::empty(shape, {DType::BF16, Device::cuda()});
      Tensor stat = Tensor::empty(rows, {DType::F32, Device::cuda()});
      Tensor dq = Tensor::empty(shape, {DType::BF16, Device::cuda()});
      Tensor dk = Tensor::empty(shape, {DType::BF16, Device::cuda()});
      Tensor dv = Tensor::empty(shape, {DType::BF16, Device::cuda()});
      const double scale = 1.0 / std::sqrt(double(D));
      const double fwd_flops = 4.0 * double(T) * double(T) * double(D) * double(H) * double(B) / 2;
      // A forget gate's sums as a model's gate gives them (tests/cuda/test_forgetting_cuda.cpp):
      // ops::forget_gate of logits 2 N(0, 1), c falling by 0.05 to a few a position; and their
      // gradient, which the backward writes.
      const Tensor sums = ops::forget_gate(ops::scale(randn({B, T, H}, g), 2.0)).to(Device::cuda());
      const Tensor dsums = Tensor::empty(rows, {DType::F32, Device::cuda()});

      auto mask_of = [&](const Impl& impl, bool backward) {
        AttentionMask m{0, impl.alibi};
        if (impl.forget) m.forget = sums, m.forget_grad = backward ? dsums : Tensor();
        return m;
      };
      auto flash_fwd = [&](const Impl& impl) {
        kern.flash_attention_forward(out, stat, q, k, v, scale, mask_of(impl, false));
      };
      auto flash_bwd = [&](const Impl& impl) {
        kern.flash_attention_backward(dq, dk, dv, dout, q, k, v, out, stat, scale,
                                      mask_of(impl, true));
      };
      auto sb_fwd = [&] {
        kern.stick_breaking_forward(out, stat, Tensor(), q, k, v, scale, false, false);
      };
      auto sb_bwd = [&] {
        kern.stick_breaking_backward(dq, dk, dv, dout, q, k, v, out, stat, scale, false, false);
      };
      const cuda::FlashKernels chosen = cuda::flash_kernels();
      for (const Impl* at : impls) {
        const Impl& impl = *at;
        if (impl.d64_only && D != 64) continue;
        auto fwd_call = [&] { impl.stick_breaking ? sb_fwd() : flash_fwd(impl); };
        auto bwd_call = [&] { impl.stick_breaking ? sb_bwd() : flash_bwd(impl); };
        cuda::set_flash_kernels(impl.flash);
        const std::string env = impl.env ? impl.env : "";
        const std::string env_name = env.substr(0, env.find('='));
        if (!env.empty()) ::setenv(env_name.c_str(), env.substr(env.find('=') + 1).c_str(), 1);
        const cuda::FlashStats ran0 = cuda::flash_stats();
        const double fwd = time_ms(fwd_call, warmup, iters);
        const double both = time_ms(
            [&] {
              fwd_call();
              bwd_call();
            },
            warmup, iters);
        // A stored-dS family recomputes dS as the default does where one kv-head group's dS would
        // pass its budget (1 GiB: a query head's at T 32768): the row says so (and
        // scripts/gpu_check.sh's ratio, which matches the name, leaves it out). Below that it
        // stores dS in passes of at most the budget (head_slices.h).
        const bool recomputed = !impl.stick_breaking && cuda::stored_ds_backward(impl.flash) &&
                                cuda::flash_stats().stored_ds_backwards == ran0.stored_ds_backwards;
        std::printf("| %s%s | %lld | %lld | %lld x %lld | %.3f | %.1f | %.3f | %.1f |\n", impl.name,
                    recomputed ? " (a group's dS over its budget: recomputed)" : "", (long long)T,
                    (long long)D, (long long)B, (long long)H, fwd, fwd_flops / (fwd * 1e9), both,
                    3.5 * fwd_flops / (both * 1e9));
        std::fflush(stdout);
        if (!env.empty()) ::unsetenv(env_name.c_str());
      }
      cuda::set_flash_kernels(chosen);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_main("bench_attention", [&] { return run(argc, argv); });
}
