// NFC (data/unicode_nfc.h, UAX #15): hand-made cases of each step that always run, every Hangul
// syllable, and conformance with the Unicode Character Database's own files where Debian's
// unicode-data installs them (/usr/share/unicode): NormalizationTest.txt (plain or .bz2, read
// through bzcat), UnicodeData.txt's combining classes and DerivedNormalizationProps.txt's NFC_QC
// against the code points nfc treats as stable. Each of those skips without its file.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "data/unicode_nfc.h"
#include "data/utf8.h"

using namespace tessera::data;
namespace fs = std::filesystem;

namespace {

const fs::path kUcd = "/usr/share/unicode";

std::string utf8(std::initializer_list<uint32_t> cps) {
  std::string out;
  for (uint32_t cp : cps) append_utf8(cp, out);
  return out;
}

TEST(Nfc, composes_a_letter_and_its_combining_mark) {
  EXPECT_EQ(nfc("cafe\xcc\x81"), "caf\xc3\xa9");                 // e + U+0301 -> U+00E9
  EXPECT_EQ(nfc(utf8({'A', 0x30A})), utf8({0xC5}));              // A + ring above
  EXPECT_EQ(nfc(utf8({0x1E9B, 0x323})), utf8({0x1E9B, 0x323}));  // recomposed around the 0x323
  EXPECT_EQ(nfc(utf8({'a', 0x308, 0x304})), utf8({0x1DF}));      // a + diaeresis + macron: twice
  // Two starters (class 0) compose: ORIYA VOWEL SIGN E + AA -> ORIYA VOWEL SIGN O.
  EXPECT_EQ(nfc(utf8({0xB47, 0xB3E})), utf8({0xB4B}));
}

TEST(Nfc, replaces_singletons_and_keeps_text_already_in_nfc) {
  EXPECT_EQ(nfc(utf8({0x212B})), utf8({0xC5}));    // ANGSTROM SIGN
  EXPECT_EQ(nfc(utf8({0x2126})), utf8({0x3A9}));   // OHM SIGN -> GREEK CAPITAL OMEGA
  EXPECT_EQ(nfc(utf8({0xF900})), utf8({0x8C48}));  // a CJK compatibility ideograph
  for (const std::string& s :
       {std::string(""), std::string("plain ASCII\r\n"),
        std::string("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80")})
    EXPECT_EQ(nfc(s), s);
}

// U+0958 DEVANAGARI LETTER QA is in CompositionExclusions.txt: NFC decomposes it and never
// composes it back.
TEST(Nfc, keeps_a_composition_exclusion_decomposed) {
  EXPECT_EQ(nfc(utf8({0x958})), utf8({0x915, 0x93C}));
  EXPECT_EQ(nfc(utf8({0x915, 0x93C})), utf8({0x915, 0x93C}));
}

// Canonical ordering: marks of different classes sort by class (dot below 220 before dot above
// 230), marks of one class keep their order.
TEST(Nfc, reorders_marks_by_combining_class) {
  EXPECT_EQ(nfc(utf8({'q', 0x307, 0x323})), utf8({'q', 0x323, 0x307}));
  EXPECT_EQ(nfc(utf8({'q', 0x301, 0x300})), utf8({'q', 0x301, 0x300}));
  // a + dot above + dot below: reordered, the dot below composes first (U+1EA1), then nothing
  // takes the dot above.
  EXPECT_EQ(nfc(utf8({'a', 0x307, 0x323})), utf8({0x1EA1, 0x307}));
  // U+1EA5's decomposition reorders with what follows it: a + circumflex + acute + dot below ->
  // a + dot below + circumflex + acute, which composes to U+1EAD + acute.
  EXPECT_EQ(nfc(utf8({0x1EA5, 0x323})), utf8({0x1EAD, 0x301}));
}

// UAX #15's blocking: a mark is blocked from the starter by one before it of the same or higher
// class (or class 0), not by one of a lower class.
TEST(Nfc, composes_only_what_is_not_blocked) {
  EXPECT_EQ(nfc(utf8({'a', 0x305, 0x301})), utf8({'a', 0x305, 0x301}));  // overline (230) blocks
  EXPECT_EQ(nfc(utf8({'A', 0x316, 0x300})), utf8({0xC0, 0x316}));        // grave below (220) not
  EXPECT_EQ(nfc(utf8({'e', 0x301, 0x301})), utf8({0xE9, 0x301}));        // one acute composes
  EXPECT_EQ(nfc(utf8({'a', 'b', 0x301})), utf8({'a', 'b', 0x301}));      // b + acute: no pair
  // Two starters compose only side by side: Hangul L, then a mark, then V stays three.
  EXPECT_EQ(nfc(utf8({0x1100, 0x301, 0x1161})), utf8({0x1100, 0x301, 0x1161}));
}

TEST(Nfc, composes_hangul_jamo_into_syllables) {
  EXPECT_EQ(nfc(utf8({0x1100, 0x1161})), utf8({0xAC00}));          // L V -> GA
  EXPECT_EQ(nfc(utf8({0x1100, 0x1161, 0x11A8})), utf8({0xAC01}));  // L V T -> GAG
  EXPECT_EQ(nfc(utf8({0xAC00, 0x11A8})), utf8({0xAC01}));          // LV T
  EXPECT_EQ(nfc(utf8({0xAC01, 0x11A8})), utf8({0xAC01, 0x11A8}));  // LVT T: no more
  EXPECT_EQ(nfc(utf8({0x1100, 0x11A8})), utf8({0x1100, 0x11A8}));  // L T: no syllable
}

// Every one of the 11,172 syllables, decomposed to its jamo by Unicode's arithmetic (section
// 3.12), composes back, and is its own NFC.
TEST(Nfc, every_hangul_syllable_round_trips_through_its_jamo) {
  int checked = 0;
  for (uint32_t s = 0; s < 11172; ++s) {
    const uint32_t syllable = 0xAC00 + s, t = s % 28;
    const std::string jamo = t ? utf8({0x1100 + s / 588, 0x1161 + s % 588 / 28, 0x11A7 + t})
                               : utf8({0x1100 + s / 588, 0x1161 + s % 588 / 28});
    ASSERT_EQ(nfc(jamo), utf8({syllable})) << std::hex << syllable;
    ASSERT_EQ(nfc(utf8({syllable})), utf8({syllable})) << std::hex << syllable;
    ++checked;
  }
  EXPECT_EQ(checked, 11172);
}

// Bytes that are no UTF-8 stay in place and compose with nothing, as the byte-level tokenizers
// keep them; the valid text around them is normalised.
TEST(Nfc, keeps_invalid_bytes_where_they_are) {
  EXPECT_EQ(nfc("\xff"), "\xff");
  EXPECT_EQ(nfc("e\xff\xcc\x81"), "e\xff\xcc\x81");  // the byte separates e from the mark
  EXPECT_EQ(nfc("e\xcc\x81\xff"), "\xc3\xa9\xff");
  EXPECT_EQ(nfc(std::string("\xc3") + "e\xcc\x81"), "\xc3\xc3\xa9");  // cut off, then e + acute
  EXPECT_EQ(nfc("\xed\xa0\x80\xcc\x81"), "\xed\xa0\x80\xcc\x81");     // a surrogate's bytes
}

// Random texts of letters, marks, jamo, syllables and invalid bytes (fixed seed): NFC is
// idempotent, and an invalid byte cuts the text into parts normalised apart.
TEST(Nfc, is_idempotent_and_cut_by_invalid_bytes_on_random_text) {
  const uint32_t alphabet[] = {'a',   'e',    ' ',    0xE9,   0x300,  0x301, 0x307, 0x323,  0x316,
                               0x305, 0x1100, 0x1161, 0x11A8, 0xAC00, 0x958, 0x93C, 0x212B, 0xF900};
  std::mt19937 rng(7);
  for (int n = 0; n < 2000; ++n) {
    std::string text, want, part;
    for (int k = int(rng() % 12); k >= 0; --k) {
      if (rng() % 8 == 0) {
        want += nfc(part) + "\xff";
        text += "\xff";
        part.clear();
        continue;
      }
      const std::string c = utf8({alphabet[rng() % std::size(alphabet)]});
      text += c, part += c;
    }
    want += nfc(part);
    const std::string got = nfc(text);
    ASSERT_EQ(got, want) << text;
    ASSERT_EQ(nfc(got), got) << text;
  }
}

// The fast path's claim: no code point below U+0300 can change or take part in a change, so a
// text of them is returned as it is without a look-up. Checked on the tables themselves (the
// look-up that is skipped): no combining class run starts below it, no mapping that NFC undoes
// (not primary) is of a code point below it, no composition takes a second code point below it.
TEST(Nfc, nothing_below_u0300_takes_part_in_normalisation) {
  for (const nfc_data::CombiningClassRun& r : nfc_data::combining_class_runs())
    EXPECT_GE(r.first, 0x300u);
  for (const nfc_data::CanonicalMapping& m : nfc_data::canonical_mappings())
    EXPECT_GE(m.primary ? m.second : m.cp, 0x300u) << std::hex << m.cp;
  EXPECT_EQ(nfc_data::combining_class_runs().front().first, 0x300u);
  EXPECT_FALSE(is_nfc_stable(0x300));
  EXPECT_TRUE(is_nfc_stable(kInvalidCodePoint));
  std::string below;
  for (uint32_t cp = 0; cp < 0x300; ++cp) append_utf8(cp, below);
  EXPECT_EQ(nfc(below), below);
}

// Stretches between stable code points are normalised apart: a long text with marks far apart
// equals its pieces normalised one by one.
TEST(Nfc, normalises_every_stretch_of_a_long_text) {
  std::string text, want;
  for (int i = 0; i < 200; ++i) {
    text += "word " + utf8({'e', 0x301}) + utf8({0x1100, 0x1161}) + " \xe6\x97\xa5 " +
            utf8({'q', 0x307, 0x323}) + "\xff";
    want += "word " + utf8({0xE9}) + utf8({0xAC00}) + " \xe6\x97\xa5 " + utf8({'q', 0x323, 0x307}) +
            "\xff";
  }
  EXPECT_EQ(nfc(text), want);
}

// ---- the Unicode Character Database's files ----------------------------------------------------

// NormalizationTest.txt's text: the file, or its .bz2 through bzcat; none when neither is there.
std::optional<std::string> normalization_test() {
  const fs::path plain = kUcd / "NormalizationTest.txt", bz2 = kUcd / "NormalizationTest.txt.bz2";
  if (fs::exists(plain)) {
    std::ifstream f(plain);
    std::ostringstream os;
    os << f.rdbuf();
    return os.str();
  }
  if (!fs::exists(bz2)) return std::nullopt;
  FILE* p = popen(("bzcat " + bz2.string() + " 2>/dev/null").c_str(), "r");
  if (!p) return std::nullopt;
  std::string text;
  char buf[1 << 16];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) text.append(buf, n);
  if (pclose(p) != 0 || text.empty()) return std::nullopt;
  return text;
}

// "0044 0307" -> its UTF-8.
std::string from_hex(const std::string& field) {
  std::istringstream in(field);
  std::string out, hex;
  while (in >> hex) append_utf8(uint32_t(std::stoul(hex, nullptr, 16)), out);
  return out;
}

// The file's conformance rule for NFC: for every line c1;c2;c3;c4;c5,
//   c2 == NFC(c1) == NFC(c2) == NFC(c3)  and  c4 == NFC(c4) == NFC(c5),
// and every code point that Part 1 does not list is its own NFC.
TEST(NfcConformance, normalization_test_txt) {
  const std::optional<std::string> text = normalization_test();
  if (!text)
    GTEST_SKIP() << kUcd << "/NormalizationTest.txt(.bz2) not found (apt-get install unicode-data)";
  const std::string version = nfc_data::unicode_version();
  if (text->find("# NormalizationTest-" + version + ".txt") != 0)
    GTEST_SKIP() << "NormalizationTest.txt is not of Unicode " << version
                 << ", the version of the tables";
  std::istringstream lines(*text);
  std::vector<bool> in_part1(0x110000, false);
  int part = -1, passed = 0, failed = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("@Part")) part = std::stoi(line.substr(5));
    if (line.empty() || line[0] == '#' || line[0] == '@') continue;
    std::vector<std::string> c;
    std::istringstream fields(line);
    for (std::string f; c.size() < 5 && std::getline(fields, f, ';');) c.push_back(from_hex(f));
    ASSERT_EQ(c.size(), 5u) << line;
    if (part == 1) in_part1[decode_utf8(c[0], 0).cp] = true;
    const bool ok = nfc(c[0]) == c[1] && nfc(c[1]) == c[1] && nfc(c[2]) == c[1] &&
                    nfc(c[3]) == c[3] && nfc(c[4]) == c[3];
    if (ok) {
      ++passed;
    } else if (++failed <= 10) {
      ADD_FAILURE() << "NormalizationTest.txt part " << part << ": " << line;
    }
  }
  int singles = 0;
  for (uint32_t cp = 0; cp < 0x110000; ++cp) {
    if ((cp >= 0xD800 && cp <= 0xDFFF) || in_part1[cp]) continue;
    const std::string s = utf8({cp});
    EXPECT_EQ(nfc(s), s) << std::hex << cp;
    ++singles;
  }
  EXPECT_EQ(failed, 0);
  EXPECT_GT(passed, 18000);  // Unicode 15.0's file has 19,074 lines
  std::printf(
      "NormalizationTest.txt (Unicode %s): %d lines passed, %d failed; %d code points "
      "outside part 1 are their own NFC\n",
      version.c_str(), passed, failed, singles);
}

// The tables against the files they were generated from: every code point's combining class
// (UnicodeData.txt field 3), and is_nfc_stable exactly where the class is 0 and
// DerivedNormalizationProps.txt gives NFC_QC Yes.
TEST(NfcConformance, combining_classes_and_quick_check_match_the_database) {
  const fs::path data = kUcd / "UnicodeData.txt", props = kUcd / "DerivedNormalizationProps.txt";
  if (!fs::exists(data) || !fs::exists(props))
    GTEST_SKIP() << "UnicodeData.txt or DerivedNormalizationProps.txt not found in " << kUcd;
  std::vector<uint8_t> ccc(0x110000, 0);
  std::ifstream d(data);
  for (std::string line; std::getline(d, line);) {
    std::vector<std::string> f;
    std::istringstream fields(line);
    for (std::string x; f.size() < 4 && std::getline(fields, x, ';');) f.push_back(x);
    ccc[std::stoul(f[0], nullptr, 16)] = uint8_t(std::stoi(f[3]));
  }
  std::vector<bool> quick_yes(0x110000, true);
  std::ifstream p(props);
  int not_yes = 0;
  for (std::string line; std::getline(p, line);) {
    // "0340..0341    ; NFC_QC; N # ..."
    const size_t semi = line.find(';');
    if (line.empty() || line[0] == '#' || line.find("; NFC_QC;") == std::string::npos) continue;
    const std::string range = line.substr(0, semi);
    const uint32_t first = uint32_t(std::stoul(range, nullptr, 16));
    const size_t dots = range.find("..");
    const uint32_t last = dots == std::string::npos
                              ? first
                              : uint32_t(std::stoul(range.substr(dots + 2), nullptr, 16));
    for (uint32_t cp = first; cp <= last; ++cp, ++not_yes) quick_yes[cp] = false;
  }
  EXPECT_GT(not_yes, 1000);  // the file's NFC_QC entries were read
  int mismatches = 0;
  for (uint32_t cp = 0; cp < 0x110000; ++cp) {
    if (canonical_combining_class(cp) != ccc[cp] ||
        is_nfc_stable(cp) != (ccc[cp] == 0 && quick_yes[cp]))
      if (++mismatches <= 10) ADD_FAILURE() << "U+" << std::hex << cp;
  }
  EXPECT_EQ(mismatches, 0);
}

}  // namespace
