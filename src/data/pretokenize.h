// Pre-tokenisation for the byte-level BPE tokenizers: the text split into the pieces that merges
// never cross, as one of three regular expressions does (first alternative that matches wins,
// scanning left to right). Each is written out by hand (pretokenize.cpp), not run through a regex
// engine; the pieces are views into the text and concatenate to it, for any bytes.
//
//   pretokenize(Pretokenizer::Gpt2, "Hello  world")     // "Hello", " ", " world"
//   pretokenize(Pretokenizer::Llama3, "(12345 ok")      // "(", "123", "45", " ok"
//   pretokenize(Pretokenizer::Qwen2, "(123 ok")         // "(", "1", "2", "3", " ok"
//
//   Gpt2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//           (GPT-2's encoder.py; Hugging Face's ByteLevel pre-tokenizer with use_regex)
//   Llama3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//           (Meta's Llama 3 tokenizer.json, a Split pre-tokenizer; tiktoken's cl100k_base pattern)
//   Qwen2   Llama3's with \p{N} for \p{N}{1,3}: each number character (a digit) a piece alone
//           (Qwen2's, Qwen2.5's and Qwen3's tokenizer.json, a Split pre-tokenizer)
//
// \p{L} and \p{N} as unicode_classes.h has them, \s the Unicode White_Space property; a byte that
// starts no well-formed UTF-8 sequence counts as [^\s\p{L}\p{N}].
#pragma once

#include <string_view>
#include <vector>

namespace tessera::data {

enum class Pretokenizer { Gpt2, Llama3, Qwen2 };

// The pattern above as tokenizer.json spells it (JSON-decoded).
std::string_view pretokenizer_pattern(Pretokenizer kind);

// End of the piece that starts at s[i] (i < s.size()).
size_t piece_end(Pretokenizer kind, std::string_view s, size_t i);

template <typename F>
void for_each_piece(Pretokenizer kind, std::string_view text, F&& f) {
  for (size_t i = 0; i < text.size();) {
    const size_t end = piece_end(kind, text, i);
    f(text.substr(i, end - i));
    i = end;
  }
}

std::vector<std::string_view> pretokenize(Pretokenizer kind, std::string_view text);

}  // namespace tessera::data
