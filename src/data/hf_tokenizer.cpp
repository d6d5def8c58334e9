// Hugging Face's tokenizer.json for a byte-level BPE, loaded into bpe.h's tables: the format the
// `tokenizers` library writes (its JSON serialisation of Tokenizer, model BPE), as GPT-2's, Meta
// Llama 3's and Qwen2's / Qwen2.5's / Qwen3's model repositories ship it. Or SentencePiece's BPE
// with byte fallback (sentencepiece_bpe.cpp), as Meta Llama 2's, TinyLlama's and Mistral 7B's
// repositories ship it: model
// BPE with byte_fallback, vocab and merges as their text; normalizer Prepend "▁" then Replace " "
// with "▁" and no pre_tokenizer, or no normalizer and a Metaspace pre_tokenizer ("▁", prepended
// first or always, not split); decoder Replace "▁" with " ", ByteFallback, Fuse, Strip one leading
// space, or Metaspace; every <0xXX> byte token in the vocab.
//
// Accepted, each part checked and anything else refused by name (never encoded differently):
//   model          BPE: vocab {spelled token: id}, merges in rank order ("a b" strings, or
//                  ["a", "b"] pairs as tokenizers 0.20 writes them), ignore_merges; no dropout,
//                  no subword prefix or suffix; byte_fallback only in SentencePiece's layout
//   normalizer     none, or NFC (Qwen's: unicode_nfc.h, applied to the text before
//                  pre-tokenisation, so decode gives back the normalised text)
//   pre_tokenizer  ByteLevel with use_regex (GPT-2's pattern), or a Sequence of a Split on one of
//                  pretokenize.h's patterns (GPT-2's, Llama 3's, Qwen2's; Isolated, not inverted)
//                  and a ByteLevel without its regex; add_prefix_space off (trim_offsets only
//                  moves offsets, which tessera does not report)
//   decoder        ByteLevel, or none
//   added_tokens   ids for text structure (<|begin_of_text|>, <|endoftext|>, <|im_start|>,
//                  <think>): decoded as their content, never parsed out of the text (as
//                  tokenizer.h says of every tokenizer), placed by added_token (chat templates)
// The post-processor (the BOS a model's encode adds) is not applied: tessera places its end-of-text
// id between documents itself. Ids must be dense, 0 .. n - 1, so every id the model emits decodes.
//
// End of text: tokenizer_config.json's eos_token where that file names one (Qwen3's instruct
// models: <|im_end|>), else the first added token among <|endoftext|> (GPT-2, Qwen),
// <|end_of_text|> (Llama 3) and </s>. Beginning of text (none where neither gives one; Qwen's
// bos_token is null): its bos_token, else <|begin_of_text|> (Llama 3) or <s>.
#include <filesystem>
#include <initializer_list>
#include <optional>

#include "checkpoint/json.h"
#include "core/error.h"
#include "data/bpe.h"
#include "data/unicode_nfc.h"
#include "data/utf8.h"

namespace tessera::data {
namespace {

namespace fs = std::filesystem;
constexpr std::string_view kSpace = kSentencePieceSpace;

std::string read_file(const fs::path& path) { return read_tokenizer_file(path.string(), "hf"); }

class TokenizerJson {
 public:
  explicit TokenizerJson(const std::string& dir)
      : dir_(dir), path_((fs::path(dir) / "tokenizer.json").string()) {
    const Json root = parse_json(read_file(path_), "hf tokenizer: " + path_);
    t_.name = "hf";
    check_pipeline(root);
    const Json& model = root.at("model");
    // Dense ids are fewer than the entries: a larger one is refused before it sizes anything.
    const Json* added = root.get("added_tokens");
    limit_ = model.at("vocab").members("model.vocab").size() +
             (added ? added->items("added_tokens").size() : 0);
    read_vocab(model.at("vocab"));
    read_added(root);
    read_merges(model.at("merges"));
    t_.eot = end_of_text();
    t_.bos = named_token("bos_token", {"<|begin_of_text|>", "<s>"});
  }
  BpeTables take() { return std::move(t_); }
  const std::string& path() const { return path_; }
  bool nfc() const { return nfc_; }  // the normalizer is NFC
  bool sentencepiece() const { return sentencepiece_; }

 private:
  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    TESSERA_FAIL("hf tokenizer: ", path_, ": ", args...);
  }
  static bool null_or(const Json* v, const std::string& empty_string) {
    return !v || v->is(Json::Kind::Null) || (v->is(Json::Kind::String) && v->str() == empty_string);
  }
  static std::string type_of(const Json& v) {
    const Json* t = v.get("type");
    return t && t->is(Json::Kind::String) ? t->str() : "(no type)";
  }
  bool flag(const Json& v, const std::string& key, const std::string& where) const {
    const Json* f = v.get(key);
    return f && f->boolean(where + "." + key);
  }

  // The parts around the model: only those that encode as pretokenize.h and bpe.h do.
  void check_pipeline(const Json& root) {
    const Json& model = root.at("model");
    if (type_of(model) != "BPE") fail("model.type is ", type_of(model), ", not BPE");
    if (!null_or(model.get("dropout"), "")) fail("model.dropout is set (BPE dropout samples)");
    if (flag(model, "byte_fallback", "model")) return check_sentencepiece(root);
    if (!null_or(model.get("continuing_subword_prefix"), "") ||
        !null_or(model.get("end_of_word_suffix"), ""))
      fail("model has a continuing_subword_prefix or end_of_word_suffix (not byte-level BPE)");
    t_.ignore_merges = flag(model, "ignore_merges", "model");
    if (const Json* n = root.get("normalizer"); n && !n->is(Json::Kind::Null)) {
      if (type_of(*n) != "NFC") fail("normalizer ", type_of(*n), " is not supported (none or NFC)");
      nfc_ = true;
    }
    if (const Json* d = root.get("decoder");
        d && !d->is(Json::Kind::Null) && type_of(*d) != "ByteLevel")
      fail("decoder ", type_of(*d), " is not supported (ByteLevel or none)");
    const Json* pre = root.get("pre_tokenizer");
    if (!pre || pre->is(Json::Kind::Null)) fail("no pre_tokenizer (byte-level BPE needs one)");
    if (type_of(*pre) == "ByteLevel") {
      byte_level(*pre, true, "pre_tokenizer");
      t_.pretokenizer = Pretokenizer::Gpt2;
      return;
    }
    const Json* steps = pre->get("pretokenizers");
    if (type_of(*pre) != "Sequence" || !steps ||
        steps->items("pre_tokenizer.pretokenizers").size() != 2)
      fail("pre_tokenizer ", type_of(*pre),
           " is not supported (ByteLevel, or a Sequence of a Split and a ByteLevel)");
    const Json& split = steps->items()[0];
    if (type_of(split) != "Split")
      fail("pre_tokenizer.pretokenizers[0] is ", type_of(split), ", not Split");
    const Json* pattern = split.at("pattern").get("Regex");
    if (!pattern) fail("pre_tokenizer.pretokenizers[0].pattern is not a Regex");
    const std::string& regex = pattern->str("pre_tokenizer.pretokenizers[0].pattern.Regex");
    if (regex == pretokenizer_pattern(Pretokenizer::Llama3)) {
      t_.pretokenizer = Pretokenizer::Llama3;
    } else if (regex == pretokenizer_pattern(Pretokenizer::Qwen2)) {
      t_.pretokenizer = Pretokenizer::Qwen2;
    } else if (regex == pretokenizer_pattern(Pretokenizer::Gpt2)) {
      t_.pretokenizer = Pretokenizer::Gpt2;
    } else {
      fail("the Split pattern ", quoted_token(regex),
           " is not one tessera implements (GPT-2's, Llama 3's or Qwen2's)");
    }
    const Json* behavior = split.get("behavior");
    if (!behavior || behavior->str("pre_tokenizer.pretokenizers[0].behavior") != "Isolated" ||
        flag(split, "invert", "pre_tokenizer.pretokenizers[0]"))
      fail("pre_tokenizer.pretokenizers[0] must split Isolated and not inverted");
    if (type_of(steps->items()[1]) != "ByteLevel")
      fail("pre_tokenizer.pretokenizers[1] is ", type_of(steps->items()[1]), ", not ByteLevel");
    byte_level(steps->items()[1], false, "pre_tokenizer.pretokenizers[1]");
  }
  // SentencePiece's layout (the header comment), refused by part where it differs.
  void check_sentencepiece(const Json& root) {
    sentencepiece_ = true;
    const Json& model = root.at("model");
    if (!null_or(model.get("continuing_subword_prefix"), "") ||
        !null_or(model.get("end_of_word_suffix"), ""))
      fail("model has a continuing_subword_prefix or end_of_word_suffix");
    if (flag(model, "ignore_merges", "model")) fail("model.ignore_merges with byte_fallback");
    const Json* n = root.get("normalizer");
    const Json* pre = root.get("pre_tokenizer");
    const bool no_normalizer = !n || n->is(Json::Kind::Null);
    const bool no_pre = !pre || pre->is(Json::Kind::Null);
    if (!no_normalizer && no_pre) {  // Llama 2's: Prepend "▁", Replace " " -> "▁"
      const Json* steps = n->get("normalizers");
      const bool ok = type_of(*n) == "Sequence" && steps &&
                      steps->items("normalizer.normalizers").size() == 2 &&
                      type_of(steps->items()[0]) == "Prepend" &&
                      string_at(steps->items()[0], "prepend") == kSpace &&
                      type_of(steps->items()[1]) == "Replace" &&
                      string_at(steps->items()[1].at("pattern"), "String") == " " &&
                      string_at(steps->items()[1], "content") == kSpace;
      if (!ok)
        fail("normalizer ", type_of(*n), " is not SentencePiece's (a Sequence of Prepend \"",
             kSpace, "\" and Replace \" \" with \"", kSpace, "\")");
    } else if (no_normalizer && !no_pre) {  // the newer files': Metaspace
      const Json* scheme = pre->get("prepend_scheme");
      // Files older than prepend_scheme say add_prefix_space: it must prepend.
      const std::string prepend =
          scheme ? scheme->str("pre_tokenizer.prepend_scheme")
          : pre->get("add_prefix_space") && !flag(*pre, "add_prefix_space", "pre_tokenizer")
              ? "never"
              : "always";
      if (type_of(*pre) != "Metaspace" || string_at(*pre, "replacement") != kSpace ||
          flag(*pre, "split", "pre_tokenizer") || (prepend != "first" && prepend != "always"))
        fail("pre_tokenizer ", type_of(*pre), " is not SentencePiece's (Metaspace \"", kSpace,
             "\", prepended first or always, split false)");
      t_.prepend_each_piece = prepend == "always";
    } else {
      fail(
          "model.byte_fallback is set, but the normalizer and pre_tokenizer are not "
          "SentencePiece's (a normalizer Prepend + Replace and no pre_tokenizer, or no "
          "normalizer and a Metaspace pre_tokenizer)");
    }
    const Json* d = root.get("decoder");
    const Json* parts = d ? d->get("decoders") : nullptr;
    const bool metaspace = d && type_of(*d) == "Metaspace";
    const bool sequence =
        d && type_of(*d) == "Sequence" && parts && parts->items("decoder.decoders").size() == 4 &&
        type_of(parts->items()[0]) == "Replace" &&
        string_at(parts->items()[0].at("pattern"), "String") == kSpace &&
        string_at(parts->items()[0], "content") == " " &&
        type_of(parts->items()[1]) == "ByteFallback" && type_of(parts->items()[2]) == "Fuse" &&
        type_of(parts->items()[3]) == "Strip" && string_at(parts->items()[3], "content") == " " &&
        parts->items()[3].at("start").as_int("decoder.decoders[3].start") == 1 &&
        parts->items()[3].at("stop").as_int("decoder.decoders[3].stop") == 0;
    if (!metaspace && !sequence)
      fail("decoder ", d ? type_of(*d) : "(none)",
           " is not SentencePiece's (Replace, ByteFallback, Fuse, Strip one leading space; or "
           "Metaspace)");
  }
  // v[key] as a string; "" where it is not one.
  static std::string string_at(const Json& v, const char* key) {
    const Json* s = v.get(key);
    return s && s->is(Json::Kind::String) ? s->str() : "";
  }

  void byte_level(const Json& v, bool regex, const std::string& where) const {
    if (flag(v, "add_prefix_space", where)) fail(where, ".add_prefix_space is not supported");
    const Json* r = v.get("use_regex");
    const bool uses = !r || r->boolean(where + ".use_regex");  // the library's default: true
    if (uses != regex)
      fail(where, ".use_regex is ", uses ? "true" : "false", ", expected ",
           regex ? "true" : "false");
  }

  void read_vocab(const Json& vocab) {
    std::string bytes;
    for (const auto& [spelled, id_json] : vocab.members("model.vocab")) {
      const int64_t id = id_json.as_int("model.vocab[" + quoted_token(spelled) + "]");
      check_id(id, "model.vocab[" + quoted_token(spelled) + "]");
      if (sentencepiece_)
        bytes = spelled;  // a token is its text
      else if (!unspell(spelled, bytes))
        fail("model.vocab's token ", quoted_token(spelled),
             " has a character outside the byte-level alphabet (bytes_to_unicode)");
      place(size_t(id), bytes, "model.vocab[" + quoted_token(spelled) + "]");
      if (!encoder_.emplace(bytes, uint32_t(id)).second)
        fail("model.vocab has the token ", quoted_token(spelled), " twice");
    }
  }
  // Added tokens: their content is plain text, not the byte spelling. One that repeats a vocab
  // entry (GPT-2 lists <|endoftext|> in both) must agree with it.
  void read_added(const Json& root) {
    const Json* added = root.get("added_tokens");
    if (!added) return;
    const auto& items = added->items("added_tokens");
    for (size_t i = 0; i < items.size(); ++i) {
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      const int64_t id = items[i].at("id").as_int(where + ".id");
      const std::string& content = items[i].at("content").str(where + ".content");
      check_id(id, where + ".id");
      if (size_t(id) < t_.tokens.size() && set_[id] && !added_[id]) {
        if (t_.tokens[id] != content)
          fail(where, " gives id ", id, " the content ", quoted_token(content), ", model.vocab ",
               quoted_token(t_.tokens[id]));
      } else {
        place(size_t(id), content, where);
      }
      added_[id] = true;
      t_.added.emplace(content, uint32_t(id));
    }
  }
  void check_id(int64_t id, const std::string& where) const {
    if (id < 0 || uint64_t(id) >= limit_)
      fail(where, " is ", id, ": the file gives ", limit_, " tokens, so ids 0..", limit_ - 1);
  }
  void place(size_t id, const std::string& bytes, const std::string& where) {
    if (id >= t_.tokens.size()) {
      t_.tokens.resize(id + 1);
      set_.resize(id + 1, false);
      added_.resize(id + 1, false);
    }
    if (set_[id]) fail(where, ": id ", id, " is given twice");
    t_.tokens[id] = bytes;
    set_[id] = true;
  }

  void read_merges(const Json& merges) {
    const auto& items = merges.items("model.merges");
    for (size_t id = 0; id < set_.size(); ++id)
      if (!set_[id])
        fail("id ", id, " is neither in model.vocab nor an added token (ids must be 0..",
             set_.size() - 1, ")");
    std::vector<bool> made(t_.tokens.size(), false);
    std::string left, right;
    for (size_t rank = 0; rank < items.size(); ++rank) {
      const std::string where = "model.merges[" + std::to_string(rank) + "]";
      std::string l, r;
      if (items[rank].is(Json::Kind::Array)) {
        const auto& pair = items[rank].items(where);
        if (pair.size() != 2) fail(where, " is not a pair");
        l = pair[0].str(where + "[0]"), r = pair[1].str(where + "[1]");
      } else {
        const std::string& line = items[rank].str(where);
        const size_t sp = line.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size() ||
            line.find(' ', sp + 1) != std::string::npos)
          fail(where, ": expected two tokens separated by one space, got ", quoted_token(line));
        l = line.substr(0, sp), r = line.substr(sp + 1);
      }
      if (sentencepiece_)
        left = l, right = r;
      else if (!unspell(l, left) || !unspell(r, right))
        fail(where, ": a character outside the byte-level alphabet in ", quoted_token(l + " " + r));
      const uint32_t a = token_id(left, l, where), b = token_id(right, r, where);
      const uint32_t m = token_id(left + right, l + r, where);
      if (!t_.merges.emplace(bpe_pair(a, b), BpeMerge{uint32_t(rank), m}).second)
        fail(where, ": the merge ", quoted_token(l + " " + r), " appears twice");
      made[m] = true;
    }
    if (sentencepiece_) {
      // The first symbols are single characters and the byte tokens.
      for (size_t id = 0; id < t_.tokens.size(); ++id) {
        const std::string& s = t_.tokens[id];
        if (made[id] || added_[id] || decode_utf8(s, 0).len == s.size() ||
            (s.size() == 6 && s.starts_with("<0x") && s.ends_with(">")))
          continue;
        fail("has ", items.size(), " merges, but no merge makes its token ", quoted_token(s),
             " (id ", id,
             "), which is neither one character nor a byte token: is model.merges "
             "cut off?");
      }
    } else {
      check_every_token_is_made(t_.tokens, made, added_,
                                "hf tokenizer: " + path_ + " has " + std::to_string(items.size()) +
                                    " merges, but its " + std::to_string(t_.tokens.size()) +
                                    " tokens",
                                "is model.merges cut off?");
    }
  }
  uint32_t token_id(const std::string& bytes, const std::string& spelled,
                    const std::string& where) const {
    auto it = encoder_.find(bytes);
    if (it == encoder_.end())
      fail(where, ": token ", quoted_token(spelled), " is not in model.vocab");
    return it->second;
  }

  // tokenizer_config.json's `key` (a token's text, or {"content": text}) as an id where that file
  // names one (an error when it is no token), else the first of `known` that is an added token;
  // none when neither.
  std::optional<uint32_t> named_token(const char* key,
                                      std::initializer_list<const char*> known) const {
    const fs::path config = fs::path(dir_) / "tokenizer_config.json";
    if (fs::exists(config)) {
      const Json c = parse_json(read_file(config), "hf tokenizer: " + config.string());
      if (const Json* v = c.get(key); v && !v->is(Json::Kind::Null)) {
        const std::string& name = v->is(Json::Kind::Object)
                                      ? v->at("content").str(std::string(key) + ".content")
                                      : v->str(key);
        auto it = t_.added.find(name);
        if (it != t_.added.end()) return it->second;
        auto in_vocab = encoder_.find(name);
        TESSERA_CHECK(in_vocab != encoder_.end(), "hf tokenizer: ", config.string(), ": ", key, " ",
                      quoted_token(name), " is not a token of ", path_);
        return in_vocab->second;
      }
    }
    for (const char* name : known) {
      auto it = t_.added.find(name);
      if (it != t_.added.end()) return it->second;
    }
    return std::nullopt;
  }

  uint32_t end_of_text() const {
    if (const auto id = named_token("eos_token", {"<|endoftext|>", "<|end_of_text|>", "</s>"}))
      return *id;
    fail(
        "no end-of-text token: no tokenizer_config.json eos_token, and none of <|endoftext|>, "
        "<|end_of_text|> and </s> is an added token");
  }

  std::string dir_, path_;
  bool nfc_ = false;
  bool sentencepiece_ = false;  // byte_fallback: SentencePiece's layout
  size_t limit_ = 0;  // vocab entries + added tokens: every id is below it
  BpeTables t_;
  std::vector<bool> set_, added_;                      // by id: given; an added token
  std::unordered_map<std::string, uint32_t> encoder_;  // vocab bytes -> id
};

// The NFC normalizer in front of the byte-level BPE: the text is normalised before it is
// pre-tokenised, as the tokenizers library's pipeline does; the rest is the BPE's.
class NfcThenBpe final : public Tokenizer {
 public:
  explicit NfcThenBpe(std::unique_ptr<Tokenizer> bpe) : bpe_(std::move(bpe)) {}
  std::vector<uint32_t> encode(std::string_view text) const override {
    return bpe_->encode(nfc(text));
  }
  std::string decode(const std::vector<uint32_t>& ids) const override { return bpe_->decode(ids); }
  int64_t vocab_size() const override { return bpe_->vocab_size(); }
  uint32_t eot_id() const override { return bpe_->eot_id(); }
  std::optional<uint32_t> bos_id() const override { return bpe_->bos_id(); }
  std::optional<uint32_t> added_token(std::string_view text) const override {
    return bpe_->added_token(text);
  }
  std::string name() const override { return bpe_->name(); }

 private:
  std::unique_ptr<Tokenizer> bpe_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string& dir) {
  TokenizerJson file(dir);
  if (file.sentencepiece()) return make_sentencepiece_bpe(file.take(), file.path());
  const bool normalize = file.nfc();
  auto bpe = make_byte_level_bpe(file.take(), file.path());
  if (!normalize) return bpe;  // GPT-2's and Llama 3's files: the text as it is
  return std::make_unique<NfcThenBpe>(std::move(bpe));
}

}  // namespace tessera::data
