// The tokenizer factory and the byte tokenizer (the byte-level BPE lives in bpe.cpp, its
// tokenizer.json loader in hf_tokenizer.cpp).
#include "data/tokenizer.h"

#include <algorithm>

#include "core/error.h"

namespace tessera::data {
namespace {

constexpr const char* kDefaultGpt2Dir = "data/tokenizers/gpt2";

// ids 0..255 are the bytes; 256 marks end-of-text. Needs no files, so a model can be trained on
// any text without a vocabulary.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr uint32_t kEot = 256;

  std::vector<uint32_t> encode(std::string_view text) const override {
    std::vector<uint32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }

  std::string decode(const std::vector<uint32_t>& ids) const override {
    std::string out;
    out.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] == kEot) {
        out += "<|endoftext|>";
        continue;
      }
      TESSERA_CHECK(ids[i] < kEot, "byte tokenizer: cannot decode id ", ids[i], " at position ", i,
                    " (vocabulary 257)");
      out += static_cast<char>(ids[i]);
    }
    return out;
  }

  int64_t vocab_size() const override { return 257; }
  uint32_t eot_id() const override { return kEot; }
  std::optional<uint32_t> added_token(std::string_view text) const override {
    return text == "<|endoftext|>" ? std::optional(kEot) : std::nullopt;
  }
  std::string name() const override { return "byte"; }
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& dir) {
  if (name == "byte") return make_byte_tokenizer();
  if (name == "gpt2") {
    const std::string d = dir.empty() ? kDefaultGpt2Dir : dir;
    return make_gpt2_tokenizer(d + "/encoder.json", d + "/vocab.bpe");
  }
  if (name == "hf") {
    TESSERA_CHECK(!dir.empty(),
                  "hf tokenizer: no directory given (the one holding tokenizer.json)");
    return make_hf_tokenizer(dir);
  }
  TESSERA_FAIL("unknown tokenizer '", name, "' (expected byte, gpt2 or hf)");
}

uint32_t require_bos(const Tokenizer& tok, const std::string& what) {
  const std::optional<uint32_t> bos = tok.bos_id();
  TESSERA_CHECK(bos.has_value(), what, ": the ", tok.name(), " tokenizer has no beginning-of-text ",
                "token",
                tok.name() == "hf" ? " (no bos_token in tokenizer_config.json, and "
                                     "neither <|begin_of_text|> nor <s> is an added token)"
                                   : "");
  return *bos;
}

Prompt encode_prompt(const Tokenizer& tok, std::string_view text, bool bos,
                     const std::string& what) {
  Prompt p{tok.encode(text), 0, {tok.eot_id()}};
  if (bos || p.ids.empty()) {  // one marker id first, not shown
    p.ids.insert(p.ids.begin(), bos ? require_bos(tok, what) : tok.eot_id());
    p.hidden = 1;
  }
  return p;
}

namespace {

// ids from `from` on, less a final id that ends the generation: the text's start (decode), or what
// follows the prompt (decode_more).
std::string decode_from(const Tokenizer& tok, const Prompt& prompt, const std::vector<int32_t>& ids,
                        size_t from, bool start) {
  std::vector<uint32_t> text(ids.begin() + std::min(from, ids.size()), ids.end());
  if (!text.empty() &&
      std::find(prompt.ends.begin(), prompt.ends.end(), text.back()) != prompt.ends.end())
    text.pop_back();
  return start ? tok.decode(text) : tok.decode_more(text);
}

}  // namespace

std::vector<int64_t> stop_ids(const Prompt& prompt) {
  return std::vector<int64_t>(prompt.ends.begin(), prompt.ends.end());
}

std::string decode_generation(const Tokenizer& tok, const Prompt& prompt,
                              const std::vector<int32_t>& ids) {
  return decode_from(tok, prompt, ids, prompt.hidden, true);
}

std::string decode_completion(const Tokenizer& tok, const Prompt& prompt,
                              const std::vector<int32_t>& ids) {
  return decode_from(tok, prompt, ids, prompt.ids.size(), false);
}

}  // namespace tessera::data
