#include "nn/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/autograd.h"

namespace tessera::nn {

int32_t sample_token(const std::vector<double>& logits, double temperature, int64_t top_k,
                     Generator& gen) {
  TESSERA_CHECK(!logits.empty(), "sample_token: empty logits");
  const int64_t V = int64_t(logits.size());
  if (temperature <= 0)
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  const int64_t k = top_k > 0 ? std::min(top_k, V) : V;
  // Ties keep the lower id first so the candidate set does not depend on the sort's whims.
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  });
  const double m = logits[size_t(idx[0])];
  std::vector<double> p(static_cast<size_t>(k));
  double z = 0;
  for (int64_t i = 0; i < k; ++i) z += (p[size_t(i)] = std::exp((logits[size_t(idx[size_t(i)])] - m) / temperature));
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
  NoGradGuard no_grad;
  const GPTConfig& cfg = model.config();
  int64_t limit = int64_t(prompt.size()) + opt.max_new_tokens;
  if (cfg.position == PositionKind::Learned) limit = std::min(limit, cfg.block_size);
  TESSERA_CHECK(int64_t(prompt.size()) <= limit, "generate: the prompt has ", prompt.size(),
                " tokens but the context holds ", cfg.block_size);
  KVCache cache = model.make_cache(1, limit);
  std::vector<int32_t> out = prompt;
  Tensor next = from_vector<int32_t>(prompt, {1, int64_t(prompt.size())});
  while (true) {
    Tensor logits = model.forward_cached(next, cache);  // (1, Tn, V)
    const int64_t V = logits.size(2);
    Tensor last = logits.narrow(1, logits.size(1) - 1, 1).reshape({V}).to(DType::F64);
    int32_t id = sample_token(last.to_vector<double>(), opt.temperature, opt.top_k, gen);
    out.push_back(id);
    if (id == opt.stop_token || cache.length >= limit || int64_t(out.size()) >= limit) break;
    next = from_vector<int32_t>({id}, {1, 1});
  }
  return out;
}

}  // namespace tessera::nn
