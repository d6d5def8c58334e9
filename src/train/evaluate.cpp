// Validation loss: see trainer.h.
#include <algorithm>
#include <functional>
#include <vector>

#include "autograd/autograd.h"
#include "core/error.h"
#include "data/shard.h"
#include "distributed/communicator.h"
#include "train/options.h"
#include "train/trainer.h"

namespace tessera::train {

void for_each_rank_batch(data::DataLoader& loader, int64_t B, int64_t n, dist::Communicator* comm,
                         const std::function<void(int64_t)>& f) {
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world() : 1;
  for (int64_t i = 0, at = 0; at < n; ++i, at += B) {
    const int64_t rows = std::min(B, n - at);
    if (i % world == rank)
      f(rows);
    else
      for (int64_t r = 0; r < rows; ++r) loader.next();  // another rank's batch
  }
}

namespace {

// The mean loss over the scored targets of the first n windows of `loader` (one window per
// next(); every target but those a loss mask leaves out), batched B at a time, batch i on rank i
// mod world: the same windows, and the same mean, at any world size.
ValidationLoss mean_loss(const nn::GPT& model, data::DataLoader& loader, int64_t B, int64_t n,
                         dist::Communicator* comm) {
  const int64_t T = loader.options().seq_len;
  double sum = 0, scored = 0;
  std::vector<int32_t> in, tg;
  for_each_rank_batch(loader, B, n, comm, [&](int64_t rows) {
    in.clear(), tg.clear();
    for (int64_t r = 0; r < rows; ++r) {
      const data::Batch w = loader.next();
      const int32_t* a = w.inputs.data<int32_t>();
      const int32_t* b = w.targets.data<int32_t>();
      in.insert(in.end(), a, a + T), tg.insert(tg.end(), b, b + T);
    }
    // A host batch (see GPT::loss); its mean weighted by the targets it scores.
    const auto count = double(
        std::count_if(tg.begin(), tg.end(), [](int32_t t) { return t != data::kIgnoreTarget; }));
    if (count > 0)
      sum +=
          model.loss(from_vector(in, {rows, T}), from_vector(tg, {rows, T}), false).item() * count;
    scored += count;
  });
  if (comm && comm->world() > 1) {
    const std::vector<double> both = comm->all_reduce_host({sum, scored}, dist::ReduceOp::Sum);
    sum = both[0], scored = both[1];
  }
  TESSERA_CHECK(scored > 0, "the ", n, " windows of ", T + 1, " tokens evaluated from ",
                loader.options().files[0], " score no target: their loss masks are 0 throughout");
  return {sum / scored, n, int64_t(scored)};
}

// data.val's loader, one window per batch (window_loader_options: the set of windows is the first
// n whatever B is); *B receives the batch size the windows are scored in.
data::DataLoader window_loader(const Config& cfg, const std::string& pattern, int64_t* B) {
  *B = cfg.train.batch_size;
  data::LoaderOptions o = window_loader_options(cfg, pattern);
  TESSERA_CHECK(o.windows != data::WindowMode::Pairs, pattern,
                ": preference pairs (data.windows: pairs) are not a language model's windows: "
                "train.objective dpo's validation scores them (train/dpo.h)");
  return data::DataLoader(o);
}

}  // namespace

ValidationLoss evaluate_windows(const nn::GPT& model, const Config& cfg, const std::string& pattern,
                                int64_t windows, dist::Communicator* comm) {
  NoGradGuard no_grad;
  int64_t B = 0;
  data::DataLoader loader = window_loader(cfg, pattern, &B);
  const int64_t n = std::min(windows, loader.windows_per_epoch());
  TESSERA_CHECK(n > 0, pattern, ": too few tokens for one window of ", loader.options().seq_len);
  return mean_loss(model, loader, B, n, comm);
}

double evaluate(const nn::GPT& model, const Config& cfg, const std::string& pattern,
                int64_t batches, dist::Communicator* comm) {
  NoGradGuard no_grad;
  int64_t B = 0;
  data::DataLoader loader = window_loader(cfg, pattern, &B);
  const int64_t n = std::min(batches, loader.windows_per_epoch() / B) * B;  // whole batches
  TESSERA_CHECK(n > 0, pattern, ": too few tokens for one batch of ", B, " x ",
                loader.options().seq_len);
  return mean_loss(model, loader, B, n, comm).loss;
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
  TESSERA_CHECK(o.windows == data::WindowMode::Packed, "a strided evaluation of ", pattern,
                " slides a window along the token stream; data.windows is ", cfg.data.windows,
                ": evaluate it in packed windows");
  TESSERA_CHECK(stride >= 1 && stride <= T, "--stride ", stride, " is not in [1, ", T,
                "]: a window of ", T, " tokens moves by at least 1 and at most its length");
  // The target tokens evaluate() scores: the first n whole batches of B windows, in order, whole
  // windows of T targets each, shard after shard.
  const data::DataLoader loader(o);  // its shards, opened (and checked) once
  const int64_t n = std::min(batches, loader.windows_per_epoch() / B);
  TESSERA_CHECK(n > 0, pattern, ": too few tokens for one batch of ", B, " x ", T);
  int64_t left = n * B;  // evaluate()'s windows still to cover
  const std::vector<data::Shard>& shards = loader.shards();
  std::vector<Window> windows;
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
  data::WindowBuffer scratch;
  for (size_t i = 0; i < windows.size(); i += size_t(B)) {
    const int64_t rows = std::min<int64_t>(B, int64_t(windows.size() - i));
    std::vector<int32_t> in(size_t(rows * T)), tg(size_t(rows * T));
    int64_t scored = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const Window& w = windows[i + size_t(r)];
      int32_t* row = tg.data() + r * T;
      data::read_window(shards[w.shard], w.start, T, in.data() + r * T, row, scratch);
      std::fill(row, row + w.first, data::kIgnoreTarget);  // scored by an earlier window
      scored += std::count_if(row, row + T, [](int32_t t) { return t != data::kIgnoreTarget; });
    }
    if (scored == 0) continue;  // every target masked
    const Tensor mean = model.loss(from_vector(in, {rows, T}), from_vector(tg, {rows, T}), false);
    sum += mean.item() * double(scored);  // host batch: see GPT::loss
    out.tokens += scored;
  }
  out.windows = int64_t(windows.size());
  TESSERA_CHECK(out.tokens > 0, pattern, ": the windows evaluated score no target: their loss ",
                "masks are 0 throughout");
  out.loss = sum / double(out.tokens);
  return out;
}

}  // namespace tessera::train
