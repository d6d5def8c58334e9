// SentencePiece's BPE as Hugging Face's tokenizer.json writes it for Meta Llama 2 and the models
// built on its tokenizer (TinyLlama, Vicuna, Code Llama): the text's spaces become "▁" (U+2581)
// and one "▁" goes first, the whole text is one word whose characters are the first symbols (a
// character outside the vocabulary falls back to its UTF-8 bytes, the tokens <0x00> .. <0xFF>),
// and the merges join symbols lowest rank first (bpe.h's merge_symbols). Decoding writes "▁" as a
// space and the byte tokens as their bytes, and drops the one space the text starts with
// (decode_more, for ids that continue others, keeps it). hf_tokenizer.cpp says which files load
// here.
#include <algorithm>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "data/bpe.h"
#include "data/utf8.h"

namespace tessera::data {
namespace {

constexpr std::string_view kSpace = kSentencePieceSpace;

// "<0x41>" -> 0x41; -1 for any other token.
int byte_of(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token[5] != '>') return -1;
  int value = 0;
  for (const char c : token.substr(3, 2)) {
    const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

class SentencePieceBpe final : public BpeTokenizer {
 public:
  SentencePieceBpe(BpeTables t, const std::string& source) : BpeTokenizer(std::move(t)) {
    std::fill(std::begin(byte_id_), std::end(byte_id_), uint32_t(-1));
    for (size_t id = 0; id < t_.tokens.size(); ++id) {
      vocab_.emplace(t_.tokens[id], uint32_t(id));
      if (const int b = byte_of(t_.tokens[id]); b >= 0) {
        byte_id_[b] = uint32_t(id);
        is_byte_.insert(uint32_t(id));
      }
    }
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      TESSERA_CHECK(byte_id_[b] != uint32_t(-1), t_.name, " tokenizer: ", source,
                    ": model.byte_fallback is set but the byte token ", name,
                    " is not in model.vocab (every byte needs one)");
    }
  }

  std::vector<uint32_t> encode(std::string_view text) const override {
    return text.empty() ? std::vector<uint32_t>{} : encode_spaced(text, true);
  }
  std::vector<uint32_t> encode_more(std::string_view text) const override {
    return encode_spaced(text, false);
  }
  std::vector<uint32_t> encode_piece(std::string_view text) const override {
    return t_.prepend_each_piece ? encode(text) : encode_more(text);
  }

  std::string decode(const std::vector<uint32_t>& ids) const override {
    std::string out = decode_more(ids);
    if (!out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  }

  std::string decode_more(const std::vector<uint32_t>& ids) const override {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
      const std::string& text = token(ids, i);
      if (is_byte_.count(ids[i])) {
        out += char(byte_of(text));
        continue;
      }
      for (size_t k = 0; k < text.size();) {  // "▁" is a space
        if (std::string_view(text).substr(k, kSpace.size()) == kSpace) {
          out += ' ';
          k += kSpace.size();
        } else {
          out += text[k++];
        }
      }
    }
    return out;
  }

 private:
  // text with its spaces as "▁" (and one first where `first`), its characters the first symbols
  // (those outside the vocabulary as their bytes), merged.
  std::vector<uint32_t> encode_spaced(std::string_view text, bool first) const {
    std::string s = first ? std::string(kSpace) : std::string();
    for (const char c : text) {
      if (c == ' ')
        s += kSpace;
      else
        s += c;
    }
    std::vector<uint32_t> ids;
    ids.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      const Utf8Char c = decode_utf8(s, i);
      const auto it = vocab_.find(std::string_view(s).substr(i, c.len));
      if (it != vocab_.end()) {
        ids.push_back(it->second);
      } else {
        for (uint32_t k = 0; k < c.len; ++k) ids.push_back(byte_id_[uint8_t(s[i + k])]);
      }
      i += c.len;
    }
    return merge_symbols(std::move(ids), t_.merges);
  }

  std::unordered_map<std::string_view, uint32_t> vocab_;  // token text -> id (views of t_)
  std::unordered_set<uint32_t> is_byte_;                  // the <0xXX> tokens
  uint32_t byte_id_[256];
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_bpe(BpeTables tables, const std::string& source) {
  return std::make_unique<SentencePieceBpe>(std::move(tables), source);
}

}  // namespace tessera::data
