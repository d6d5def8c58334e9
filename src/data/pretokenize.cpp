// The pre-tokenisation patterns of pretokenize.h, each a scanner that takes the first
// alternative matching at a position, with the backtracking of the whitespace alternatives worked
// out: "\s+(?!\S)" leaves a run's last character for the word after it, "\s*[\r\n]+" ends a run
// at its last line break.
#include "data/pretokenize.h"

#include "data/unicode_classes.h"
#include "data/utf8.h"

namespace tessera::data {
namespace {

// The patterns' character classes: \p{L}, \p{N}, \s, and everything else ([^\s\p{L}\p{N}]).
enum class CharClass { Letter, Number, Space, Other };

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

CharClass class_at(std::string_view s, size_t i) { return classify(decode_utf8(s, i).cp); }

// End of the run of class k that starts at p, at most `most` characters.
size_t run_end(std::string_view s, size_t p, CharClass k, size_t most = size_t(-1)) {
  for (size_t count = 0; p < s.size() && count < most; ++count) {
    const Utf8Char c = decode_utf8(s, p);
    if (classify(c.cp) != k) break;
    p += c.len;
  }
  return p;
}

// The whitespace alternatives at a run of \s starting at s[i]: with line breaks,
// "\s*[\r\n]+" (when `breaks`) ends the piece after the run's last one; else "\s+(?!\S)" leaves the
// run's last character in front of the next non-space (so "a  b" -> "a", " ", " b"), or takes the
// whole run at the end of the text; a single character before a non-space is "\s+".
size_t space_end(std::string_view s, size_t i, bool breaks) {
  size_t p = i, last = i, count = 0, after_break = 0;
  while (p < s.size()) {
    const Utf8Char c = decode_utf8(s, p);
    if (classify(c.cp) != CharClass::Space) break;
    if (c.cp == '\r' || c.cp == '\n') after_break = p + 1;
    last = p;
    p += c.len;
    ++count;
  }
  if (breaks && after_break > 0) return after_break;
  if (p < s.size() && count >= 2) return last;
  return p;
}

// 's|'t|'re|'ve|'m|'ll|'d at s[i], in lower case or (ignore_case) any case: its end, or 0.
size_t contraction_end(std::string_view s, size_t i, bool ignore_case) {
  const size_t n = s.size();
  if (s[i] != '\'' || i + 1 >= n) return 0;
  auto at = [&](size_t k) {
    const char c = s[k];
    return ignore_case && c >= 'A' && c <= 'Z' ? char(c + ('a' - 'A')) : c;
  };
  const char a = at(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if (i + 2 < n) {
    const char b = at(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  }
  return 0;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t gpt2_piece_end(std::string_view s, size_t i) {
  // Contractions: lower case only, and they win even inside a word ("'sup" -> "'s", "up").
  if (const size_t end = contraction_end(s, i, false)) return end;
  // " ?X+" for X = letters, numbers, other: one optional U+0020, then a run of one class.
  size_t start = i;
  CharClass k = class_at(s, i);
  if (s[i] == ' ' && i + 1 < s.size()) {
    const CharClass next = class_at(s, i + 1);
    if (next != CharClass::Space) start = i + 1, k = next;
  }
  if (k != CharClass::Space) return run_end(s, start, k);
  return space_end(s, i, false);
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+
// with at most `digits` numbers a piece: 3 for Llama 3 ("\p{N}{1,3}"), 1 for Qwen2 ("\p{N}").
size_t llama3_piece_end(std::string_view s, size_t i, size_t digits) {
  const size_t n = s.size();
  if (const size_t end = contraction_end(s, i, true)) return end;
  const Utf8Char c0 = decode_utf8(s, i);
  const CharClass k0 = classify(c0.cp);
  const size_t i1 = i + c0.len;
  // A word, with one character in front of it that is no line break, letter or number: a space,
  // a tab, punctuation ("(word", "\tword").
  if (k0 == CharClass::Letter) return run_end(s, i1, CharClass::Letter);
  if (k0 != CharClass::Number && c0.cp != '\r' && c0.cp != '\n' && i1 < n &&
      class_at(s, i1) == CharClass::Letter)
    return run_end(s, i1, CharClass::Letter);
  if (k0 == CharClass::Number) return run_end(s, i, CharClass::Number, digits);
  // Punctuation, after one optional U+0020, with the line breaks that follow it.
  size_t start = i;
  CharClass k = k0;
  if (s[i] == ' ' && i1 < n && class_at(s, i1) == CharClass::Other)
    start = i1, k = CharClass::Other;
  if (k == CharClass::Other) {
    size_t p = run_end(s, start, CharClass::Other);
    while (p < n && (s[p] == '\r' || s[p] == '\n')) ++p;
    return p;
  }
  return space_end(s, i, true);
}

}  // namespace

std::string_view pretokenizer_pattern(Pretokenizer kind) {
  switch (kind) {
    case Pretokenizer::Gpt2:
      return R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
    case Pretokenizer::Llama3:
      return R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    case Pretokenizer::Qwen2:
      return R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  }
  return "";
}

size_t piece_end(Pretokenizer kind, std::string_view s, size_t i) {
  switch (kind) {
    case Pretokenizer::Llama3:
      return llama3_piece_end(s, i, 3);
    case Pretokenizer::Qwen2:
      return llama3_piece_end(s, i, 1);
    case Pretokenizer::Gpt2:
      break;
  }
  return gpt2_piece_end(s, i);
}

std::vector<std::string_view> pretokenize(Pretokenizer kind, std::string_view text) {
  std::vector<std::string_view> pieces;
  for_each_piece(kind, text, [&](std::string_view p) { pieces.push_back(p); });
  return pieces;
}

}  // namespace tessera::data
