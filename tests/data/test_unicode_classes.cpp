// \p{L} and \p{N} over every code point, against figures from the Python `regex` module 2022.10.31
// (Debian bookworm's python3-regex, the version unicode_classes.cpp's tables were generated with):
//   import regex
//   for p in (r"\p{L}", r"\p{N}"):
//       r = regex.compile(p); cs = [c for c in range(0x110000) if r.match(chr(c))]
//       print(len(cs), sum(cs), sum(c * c for c in cs) % 2**61)
// A range edge moved by one changes the count; two edges moved in step keep the count but change
// the sum; the sum of squares catches ranges swapped for others of the same count and sum.
#include <gtest/gtest.h>

#include <cstdint>

#include "data/unicode_classes.h"

using namespace tessera::data;

namespace {

struct Census {
  uint64_t count = 0, sum = 0, sum_sq = 0;  // sum of squares mod 2^61
};

template <typename F>
Census census(F&& in_class) {
  Census c;
  for (uint32_t cp = 0; cp < 0x110000; ++cp) {
    if (!in_class(cp)) continue;
    ++c.count;
    c.sum += cp;
    c.sum_sq = (c.sum_sq + uint64_t(cp) * cp) % (uint64_t(1) << 61);
  }
  return c;
}

TEST(UnicodeClasses, letters_are_the_regex_modules_p_L) {
  const Census c = census(is_unicode_letter);
  EXPECT_EQ(c.count, 136104u);
  EXPECT_EQ(c.sum, 14773782966u);
  EXPECT_EQ(c.sum_sq, 2185424167699640u);
}

TEST(UnicodeClasses, numbers_are_the_regex_modules_p_N) {
  const Census c = census(is_unicode_number);
  EXPECT_EQ(c.count, 1831u);
  EXPECT_EQ(c.sum, 103544065u);
  EXPECT_EQ(c.sum_sq, 9108283691281u);
}

TEST(UnicodeClasses, edges_of_the_ascii_and_the_last_ranges) {
  EXPECT_TRUE(is_unicode_letter('A') && is_unicode_letter('Z') && is_unicode_letter('z'));
  EXPECT_FALSE(is_unicode_letter('@') || is_unicode_letter('[') || is_unicode_letter('{'));
  EXPECT_TRUE(is_unicode_number('0') && is_unicode_number('9'));
  EXPECT_FALSE(is_unicode_number('/') || is_unicode_number(':'));
  EXPECT_TRUE(is_unicode_number(0x3007));   // IDEOGRAPHIC NUMBER ZERO (Nl)
  EXPECT_FALSE(is_unicode_letter(0x3007));  // a number, not a letter
  EXPECT_FALSE(is_unicode_letter(0x10FFFF) || is_unicode_number(0x10FFFF));
  EXPECT_FALSE(is_unicode_letter(0xFFFFFFFF) || is_unicode_number(0xFFFFFFFF));
}

}  // namespace
