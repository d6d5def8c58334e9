#!/usr/bin/env bash
# scripts/sft_accuracy.py end to end: prompt/response examples tokenized with --format sft, a tiny
# model trained on them for a few seconds, then scored by the script through build/generate. Every
# prompt ("<word>:") is answered " ok", so the trained model's greedy answers must all match, and
# the script's line must say so, with the share of well-formed answers and the majority baseline.
# Usage: tests/scripts/sft_accuracy_smoke.sh BUILD_DIR   (a build with tokenize, train, generate)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$(cd "$1" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
words=(alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma)
for i in $(seq 0 119); do
  printf '{"prompt": "%s %d:", "response": " ok"}\n' "${words[$((i % ${#words[@]}))]}" "$i"
done >"$work/ex.jsonl"
"$build/tokenize" --tokenizer byte --format sft --input "$work/ex.jsonl" --output "$work/data" \
  >"$work/tokenize.log"
grep -q "examples 1-109 in train, 110-120 in val" "$work/tokenize.log" ||
  fail "tokenize's split: $(cat "$work/tokenize.log")"
"$build/train" --config "$root/configs/tiny.yaml" --run-name sft --max-steps 60 \
  --set model.n_layer=2 --set model.n_embd=64 --set model.block_size=32 --set train.batch_size=8 \
  --set data.train="$work/data/train_*.bin" --set data.val="$work/data/val_*.bin" \
  --set checkpoint.dir="$work/ck" --set checkpoint.interval=0 --set eval.interval=0 \
  --set optim.lr=3e-3 --set optim.warmup_steps=5 >"$work/train.log" 2>&1 ||
  fail "train: $(tail -5 "$work/train.log")"
out=$(BUILD_DIR="$build" python3 "$root/scripts/sft_accuracy.py" "$work/ck/sft" "$work/ex.jsonl" \
  --from 110 --every 3)
echo "$out"
grep -qF "4 examples ($work/ex.jsonl, from 110, every 3): 4 exact (100.0%), 4 answer some response of the file (100.0%); always 'ok' would score 4 (100.0%)" <<<"$out" ||
  fail "unexpected line"
# A prompt the script cannot find in generate's output, or a missing checkpoint, is an error.
if BUILD_DIR="$build" python3 "$root/scripts/sft_accuracy.py" "$work/ck/none" "$work/ex.jsonl" \
  --from 120 >"$work/err.log" 2>&1; then fail "a missing checkpoint was not an error"; fi
grep -q "generate --checkpoint $work/ck/none failed" "$work/err.log" || fail "$(cat "$work/err.log")"
echo ok
