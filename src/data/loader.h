// A deterministic, resumable loader of (inputs, targets) batches from token shards.
//
//   DataLoader loader({.files = expand_glob("data/kjv/train_*.bin"), .batch_size = 12,
//                      .seq_len = 64, .vocab_size = 257, .seed = 1337});
//   Batch b = loader.next();              // b.inputs, b.targets: (B, T) i32 on the CPU
//   LoaderState s = loader.state();       // saved in checkpoints under /data
//   loader.set_state(s);                  // the next batch is the one that followed s, bit for bit
//
// B = batch size (per rank), T = sequence length, W = world size (data-parallel ranks).
//
// Windows: each shard is cut into windows of T + 1 tokens starting at 0, T, 2T, ...; consecutive
// windows share one token, so every token but a shard's first is a target exactly once (a tail of
// fewer than T + 1 tokens is not used). Windows never cross shards, each a file of its own
// (tokenize cuts its stream into shards of a fixed size, a document across two at most: the up to T
// tokens lost at each boundary are nothing at 10^8 tokens a shard). inputs = window[0, T), targets
// = window[1, T + 1).
//
// Order: an epoch visits all windows of all shards once, in a permutation that is a pure function
// of (seed, epoch) (identity when shuffle is off). One call of next() on every rank reads W * B
// consecutive windows of that order; rank r takes windows [r * B, (r + 1) * B) of them, so the
// ranks' batches are disjoint and their union, in rank order, is the global micro-batch.
//
// Positions count windows, not batches, so they mean the same thing at any world size: a run that
// reads S windows per optimizer step (step_windows = W * B * accumulation) reads the same windows
// in the same steps on 1, 2 or 4 ranks. An epoch uses the largest multiple of S windows it holds
// (the remainder is dropped), and ends early when fewer than W * B windows are left before that
// (after a seek past skipped data); the next epoch starts with a new permutation.
//
// Loss masks (shard.h): where the shards carry them, a target whose mask byte is 0 is
// kIgnoreTarget, which the loss skips (a prompt's tokens in supervised fine-tuning); the inputs
// are the tokens as ever. Every shard of a loader has a mask or none does.
//
// Example windows (WindowMode::Example, the config's data.windows: example): instead of the cuts
// above, each example of a supervised fine-tuning set (its first token marked in a version 2 loss
// mask, tokenize --format sft) is a window of its own, so no row holds the end of one example and
// the start of the next, and no example starts at a row's middle with the one before as context.
// An example of L <= T + 1 tokens fills inputs [0, L - 1) and targets [0, L - 1); the rest of the
// row is padding (input id 0, target kIgnoreTarget: a causal model's scored positions never see
// it). A longer example keeps its last T + 1 tokens, the response the loss scores; its first ones
// are cut (examples_cut() counts such examples). The order, positions and state are as above,
// counted in examples.
//
// Pair windows (WindowMode::Pairs, data.windows: pairs; Direct Preference Optimization, Rafailov
// et al. 2023, train/dpo.h): the shards hold preference pairs (tokenize --format pairs), each its
// chosen example then its rejected one, the chosen one's first token marked in a version 3 loss
// mask (shard.h: kMaskPairStart). The unit is a pair: B counts pairs per rank, and next() returns
// (2B, T) rows, rows [0, B) the chosen examples of this rank's B pairs and rows [B, 2B) their
// rejected ones in the same order (row i and row B + i are one pair). Each example is windowed as
// above (padded, or its first tokens cut; examples_cut() counts examples, window_fill() is over
// all rows). The order is a permutation of pairs, so a pair's two examples are never apart;
// positions, state, seek, step_windows, windows_per_epoch and the ranks' slices are as above,
// counted in pairs. A shard of pairs starts with a pair and holds whole ones (pair starts and
// plain example starts alternate), or it is refused naming the token; so is a shard without pairs
// in this mode, and a shard with pairs in any other mode (a language model trained on both the
// chosen and the rejected responses would learn the rejected ones too, silently).
//
// State: (seed, epoch, position) with position the index of the next window in the epoch's order;
// it holds no reference to files, so a checkpoint stays valid as long as the shards, T and the
// windows per step are the same.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "data/shard.h"

namespace tessera::data {

// The target of a token the loss does not score: cross_entropy's ignore index (ops/softmax.h).
constexpr int32_t kIgnoreTarget = -100;

enum class WindowMode { Packed, Example, Pairs };
// "packed" | "documents" | "example" | "pairs" (the config's data.windows; documents are cut as
// packed windows, the model keeping their documents apart); anything else is an error naming `key`.
WindowMode parse_window_mode(const std::string& name, const std::string& key);

struct LoaderOptions {
  std::vector<std::string> files;  // shards, read in this order (see expand_glob)
  int64_t batch_size = 0;          // B, per rank (pairs under WindowMode::Pairs: 2B rows)
  int64_t seq_len = 0;             // T
  int64_t vocab_size = 0;          // every id must be below it (checked when the shards open)
  // The config's data.tokenizer ("byte" | "gpt2"; "" = unchecked): a shard whose header records
  // the other's vocabulary (byte: 257) is refused, its ids being valid ids of both.
  std::string tokenizer;
  uint64_t seed = 0;
  bool shuffle = true;
  int rank = 0, world = 1;
  int64_t step_windows = 0;  // S: windows per optimizer step over all ranks; 0 = world * batch_size
  ShardFormat format = ShardFormat::Header;
  WindowMode windows = WindowMode::Packed;
};

struct LoaderState {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t position = 0;  // next window within the epoch's order
  bool operator==(const LoaderState&) const = default;
};

struct Batch {
  Tensor inputs;   // (B, T) i32, CPU; (2B, T) under WindowMode::Pairs, chosen rows then rejected
  Tensor targets;  // the same shape: inputs shifted left by one token (kIgnoreTarget: masked)
};

class DataLoader {
 public:
  explicit DataLoader(LoaderOptions options);

  Batch next();
  LoaderState state() const { return {seed_, epoch_, position_}; }
  void set_state(const LoaderState& state);

  // The first window next() reads (on rank 0), counted across epochs: epoch * used_windows() +
  // position. Loss-spike rollback names data ranges by it; seek(i) makes window i the next one.
  int64_t window_index() const;
  void seek(int64_t window);

  int64_t windows_per_epoch() const { return total_windows_; }  // over all ranks
  int64_t used_windows() const;  // per epoch: the largest multiple of step_windows <= the total
  int64_t batches_per_epoch() const;  // next() calls per epoch without seeks (W * B windows each)
  const LoaderOptions& options() const { return options_; }
  // What the shards hold, in order: a CRC-32C over each one's token count and the CRC-32C of its
  // token bytes (Shard::tokens_crc32c). Two loaders of equal fingerprints read the same tokens.
  uint32_t contents_fingerprint() const;
  const std::vector<Shard>& shards() const { return shards_; }     // open, in options().files order
  bool loss_masked() const { return shards_[0].has_loss_mask(); }  // every shard has a mask
  // Example and pair windows: the examples longer than T + 1 tokens (their first tokens cut), and
  // the share of all rows' targets that hold an example's tokens rather than padding (1 when
  // packed).
  int64_t examples_cut() const { return examples_cut_; }
  double window_fill() const { return window_fill_; }

 private:
  void roll_over();     // starts the next epoch when fewer than W * B used windows are left
  void ensure_order();  // (re)computes order_ for (seed_, epoch_) when they changed
  // The shard of a window and its tokens [*start, *end) (T + 1 of them when packed); under pairs
  // the pair's chosen example (part 0) or its rejected one (part 1).
  const Shard& locate(int64_t window, int part, int64_t* start, int64_t* end) const;
  // Example and pair windows: first_window_, examples_cut_, window_fill_.
  void count_examples();
  void check_pairs(const Shard& shard) const;  // pairs: whole pairs, starts alternating

  LoaderOptions options_;
  std::vector<Shard> shards_;
  std::vector<int64_t> first_window_;  // first_window_[s] = windows in shards [0, s); size S + 1
  int64_t total_windows_ = 0;
  int64_t examples_cut_ = 0;
  double window_fill_ = 1;

  uint64_t seed_ = 0;
  int64_t epoch_ = 0, position_ = 0;
  // The permutation of [0, total_windows_) for (order_seed_, order_epoch_).
  std::vector<int64_t> order_;
  uint64_t order_seed_ = 0;
  int64_t order_epoch_ = -1;  // -1: not computed yet
};

// One window: the last (at most) T + 1 of tokens [start, end) of shard into inputs[0, T) and
// targets[0, T) (the tokens one later, kIgnoreTarget where the shard's loss mask says 0), padded
// past them (input 0, target kIgnoreTarget). Returns the targets scored. scratch: buffers reused
// from call to call. read_window is a packed window, tokens [start, start + T].
struct WindowBuffer {
  std::vector<uint32_t> tokens;
  std::vector<uint8_t> mask;
};
int64_t read_example(const Shard& shard, int64_t start, int64_t end, int64_t T, int32_t* inputs,
                     int32_t* targets, WindowBuffer& scratch);
inline int64_t read_window(const Shard& shard, int64_t start, int64_t T, int32_t* inputs,
                           int32_t* targets, WindowBuffer& scratch) {
  return read_example(shard, start, start + T + 1, T, inputs, targets, scratch);
}

// The windows of seq_len + 1 tokens (above) that shards of these token counts hold: the sum over
// shards of (n - 1) / seq_len. DataLoader counts so; eval counts the batches it will read so at
// each context without opening the shards again.
int64_t count_windows(const std::vector<int64_t>& shard_tokens, int64_t seq_len);

// The files matching a shell glob ("data/kjv/train_*.bin"), in shard_order, so every rank and every
// run sees the same order. An error naming `what` (the key or flag that gave the pattern) and the
// pattern when nothing matches.
std::vector<std::string> expand_glob(const std::string& pattern,
                                     const std::string& what = "expand_glob");
// Bytewise, but runs of digits compare by their value: train_999.bin, train_1000.bin (tokenize
// numbers shards with at least three digits, so the 1001st has four); names of one width, as most
// shard sets have, keep their bytewise order.
bool shard_order(const std::string& a, const std::string& b);

}  // namespace tessera::data
