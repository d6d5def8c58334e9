// GPT-2's byte-level BPE tokenizer, written from the published description and file formats
// (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", section 2.2; the
// released encoder.json / vocab.bpe; REFERENCES.md).
//
// Encoding is three steps:
//   1. pre-tokenisation splits the text into pieces (words with their leading space, number runs,
//      punctuation runs, whitespace) so merges never cross a piece boundary;
//   2. each piece's bytes start as single-byte tokens;
//   3. the adjacent pair with the lowest merge rank is merged, repeatedly, until no adjacent pair
//      has a rank. The result is cached per piece: text is Zipfian, so most pieces repeat.
//
// Invariants:
//  - Tokens are handled as raw bytes. The files spell each byte as a printable character
//    (bytes_to_unicode); that spelling is undone once, at load time, so encode and decode never see
//    it, and every byte string (valid UTF-8 or not) round-trips.
//  - Every merge's two parts and its result are tokens of encoder.json (checked at load), so BPE
//    runs on token ids and a merge is one hash lookup keyed by the id pair. Every token that is
//    neither a byte nor special (<|endoftext|>) is some merge's result, so a cut-off vocab.bpe
//    fails at load rather than encoding with a shorter list.
//  - A merged token is longer than its parts, so an id never comes back once merged away; the
//    heap in bpe() relies on that to recognise stale pairs.
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
#include "data/tokenizer.h"

namespace tessera::data {
namespace {

// ---- characters ---------------------------------------------------------------------------------

constexpr uint32_t kInvalidCodePoint = 0xFFFFFFFF;

struct Utf8Char {
  uint32_t cp;   // kInvalidCodePoint for a byte that does not start a well-formed sequence
  uint32_t len;  // bytes
};

// One character of UTF-8 at s[i]. An ill-formed sequence (bad lead or continuation byte, overlong
// form, surrogate, > U+10FFFF, cut off by the end) yields one invalid "character" of one byte, so
// any byte string splits into pieces and still round-trips.
Utf8Char decode_utf8(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1};
  uint32_t len, cp, min;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1Fu, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0Fu, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07u, min = 0x10000;
  } else {
    return {kInvalidCodePoint, 1};
  }
  if (i + len > s.size()) return {kInvalidCodePoint, 1};
  for (uint32_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return {kInvalidCodePoint, 1};
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {kInvalidCodePoint, 1};
  return {cp, len};
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// The pattern's character classes: \p{L}, \p{N}, \s, and everything else ([^\s\p{L}\p{N}]).
enum class CharClass { Letter, Number, Space, Other };

bool is_unicode_letter(uint32_t cp);  // tables at the end of this file
bool is_unicode_number(uint32_t cp);

// \s as the Python `regex` module (GPT-2's encoder.py) matches it: the Unicode White_Space
// property. (Python's str.isspace would add U+001C..U+001F; the regex module does not.)
bool is_unicode_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

CharClass classify(uint32_t cp) {
  if (cp < 0x80) {  // fast path: almost all of an English corpus
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CharClass::Letter;
    if (cp >= '0' && cp <= '9') return CharClass::Number;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CharClass::Space;
    return CharClass::Other;
  }
  if (cp == kInvalidCodePoint) return CharClass::Other;
  if (is_unicode_space(cp)) return CharClass::Space;
  if (is_unicode_letter(cp)) return CharClass::Letter;
  if (is_unicode_number(cp)) return CharClass::Number;
  return CharClass::Other;
}

// ---- pre-tokenisation ---------------------------------------------------------------------------

// End of the piece that starts at s[i], by the first alternative of
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// that matches there (the regex engine's leftmost-alternative rule).
size_t piece_end(std::string_view s, size_t i) {
  const size_t n = s.size();
  // Contractions: lower case only, and they win even inside a word ("'sup" -> "'s", "up").
  if (s[i] == '\'' && i + 1 < n) {
    const char a = s[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n) {
      const char b = s[i + 2];
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
  }
  // " ?X+" for X = letters, numbers, other: one optional U+0020, then a run of one class.
  size_t start = i;
  Utf8Char c = decode_utf8(s, i);
  CharClass k = classify(c.cp);
  if (s[i] == ' ' && i + 1 < n) {
    const CharClass next = classify(decode_utf8(s, i + 1).cp);
    if (next != CharClass::Space) start = i + 1, k = next;
  }
  if (k != CharClass::Space) {
    size_t p = start;
    while (p < n) {
      c = decode_utf8(s, p);
      if (classify(c.cp) != k) break;
      p += c.len;
    }
    return p;
  }
  // Whitespace. "\s+(?!\S)" backtracks to leave the run's last character in front of the next
  // word (so "a  b" -> "a", " ", " b"); at the end of the text it takes the whole run. A single
  // space character before a non-space falls through to "\s+".
  size_t p = i, last = i, count = 0;
  while (p < n) {
    c = decode_utf8(s, p);
    if (classify(c.cp) != CharClass::Space) break;
    last = p;
    p += c.len;
    ++count;
  }
  if (p < n && count >= 2) return last;
  return p;
}

template <typename F>
void for_each_piece(std::string_view text, F&& f) {
  for (size_t i = 0; i < text.size();) {
    const size_t end = piece_end(text, i);
    f(text.substr(i, end - i));
    i = end;
  }
}

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
  std::ifstream f(path, std::ios::binary);
  TESSERA_CHECK(f, "gpt2 tokenizer: cannot read ", path, ": ", std::strerror(errno),
                " (scripts/prepare_data.sh fetches the GPT-2 tokenizer files)");
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
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

// A token as the files write it (UTF-8 of its byte spelling) -> its raw bytes. False when a
// character spells no byte; the caller, which knows the file and line, reports it.
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

// Raw bytes -> the files' spelling of them (the inverse of unspell), for error messages.
std::string spell(std::string_view bytes) {
  std::string out;
  for (char c : bytes)
    append_utf8(byte_alphabet().to_code_point[static_cast<unsigned char>(c)], out);
  return out;
}

// A token no merge makes that is still legitimate: GPT-2's one special token, <|endoftext|>, or a
// marker in the same <...> form that a derived vocabulary adds (<|pad|>, <pad>, </s>). BPE never
// produces them; they are ids for the text's structure.
bool is_special_token(std::string_view bytes) {
  return bytes.size() >= 3 && bytes.front() == '<' && bytes.back() == '>';
}

std::string quoted(std::string_view s) {  // for error messages: at most 40 bytes, as written
  std::string out(1, '"');
  out.append(s.substr(0, 40));
  out += s.size() > 40 ? "...\"" : "\"";
  return out;
}

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

// ---- the tokenizer ------------------------------------------------------------------------------

struct Merge {
  uint32_t rank;    // line order in vocab.bpe: lower merges first
  uint32_t result;  // id of the merged token
};

uint64_t pair_key(uint32_t left, uint32_t right) { return (uint64_t(left) << 32) | right; }

// Lets the piece cache be searched with a string_view, without building a std::string per lookup.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class Gpt2Tokenizer final : public Tokenizer {
 public:
  Gpt2Tokenizer(const std::string& encoder_path, const std::string& merges_path) {
    load_encoder(encoder_path);
    load_merges(merges_path, encoder_path);
  }

  // Thread-safe: concurrent calls take turns on the cache.
  std::vector<uint32_t> encode(std::string_view text) const override {
    std::vector<uint32_t> ids;
    ids.reserve(text.size() / 4 + 1);  // English averages about 4 bytes per GPT-2 token
    std::lock_guard<std::mutex> lock(cache_mutex_);
    for_each_piece(text, [&](std::string_view piece) {
      if (piece.size() == 1) {  // one byte: nothing to merge, nothing worth caching
        ids.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
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
    for (size_t i = 0; i < ids.size(); ++i) {
      TESSERA_CHECK(ids[i] < decoder_.size(), "gpt2 tokenizer: cannot decode id ", ids[i],
                    " at position ", i, " (vocabulary ", decoder_.size(), ")");
      out += decoder_[ids[i]];
    }
    return out;
  }

  int64_t vocab_size() const override { return int64_t(decoder_.size()); }
  uint32_t eot_id() const override { return eot_; }
  std::string name() const override { return "gpt2"; }

 private:
  static constexpr size_t kCacheEntries = size_t(1) << 18;

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
                       "token " + quoted(key) +
                           " has a character outside GPT-2's byte alphabet (bytes_to_unicode)");
      entries.push_back({bytes, id, pos});
    });
    // n tokens with distinct ids in [0, n): dense, so every id the model can emit decodes.
    const size_t n = entries.size();
    decoder_.resize(n);
    std::vector<bool> seen(n, false);
    for (Entry& e : entries) {
      if (size_t(e.id) >= n)
        reader.fail_at(e.pos, "id " + std::to_string(e.id) +
                                  " is out of range: " + std::to_string(n) +
                                  " tokens need ids 0.." + std::to_string(n - 1));
      if (seen[e.id]) reader.fail_at(e.pos, "id " + std::to_string(e.id) + " is used twice");
      if (!encoder_.emplace(e.bytes, uint32_t(e.id)).second)
        reader.fail_at(e.pos, "token " + quoted(e.bytes) + " appears twice");
      seen[e.id] = true;
      decoder_[e.id] = std::move(e.bytes);
    }
    for (int b = 0; b < 256; ++b) {
      auto it = encoder_.find(std::string(1, char(b)));
      TESSERA_CHECK(it != encoder_.end(), "gpt2 tokenizer: ", path,
                    ": the single-byte token for byte ", b,
                    " is missing (byte-level BPE needs all 256)");
      byte_id_[b] = it->second;
    }
    auto eot = encoder_.find("<|endoftext|>");
    TESSERA_CHECK(eot != encoder_.end(), "gpt2 tokenizer: ", path, ": no <|endoftext|> token");
    eot_ = eot->second;
  }

  void load_merges(const std::string& path, const std::string& encoder_path) {
    const std::string text = read_text_file(path);
    std::string left, right;
    size_t line_no = 0;
    uint32_t rank = 0;
    std::vector<bool> made(decoder_.size(), false);  // by id: the result of some merge
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
                    where, "expected two tokens separated by one space, got ", quoted(line));
      TESSERA_CHECK(unspell(line.substr(0, sp), left) && unspell(line.substr(sp + 1), right), where,
                    "a character outside GPT-2's byte alphabet (bytes_to_unicode) in ",
                    quoted(line));
      const uint32_t l = token_id(left, line.substr(0, sp), where);
      const uint32_t r = token_id(right, line.substr(sp + 1), where);
      const std::string spelled = std::string(line.substr(0, sp)).append(line.substr(sp + 1));
      const uint32_t m = token_id(left + right, spelled, where);
      TESSERA_CHECK(merges_.emplace(pair_key(l, r), Merge{rank, m}).second, where, "the merge ",
                    quoted(line), " appears twice");
      made[m] = true;
      ++rank;
    }
    TESSERA_CHECK(rank > 0, "gpt2 tokenizer: ", path, ": no merges in the file");
    check_every_token_is_made(path, encoder_path, rank, made);
    encoder_.clear();  // only needed to resolve the merges
  }

  // Every token but the 256 bytes and the special ones is the result of a merge: GPT-2 has 50,000
  // merges = 50,257 tokens - 256 bytes - 1 special, merge rank r making id 256 + r. A vocab.bpe cut
  // off at a line boundary parses, but BPE would then never reach the longer tokens and encode text
  // into ids the model was not trained on. (More merges than that count is allowed: a trainer may
  // reach one token by two merges, as Hugging Face's BPE trainer can.)
  void check_every_token_is_made(const std::string& path, const std::string& encoder_path,
                                 size_t merges, const std::vector<bool>& made) const {
    const size_t n = decoder_.size();
    size_t specials = 0, unmade = 0, first_unmade = n;
    for (size_t id = 0; id < n; ++id) {
      if (made[id] || decoder_[id].size() == 1) continue;
      if (is_special_token(decoder_[id])) {
        ++specials;
      } else if (unmade++ == 0) {
        first_unmade = id;
      }
    }
    if (unmade == 0) return;
    TESSERA_FAIL("gpt2 tokenizer: ", path, " has ", merges, " merges, but the ", n, " tokens of ",
                 encoder_path, " need ", n - 256 - specials, " (", n, " - 256 byte tokens - ",
                 specials, " special token", specials == 1 ? "" : "s", "): no merge makes ", unmade,
                 " of them, the first ", quoted(spell(decoder_[first_unmade])), " (id ",
                 first_unmade, "); is vocab.bpe cut off, or from another vocabulary?");
  }

  uint32_t token_id(const std::string& bytes, std::string_view spelled, const std::string& where) {
    auto it = encoder_.find(bytes);
    TESSERA_CHECK(it != encoder_.end(), where, "token ", quoted(spelled),
                  " is not in encoder.json");
    return it->second;
  }

  // Merges the piece's bytes, lowest rank first, until no adjacent pair has a rank. The symbols
  // form a linked list and candidate pairs sit in a min-heap ordered by (rank, position), so a
  // piece of n bytes takes O(n log n) rather than the O(n^2) of rescanning for the best pair after
  // every merge. Among equal ranks (the same pair) the leftmost goes first, which is what
  // encoder.py's left-to-right pass does ("aaa" with merge "a a" -> "aa", "a").
  std::vector<uint32_t> bpe(std::string_view piece) const {
    if (piece.empty()) return {};
    const int n = int(piece.size());
    std::vector<uint32_t> id(n);
    std::vector<int> prev(n), next(n);
    for (int i = 0; i < n; ++i) {
      id[i] = byte_id_[static_cast<unsigned char>(piece[i])];
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
      auto it = merges_.find(pair_key(id[left], id[next[left]]));
      if (it != merges_.end())
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

  std::vector<std::string> decoder_;                   // id -> bytes
  std::unordered_map<std::string, uint32_t> encoder_;  // bytes -> id, while loading
  std::unordered_map<uint64_t, Merge> merges_;         // (left id, right id) -> rank, result
  uint32_t byte_id_[256] = {};
  uint32_t eot_ = 0;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<uint32_t>, StringHash, std::equal_to<>>
      cache_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& encoder_json_path,
                                               const std::string& vocab_bpe_path) {
  return std::make_unique<Gpt2Tokenizer>(encoder_json_path, vocab_bpe_path);
}

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  for_each_piece(text, [&](std::string_view p) { pieces.push_back(p); });
  return pieces;
}

// ---- Unicode tables -----------------------------------------------------------------------------

namespace {

struct CodeRange {
  uint32_t first, last;
};

// \p{L} (Lu Ll Lt Lm Lo) and \p{N} (Nd Nl No) as inclusive code point ranges, Unicode 15.0, as the
// Python `regex` module 2022.10.31 (Debian bookworm's python3-regex) classifies them. Generated
// with: import regex; r = regex.compile(r"\p{L}")  # then r"\p{N}"
//       [c for c in range(0x110000) if r.match(chr(c))], merged into runs of consecutive code
//       points.
// Exact, not approximated; a newer Unicode version only adds letters in newly assigned blocks.
// clang-format off
constexpr CodeRange kLetterRanges[] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6},
    {0xD8, 0xF6}, {0xF8, 0x2C1}, {0x2C6, 0x2D1}, {0x2E0, 0x2E4}, {0x2EC, 0x2EC}, {0x2EE, 0x2EE},
    {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A},
    {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556},
    {0x559, 0x559}, {0x560, 0x588}, {0x5D0, 0x5EA}, {0x5EF, 0x5F2}, {0x620, 0x64A}, {0x66E, 0x66F},
    {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6}, {0x6EE, 0x6EF}, {0x6FA, 0x6FC}, {0x6FF, 0x6FF},
    {0x710, 0x710}, {0x712, 0x72F}, {0x74D, 0x7A5}, {0x7B1, 0x7B1}, {0x7CA, 0x7EA}, {0x7F4, 0x7F5},
    {0x7FA, 0x7FA}, {0x800, 0x815}, {0x81A, 0x81A}, {0x824, 0x824}, {0x828, 0x828}, {0x840, 0x858},
    {0x860, 0x86A}, {0x870, 0x887}, {0x889, 0x88E}, {0x8A0, 0x8C9}, {0x904, 0x939}, {0x93D, 0x93D},
    {0x950, 0x950}, {0x958, 0x961}, {0x971, 0x980}, {0x985, 0x98C}, {0x98F, 0x990}, {0x993, 0x9A8},
    {0x9AA, 0x9B0}, {0x9B2, 0x9B2}, {0x9B6, 0x9B9}, {0x9BD, 0x9BD}, {0x9CE, 0x9CE}, {0x9DC, 0x9DD},
    {0x9DF, 0x9E1}, {0x9F0, 0x9F1}, {0x9FC, 0x9FC}, {0xA05, 0xA0A}, {0xA0F, 0xA10}, {0xA13, 0xA28},
    {0xA2A, 0xA30}, {0xA32, 0xA33}, {0xA35, 0xA36}, {0xA38, 0xA39}, {0xA59, 0xA5C}, {0xA5E, 0xA5E},
    {0xA72, 0xA74}, {0xA85, 0xA8D}, {0xA8F, 0xA91}, {0xA93, 0xAA8}, {0xAAA, 0xAB0}, {0xAB2, 0xAB3},
    {0xAB5, 0xAB9}, {0xABD, 0xABD}, {0xAD0, 0xAD0}, {0xAE0, 0xAE1}, {0xAF9, 0xAF9}, {0xB05, 0xB0C},
    {0xB0F, 0xB10}, {0xB13, 0xB28}, {0xB2A, 0xB30}, {0xB32, 0xB33}, {0xB35, 0xB39}, {0xB3D, 0xB3D},
    {0xB5C, 0xB5D}, {0xB5F, 0xB61}, {0xB71, 0xB71}, {0xB83, 0xB83}, {0xB85, 0xB8A}, {0xB8E, 0xB90},
    {0xB92, 0xB95}, {0xB99, 0xB9A}, {0xB9C, 0xB9C}, {0xB9E, 0xB9F}, {0xBA3, 0xBA4}, {0xBA8, 0xBAA},
    {0xBAE, 0xBB9}, {0xBD0, 0xBD0}, {0xC05, 0xC0C}, {0xC0E, 0xC10}, {0xC12, 0xC28}, {0xC2A, 0xC39},
    {0xC3D, 0xC3D}, {0xC58, 0xC5A}, {0xC5D, 0xC5D}, {0xC60, 0xC61}, {0xC80, 0xC80}, {0xC85, 0xC8C},
    {0xC8E, 0xC90}, {0xC92, 0xCA8}, {0xCAA, 0xCB3}, {0xCB5, 0xCB9}, {0xCBD, 0xCBD}, {0xCDD, 0xCDE},
    {0xCE0, 0xCE1}, {0xCF1, 0xCF2}, {0xD04, 0xD0C}, {0xD0E, 0xD10}, {0xD12, 0xD3A}, {0xD3D, 0xD3D},
    {0xD4E, 0xD4E}, {0xD54, 0xD56}, {0xD5F, 0xD61}, {0xD7A, 0xD7F}, {0xD85, 0xD96}, {0xD9A, 0xDB1},
    {0xDB3, 0xDBB}, {0xDBD, 0xDBD}, {0xDC0, 0xDC6}, {0xE01, 0xE30}, {0xE32, 0xE33}, {0xE40, 0xE46},
    {0xE81, 0xE82}, {0xE84, 0xE84}, {0xE86, 0xE8A}, {0xE8C, 0xEA3}, {0xEA5, 0xEA5}, {0xEA7, 0xEB0},
    {0xEB2, 0xEB3}, {0xEBD, 0xEBD}, {0xEC0, 0xEC4}, {0xEC6, 0xEC6}, {0xEDC, 0xEDF}, {0xF00, 0xF00},
    {0xF40, 0xF47}, {0xF49, 0xF6C}, {0xF88, 0xF8C}, {0x1000, 0x102A}, {0x103F, 0x103F},
    {0x1050, 0x1055}, {0x105A, 0x105D}, {0x1061, 0x1061}, {0x1065, 0x1066}, {0x106E, 0x1070},
    {0x1075, 0x1081}, {0x108E, 0x108E}, {0x10A0, 0x10C5}, {0x10C7, 0x10C7}, {0x10CD, 0x10CD},
    {0x10D0, 0x10FA}, {0x10FC, 0x1248}, {0x124A, 0x124D}, {0x1250, 0x1256}, {0x1258, 0x1258},
    {0x125A, 0x125D}, {0x1260, 0x1288}, {0x128A, 0x128D}, {0x1290, 0x12B0}, {0x12B2, 0x12B5},
    {0x12B8, 0x12BE}, {0x12C0, 0x12C0}, {0x12C2, 0x12C5}, {0x12C8, 0x12D6}, {0x12D8, 0x1310},
    {0x1312, 0x1315}, {0x1318, 0x135A}, {0x1380, 0x138F}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
    {0x1401, 0x166C}, {0x166F, 0x167F}, {0x1681, 0x169A}, {0x16A0, 0x16EA}, {0x16F1, 0x16F8},
    {0x1700, 0x1711}, {0x171F, 0x1731}, {0x1740, 0x1751}, {0x1760, 0x176C}, {0x176E, 0x1770},
    {0x1780, 0x17B3}, {0x17D7, 0x17D7}, {0x17DC, 0x17DC}, {0x1820, 0x1878}, {0x1880, 0x1884},
    {0x1887, 0x18A8}, {0x18AA, 0x18AA}, {0x18B0, 0x18F5}, {0x1900, 0x191E}, {0x1950, 0x196D},
    {0x1970, 0x1974}, {0x1980, 0x19AB}, {0x19B0, 0x19C9}, {0x1A00, 0x1A16}, {0x1A20, 0x1A54},
    {0x1AA7, 0x1AA7}, {0x1B05, 0x1B33}, {0x1B45, 0x1B4C}, {0x1B83, 0x1BA0}, {0x1BAE, 0x1BAF},
    {0x1BBA, 0x1BE5}, {0x1C00, 0x1C23}, {0x1C4D, 0x1C4F}, {0x1C5A, 0x1C7D}, {0x1C80, 0x1C88},
    {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1CE9, 0x1CEC}, {0x1CEE, 0x1CF3}, {0x1CF5, 0x1CF6},
    {0x1CFA, 0x1CFA}, {0x1D00, 0x1DBF}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D},
    {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4},
    {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4},
    {0x1FF6, 0x1FFC}, {0x2071, 0x2071}, {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2102, 0x2102},
    {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124},
    {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2CE4}, {0x2CEB, 0x2CEE},
    {0x2CF2, 0x2CF3}, {0x2D00, 0x2D25}, {0x2D27, 0x2D27}, {0x2D2D, 0x2D2D}, {0x2D30, 0x2D67},
    {0x2D6F, 0x2D6F}, {0x2D80, 0x2D96}, {0x2DA0, 0x2DA6}, {0x2DA8, 0x2DAE}, {0x2DB0, 0x2DB6},
    {0x2DB8, 0x2DBE}, {0x2DC0, 0x2DC6}, {0x2DC8, 0x2DCE}, {0x2DD0, 0x2DD6}, {0x2DD8, 0x2DDE},
    {0x2E2F, 0x2E2F}, {0x3005, 0x3006}, {0x3031, 0x3035}, {0x303B, 0x303C}, {0x3041, 0x3096},
    {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF}, {0x3105, 0x312F}, {0x3131, 0x318E},
    {0x31A0, 0x31BF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF}, {0x4E00, 0xA48C}, {0xA4D0, 0xA4FD},
    {0xA500, 0xA60C}, {0xA610, 0xA61F}, {0xA62A, 0xA62B}, {0xA640, 0xA66E}, {0xA67F, 0xA69D},
    {0xA6A0, 0xA6E5}, {0xA717, 0xA71F}, {0xA722, 0xA788}, {0xA78B, 0xA7CA}, {0xA7D0, 0xA7D1},
    {0xA7D3, 0xA7D3}, {0xA7D5, 0xA7D9}, {0xA7F2, 0xA801}, {0xA803, 0xA805}, {0xA807, 0xA80A},
    {0xA80C, 0xA822}, {0xA840, 0xA873}, {0xA882, 0xA8B3}, {0xA8F2, 0xA8F7}, {0xA8FB, 0xA8FB},
    {0xA8FD, 0xA8FE}, {0xA90A, 0xA925}, {0xA930, 0xA946}, {0xA960, 0xA97C}, {0xA984, 0xA9B2},
    {0xA9CF, 0xA9CF}, {0xA9E0, 0xA9E4}, {0xA9E6, 0xA9EF}, {0xA9FA, 0xA9FE}, {0xAA00, 0xAA28},
    {0xAA40, 0xAA42}, {0xAA44, 0xAA4B}, {0xAA60, 0xAA76}, {0xAA7A, 0xAA7A}, {0xAA7E, 0xAAAF},
    {0xAAB1, 0xAAB1}, {0xAAB5, 0xAAB6}, {0xAAB9, 0xAABD}, {0xAAC0, 0xAAC0}, {0xAAC2, 0xAAC2},
    {0xAADB, 0xAADD}, {0xAAE0, 0xAAEA}, {0xAAF2, 0xAAF4}, {0xAB01, 0xAB06}, {0xAB09, 0xAB0E},
    {0xAB11, 0xAB16}, {0xAB20, 0xAB26}, {0xAB28, 0xAB2E}, {0xAB30, 0xAB5A}, {0xAB5C, 0xAB69},
    {0xAB70, 0xABE2}, {0xAC00, 0xD7A3}, {0xD7B0, 0xD7C6}, {0xD7CB, 0xD7FB}, {0xF900, 0xFA6D},
    {0xFA70, 0xFAD9}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFB1D, 0xFB1D}, {0xFB1F, 0xFB28},
    {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41}, {0xFB43, 0xFB44},
    {0xFB46, 0xFBB1}, {0xFBD3, 0xFD3D}, {0xFD50, 0xFD8F}, {0xFD92, 0xFDC7}, {0xFDF0, 0xFDFB},
    {0xFE70, 0xFE74}, {0xFE76, 0xFEFC}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0xFF66, 0xFFBE},
    {0xFFC2, 0xFFC7}, {0xFFCA, 0xFFCF}, {0xFFD2, 0xFFD7}, {0xFFDA, 0xFFDC}, {0x10000, 0x1000B},
    {0x1000D, 0x10026}, {0x10028, 0x1003A}, {0x1003C, 0x1003D}, {0x1003F, 0x1004D},
    {0x10050, 0x1005D}, {0x10080, 0x100FA}, {0x10280, 0x1029C}, {0x102A0, 0x102D0},
    {0x10300, 0x1031F}, {0x1032D, 0x10340}, {0x10342, 0x10349}, {0x10350, 0x10375},
    {0x10380, 0x1039D}, {0x103A0, 0x103C3}, {0x103C8, 0x103CF}, {0x10400, 0x1049D},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10500, 0x10527}, {0x10530, 0x10563},
    {0x10570, 0x1057A}, {0x1057C, 0x1058A}, {0x1058C, 0x10592}, {0x10594, 0x10595},
    {0x10597, 0x105A1}, {0x105A3, 0x105B1}, {0x105B3, 0x105B9}, {0x105BB, 0x105BC},
    {0x10600, 0x10736}, {0x10740, 0x10755}, {0x10760, 0x10767}, {0x10780, 0x10785},
    {0x10787, 0x107B0}, {0x107B2, 0x107BA}, {0x10800, 0x10805}, {0x10808, 0x10808},
    {0x1080A, 0x10835}, {0x10837, 0x10838}, {0x1083C, 0x1083C}, {0x1083F, 0x10855},
    {0x10860, 0x10876}, {0x10880, 0x1089E}, {0x108E0, 0x108F2}, {0x108F4, 0x108F5},
    {0x10900, 0x10915}, {0x10920, 0x10939}, {0x10980, 0x109B7}, {0x109BE, 0x109BF},
    {0x10A00, 0x10A00}, {0x10A10, 0x10A13}, {0x10A15, 0x10A17}, {0x10A19, 0x10A35},
    {0x10A60, 0x10A7C}, {0x10A80, 0x10A9C}, {0x10AC0, 0x10AC7}, {0x10AC9, 0x10AE4},
    {0x10B00, 0x10B35}, {0x10B40, 0x10B55}, {0x10B60, 0x10B72}, {0x10B80, 0x10B91},
    {0x10C00, 0x10C48}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x10D00, 0x10D23},
    {0x10E80, 0x10EA9}, {0x10EB0, 0x10EB1}, {0x10F00, 0x10F1C}, {0x10F27, 0x10F27},
    {0x10F30, 0x10F45}, {0x10F70, 0x10F81}, {0x10FB0, 0x10FC4}, {0x10FE0, 0x10FF6},
    {0x11003, 0x11037}, {0x11071, 0x11072}, {0x11075, 0x11075}, {0x11083, 0x110AF},
    {0x110D0, 0x110E8}, {0x11103, 0x11126}, {0x11144, 0x11144}, {0x11147, 0x11147},
    {0x11150, 0x11172}, {0x11176, 0x11176}, {0x11183, 0x111B2}, {0x111C1, 0x111C4},
    {0x111DA, 0x111DA}, {0x111DC, 0x111DC}, {0x11200, 0x11211}, {0x11213, 0x1122B},
    {0x1123F, 0x11240}, {0x11280, 0x11286}, {0x11288, 0x11288}, {0x1128A, 0x1128D},
    {0x1128F, 0x1129D}, {0x1129F, 0x112A8}, {0x112B0, 0x112DE}, {0x11305, 0x1130C},
    {0x1130F, 0x11310}, {0x11313, 0x11328}, {0x1132A, 0x11330}, {0x11332, 0x11333},
    {0x11335, 0x11339}, {0x1133D, 0x1133D}, {0x11350, 0x11350}, {0x1135D, 0x11361},
    {0x11400, 0x11434}, {0x11447, 0x1144A}, {0x1145F, 0x11461}, {0x11480, 0x114AF},
    {0x114C4, 0x114C5}, {0x114C7, 0x114C7}, {0x11580, 0x115AE}, {0x115D8, 0x115DB},
    {0x11600, 0x1162F}, {0x11644, 0x11644}, {0x11680, 0x116AA}, {0x116B8, 0x116B8},
    {0x11700, 0x1171A}, {0x11740, 0x11746}, {0x11800, 0x1182B}, {0x118A0, 0x118DF},
    {0x118FF, 0x11906}, {0x11909, 0x11909}, {0x1190C, 0x11913}, {0x11915, 0x11916},
    {0x11918, 0x1192F}, {0x1193F, 0x1193F}, {0x11941, 0x11941}, {0x119A0, 0x119A7},
    {0x119AA, 0x119D0}, {0x119E1, 0x119E1}, {0x119E3, 0x119E3}, {0x11A00, 0x11A00},
    {0x11A0B, 0x11A32}, {0x11A3A, 0x11A3A}, {0x11A50, 0x11A50}, {0x11A5C, 0x11A89},
    {0x11A9D, 0x11A9D}, {0x11AB0, 0x11AF8}, {0x11C00, 0x11C08}, {0x11C0A, 0x11C2E},
    {0x11C40, 0x11C40}, {0x11C72, 0x11C8F}, {0x11D00, 0x11D06}, {0x11D08, 0x11D09},
    {0x11D0B, 0x11D30}, {0x11D46, 0x11D46}, {0x11D60, 0x11D65}, {0x11D67, 0x11D68},
    {0x11D6A, 0x11D89}, {0x11D98, 0x11D98}, {0x11EE0, 0x11EF2}, {0x11F02, 0x11F02},
    {0x11F04, 0x11F10}, {0x11F12, 0x11F33}, {0x11FB0, 0x11FB0}, {0x12000, 0x12399},
    {0x12480, 0x12543}, {0x12F90, 0x12FF0}, {0x13000, 0x1342F}, {0x13441, 0x13446},
    {0x14400, 0x14646}, {0x16800, 0x16A38}, {0x16A40, 0x16A5E}, {0x16A70, 0x16ABE},
    {0x16AD0, 0x16AED}, {0x16B00, 0x16B2F}, {0x16B40, 0x16B43}, {0x16B63, 0x16B77},
    {0x16B7D, 0x16B8F}, {0x16E40, 0x16E7F}, {0x16F00, 0x16F4A}, {0x16F50, 0x16F50},
    {0x16F93, 0x16F9F}, {0x16FE0, 0x16FE1}, {0x16FE3, 0x16FE3}, {0x17000, 0x187F7},
    {0x18800, 0x18CD5}, {0x18D00, 0x18D08}, {0x1AFF0, 0x1AFF3}, {0x1AFF5, 0x1AFFB},
    {0x1AFFD, 0x1AFFE}, {0x1B000, 0x1B122}, {0x1B132, 0x1B132}, {0x1B150, 0x1B152},
    {0x1B155, 0x1B155}, {0x1B164, 0x1B167}, {0x1B170, 0x1B2FB}, {0x1BC00, 0x1BC6A},
    {0x1BC70, 0x1BC7C}, {0x1BC80, 0x1BC88}, {0x1BC90, 0x1BC99}, {0x1D400, 0x1D454},
    {0x1D456, 0x1D49C}, {0x1D49E, 0x1D49F}, {0x1D4A2, 0x1D4A2}, {0x1D4A5, 0x1D4A6},
    {0x1D4A9, 0x1D4AC}, {0x1D4AE, 0x1D4B9}, {0x1D4BB, 0x1D4BB}, {0x1D4BD, 0x1D4C3},
    {0x1D4C5, 0x1D505}, {0x1D507, 0x1D50A}, {0x1D50D, 0x1D514}, {0x1D516, 0x1D51C},
    {0x1D51E, 0x1D539}, {0x1D53B, 0x1D53E}, {0x1D540, 0x1D544}, {0x1D546, 0x1D546},
    {0x1D54A, 0x1D550}, {0x1D552, 0x1D6A5}, {0x1D6A8, 0x1D6C0}, {0x1D6C2, 0x1D6DA},
    {0x1D6DC, 0x1D6FA}, {0x1D6FC, 0x1D714}, {0x1D716, 0x1D734}, {0x1D736, 0x1D74E},
    {0x1D750, 0x1D76E}, {0x1D770, 0x1D788}, {0x1D78A, 0x1D7A8}, {0x1D7AA, 0x1D7C2},
    {0x1D7C4, 0x1D7CB}, {0x1DF00, 0x1DF1E}, {0x1DF25, 0x1DF2A}, {0x1E030, 0x1E06D},
    {0x1E100, 0x1E12C}, {0x1E137, 0x1E13D}, {0x1E14E, 0x1E14E}, {0x1E290, 0x1E2AD},
    {0x1E2C0, 0x1E2EB}, {0x1E4D0, 0x1E4EB}, {0x1E7E0, 0x1E7E6}, {0x1E7E8, 0x1E7EB},
    {0x1E7ED, 0x1E7EE}, {0x1E7F0, 0x1E7FE}, {0x1E800, 0x1E8C4}, {0x1E900, 0x1E943},
    {0x1E94B, 0x1E94B}, {0x1EE00, 0x1EE03}, {0x1EE05, 0x1EE1F}, {0x1EE21, 0x1EE22},
    {0x1EE24, 0x1EE24}, {0x1EE27, 0x1EE27}, {0x1EE29, 0x1EE32}, {0x1EE34, 0x1EE37},
    {0x1EE39, 0x1EE39}, {0x1EE3B, 0x1EE3B}, {0x1EE42, 0x1EE42}, {0x1EE47, 0x1EE47},
    {0x1EE49, 0x1EE49}, {0x1EE4B, 0x1EE4B}, {0x1EE4D, 0x1EE4F}, {0x1EE51, 0x1EE52},
    {0x1EE54, 0x1EE54}, {0x1EE57, 0x1EE57}, {0x1EE59, 0x1EE59}, {0x1EE5B, 0x1EE5B},
    {0x1EE5D, 0x1EE5D}, {0x1EE5F, 0x1EE5F}, {0x1EE61, 0x1EE62}, {0x1EE64, 0x1EE64},
    {0x1EE67, 0x1EE6A}, {0x1EE6C, 0x1EE72}, {0x1EE74, 0x1EE77}, {0x1EE79, 0x1EE7C},
    {0x1EE7E, 0x1EE7E}, {0x1EE80, 0x1EE89}, {0x1EE8B, 0x1EE9B}, {0x1EEA1, 0x1EEA3},
    {0x1EEA5, 0x1EEA9}, {0x1EEAB, 0x1EEBB}, {0x20000, 0x2A6DF}, {0x2A700, 0x2B739},
    {0x2B740, 0x2B81D}, {0x2B820, 0x2CEA1}, {0x2CEB0, 0x2EBE0}, {0x2F800, 0x2FA1D},
    {0x30000, 0x3134A}, {0x31350, 0x323AF},
};
constexpr CodeRange kNumberRanges[] = {
    {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9},
    {0x7C0, 0x7C9}, {0x966, 0x96F}, {0x9E6, 0x9EF}, {0x9F4, 0x9F9}, {0xA66, 0xA6F}, {0xAE6, 0xAEF},
    {0xB66, 0xB6F}, {0xB72, 0xB77}, {0xBE6, 0xBF2}, {0xC66, 0xC6F}, {0xC78, 0xC7E}, {0xCE6, 0xCEF},
    {0xD58, 0xD5E}, {0xD66, 0xD78}, {0xDE6, 0xDEF}, {0xE50, 0xE59}, {0xED0, 0xED9}, {0xF20, 0xF33},
    {0x1040, 0x1049}, {0x1090, 0x1099}, {0x1369, 0x137C}, {0x16EE, 0x16F0}, {0x17E0, 0x17E9},
    {0x17F0, 0x17F9}, {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19DA}, {0x1A80, 0x1A89},
    {0x1A90, 0x1A99}, {0x1B50, 0x1B59}, {0x1BB0, 0x1BB9}, {0x1C40, 0x1C49}, {0x1C50, 0x1C59},
    {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189},
    {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x2CFD, 0x2CFD}, {0x3007, 0x3007},
    {0x3021, 0x3029}, {0x3038, 0x303A}, {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F},
    {0x3251, 0x325F}, {0x3280, 0x3289}, {0x32B1, 0x32BF}, {0xA620, 0xA629}, {0xA6E6, 0xA6EF},
    {0xA830, 0xA835}, {0xA8D0, 0xA8D9}, {0xA900, 0xA909}, {0xA9D0, 0xA9D9}, {0xA9F0, 0xA9F9},
    {0xAA50, 0xAA59}, {0xABF0, 0xABF9}, {0xFF10, 0xFF19}, {0x10107, 0x10133}, {0x10140, 0x10178},
    {0x1018A, 0x1018B}, {0x102E1, 0x102FB}, {0x10320, 0x10323}, {0x10341, 0x10341},
    {0x1034A, 0x1034A}, {0x103D1, 0x103D5}, {0x104A0, 0x104A9}, {0x10858, 0x1085F},
    {0x10879, 0x1087F}, {0x108A7, 0x108AF}, {0x108FB, 0x108FF}, {0x10916, 0x1091B},
    {0x109BC, 0x109BD}, {0x109C0, 0x109CF}, {0x109D2, 0x109FF}, {0x10A40, 0x10A48},
    {0x10A7D, 0x10A7E}, {0x10A9D, 0x10A9F}, {0x10AEB, 0x10AEF}, {0x10B58, 0x10B5F},
    {0x10B78, 0x10B7F}, {0x10BA9, 0x10BAF}, {0x10CFA, 0x10CFF}, {0x10D30, 0x10D39},
    {0x10E60, 0x10E7E}, {0x10F1D, 0x10F26}, {0x10F51, 0x10F54}, {0x10FC5, 0x10FCB},
    {0x11052, 0x1106F}, {0x110F0, 0x110F9}, {0x11136, 0x1113F}, {0x111D0, 0x111D9},
    {0x111E1, 0x111F4}, {0x112F0, 0x112F9}, {0x11450, 0x11459}, {0x114D0, 0x114D9},
    {0x11650, 0x11659}, {0x116C0, 0x116C9}, {0x11730, 0x1173B}, {0x118E0, 0x118F2},
    {0x11950, 0x11959}, {0x11C50, 0x11C6C}, {0x11D50, 0x11D59}, {0x11DA0, 0x11DA9},
    {0x11F50, 0x11F59}, {0x11FC0, 0x11FD4}, {0x12400, 0x1246E}, {0x16A60, 0x16A69},
    {0x16AC0, 0x16AC9}, {0x16B50, 0x16B59}, {0x16B5B, 0x16B61}, {0x16E80, 0x16E96},
    {0x1D2C0, 0x1D2D3}, {0x1D2E0, 0x1D2F3}, {0x1D360, 0x1D378}, {0x1D7CE, 0x1D7FF},
    {0x1E140, 0x1E149}, {0x1E2F0, 0x1E2F9}, {0x1E4F0, 0x1E4F9}, {0x1E8C7, 0x1E8CF},
    {0x1E950, 0x1E959}, {0x1EC71, 0x1ECAB}, {0x1ECAD, 0x1ECAF}, {0x1ECB1, 0x1ECB4},
    {0x1ED01, 0x1ED2D}, {0x1ED2F, 0x1ED3D}, {0x1F100, 0x1F10C}, {0x1FBF0, 0x1FBF9},
};
// clang-format on

bool in_ranges(const CodeRange* begin, const CodeRange* end, uint32_t cp) {
  // First range whose last >= cp; cp is in it when it also starts at or before cp.
  const CodeRange* r =
      std::lower_bound(begin, end, cp, [](const CodeRange& a, uint32_t c) { return a.last < c; });
  return r != end && r->first <= cp;
}

bool is_unicode_letter(uint32_t cp) {
  return in_ranges(std::begin(kLetterRanges), std::end(kLetterRanges), cp);
}

bool is_unicode_number(uint32_t cp) {
  return in_ranges(std::begin(kNumberRanges), std::end(kNumberRanges), cp);
}

}  // namespace
}  // namespace tessera::data
