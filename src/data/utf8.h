// UTF-8 one character at a time, for the byte-level tokenizers (bpe.cpp, pretokenize.cpp), and
// generated text made fit for JSON (build/generate --prompts).
//
//   Utf8Char c = decode_utf8("\xc3\xa9!", 0);   // {0xE9, 2}
//   append_utf8(0x120, out);                     // "\xc4\xa0" (the files' spelling of a space)
//   replace_invalid_utf8("a\xff")                 // "a\xef\xbf\xbd" (U+FFFD)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tessera::data {

constexpr uint32_t kInvalidCodePoint = 0xFFFFFFFF;

struct Utf8Char {
  uint32_t cp;   // kInvalidCodePoint for a byte that does not start a well-formed sequence
  uint32_t len;  // bytes
};

// One character of UTF-8 at s[i]. An ill-formed sequence (bad lead or continuation byte, overlong
// form, surrogate, > U+10FFFF, cut off by the end) yields one invalid "character" of one byte, so
// any byte string splits into pieces and still round-trips.
inline Utf8Char decode_utf8(std::string_view s, size_t i) {
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

inline void append_utf8(uint32_t cp, std::string& out) {
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

// s with each byte that starts no well-formed sequence (decode_utf8's invalid character) replaced
// by U+FFFD: text a strict UTF-8 reader (JSON's) takes.
inline std::string replace_invalid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const Utf8Char c = decode_utf8(s, i);
    if (c.cp == kInvalidCodePoint)
      append_utf8(0xFFFD, out);
    else
      out.append(s.substr(i, c.len));
    i += c.len;
  }
  return out;
}

}  // namespace tessera::data
