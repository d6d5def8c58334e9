#!/usr/bin/env bash
# tessera's hf tokenizer (data/hf_tokenizer.cpp) on Meta Llama 3's tokenizer.json against the
# JavaScript port of Hugging Face's tokenizers (hf_tokenizer_reference.js), id for id: a text of
# every kind of piece the pattern makes (contractions in any case, numbers past three digits,
# whitespace runs with and without line breaks, CRLF, punctuation, accents, CJK, Arabic, emoji,
# ZWJ sequences), this repository's README.md, and the KJV corpus where scripts/prepare_data.sh
# has written it (~1 M tokens).
#   tests/scripts/hf_tokenizer_reference.sh BUILD_DIR
# Exits 77 (ctest: skipped) without node, Llama 3's files or the reference (prepare_data.sh llama3).
set -euo pipefail
B=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
L3=${TESSERA_LLAMA3_DIR:-$ROOT/data/tokenizers/llama3}
export NODE_PATH=$ROOT/.deps/node_modules
command -v node >/dev/null || { echo "skipped: no node"; exit 77; }
[ -s "$L3/tokenizer.json" ] && [ -s "$NODE_PATH/@lenml/tokenizers/dist/main.js" ] ||
  { echo "skipped: no $L3/tokenizer.json or reference (scripts/prepare_data.sh llama3)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

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
  printf '    indented(code);\n\treturn x + y; // comment\n\xc2\xa0no-break \xe3\x80\x80ideographic'
} >"$tmp/pieces.txt"

texts=("$tmp/pieces.txt" "$ROOT/README.md")
[ -s "$ROOT/data/kjv/kjv.txt" ] && texts+=("$ROOT/data/kjv/kjv.txt")
rc=0
for i in "${!texts[@]}"; do
  "$B/tokenize" --tokenizer hf --tokenizer-dir "$L3" --input "${texts[$i]}" --output "$tmp/$i" \
    --val-fraction 0 >/dev/null
  node "$ROOT/tests/scripts/hf_tokenizer_reference.js" "$L3" "${texts[$i]}" "$tmp/$i/train_000.bin" ||
    rc=1
done
exit $rc
