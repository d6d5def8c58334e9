#!/usr/bin/python3
"""Writes src/data/unicode_nfc_tables.cpp, the Unicode data that src/data/unicode_nfc.cpp's NFC
(Unicode Standard Annex #15, Unicode Normalization Forms) runs on, from the Unicode Character
Database as Debian's unicode-data package installs it:

  /usr/bin/python3 scripts/gen_unicode_nfc.py [--ucd /usr/share/unicode]
                                              [--out src/data/unicode_nfc_tables.cpp]

Read:
  UnicodeData.txt                field 3, Canonical_Combining_Class; field 5, the decomposition
                                 mapping (canonical where it has no <tag>)
  DerivedNormalizationProps.txt  Full_Composition_Exclusion, and NFC_QC to check against

Written: the code points of non-zero combining class as runs of one class, and every canonical
decomposition mapping (one level, as UnicodeData.txt gives it; Hangul syllables are left to the
algorithm of Unicode 15.0 section 3.12) with a flag for the pairs that compose back (primary
composites: two code points, not Full_Composition_Exclusion). unicode_nfc.cpp derives the rest
(the composition pairs, which code points can change under NFC) from these two tables; this script
derives them the same way and fails unless the result equals the file's NFC_QC, so the C++ side
rests on a derivation that was checked against the database.
"""
import argparse
import os
import re
import sys

# Hangul (Unicode 15.0, section 3.12, "Conjoining Jamo Behavior").
S_BASE, L_BASE, V_BASE, T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
L_COUNT, V_COUNT, T_COUNT = 19, 21, 28
S_COUNT = L_COUNT * V_COUNT * T_COUNT


def fail(msg):
    sys.exit("gen_unicode_nfc.py: " + msg)


def read_lines(path):
    if not os.path.exists(path):
        fail(f"{path} is missing (apt-get install unicode-data)")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def version_of(lines, name):
    m = re.match(r"# " + name + r"-(\d+\.\d+\.\d+)\.txt", lines[0])
    if not m:
        fail(f"{name}.txt: no version in its first line {lines[0]!r}")
    return m.group(1)


def derived_property(lines, prop):
    """{code point: value} for `prop` in DerivedNormalizationProps.txt (value None: binary)."""
    out = {}
    for line in lines:
        fields = [f.strip() for f in line.split("#")[0].split(";")]
        if len(fields) < 2 or fields[1] != prop:
            continue
        first, _, last = fields[0].partition("..")
        for cp in range(int(first, 16), int(last or first, 16) + 1):
            out[cp] = fields[2] if len(fields) > 2 else None
    if not out:
        fail(f"DerivedNormalizationProps.txt has no {prop}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ucd", default="/usr/share/unicode")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "src/data/unicode_nfc_tables.cpp"))
    args = ap.parse_args()

    ccc, decomposition = {}, {}
    for line in read_lines(os.path.join(args.ucd, "UnicodeData.txt")):
        f = line.split(";")
        cp = int(f[0], 16)
        if int(f[3]):
            ccc[cp] = int(f[3])
        if f[5] and not f[5].startswith("<"):
            decomposition[cp] = [int(x, 16) for x in f[5].split()]
    props = read_lines(os.path.join(args.ucd, "DerivedNormalizationProps.txt"))
    version = version_of(props, "DerivedNormalizationProps")
    exclusion = derived_property(props, "Full_Composition_Exclusion")
    nfc_qc = derived_property(props, "NFC_QC")  # N or M; the rest is Yes

    if any(len(d) not in (1, 2) for d in decomposition.values()):
        fail("a canonical decomposition mapping of more than two code points")
    if any(S_BASE <= cp < S_BASE + S_COUNT for cp in decomposition):
        fail("UnicodeData.txt maps a Hangul syllable (expected: left to the algorithm)")
    primary = {cp for cp, d in decomposition.items() if len(d) == 2 and cp not in exclusion}

    # NFC_QC as unicode_nfc.cpp derives it: No for a code point whose decomposition does not
    # compose back (UAX #15 section 9: singletons, exclusions, non-starter decompositions); Maybe
    # for the second code point of a composition, Hangul vowels and trailing consonants included.
    derived = {cp: "N" for cp in decomposition if cp not in primary}
    seconds = {decomposition[cp][1] for cp in primary}
    seconds |= set(range(V_BASE, V_BASE + V_COUNT)) | set(range(T_BASE + 1, T_BASE + T_COUNT))
    for cp in seconds:
        derived[cp] = "M"
    if derived != nfc_qc:
        diff = sorted(set(derived.items()) ^ set(nfc_qc.items()))[:5]
        fail(f"NFC_QC derived from the mappings differs from the file's: {diff}")

    # unicode_nfc.cpp cuts text before every code point that is stable (combining class 0,
    # NFC_QC Yes) and normalises the pieces apart. That holds when nothing before such a code
    # point can reorder past it or compose with it: so its full decomposition must start with a
    # starter that composes with nothing before it.
    def full(cp):
        return [x for c in decomposition[cp] for x in full(c)] if cp in decomposition else [cp]

    for cp, d in decomposition.items():
        if cp not in ccc and cp not in nfc_qc:
            head = full(cp)[0]
            if head in ccc or head in seconds:
                fail(f"U+{cp:04X} is stable but its decomposition starts with U+{head:04X}")
    if min(set(ccc) | set(nfc_qc)) != 0x300:
        fail("the first code point NFC can change is not U+0300 (unicode_nfc.cpp's fast path)")

    runs = []  # [first, last, class]
    for cp in sorted(ccc):
        if runs and runs[-1][1] == cp - 1 and runs[-1][2] == ccc[cp]:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp, ccc[cp]])

    def rows(items):  # as many to a line as 100 columns hold
        lines = ["   "]
        for item in items:
            if len(lines[-1]) + 1 + len(item) > 100:
                lines.append("   ")
            lines[-1] += " " + item
        return "\n".join(lines)

    run_items = [f"{{0x{a:X}, 0x{b:X}, {c}}}," for a, b, c in runs]
    map_items = []
    for cp in sorted(decomposition):
        d = decomposition[cp]
        second = f"0x{d[1]:X}" if len(d) == 2 else "0"
        map_items.append(f"{{0x{cp:X}, 0x{d[0]:X}, {second}, {int(cp in primary)}}},")
    out = f"""\
// The Unicode Character Database's data for NFC (unicode_nfc.h), Unicode {version}. Generated;
// do not edit. Made with
//   /usr/bin/python3 scripts/gen_unicode_nfc.py
// from Debian's unicode-data {version} (/usr/share/unicode): UnicodeData.txt's combining classes
// (field 3) and canonical decomposition mappings (field 5 without a <tag>; Hangul syllables are
// algorithmic, Unicode section 3.12), and DerivedNormalizationProps.txt's
// Full_Composition_Exclusion. The script checks that NFC_QC derived from these tables, as
// unicode_nfc.cpp derives it, equals that file's NFC_QC.
#include "data/unicode_nfc.h"

namespace tessera::data::nfc_data {{
namespace {{

// clang-format off
// Code points whose canonical combining class is not 0, as runs of one class: {{first, last,
// class}}; {len(ccc)} code points.
constexpr CombiningClassRun kCombiningClassRuns[] = {{
{rows(run_items)}
}};

// Canonical decomposition mappings, one level, by code point: {{code point, first, second (0 for a
// singleton), primary composite (composes back under NFC)}}; {len(decomposition)} mappings,
// {len(primary)} of them primary composites.
constexpr CanonicalMapping kCanonicalMappings[] = {{
{rows(map_items)}
}};
// clang-format on

}}  // namespace

const char* unicode_version() {{ return "{version}"; }}
std::span<const CombiningClassRun> combining_class_runs() {{ return kCombiningClassRuns; }}
std::span<const CanonicalMapping> canonical_mappings() {{ return kCanonicalMappings; }}

}}  // namespace tessera::data::nfc_data
"""
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        f.write(out)
    os.replace(args.out + ".tmp", args.out)
    print(f"gen_unicode_nfc.py: wrote {args.out} (Unicode {version}: {len(runs)} combining class "
          f"runs, {len(decomposition)} mappings, {len(primary)} primary composites)")


if __name__ == "__main__":
    main()
