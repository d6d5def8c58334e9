#!/usr/bin/env bash
# build/bench_checkpoint on a small GPT, with the digests by the CPU's instructions and by the
# portable code (TESSERA_DIGEST=portable): both must print the same SHA-256 of the same checkpoint
# and the same CRC-32C of its tensors, and a TESSERA_DIGEST it does not know must stop it, named.
# Usage: tests/scripts/bench_checkpoint_smoke.sh BUILD_DIR
set -euo pipefail
bin="$1/bench_checkpoint"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
flags=(--n-layer 1 --n-embd 64 --n-head 2 --vocab 257 --seq 64 --repeats 1)
best=$("$bin" --dir "$dir/a" "${flags[@]}")
portable=$(TESSERA_DIGEST=portable "$bin" --dir "$dir/b" "${flags[@]}")
echo "$best"
echo "$portable"
digests() { grep '^(sha256 ' <<<"$1"; }
[ -n "$(digests "$best")" ] || { echo "FAIL: no digest line" >&2; exit 1; }
[ "$(digests "$best")" = "$(digests "$portable")" ] ||
  { echo "FAIL: the two codes' digests differ" >&2; exit 1; }
grep -q 'SHA-256 portable, CRC-32C portable' <<<"$portable" ||
  { echo "FAIL: TESSERA_DIGEST=portable did not select the portable code" >&2; exit 1; }
[ ! -e "$dir/a" ] && [ ! -e "$dir/b" ] || { echo "FAIL: the checkpoint was left behind" >&2; exit 1; }
if out=$(TESSERA_DIGEST=fast "$bin" --dir "$dir/c" "${flags[@]}" 2>&1); then
  echo "FAIL: TESSERA_DIGEST=fast was accepted" >&2
  exit 1
fi
grep -q "TESSERA_DIGEST must be best or portable, got 'fast'" <<<"$out" ||
  { echo "FAIL: unexpected error: $out" >&2; exit 1; }
echo "ok"
