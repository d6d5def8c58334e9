// DataLoader: windows of T + 1 tokens read from shards, in a (seed, epoch) permutation.
//
// B = batch size per rank, T = sequence length, W = world size, N = windows per epoch.
//
// Invariants:
//  - Window w of the concatenated window list lives in shard s with first_window_[s] <= w <
//    first_window_[s + 1]; packed, it starts at token (w - first_window_[s]) * T of that shard;
//    with example windows it is the shard's example w - first_window_[s] (its example_starts());
//    with pair windows it is the shard's pair i = w - first_window_[s], examples 2i (chosen) and
//    2i + 1 (rejected), which check_pairs has made sure of at open.
//  - next() at position p reads windows order[p, p + W * B); this rank reads the slice
//    [p + rank * B, p + (rank + 1) * B) of it. The order is recomputed, never stored in the state.
//  - 0 <= position_ < used_windows() between calls: next() rolls over to the next epoch as soon as
//    the epoch's windows are used up, or too few are left for one more call.
#include "data/loader.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <sstream>

#include "checkpoint/digest.h"  // crc32c
#include "core/error.h"
#include "core/rng.h"

namespace tessera::data {
namespace {

// Philox stream of the data order, so it never shares counters with other users of the same seed
// (initialisation, dropout): "DATA" in the high word, the epoch in the low one.
uint64_t order_stream(int64_t epoch) {
  return (uint64_t(0x44415441u) << 32) | (uint64_t(epoch) & 0xffffffffu);
}

// Fisher-Yates driven by Philox counters: the swap partner of position i is drawn from counter i,
// so the permutation depends on (seed, epoch, N) only, not on the standard library. j = r mod (i+1)
// with a 64-bit r is biased by at most (i + 1) / 2^64, far below anything a training run can see.
void shuffle_windows(std::vector<int64_t>& order, uint64_t seed, int64_t epoch) {
  const uint64_t stream = order_stream(epoch);
  for (int64_t i = int64_t(order.size()) - 1; i > 0; --i) {
    Philox4 r = philox4x32_10(uint64_t(i), seed, stream);
    uint64_t bits = (uint64_t(r.v[0]) << 32) | r.v[1];
    int64_t j = int64_t(bits % uint64_t(i + 1));
    std::swap(order[size_t(i)], order[size_t(j)]);
  }
}

}  // namespace

WindowMode parse_window_mode(const std::string& name, const std::string& key) {
  // documents: packed windows; the model keeps their documents apart (GPTConfig's
  // document_separator).
  if (name == "packed" || name == "documents") return WindowMode::Packed;
  if (name == "example") return WindowMode::Example;
  if (name == "pairs") return WindowMode::Pairs;
  TESSERA_FAIL(key, ": unknown window mode '", name, "' (packed | documents | example | pairs)");
}

int64_t read_example(const Shard& shard, int64_t start, int64_t end, int64_t T, int32_t* inputs,
                     int32_t* targets, WindowBuffer& scratch) {
  TESSERA_CHECK(start < end, "read_example: an empty range [", start, ", ", end, ") of ",
                shard.path());
  const int64_t first = std::max(start, end - (T + 1));  // the last T + 1 tokens at most
  const int64_t n = end - first - 1;                     // targets: tokens first + 1 .. end - 1
  scratch.tokens.resize(size_t(n + 1));
  shard.read(first, n + 1, scratch.tokens.data());
  for (int64_t t = 0; t < n; ++t) {
    inputs[t] = int32_t(scratch.tokens[size_t(t)]);
    targets[t] = int32_t(scratch.tokens[size_t(t + 1)]);
  }
  std::fill(inputs + n, inputs + T, 0);
  std::fill(targets + n, targets + T, kIgnoreTarget);
  if (!shard.has_loss_mask()) return n;
  scratch.mask.resize(size_t(n));
  shard.read_mask(first + 1, n, scratch.mask.data());  // target t is token first + t + 1
  int64_t scored = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (!scratch.mask[size_t(t)]) targets[t] = kIgnoreTarget;
    scored += scratch.mask[size_t(t)];
  }
  return scored;
}

int64_t count_windows(const std::vector<int64_t>& shard_tokens, int64_t seq_len) {
  TESSERA_CHECK(seq_len > 0, "count_windows: seq_len must be positive, got ", seq_len);
  int64_t windows = 0;
  // Windows start at k * T and need T + 1 tokens: k * T + T + 1 <= n.
  for (int64_t n : shard_tokens) windows += n > seq_len ? (n - 1) / seq_len : 0;
  return windows;
}

uint32_t DataLoader::contents_fingerprint() const {
  uint32_t crc = 0;
  for (const Shard& s : shards_) {
    const uint64_t fields[2] = {uint64_t(s.size()), s.tokens_crc32c()};
    crc = crc32c(fields, sizeof fields, crc);
    if (s.has_loss_mask()) {  // which targets are scored is part of what is read
      const uint64_t mask = s.mask_crc32c();
      crc = crc32c(&mask, sizeof mask, crc);
    }
  }
  return crc;
}

DataLoader::DataLoader(LoaderOptions options) : options_(std::move(options)) {
  const LoaderOptions& o = options_;
  TESSERA_CHECK(!o.files.empty(), "DataLoader: no files given (an empty list of shards)");
  TESSERA_CHECK(o.batch_size > 0, "DataLoader: batch_size must be positive, got ", o.batch_size);
  TESSERA_CHECK(o.seq_len > 0, "DataLoader: seq_len must be positive, got ", o.seq_len);
  // Batches hold ids as i32 (the embedding's index type).
  TESSERA_CHECK(o.vocab_size > 0 && o.vocab_size <= (int64_t(1) << 31),
                "DataLoader: vocab_size must be in [1, 2^31], got ", o.vocab_size);
  TESSERA_CHECK(o.world >= 1 && o.rank >= 0 && o.rank < o.world, "DataLoader: rank ", o.rank,
                " is not in [0, world = ", o.world, ")");

  const int64_t T = o.seq_len;
  const bool pairs = o.windows == WindowMode::Pairs;
  const bool examples = o.windows == WindowMode::Example || pairs;  // a window an example
  shards_.reserve(o.files.size());
  first_window_.assign(1, 0);
  for (const std::string& file : o.files) {
    shards_.emplace_back(file, o.vocab_size, o.format);
    const Shard& shard = shards_.back();
    TESSERA_CHECK(o.windows != WindowMode::Example || shard.has_example_starts(), "shard ", file,
                  shard.has_loss_mask()
                      ? " has a version 1 loss mask, which marks no examples,"
                      : " has no loss mask (" + loss_mask_path(file) + "), so no examples,",
                  " but data.windows is example (one window per example): tokenize the examples "
                  "(again) with --format sft, or set data.windows: packed");
    TESSERA_CHECK(!pairs || shard.has_pair_starts(), "shard ", file,
                  " holds no preference pairs: write it with tokenize --format pairs (data.windows "
                  "is pairs, and ",
                  shard.has_loss_mask() ? "its loss mask marks no pair"
                                        : "it has no loss mask, " + loss_mask_path(file),
                  ")");
    // Packed or example windows of pairs would train a language model on the rejected responses
    // as on the chosen ones: nothing would fail, the model would just learn the wrong thing.
    TESSERA_CHECK(pairs || !shard.has_pair_starts(), "shard ", file,
                  " holds preference pairs (tokenize --format pairs): train them with "
                  "data.windows: pairs and train.objective: dpo (windows of another mode would "
                  "teach the model the rejected responses as well as the chosen ones)");
    if (pairs) check_pairs(shard);
    const int64_t written = shards_.back().written_vocab();
    TESSERA_CHECK(
        o.tokenizer.empty() || written == 0 || (o.tokenizer == "byte") == (written == 257),
        "shard ", file, " was written for a vocabulary of ", written,
        written == 257 ? " (the byte tokenizer's)" : " (not the byte tokenizer's 257)",
        ", but data.tokenizer is ", o.tokenizer, ": tokenize the corpus with --tokenizer ",
        o.tokenizer, ", or set data.tokenizer and model.vocab_size for these shards");
    if (!examples)
      first_window_.push_back(first_window_.back() + count_windows({shards_.back().size()}, T));
  }
  if (examples) count_examples();
  total_windows_ = first_window_.back();
  // Loss masks on every shard or on none: a shard without one among masked ones would train on
  // its prompts too, silently.
  for (const Shard& s : shards_)
    TESSERA_CHECK(s.has_loss_mask() == shards_[0].has_loss_mask(), "shard ", s.path(),
                  s.has_loss_mask() ? " has" : " has no", " loss mask (", loss_mask_path(s.path()),
                  ") but shard ", shards_[0].path(),
                  shards_[0].has_loss_mask() ? " has" : " has no",
                  " one: the shards of a set are all masked (tokenize --format sft) or none is");

  TESSERA_CHECK(!examples || total_windows_ > 0, "DataLoader: the shards (", o.files[0],
                o.files.size() > 1 ? " and more" : "", ") mark no example in their loss masks");
  if (total_windows_ == 0) {
    std::ostringstream sizes;
    int64_t total_tokens = 0;
    for (size_t s = 0; s < shards_.size(); ++s) {
      total_tokens += shards_[s].size();
      if (s < 8) sizes << (s ? ", " : "") << shards_[s].path() << ": " << shards_[s].size();
    }
    if (shards_.size() > 8) sizes << ", ... (" << shards_.size() << " files)";
    TESSERA_FAIL("DataLoader: no shard holds a window of seq_len + 1 = ", T + 1, " tokens (",
                 total_tokens, " tokens in total; per file: ", sizes.str(),
                 "); windows never cross shard boundaries");
  }
  const int64_t global = int64_t(o.world) * o.batch_size;
  const std::string shards =
      o.files.size() == 1 ? o.files[0]
                          : o.files[0] + " and " + std::to_string(o.files.size() - 1) + " more";
  // "windows of 65 tokens" | "examples (one window each)"
  const std::string unit = pairs      ? "preference pairs (two windows each)"
                           : examples ? "examples (a window each)"
                                      : "windows of " + std::to_string(T + 1) + " tokens";
  TESSERA_CHECK(total_windows_ >= global, "DataLoader: the shards (", shards, ") hold ",
                total_windows_, " ", unit,
                ", fewer than one global batch of world x batch_size = ", o.world, " x ",
                o.batch_size, " = ", global);
  if (options_.step_windows == 0) options_.step_windows = global;
  TESSERA_CHECK(options_.step_windows % global == 0, "DataLoader: step_windows ",
                options_.step_windows, " is not a multiple of world x batch_size = ", o.world,
                " x ", o.batch_size, " = ", global);
  TESSERA_CHECK(total_windows_ >= options_.step_windows, "DataLoader: the shards (", shards,
                ") hold ", total_windows_, " ", unit, ", fewer than one optimizer step of ",
                options_.step_windows, " windows");
  seed_ = o.seed;
}

void DataLoader::check_pairs(const Shard& shard) const {
  // Pair k is examples 2k (its chosen one, the pair start) and 2k + 1 (its rejected one): an
  // example starts a pair exactly when its index is even, and there is an even number of them.
  const std::vector<int64_t>& e = shard.example_starts();
  const std::vector<int64_t>& p = shard.pair_starts();  // a subset of e (Shard checks the bits)
  const std::string& file = shard.path();
  const char* why =
      " (a shard of pairs, tokenize --format pairs, holds whole pairs, each a chosen "
      "example then a rejected one)";
  TESSERA_CHECK(p[0] == 0, "shard ", file,
                ": token 0 starts no preference pair (the first starts at token ", p[0], ")", why);
  size_t j = 0;  // the pair starts met so far; example 0 is the first (p[0] == 0 is an example)
  for (size_t i = 0; i < e.size(); ++i) {
    const bool starts_pair = j < p.size() && p[j] == e[i];
    j += starts_pair;
    if (starts_pair == (i % 2 == 0)) continue;
    if (starts_pair)
      TESSERA_FAIL("shard ", file, ": the preference pair at token ", e[i - 1],
                   " holds one example: the next example, at token ", e[i], ", starts a pair too",
                   why);
    TESSERA_FAIL("shard ", file, ": the example at token ", e[i],
                 " starts no preference pair, but the pair before it (at token ", e[i - 2],
                 ") holds two examples already", why);
  }
  TESSERA_CHECK(e.size() % 2 == 0, "shard ", file, ": the last preference pair, at token ",
                e.back(), ", holds one example and no rejected one", why);
}

void DataLoader::count_examples() {
  const int64_t T = options_.seq_len;
  const int64_t parts = options_.windows == WindowMode::Pairs ? 2 : 1;  // examples a window
  int64_t targets = 0;
  for (const Shard& s : shards_) {
    const std::vector<int64_t>& starts = s.example_starts();
    first_window_.push_back(first_window_.back() + int64_t(starts.size()) / parts);
    for (size_t i = 0; i < starts.size(); ++i) {
      const int64_t length = (i + 1 < starts.size() ? starts[i + 1] : s.size()) - starts[i];
      examples_cut_ += length > T + 1;
      targets += std::min(length, T + 1) - 1;
    }
  }
  const int64_t windows = first_window_.back();
  window_fill_ = windows ? double(targets) / double(windows * parts * T) : 0;
}

int64_t DataLoader::used_windows() const {
  return total_windows_ / options_.step_windows * options_.step_windows;
}

int64_t DataLoader::batches_per_epoch() const {
  return used_windows() / (int64_t(options_.world) * options_.batch_size);
}

void DataLoader::ensure_order() {
  if (!options_.shuffle) return;  // identity: window w is order position w, nothing to store
  if (order_epoch_ == epoch_ && order_seed_ == seed_) return;
  order_.resize(size_t(total_windows_));
  std::iota(order_.begin(), order_.end(), int64_t(0));
  shuffle_windows(order_, seed_, epoch_);
  order_seed_ = seed_;
  order_epoch_ = epoch_;
}

const Shard& DataLoader::locate(int64_t window, int part, int64_t* start, int64_t* end) const {
  // The last shard whose first window is <= window; shards without windows are skipped because
  // their first_window_ equals the next shard's.
  auto it = std::upper_bound(first_window_.begin(), first_window_.end(), window);
  const size_t s = size_t(it - first_window_.begin()) - 1;
  const int64_t i = window - first_window_[s];  // the shard's window i
  const Shard& shard = shards_[s];
  if (options_.windows == WindowMode::Packed) {
    *start = i * options_.seq_len;
    *end = *start + options_.seq_len + 1;
  } else {
    const std::vector<int64_t>& starts = shard.example_starts();
    const size_t e = size_t(options_.windows == WindowMode::Pairs ? 2 * i + part : i);
    *start = starts[e];
    *end = e + 1 < starts.size() ? starts[e + 1] : shard.size();
  }
  return shard;
}

Batch DataLoader::next() {
  ensure_order();
  const int64_t B = options_.batch_size, T = options_.seq_len;
  const int parts = options_.windows == WindowMode::Pairs ? 2 : 1;  // a pair: chosen, rejected
  Tensor inputs = Tensor::empty({parts * B, T}, DType::I32);
  Tensor targets = Tensor::empty({parts * B, T}, DType::I32);
  int32_t* in = inputs.data<int32_t>();
  int32_t* tg = targets.data<int32_t>();

  const int64_t per_call = int64_t(options_.world) * B;
  const int64_t first = position_ + options_.rank * B;
  WindowBuffer scratch;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t slot = first + b;
    const int64_t window = options_.shuffle ? order_[size_t(slot)] : slot;
    for (int part = 0; part < parts; ++part) {  // rows b and B + b under pairs
      int64_t start = 0, end = 0;
      const Shard& shard = locate(window, part, &start, &end);  // sets them: before they are read
      const int64_t row = part * B + b;
      read_example(shard, start, end, T, in + row * T, tg + row * T, scratch);
    }
  }

  position_ += per_call;
  roll_over();
  return {inputs, targets};
}

void DataLoader::roll_over() {
  if (position_ + int64_t(options_.world) * options_.batch_size > used_windows()) {
    ++epoch_;
    position_ = 0;
  }
}

int64_t DataLoader::window_index() const { return epoch_ * used_windows() + position_; }

void DataLoader::seek(int64_t window) {
  TESSERA_CHECK(window >= 0, "DataLoader::seek: negative window index ", window);
  const int64_t per_epoch = used_windows();
  set_state({seed_, window / per_epoch, window % per_epoch});
}

void DataLoader::set_state(const LoaderState& state) {
  const int64_t per_epoch = used_windows();
  TESSERA_CHECK(state.epoch >= 0, "DataLoader::set_state: negative epoch ", state.epoch);
  // position == per_epoch is accepted: it is the state "after the last window" of that epoch.
  TESSERA_CHECK(state.position >= 0 && state.position <= per_epoch,
                "DataLoader::set_state: position ", state.position, " is outside the ", per_epoch,
                " windows an epoch uses (were the shards, seq_len or the tokens per step changed "
                "since the state was saved?)");
  seed_ = state.seed;
  epoch_ = state.epoch;
  position_ = state.position;
  roll_over();
}

std::vector<std::string> expand_glob(const std::string& pattern, const std::string& what) {
  glob_t g{};
  // GLOB_MARK appends '/' to directories so they can be left out: a directory is never a shard.
  const int rc = ::glob(pattern.c_str(), GLOB_MARK, nullptr, &g);
  std::vector<std::string> files;
  if (rc == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) {
      std::string path = g.gl_pathv[i];
      if (!path.empty() && path.back() != '/') files.push_back(std::move(path));
    }
  }
  globfree(&g);
  TESSERA_CHECK(rc == 0 || rc == GLOB_NOMATCH, what, ": reading the directories of '", pattern,
                "' failed (glob error ", rc, ")");
  // data/ is where scripts/prepare_data.sh writes the corpora's shards.
  std::error_code ec;
  const char* hint =
      std::filesystem::is_directory(pattern, ec)
          ? " (a directory: name its shards with a glob, as data/kjv/byte/train_*.bin)"
      : pattern.starts_with("data/") ? " (run scripts/prepare_data.sh?)"
                                     : "";
  TESSERA_CHECK(!files.empty(), what, ": no files match '", pattern, "'", hint);
  // glob sorts by the locale's collation; this order is the same on every machine.
  std::sort(files.begin(), files.end(), shard_order);
  return files;
}

bool shard_order(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  while (i < a.size() && j < b.size()) {
    if (digit(a[i]) && digit(b[j])) {  // a run of digits against a run: by value
      size_t ie = i, je = j;
      while (ie < a.size() && digit(a[ie])) ++ie;
      while (je < b.size() && digit(b[je])) ++je;
      size_t ia = i, jb = j;  // leading zeros do not count
      while (ia + 1 < ie && a[ia] == '0') ++ia;
      while (jb + 1 < je && b[jb] == '0') ++jb;
      if (ie - ia != je - jb) return ie - ia < je - jb;
      if (const int c = a.compare(ia, ie - ia, b, jb, je - jb); c != 0) return c < 0;
      i = ie, j = je;
    } else {
      if (a[i] != b[j]) return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
      ++i, ++j;
    }
  }
  if ((a.size() - i) != (b.size() - j)) return a.size() - i < b.size() - j;
  return a < b;  // equal but for leading zeros: bytewise, so the order is total
}

}  // namespace tessera::data
