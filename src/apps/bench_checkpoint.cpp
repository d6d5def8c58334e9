// build/bench_checkpoint: the time to save and to load a checkpoint of a GPT with AdamW's state,
// and the share of it the integrity checks take (checkpoint/digest.h: the SHA-256 of the whole
// file, hashed as it is saved and again as it is loaded; the CRC-32C of every tensor's bytes).
//
//   build/bench_checkpoint                        # GPT-2 124M: 1.5 GB (weights, m, v in f32)
//   build/bench_checkpoint --n-layer 2 --dir /tmp # smaller, elsewhere
//   TESSERA_DIGEST=portable build/bench_checkpoint  # the digests without the CPU's instructions
//   build/bench_checkpoint --keep --dir /tmp/b   # leaves /tmp/b/bench.h5 for sha256sum & co.
//
// Rows (median of --repeats): "save" is save_checkpoint (HDF5 write, CRC-32C per tensor, fsync, the
// file hashed for its digest file, renames); "load" is load_checkpoint (the file hashed and checked
// against its digest file, its HDF5 structure read by a child process, HDF5 read, CRC-32C per
// tensor checked); "verify" is the digest check alone (verify_checkpoint_file: a large file's
// chunks hashed on OpenMP's threads), "probe" the child's read alone (probe_hdf5_file). "sha256" and "crc32c"
// time those digests alone, on one thread, over the same bytes (the whole file; every tensor), so
// save and load less them is what the file system and HDF5 take. The first load follows a save, so
// the file is in the page cache: the rows measure the CPU's work, not the disk. "stage" is the
// host copy a save with checkpoint.async takes (stage_on_host): all the training loop waits for
// while the rest of "save" runs on the write thread.
// scripts/bench_checkpoint.sh runs this beside sha256sum and PyTorch's torch.save / torch.load of
// the same tensors.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "apps/gpt_shape_flags.h"
#include "checkpoint/async_save.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/digest.h"
#include "checkpoint/probe.h"
#include "checkpoint/sidecar.h"
#include "config/cli.h"
#include "core/error.h"
#include "nn/gpt.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

double median_ms(int repeats, const std::function<void()>& f) {
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    const auto t = std::chrono::steady_clock::now();
    f();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  return run_main("bench_checkpoint", [&] {
    cxxopts::Options options("bench_checkpoint",
                             "time to save and load a GPT checkpoint with AdamW state, and the "
                             "digests' share of it");
    add_gpt_shape_flags(options,
                        {.n_layer = 12, .n_embd = 768, .n_head = 12, .vocab = 50257, .seq = 1024});
    options.add_options()(
        "dir", "where the checkpoint is written (removed after)",
        cxxopts::value<std::string>()->default_value("checkpoints/bench_checkpoint"))(
        "repeats", "timed runs per row (the median is printed)",
        cxxopts::value<int>()->default_value("3"))(
        "keep", "leave the checkpoint (<dir>/bench.h5) for other tools to read")("h,help",
                                                                                 "this help");
    cxxopts::ParseResult args;
    if (!parse_flags_or_help(options, argc, argv, args)) return 0;
    const int repeats = args["repeats"].as<int>();
    TESSERA_CHECK(repeats >= 1, "--repeats must be at least 1, got ", repeats);

    nn::GPTConfig cfg = gpt_shape(args);
    cfg.validate();
    Generator gen(1337);
    nn::GPT model(cfg, gen);

    // What the trainer saves for AdamW on the CPU: the weights, then m and v per parameter.
    CheckpointData ck;
    ck.model = model.parameters();
    int64_t bytes = 0;
    for (const auto& [name, p] : ck.model) {
      ck.optimizer.emplace_back(name + "/m", p.clone());
      ck.optimizer.emplace_back(name + "/v", p.clone());
      bytes += 3 * int64_t(p.nbytes());
    }
    ck.trainer_ints["step"] = 1;
    ck.config_yaml = "model: {}\n";

    const fs::path dir = args["dir"].as<std::string>();
    const bool made = !fs::exists(dir);
    fs::create_directories(dir);
    const std::string path = (dir / "bench.h5").string();
    TESSERA_CHECK(!fs::exists(path), "bench_checkpoint: ", path,
                  " exists; remove it or pick --dir");

    const double save = median_ms(repeats, [&] {
      fs::remove(path);
      fs::remove(digest_path(path));
      save_checkpoint(path, ck);
    });
    const double file_bytes = double(fs::file_size(path));
    const double stage = median_ms(repeats, [&] { (void)stage_on_host(ck); });
    const double load = median_ms(repeats, [&] { (void)load_checkpoint(path); });
    const double verify = median_ms(repeats, [&] { (void)verify_checkpoint_file(path); });
    const double probe = median_ms(repeats, [&] { probe_hdf5_file(path); });
    std::string hex;
    const double sha = median_ms(repeats, [&] { hex = sha256_file(path); });
    uint32_t crc = 0;
    const double crcs = median_ms(repeats, [&] {
      for (const auto* list : {&ck.model, &ck.optimizer})
        for (const auto& [name, t] : *list) crc ^= crc32c(t.data_ptr(), t.nbytes());
    });
    if (!args.count("keep")) {
      fs::remove(path);
      fs::remove(digest_path(path));
      if (made) fs::remove(dir);
    }

    std::printf(
        "bench_checkpoint: %lld layers x %lld channels, vocabulary %lld: %zu tensors, %.0f "
        "MB of tensors, file %.0f MB; digests: SHA-256 %s, CRC-32C %s\n",
        (long long)cfg.n_layer, (long long)cfg.n_embd, (long long)cfg.vocab_size,
        ck.model.size() + ck.optimizer.size(), double(bytes) / 1e6, file_bytes / 1e6,
        sha256_best_code(), crc32c_best_code());
    std::printf("%-8s %10s %10s\n", "row", "ms", "MB/s");
    auto row = [&](const char* name, double ms, double b) {
      std::printf("%-8s %10.1f %10.0f\n", name, ms, b / 1e3 / ms);
    };
    row("save", save, file_bytes);
    row("stage", stage, double(bytes));
    row("load", load, file_bytes);
    row("verify", verify, file_bytes);
    row("probe", probe, file_bytes);
    row("sha256", sha, file_bytes);
    row("crc32c", crcs, double(bytes));
    std::printf("(sha256 %s; crc %08x)\n", hex.c_str(), crc);
    return 0;
  });
}
