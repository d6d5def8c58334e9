#!/usr/bin/env bash
# scripts/bench_async_save.sh on a tiny model and this repository's text as byte shards: both rows
# must come out with figures (so a change to train's log lines shows here, not in a GPU lease),
# the background run must say its saves were written in the background, and nothing may be left.
# Usage: tests/scripts/bench_async_save_smoke.sh BUILD_DIR   (a build with train and tokenize)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$(cd "$1" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
"$build/tokenize" --tokenizer byte --input "$root/README.md" --output "$work/data" >/dev/null
out=$(NO_BUILD=1 BUILD_DIR="$build" DATA="$work/data" DIR="$work/runs" SHAPE="2 64 2 32 4" \
  STEPS=6 EVERY=2 "$root/scripts/bench_async_save.sh")
echo "$out"
num='[0-9]+\.[0-9]+'
grep -qE "^synchronous +$num +${num}s +${num}s +-$" <<<"$out" || fail "no synchronous row"
grep -qE "^background +$num +${num}s +${num}s +$num$" <<<"$out" || fail "no background row"
grep -q "written in the background" "$work/runs.true.log" || fail "the background run did not say so"
[ ! -e "$work/runs" ] || fail "the run directories were left behind"
echo ok
