// Sampling from a GPT with a KV cache.
//
//   Generator g(42);
//   std::vector<int32_t> out = generate(model, prompt_ids, {.max_new_tokens = 200,
//                                                           .temperature = 0.8, .top_k = 40}, g);
//
// A token is drawn as Hugging Face's samplers draw it: logits / temperature, then the top_k most
// likely (and every token tied with the k-th), then the nucleus (Holtzman et al. 2019, "The Curious
// Case of Neural Text Degeneration"): the fewest of those, most likely first (the lower id first
// among equals), whose probabilities sum to at least top_p. That tie-break is tessera's own: where
// exact ties straddle the nucleus's edge, Hugging Face's ascending sort keeps the higher ids.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/rng.h"
#include "nn/gpt.h"

namespace tessera::nn {

struct SampleOptions {
  int64_t max_new_tokens = 256;
  double temperature = 1.0;  // 0: greedy (argmax)
  int64_t top_k = 0;         // 0: the whole vocabulary
  double top_p = 1.0;        // nucleus sampling; 1: no cut
  // Stop after emitting one (end-of-text; a chat template's end of turn); none: never.
  std::vector<int64_t> stop_tokens = {};
  // > 0: only ids below it are drawn, the tokenizer's vocabulary where the model's is padded past
  // it (model.vocab_size 50304 for GPT-2's 50257: ids no tokenizer can decode); 0: every id.
  int64_t vocab = 0;
};

// build/generate's sampling unless its flags say otherwise, and training samples'
// (train/samples.h).
inline constexpr double kDefaultTemperature = 0.8;
inline constexpr int64_t kDefaultTopK = 40;

// The most tokens one generate call samples: far below what would overflow a cache shape, and
// more than a cache of that length fits for any but tiny models.
inline constexpr int64_t kMaxNewTokens = int64_t(1) << 20;

// Throws unless max_new_tokens is in [0, kMaxNewTokens], temperature finite and >= 0, top_k >= 0
// and top_p in (0, 1]; the errors name build/generate's flags (--max-new-tokens, --temperature,
// --top-k, --top-p).
void check_sample_options(const SampleOptions& opt);

// Draws one id from logits with opt's temperature, top_k and top_p (the order above), using one
// counter of gen; temperature 0 is the argmax.
int32_t sample_token(const std::vector<double>& logits, const SampleOptions& opt, Generator& gen);

// The prompt followed by up to max_new_tokens sampled ids (fewer if a stop token comes). The prompt
// is fed once, then one token per step through the cache. With learned positions the cache holds
// at most block_size tokens: a full one is refilled with the newest half of the text, so a token is
// drawn after block_size / 2 to block_size of them (nanoGPT crops to block_size at every token, at
// the cost of a full forward each). RoPE and position-free models keep the whole text, past the
// trained length too (as eval --contexts runs them; model.rope_scaling scales RoPE). opt is
// checked first (check_sample_options).
std::vector<int32_t> generate(const GPT& model, const std::vector<int32_t>& prompt,
                              const SampleOptions& opt, Generator& gen);

// Several continuations of one prompt, one a generator: row i is drawn with gens[i] as generate
// draws with its gen, all rows advancing together as one batch through the cache (one forward a
// token for all of them, the rows that have stopped fed along and cut off at the end). A row is
// what generate(model, prompt, opt, gens[i]) returns, up to the rounding of a batched forward:
// where two tokens' probabilities meet within it, a draw can differ. gens advance as generate's.
// on_token (when given) is called with each id as it is drawn and the row that drew it, rows in
// order at each step: what a caller prints as it goes.
using TokenCallback = std::function<void(size_t row, int32_t id)>;
std::vector<std::vector<int32_t>> generate_many(const GPT& model,
                                                const std::vector<int32_t>& prompt,
                                                const SampleOptions& opt,
                                                std::vector<Generator>& gens,
                                                const TokenCallback& on_token = {});

// generate_many with a prompt a row: prompts[i] continued with gens[i], prompts of any lengths.
// Prompts of one length share the cache's positions; otherwise the cache's rows hold the prompts
// shortest first, each group of one length fed alone into its rows (the logits each gets alone),
// and every step after feeds all rows at once, each at its own position (GPT::forward_cached on
// KVCache::lengths: no padding, no mask).
std::vector<std::vector<int32_t>> generate_rows(const GPT& model,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                const SampleOptions& opt,
                                                std::vector<Generator>& gens,
                                                const TokenCallback& on_token = {});

// Every prompt's continuation, prompts of any lengths: prompts[i] with gens[i], as generate alone
// (up to a batched forward's rounding). At most max_rows prompts are drawn together
// (generate_rows): a batch takes the first unstarted prompt and the unstarted ones of its length
// after it, then the next unstarted prompt's group, and so on until it is full (a group shares
// its positions, so its rows are attended together). on_done (when given) is called with each
// prompt's index and ids as its batch ends. Returns the ids in the prompts' order.
using DoneCallback = std::function<void(size_t index, const std::vector<int32_t>& ids)>;
std::vector<std::vector<int32_t>> generate_each(const GPT& model,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                const SampleOptions& opt,
                                                std::vector<Generator>& gens, int64_t max_rows,
                                                const DoneCallback& on_done = {});

}  // namespace tessera::nn
