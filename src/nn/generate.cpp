#include "nn/generate.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "autograd/autograd.h"
#include "ops/shape.h"

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

std::vector<std::vector<int32_t>> generate_many(const GPT& model,
                                                const std::vector<int32_t>& prompt,
                                                const SampleOptions& opt,
                                                std::vector<Generator>& gens,
                                                const TokenCallback& on_token) {
  return generate_rows(model, std::vector<std::vector<int32_t>>(gens.size(), prompt), opt, gens,
                       on_token);
}

std::vector<std::vector<int32_t>> generate_rows(const GPT& model,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                const SampleOptions& opt,
                                                std::vector<Generator>& gens,
                                                const TokenCallback& on_token) {
  TESSERA_CHECK(!gens.empty(), "generate: no samples asked for (one generator a sample)");
  TESSERA_CHECK(prompts.size() == gens.size(), "generate: ", prompts.size(), " prompts for ",
                gens.size(), " generators (one generator a row)");
  size_t longest = 0;
  for (size_t r = 0; r < prompts.size(); ++r) {
    TESSERA_CHECK(!prompts[r].empty(), "generate: prompt ", r,
                  " is empty (give at least one token)");
    longest = std::max(longest, prompts[r].size());
  }
  // Prompts of one length share the cache's positions; prompts of several lengths fill their rows
  // a group of one length at a time and advance each at its own position (KVCache::lengths).
  const bool ragged = std::any_of(prompts.begin(), prompts.end(), [&](const auto& p) {
    return p.size() != prompts.front().size();
  });
  check_sample_options(opt);
  NoGradGuard no_grad;
  const GPTConfig& cfg = model.config();
  const int64_t N = int64_t(gens.size());
  const int64_t total = int64_t(longest) + opt.max_new_tokens;
  // A learned position embedding covers block_size positions: the cache holds at most that many,
  // and when it is full it is refilled with the newest half of the text (the nanoGPT way of
  // sliding the window, with the recomputation paid once per block_size / 2 tokens).
  const int64_t capacity =
      cfg.position == PositionKind::Learned ? std::min(total, cfg.block_size) : total;
  // Every row's text: a finished row goes on repeating its last id, fed to the model (a batch's
  // rows advance together) and cut off at the end.
  std::vector<std::vector<int32_t>> text = prompts;
  std::vector<size_t> ended(size_t(N), 0);  // a finished row's length; 0 while it draws
  KVCache cache;
  // The ids go to the model's device, the last logits come back to the host to be sampled.
  const Device device =
      model.parameters().empty() ? Device::cpu() : model.parameters().front().second.device();
  // The cache's rows (slots) hold the prompts shortest first (stable): prompts of one length sit
  // side by side, fed and attended together. row_at[s]: the prompt in slot s; slot_of its inverse.
  std::vector<size_t> row_at(static_cast<size_t>(N)), slot_of(static_cast<size_t>(N));
  std::iota(row_at.begin(), row_at.end(), size_t(0));
  std::stable_sort(row_at.begin(), row_at.end(),
                   [&](size_t a, size_t b) { return prompts[a].size() < prompts[b].size(); });
  for (size_t s = 0; s < size_t(N); ++s) slot_of[row_at[s]] = s;
  // Slots [s0, s0 + n): the ids [end - keep, end - leave) of each one's text, (n, keep - leave).
  auto slot_ids = [&](size_t s0, size_t n, int64_t keep, int64_t leave) {
    std::vector<int32_t> v;
    for (size_t s = s0; s < s0 + n; ++s) {
      const std::vector<int32_t>& row = text[row_at[s]];
      v.insert(v.end(), row.end() - keep, row.end() - leave);
    }
    return from_vector<int32_t>(v, {int64_t(n), keep - leave}).to(device);
  };
  auto last_ids = [&](int64_t keep) { return slot_ids(0, size_t(N), keep, 0); };  // (N, keep)
  auto refill = [&](int64_t keep) {
    cache = model.make_cache(N, capacity);
    return model.forward_cached(last_ids(keep), cache, /*last_only=*/true);
  };
  // Rows of different lengths: slots [s0, s0 + n), of one length, alone hold the newest `keep` ids
  // of their texts less the last `leave` (those the next batched step feeds); returns the logits
  // of their last ones, (n, 1, V).
  auto fill_slots = [&](size_t s0, size_t n, int64_t keep, int64_t leave) {
    KVCache rows = cache.rows(int64_t(s0), int64_t(n));
    rows.length = 0;
    Tensor logits;
    if (keep > leave) logits = model.forward_cached(slot_ids(s0, n, keep, leave), rows, true);
    for (size_t s = s0; s < s0 + n; ++s) cache.lengths[s] = rows.length;
    return logits;
  };
  // The runs of neighbouring slots for which same(s0, s) holds, each as (first, count).
  auto runs = [&](const std::function<bool(size_t, size_t)>& same) {
    std::vector<std::pair<size_t, size_t>> out;
    for (size_t s = 0; s < size_t(N);) {
      size_t n = 1;
      while (s + n < size_t(N) && same(s, s + n)) ++n;
      out.emplace_back(s, n);
      s += n;
    }
    return out;
  };
  Tensor logits;  // (N, 1, V), in slot order
  if (ragged) {   // each prompt fed alone (with those of its length) into its row
    cache = model.make_cache(N, capacity);
    cache.lengths.assign(size_t(N), 0);
    std::vector<Tensor> parts;
    for (const auto& [s0, n] :
         runs([&](size_t a, size_t b) { return text[row_at[a]].size() == text[row_at[b]].size(); }))
      parts.push_back(
          fill_slots(s0, n, std::min<int64_t>(int64_t(text[row_at[s0]].size()), capacity), 0));
    logits = ops::concat(parts, 0);
  } else {
    logits = refill(std::min<int64_t>(int64_t(longest), capacity));
  }
  for (int64_t step = 0; step < opt.max_new_tokens;) {
    const int64_t V = logits.size(2), drawn = opt.vocab > 0 ? std::min(opt.vocab, V) : V;
    // Every row's last logits in one read: (N, drawn).
    const std::vector<double> last = logits.narrow(1, logits.size(1) - 1, 1)
                                         .reshape({N, V})
                                         .narrow(1, 0, drawn)
                                         .contiguous()
                                         .to(Device::cpu())
                                         .to(DType::F64)
                                         .to_vector<double>();
    ++step;
    bool drawing = false;
    for (size_t r = 0; r < size_t(N); ++r) {
      if (ended[r]) {
        text[r].push_back(text[r].back());
        continue;
      }
      const int64_t s = int64_t(slot_of[r]);
      const std::vector<double> row(last.begin() + s * drawn, last.begin() + (s + 1) * drawn);
      const int32_t id = sample_token(row, opt, gens[r]);
      text[r].push_back(id);
      if (on_token) on_token(r, id);
      // A model trained on documents ends one with the id that separates them.
      if (std::find(opt.stop_tokens.begin(), opt.stop_tokens.end(), id) != opt.stop_tokens.end() ||
          id == cfg.document_separator)
        ended[r] = text[r].size();
      else
        drawing = true;
    }
    if (!drawing || step == opt.max_new_tokens) break;
    const int64_t keep = std::max<int64_t>(capacity / 2, 1);
    if (ragged) {  // full rows refilled alone with the newest ids but the last, fed with the rest
      for (const auto& [s0, n] : runs([&](size_t a, size_t b) {
             return cache.lengths[a] == capacity && cache.lengths[b] == capacity;
           }))
        if (cache.lengths[s0] == capacity) fill_slots(s0, n, keep, 1);
      logits = model.forward_cached(last_ids(1), cache);
    } else {
      logits = cache.length == capacity ? refill(keep) : model.forward_cached(last_ids(1), cache);
    }
  }
  for (size_t r = 0; r < size_t(N); ++r)
    if (ended[r]) text[r].resize(ended[r]);
  return text;
}

std::vector<std::vector<int32_t>> generate_each(const GPT& model,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                const SampleOptions& opt,
                                                std::vector<Generator>& gens, int64_t max_rows,
                                                const DoneCallback& on_done) {
  TESSERA_CHECK(prompts.size() == gens.size(), "generate: ", prompts.size(), " prompts for ",
                gens.size(), " generators (one generator a prompt)");
  TESSERA_CHECK(max_rows >= 1, "generate: a batch must hold at least one row, got ", max_rows);
  check_sample_options(opt);
  std::vector<std::vector<int32_t>> out(prompts.size());
  std::vector<bool> started(prompts.size(), false);
  const size_t limit = size_t(max_rows);
  for (size_t first = 0; first < prompts.size(); ++first) {
    if (started[first]) continue;
    // Whole groups of one length, each opened by the next unstarted prompt, until the batch is
    // full: a group's rows then share their positions (one attention call a step for them).
    std::vector<size_t> batch;  // the prompts' indices
    for (size_t open = first; open < prompts.size() && batch.size() < limit; ++open) {
      if (started[open]) continue;
      const size_t length = prompts[open].size();
      for (size_t i = open; i < prompts.size() && batch.size() < limit; ++i)
        if (!started[i] && prompts[i].size() == length) {
          started[i] = true;
          batch.push_back(i);
        }
    }
    std::vector<std::vector<int32_t>> rows;
    std::vector<Generator> batch_gens;
    for (size_t i : batch) rows.push_back(prompts[i]), batch_gens.push_back(gens[i]);
    std::vector<std::vector<int32_t>> drawn = generate_rows(model, rows, opt, batch_gens);
    for (size_t r = 0; r < batch.size(); ++r) {
      gens[batch[r]] = batch_gens[r];
      out[batch[r]] = std::move(drawn[r]);
      if (on_done) on_done(batch[r], out[batch[r]]);
    }
  }
  return out;
}

std::vector<int32_t> generate(const GPT& model, const std::vector<int32_t>& prompt,
                              const SampleOptions& opt, Generator& gen) {
  std::vector<Generator> one = {gen};
  std::vector<int32_t> out = std::move(generate_many(model, prompt, opt, one)[0]);
  gen = one[0];
  return out;
}

}  // namespace tessera::nn
