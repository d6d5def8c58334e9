// Validation loss: see trainer.h.
#include <algorithm>

#include "autograd/autograd.h"
#include "core/error.h"
#include "data/shard.h"
#include "distributed/communicator.h"
#include "train/options.h"
#include "train/trainer.h"

namespace tessera::train {

double evaluate(const nn::GPT& model, const Config& cfg, const std::string& pattern,
                int64_t batches, dist::Communicator* comm) {
  NoGradGuard no_grad;
  data::DataLoader loader(loader_options(cfg, "data.val", pattern, false));
  const int64_t n = std::min(batches, loader.batches_per_epoch());
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world() : 1;
  // Batch i is rank i mod world's: the same batches, and the same mean, at any world size.
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    data::Batch b = loader.next();
    if (i % world == rank)
      sum += model.loss(b.inputs, b.targets, false).item();  // host batch: see GPT::loss
  }
  if (world > 1) sum = comm->all_reduce_host({sum}, dist::ReduceOp::Sum)[0];
  return sum / double(n);
}

namespace {

// One row of a strided evaluation: inputs [start, start + T) of a shard, targets one token later,
// scored from position `first` of the window on (the earlier ones were scored by a window before).
struct Window {
  size_t shard;
  int64_t start, first;
};

}  // namespace

StridedLoss evaluate_strided(const nn::GPT& model, const Config& cfg, const std::string& pattern,
                             int64_t batches, int64_t stride) {
  NoGradGuard no_grad;
  const data::LoaderOptions o = loader_options(cfg, "data.val", pattern, false);
  const int64_t T = o.seq_len, B = o.batch_size;
  TESSERA_CHECK(stride >= 1 && stride <= T, "--stride ", stride, " is not in [1, ", T,
                "]: a window of ", T, " tokens moves by at least 1 and at most its length");
  // The target tokens evaluate() scores: its loader's first n batches of windows, in order, whole
  // windows of T targets each, shard after shard.
  const data::DataLoader loader(o);  // its shards, opened (and checked) once
  const int64_t n = std::min(batches, loader.batches_per_epoch());
  TESSERA_CHECK(n > 0, pattern, ": too few tokens for one batch of ", B, " x ", T);
  const std::vector<data::Shard>& shards = loader.shards();
  std::vector<Window> windows;
  int64_t left = n * B;  // evaluate()'s windows still to cover
  for (size_t s = 0; s < shards.size() && left > 0; ++s) {
    const int64_t take = std::min(data::count_windows({shards[s].size()}, T), left);
    left -= take;
    const int64_t targets = take * T;  // tokens 1 .. targets of this shard are scored
    if (targets == 0) continue;
    windows.push_back({s, 0, 0});
    for (int64_t done = T; done < targets;) {
      const int64_t end = std::min(done + stride, targets);  // scores targets (done, end]
      windows.push_back({s, end - T, done - (end - T)});
      done = end;
    }
  }
  StridedLoss out;
  double sum = 0;
  std::vector<uint32_t> tokens(size_t(T + 1));
  for (size_t i = 0; i < windows.size(); i += size_t(B)) {
    const int64_t rows = std::min<int64_t>(B, int64_t(windows.size() - i));
    std::vector<int32_t> in(size_t(rows * T)), tg(size_t(rows * T));
    int64_t scored = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const Window& w = windows[i + size_t(r)];
      shards[w.shard].read(w.start, T + 1, tokens.data());
      for (int64_t t = 0; t < T; ++t) {
        in[size_t(r * T + t)] = int32_t(tokens[size_t(t)]);
        tg[size_t(r * T + t)] = t >= w.first ? int32_t(tokens[size_t(t + 1)]) : -100;  // ignored
      }
      scored += T - w.first;
    }
    const Tensor mean = model.loss(from_vector(in, {rows, T}), from_vector(tg, {rows, T}), false);
    sum += mean.item() * double(scored);  // host batch: see GPT::loss
    out.tokens += scored;
  }
  out.windows = int64_t(windows.size());
  out.loss = sum / double(out.tokens);
  return out;
}

}  // namespace tessera::train
