// NFC as Unicode Standard Annex #15 (Unicode Normalization Forms) defines it, in three steps over
// code points (Unicode 15.0, chapter 3.11 and 3.12):
//   1. canonical decomposition: each code point replaced, recursively, by its canonical mapping
//      (UnicodeData.txt field 5 without a <tag>); a Hangul syllable S by its jamo:
//      s = S - 0xAC00, L = 0x1100 + s / 588, V = 0x1161 + (s % 588) / 28, T = 0x11A7 + s % 28
//      (no T when s % 28 == 0);
//   2. canonical ordering: each run of non-starters (combining class > 0) sorted, stably, by class;
//   3. canonical composition: left to right, a code point C joins the last starter L before it when
//      C is not blocked from L (no code point between them has class 0 or a class >= C's) and L C
//      has a primary composite (a canonical pair that Full_Composition_Exclusion leaves out);
//      Hangul L V and LV T join by the inverse of the arithmetic above.
//
// Only what can change is worked on. A stable code point (unicode_nfc.h: class 0, NFC_QC Yes)
// ends every run of reordering and composition before it and is its own NFC, so the text is cut
// before each one and only the stretches that hold an unstable code point go through the three
// steps; the rest is copied (UAX #15 section 9, "Detecting Normalization Forms"). A text without
// one is returned as it is after a scan that looks nothing up below U+0300.
//
// All the data derives from the two generated tables (unicode_nfc_tables.cpp): the composition
// pairs are the primary mappings read backwards; NFC_QC is No for a mapping that is not primary
// and Maybe for a composition's second code point. scripts/gen_unicode_nfc.py checked that
// derivation against DerivedNormalizationProps.txt.
#include "data/unicode_nfc.h"

#include <algorithm>
#include <bitset>
#include <unordered_map>
#include <vector>

#include "data/utf8.h"

namespace tessera::data {
namespace {

// Hangul (Unicode 15.0, section 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr uint32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

// Below it no code point has a mapping, a non-zero class or a part in a composition (the
// generator checks it): the scan needs no look-up there.
constexpr uint32_t kFirstUnstable = 0x300;

uint64_t pair_key(uint32_t first, uint32_t second) { return (uint64_t(first) << 32) | second; }

// What the tables give, indexed for the three steps.
struct NfcData {
  std::unordered_map<uint64_t, uint32_t> compose;  // (first, second) -> primary composite
  std::bitset<0x110000> unstable;                  // class > 0 or NFC_QC No or Maybe

  NfcData() {
    for (const nfc_data::CombiningClassRun& r : nfc_data::combining_class_runs())
      for (uint32_t cp = r.first; cp <= r.last; ++cp) unstable.set(cp);
    for (const nfc_data::CanonicalMapping& m : nfc_data::canonical_mappings()) {
      if (m.primary) {
        compose.emplace(pair_key(m.first, m.second), m.cp);
        unstable.set(m.second);  // NFC_QC Maybe: may join what precedes it
      } else {
        unstable.set(m.cp);  // NFC_QC No: a singleton or an exclusion never survives NFC
      }
    }
    for (uint32_t v = kVBase; v < kVBase + kVCount; ++v) unstable.set(v);
    for (uint32_t t = kTBase + 1; t < kTBase + kTCount; ++t) unstable.set(t);
  }
};

const NfcData& nfc_data_index() {
  static const NfcData data;
  return data;
}

const nfc_data::CanonicalMapping* mapping_of(uint32_t cp) {
  const auto maps = nfc_data::canonical_mappings();
  auto it =
      std::lower_bound(maps.begin(), maps.end(), cp,
                       [](const nfc_data::CanonicalMapping& m, uint32_t c) { return m.cp < c; });
  return it != maps.end() && it->cp == cp ? &*it : nullptr;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const nfc_data::CanonicalMapping* m = mapping_of(cp);
  if (!m) {
    out.push_back(cp);
    return;
  }
  decompose(m->first, out);
  if (m->second) decompose(m->second, out);
}

// The primary composite of first + second, or 0.
uint32_t compose(const NfcData& data, uint32_t first, uint32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase && second < kVBase + kVCount)
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 &&
      second > kTBase && second < kTBase + kTCount)
    return first + (second - kTBase);
  auto it = data.compose.find(pair_key(first, second));
  return it == data.compose.end() ? 0 : it->second;
}

// The three steps on a stretch of valid UTF-8, appended to out.
void normalize_stretch(const NfcData& data, std::string_view s, std::string& out) {
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < s.size();) {
    const Utf8Char c = decode_utf8(s, i);
    decompose(c.cp, cps);
    i += c.len;
  }
  std::vector<uint8_t> ccc(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) ccc[i] = canonical_combining_class(cps[i]);

  // Canonical ordering: sort each run of non-starters by class, keeping equal classes in order.
  for (size_t i = 0; i < cps.size();) {
    if (ccc[i] == 0) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < cps.size() && ccc[end] != 0) ++end;
    if (end - i > 1) {
      std::vector<std::pair<uint8_t, uint32_t>> run;
      for (size_t k = i; k < end; ++k) run.emplace_back(ccc[k], cps[k]);
      std::stable_sort(run.begin(), run.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      for (size_t k = i; k < end; ++k) ccc[k] = run[k - i].first, cps[k] = run[k - i].second;
    }
    i = end;
  }

  // Canonical composition, in place: cps[0, kept) is the output so far. C is blocked from the last
  // starter unless it directly follows it or the code point kept before it has a lower, non-zero
  // class (runs are sorted, so that one has the largest class between them).
  size_t kept = 0;
  ptrdiff_t starter = -1;
  uint8_t last_ccc = 0;  // class of cps[kept - 1]
  for (size_t i = 0; i < cps.size(); ++i) {
    const uint32_t c = cps[i];
    const uint8_t k = ccc[i];
    const bool adjacent = starter >= 0 && size_t(starter) + 1 == kept;
    if (starter >= 0 && (adjacent || (last_ccc != 0 && last_ccc < k))) {
      if (const uint32_t composite = compose(data, cps[starter], c)) {
        cps[starter] = composite;
        continue;
      }
    }
    if (k == 0) starter = ptrdiff_t(kept);
    last_ccc = k;
    cps[kept++] = c;
  }
  for (size_t i = 0; i < kept; ++i) append_utf8(cps[i], out);
}

bool stable(const NfcData& data, uint32_t cp) {
  return cp < kFirstUnstable || cp == kInvalidCodePoint || !data.unstable[cp];
}

}  // namespace

uint8_t canonical_combining_class(uint32_t cp) {
  const auto runs = nfc_data::combining_class_runs();
  auto it =
      std::lower_bound(runs.begin(), runs.end(), cp,
                       [](const nfc_data::CombiningClassRun& r, uint32_t c) { return r.last < c; });
  return it != runs.end() && it->first <= cp ? it->ccc : 0;
}

bool is_nfc_stable(uint32_t cp) { return stable(nfc_data_index(), cp); }

std::string nfc(std::string_view text) {
  // Where a stretch that must be normalised would begin: at the last stable code point before it,
  // or just past an invalid byte (which nothing composes with or reorders across).
  auto stretch_start = [](const Utf8Char& c, size_t at) {
    return c.cp == kInvalidCodePoint ? at + 1 : at;
  };
  // Fast path: the scan to the first unstable code point, if any.
  size_t i = 0, start = 0;
  const NfcData* data = nullptr;
  while (i < text.size()) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      start = i++;
      continue;
    }
    if (!data) data = &nfc_data_index();
    const Utf8Char c = decode_utf8(text, i);
    if (!stable(*data, c.cp)) break;
    start = stretch_start(c, i);
    i += c.len;
  }
  if (i == text.size()) return std::string(text);

  // From the first stretch on: each one runs from its start to the next stable code point; what
  // lies between stretches is copied.
  std::string out(text.substr(0, start));
  out.reserve(text.size() + text.size() / 8);
  size_t from = start;  // text[from, ...) is not in out yet
  while (i < text.size()) {
    // text[i] is unstable: the stretch ends before the next stable code point.
    size_t end = i;
    while (end < text.size()) {
      const Utf8Char c = decode_utf8(text, end);
      if (stable(*data, c.cp)) break;
      end += c.len;
    }
    normalize_stretch(*data, text.substr(from, end - from), out);
    // Copy on to the next unstable code point, up to where its stretch starts.
    for (i = start = end; i < text.size();) {
      const Utf8Char c = decode_utf8(text, i);
      if (!stable(*data, c.cp)) break;
      start = stretch_start(c, i);
      i += c.len;
    }
    out.append(text.substr(end, start - end));
    from = start;
  }
  out.append(text.substr(from));
  return out;
}

}  // namespace tessera::data
