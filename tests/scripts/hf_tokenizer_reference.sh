#!/usr/bin/env bash
# tessera's hf tokenizer (data/hf_tokenizer.cpp) on Meta Llama 3's and Qwen3's tokenizer.json and
# Mistral 7B's (SentencePiece's BPE with byte fallback)
# against the JavaScript port of Hugging Face's tokenizers (hf_tokenizer_reference.js), id for id:
# a text of every kind of piece the patterns make (contractions in any case, numbers past three
# digits, whitespace runs with and without line breaks, CRLF, punctuation, accents, CJK, Arabic,
# emoji, ZWJ sequences) and of what NFC changes (Qwen3's normalizer: combining marks to compose
# and to reorder, Hangul jamo, singletons, composition exclusions), this repository's README.md,
# the KJV corpus where scripts/prepare_data.sh has written it (~1 M tokens each), and the strings
# of Unicode's NormalizationTest.txt where Debian's unicode-data has it.
#   tests/scripts/hf_tokenizer_reference.sh BUILD_DIR
# Mistral's reads the KJV in parts of 4,000 lines: SentencePiece makes a text one word, which the
# reference takes ~75 s and 1.6 GB to merge whole.
# A tokenizer whose files are missing is skipped (scripts/prepare_data.sh llama3, qwen3, mistral;
# TESSERA_LLAMA3_DIR, TESSERA_QWEN3_DIR and TESSERA_MISTRAL_DIR point elsewhere); exits 77 (ctest:
# skipped) without node, the reference, or any tokenizer's files.
set -euo pipefail
B=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
declare -A DIRS=([llama3]=${TESSERA_LLAMA3_DIR:-$ROOT/data/tokenizers/llama3}
  [qwen3]=${TESSERA_QWEN3_DIR:-$ROOT/data/tokenizers/qwen3}
  [mistral]=${TESSERA_MISTRAL_DIR:-$ROOT/data/tokenizers/mistral})
source "$ROOT/tests/scripts/reference_setup.sh"  # NODE_PATH, $tmp; exits 77 without node

{
  printf "Don't I'LL we'RE they've 'S 'Sup he'D x'Ll 'xyz\n"
  printf '(hello) [world] {x} "quoted" \xe2\x80\x94 em dash \xe2\x80\xa6 ellipsis\n'
  printf '   three spaces\ttab\t and \tmixed  \n  \ntrailing  \n'
  printf ' 1 12 123 1234 12345 \xd9\xa1\xd9\xa2\xd9\xa3\xd9\xa4 \xc2\xb2 \xc2\xbd 3.14159 1,000,000\n'
  printf 'na\xc3\xafve caf\xc3\xa9 cafe\xcc\x81 stra\xc3\x9fe \xc4\xb0stanbul \xc5\xbfeal\n'
  printf '\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 '
  printf '\xd8\xa7\xd9\x84\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a\xd8\xa9 \xe0\xa4\xb9\xe0\xa4\xbf\n'
  printf '\xf0\x9f\x98\x80\xf0\x9f\x98\x83 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd '
  printf '\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7\n'
  printf 'lines\r\nwith\r\n\r\ncrlf  \r\n  x\n\n\n  \n  y\t\n!!!\n?!?\n.\n  .\nx  \na\r\r\nb\n'
  printf '    indented(code);\n\treturn x + y; // comment\n\xc2\xa0no-break \xe3\x80\x80ideographic\n'
  # For NFC: e + acute, A + ring (composes to U+00C5), ANGSTROM SIGN (a singleton: U+00C5), q + dot
  # below + dot above (no composite: stays), a + dot above + dot below (reordered, then composes
  # to U+1EA1 + dot above), Hangul L V T jamo (compose to one syllable) and an LV syllable + T,
  # DEVANAGARI QA (excluded: stays decomposed), a CJK compatibility ideograph (U+F900), Greek
  # with a precomposed and a decomposed tonos, Vietnamese stacked marks, KELVIN SIGN and OHM SIGN.
  printf 'Re\xcc\x81sume\xcc\x81 A\xcc\x8a \xe2\x84\xab q\xcc\xa3\xcc\x87 a\xcc\x87\xcc\xa3 '
  printf '\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8 \xea\xb0\x80\xe1\x86\xa8 \xe0\xa5\x98 \xef\xa4\x80 '
  printf '\xce\xac\xce\xb1\xcc\x81 Vie\xcc\xa3\xcc\x82t \xe2\x84\xaa \xe2\x84\xa6\n'
} >"$tmp/pieces.txt"

texts=("$tmp/pieces.txt" "$ROOT/README.md")
[ -s "$ROOT/data/kjv/kjv.txt" ] && texts+=("$ROOT/data/kjv/kjv.txt")
# Unicode's NormalizationTest.txt (Debian's unicode-data, often compressed): each test line's five
# columns as text, one line each (~19,000 lines of what NFC must decompose, reorder and compose).
UCD=/usr/share/unicode/NormalizationTest.txt
if [ -s "$UCD" ] || { [ -s "$UCD.bz2" ] && command -v bzcat >/dev/null; }; then
  { if [ -s "$UCD" ]; then cat "$UCD"; else bzcat "$UCD.bz2"; fi; } | node -e '
    const lines = require("fs").readFileSync(0, "utf8").split("\n");
    const hex = (c) => String.fromCodePoint(...c.trim().split(" ").map((x) => parseInt(x, 16)));
    for (const l of lines)
      if (/^[0-9A-F]/.test(l)) console.log(l.split(";").slice(0, 5).map(hex).join(" "));' \
    >"$tmp/normalization.txt"
  texts+=("$tmp/normalization.txt")
fi
rc=0 ran=0
for name in llama3 qwen3 mistral; do
  dir=${DIRS[$name]}
  tokenizer_here "$name" "$dir" "$name" || continue
  ran=$((ran + 1))
  for i in "${!texts[@]}"; do
    text=${texts[$i]}
    if [ "$name" = mistral ] && [ "$text" = "$ROOT/data/kjv/kjv.txt" ]; then
      head -n 4000 "$text" >"$tmp/kjv-part.txt"
      text=$tmp/kjv-part.txt
    fi
    "$B/tokenize" --tokenizer hf --tokenizer-dir "$dir" --input "$text" \
      --output "$tmp/$name-$i" --val-fraction 0 >/dev/null
    echo -n "$name: "
    node "$ROOT/tests/scripts/hf_tokenizer_reference.js" "$dir" "$text" \
      "$tmp/$name-$i/train_000.bin" || rc=1
  done
done
[ "$ran" -gt 0 ] || exit 77
exit $rc
