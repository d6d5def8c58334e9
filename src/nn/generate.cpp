#include "nn/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/autograd.h"

namespace tessera::nn {

void check_sample_options(const SampleOptions& opt) {
  TESSERA_CHECK(opt.max_new_tokens >= 0 && opt.max_new_tokens <= kMaxNewTokens,
                "--max-new-tokens must be in [0, ", kMaxNewTokens, "], got ", opt.max_new_tokens);
  TESSERA_CHECK(std::isfinite(opt.temperature) && opt.temperature >= 0,
                "--temperature must be finite and >= 0 (0 = greedy), got ", opt.temperature);
  TESSERA_CHECK(opt.top_k >= 0, "--top-k must be >= 0 (0 = the whole vocabulary), got ",
                opt.top_k);
  TESSERA_CHECK(opt.top_p > 0 && opt.top_p <= 1, "--top-p must be in (0, 1] (1 = no cut), got ",
                opt.top_p);
  TESSERA_CHECK(opt.vocab >= 0, "generate: the vocabulary to draw from must be >= 0, got ",
                opt.vocab);
}

int32_t sample_token(const std::vector<double>& logits, const SampleOptions& opt, Generator& gen) {
  TESSERA_CHECK(!logits.empty(), "sample_token: empty logits");
  const int64_t V = int64_t(logits.size());
  const double temperature = opt.temperature;
  if (temperature <= 0)
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  int64_t k = opt.top_k > 0 ? std::min(opt.top_k, V) : V;
  // Ties keep the lower id first so the candidate set does not depend on the sort's whims.
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  });
  if (k < V) {  // every token tied with the k-th stays, as Hugging Face's top-k removes only those
                // below it; the ties left out all have higher ids than the ones in, so they follow
    const double kth = logits[size_t(idx[size_t(k - 1)])];
    const auto tied = std::partition(idx.begin() + k, idx.end(),
                                     [&](int32_t i) { return logits[size_t(i)] == kth; });
    std::sort(idx.begin() + k, tied);
    k = tied - idx.begin();
  }
  const double m = logits[size_t(idx[0])];
  std::vector<double> p(static_cast<size_t>(k));
  double z = 0;
  for (int64_t i = 0; i < k; ++i) z += (p[size_t(i)] = std::exp((logits[size_t(idx[size_t(i)])] - m) / temperature));
  if (opt.top_p < 1) {  // the nucleus: the shortest prefix holding top_p of the mass
    double kept = 0;
    int64_t n = 0;
    while (n < k && kept < opt.top_p * z) kept += p[size_t(n++)];
    k = std::max<int64_t>(n, 1), z = kept;
  }
  const double u = philox_uniform_f64(gen.reserve(1), gen.seed()) * z;
  double acc = 0;
  for (int64_t i = 0; i < k; ++i) {
    acc += p[size_t(i)];
    if (u < acc) return idx[size_t(i)];
  }
  return idx[size_t(k - 1)];
}

std::vector<int32_t> generate(const GPT& model, const std::vector<int32_t>& prompt,
                              const SampleOptions& opt, Generator& gen) {
  TESSERA_CHECK(!prompt.empty(), "generate: the prompt is empty (give at least one token)");
  check_sample_options(opt);
  NoGradGuard no_grad;
  const GPTConfig& cfg = model.config();
  const int64_t total = int64_t(prompt.size()) + opt.max_new_tokens;
  // A learned position embedding covers block_size positions: the cache holds at most that many,
  // and when it is full it is refilled with the newest half of the text (the nanoGPT way of
  // sliding the window, with the recomputation paid once per block_size / 2 tokens).
  const int64_t capacity =
      cfg.position == PositionKind::Learned ? std::min(total, cfg.block_size) : total;
  std::vector<int32_t> out = prompt;
  KVCache cache;
  // The ids go to the model's device, the last logits come back to the host to be sampled.
  const Device device =
      model.parameters().empty() ? Device::cpu() : model.parameters().front().second.device();
  auto ids = [&](std::vector<int32_t> v) {
    const int64_t n = int64_t(v.size());
    return from_vector<int32_t>(v, {1, n}).to(device);
  };
  auto refill = [&](int64_t keep) {
    cache = model.make_cache(1, capacity);
    return model.forward_cached(ids(std::vector<int32_t>(out.end() - keep, out.end())), cache);
  };
  Tensor logits = refill(std::min<int64_t>(int64_t(out.size()), capacity));  // (1, Tn, V)
  while (int64_t(out.size()) < total) {
    const int64_t V = logits.size(2), drawn = opt.vocab > 0 ? std::min(opt.vocab, V) : V;
    Tensor last = logits.narrow(1, logits.size(1) - 1, 1)
                      .reshape({V})
                      .narrow(0, 0, drawn)
                      .to(Device::cpu())
                      .to(DType::F64);
    const int32_t id = sample_token(last.to_vector<double>(), opt, gen);
    out.push_back(id);
    // A model trained on documents ends one with the id that separates them.
    if (id == opt.stop_token || id == cfg.document_separator || int64_t(out.size()) >= total) break;
    if (cache.length == capacity) {
      logits = refill(std::max<int64_t>(capacity / 2, 1));
    } else {
      logits = model.forward_cached(ids({id}), cache);
    }
  }
  return out;
}

}  // namespace tessera::nn
