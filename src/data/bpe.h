// Inside src/data: the byte-level BPE that two file formats load into, GPT-2's encoder.json +
// vocab.bpe (bpe.cpp) and Hugging Face's tokenizer.json (hf_tokenizer.cpp), and the helpers both
// loaders share. tokenizer.h is the interface the rest of tessera sees.
//
//   BpeTables t;                      // tokens by id, merges by pair, the end-of-text id ...
//   t.tokens = {...};  t.merges[bpe_pair(l, r)] = {rank, result};
//   std::unique_ptr<Tokenizer> tok = make_byte_level_bpe(std::move(t));
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/pretokenize.h"
#include "data/tokenizer.h"

namespace tessera::data {

struct BpeMerge {
  uint32_t rank;    // lower merges first
  uint32_t result;  // id of the merged token
};
inline uint64_t bpe_pair(uint32_t left, uint32_t right) { return (uint64_t(left) << 32) | right; }

struct BpeTables {
  std::string name;                               // Tokenizer::name(): "gpt2" | "hf"
  std::vector<std::string> tokens;                // id -> bytes; every id in [0, size) is one
  std::unordered_map<uint64_t, BpeMerge> merges;  // (left id, right id) -> rank, result
  uint32_t eot = 0;                               // end-of-text id
  std::optional<uint32_t> bos;                    // beginning-of-text id, where there is one
  std::unordered_map<std::string, uint32_t> added;  // added (special) tokens: text -> id
  Pretokenizer pretokenizer = Pretokenizer::Gpt2;
  // Hugging Face's BPE option: a piece that is a token as a whole becomes that token without
  // merges (Llama 3's tokenizer.json sets it, as tiktoken behaves).
  bool ignore_merges = false;
  // SentencePiece: "▁" before each piece between added tokens (the legacy Prepend normaliser,
  // Metaspace's prepend_scheme always), else only at the text's start (prepend_scheme first).
  bool prepend_each_piece = true;
};

// What the byte-level and SentencePiece BPEs share: their tables, and what the tables answer.
class BpeTokenizer : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeTables t) : t_(std::move(t)) {}
  int64_t vocab_size() const override { return int64_t(t_.tokens.size()); }
  uint32_t eot_id() const override { return t_.eot; }
  std::optional<uint32_t> bos_id() const override { return t_.bos; }
  std::optional<uint32_t> added_token(std::string_view text) const override;
  std::string name() const override { return t_.name; }

 protected:
  // The text of ids[i]; an id outside the vocabulary is an error naming it and its position.
  const std::string& token(const std::vector<uint32_t>& ids, size_t i) const;

  BpeTables t_;
};

// Symbols (token ids) merged by BPE: the adjacent pair of lowest rank in merges first, the leftmost
// of equals first, until no adjacent pair has a merge.
std::vector<uint32_t> merge_symbols(std::vector<uint32_t> ids,
                                    const std::unordered_map<uint64_t, BpeMerge>& merges);

// SentencePiece's space, U+2581 ("▁"), in its tokens' text.
inline constexpr std::string_view kSentencePieceSpace = "\xe2\x96\x81";

// SentencePiece's BPE over the tables (sentencepiece_bpe.cpp): tokens are their text, "▁" for a
// space, and the 256 byte tokens <0x00> .. <0xFF> must be among them (byte fallback).
std::unique_ptr<Tokenizer> make_sentencepiece_bpe(BpeTables tables, const std::string& source);

// The tokenizer over the tables: every one of the 256 single bytes must be a token (byte-level).
// `source` names the file for that error.
std::unique_ptr<Tokenizer> make_byte_level_bpe(BpeTables tables, const std::string& source);

// GPT-2's bytes_to_unicode spelling, in which both formats write tokens: bytes 33..126, 161..172
// and 174..255 stand for themselves, the other 68 are U+0100 + n ("\u0120the" is " the").
// unspell: a spelled token -> its raw bytes (false when a character spells no byte); spell: back.
bool unspell(std::string_view spelled, std::string& bytes);
std::string spell(std::string_view bytes);

// A tokenizer file's bytes; one that cannot be read is an error "<name> tokenizer: cannot read
// <path>: <reason><hint>".
std::string read_tokenizer_file(const std::string& path, const std::string& name,
                                const std::string& hint = "");

// For error messages: at most 40 bytes, control characters escaped.
std::string quoted_token(std::string_view s);

// Every token but the 256 single bytes and those `special` marks is some merge's result (`made`):
// a merge list cut off at a line boundary still parses, but BPE would never reach the longer
// tokens and would encode text into ids the model was not trained on. On failure the error starts
// with `what` ("gpt2 tokenizer: vocab.bpe has 999 merges") and names the first token no merge
// makes.
void check_every_token_is_made(const std::vector<std::string>& tokens,
                               const std::vector<bool>& made, const std::vector<bool>& special,
                               const std::string& what, const std::string& hint);

}  // namespace tessera::data
