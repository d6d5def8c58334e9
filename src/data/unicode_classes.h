// The two Unicode character classes GPT-2's pre-tokenisation pattern uses (bpe.cpp): \p{L}, letters
// (Lu Ll Lt Lm Lo), and \p{N}, numbers (Nd Nl No), exactly as the Python `regex` module classifies
// code points (the tables and how they were generated are in unicode_classes.cpp).
//
//   is_unicode_letter(0xE9)   // true: é
//   is_unicode_number(0x661)  // true: ARABIC-INDIC DIGIT ONE
#pragma once

#include <cstdint>

namespace tessera::data {

bool is_unicode_letter(uint32_t cp);
bool is_unicode_number(uint32_t cp);

}  // namespace tessera::data
