// Where documents start in the rows of a (B, T) batch of token ids, for attention that stays
// inside each document (block-causal attention: a query sees the keys of its own document only)
// and for positions that restart at each document.
//
//   Documents d = Documents::at_token(ids, B, T, eot);      // a document starts at each eot
//   d.for_each([](int64_t b, int64_t start, int64_t length) { ... });  // row order, then start
//   std::vector<int32_t> pos = d.positions();               // (B, T): t - its document's start
//
// Packed training windows hold the end of one document and the start of the next; with plain
// causal attention the second attends the first. Llama 3 trains with a mask that keeps
// self-attention within each document of a sequence (Dubey et al. 2024, arXiv:2407.21783,
// section 3.2: "we use an attention mask that prevents self-attention between different documents
// within the same sequence"); FlashAttention's variable-length kernels serve the same packing.
// The attention ops (ops/packed_attention.h) take a Documents and run their kernels on each
// document's rows as a sequence of its own.
//
// The end-of-text token between documents opens the next one, as GPT-2's <|endoftext|> does in
// llm.c's shards: the document before predicts it (learning where documents end), and the first
// token after it is predicted from it alone (as from a beginning-of-text token), not from the
// document before.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace tessera::ops {

class Documents {
 public:
  // Documents of a (B, T) row-major batch of ids: one starts at t = 0 of every row and at every
  // t > 0 whose id is `mark` (tokenize's end of text between documents and after every
  // fine-tuning example).
  static Documents at_token(const int32_t* ids, int64_t B, int64_t T, int32_t mark);

  int64_t batch() const { return B_; }
  int64_t length() const { return T_; }
  int64_t count() const { return int64_t(starts_.size()); }  // documents over all rows
  bool whole_rows() const { return count() == B_; }          // one document a row: plain causal
  // fn(b, start, length) for every document, in row order, then by start.
  void for_each(const std::function<void(int64_t, int64_t, int64_t)>& fn) const;
  // (B, T) row-major: t minus the start of t's document.
  std::vector<int32_t> positions() const;

 private:
  int64_t B_ = 0, T_ = 0;
  std::vector<int64_t> starts_;     // every row's starts, row after row
  std::vector<int64_t> row_first_;  // row b's starts are starts_[row_first_[b], row_first_[b + 1])
};

}  // namespace tessera::ops
