#!/usr/bin/env bash
# scripts/dp_check.sh on the CUDA emulator: its devices (one a process) and its NCCL between the
# processes stand in for a machine of several GPUs, which no lease has had yet, so that a change to
# train's flags, metrics.jsonl, test_comm or the script shows here first. Small shapes:
#   1. two ranks: every row must say ok (test_comm over NCCL; two ranks against one device
#      accumulating two micro-batches; the scaling row's figures);
#   2. the two-rank run with another seed (RANKS_ARGS): the train row must say FAILED, naming the
#      first step's differences (the gradient norm's past its bound), and the script exit 1;
#   3. one device: one row saying why nothing ran.
#
#   tests/scripts/dp_check_emu.sh BUILD_DIR   (the emulator build: train, tokenize, tests/test_comm)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$(cd "$1" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "dp_check_emu: $*" >&2; tail -40 "$work/runs/dp.log" >&2 || true; exit 1; }

# Byte shards of this repository's own text stand in for the KJV corpus.
"$build/tokenize" --tokenizer byte --input "$root/README.md" --input "$root/docs/gpu-notes.md" \
  --output "$work/data" >/dev/null
sed "s#data/kjv/byte/#$work/data/#" "$root/configs/tiny.yaml" >"$work/tiny.yaml"
grep -q "$work/data/train_" "$work/tiny.yaml" || fail "configs/tiny.yaml no longer names data/kjv/byte/"

small="--set model.n_embd=128 --set model.n_head=2 --set model.n_layer=2"  # head dimension 64
dp_check() {  # dp_check [VAR=value...]: the script on the emulator's devices; its rows on stdout
  env GPUS=2 BUILD_DIR="$build" CONFIG="$work/tiny.yaml" RUNS="$work/runs" STEPS=8 BATCH=2 SEQ=32 \
    TRAIN_ARGS="$small" SCALE_STEPS=8 LIMIT_S=300 \
    SCALE_ARGS="$small --set model.block_size=32 --set train.batch_size=2 --set train.total_batch_size=0" \
    "$@" "$root/scripts/dp_check.sh"
}

out=$(dp_check) || { echo "$out" >&2; fail "exited with $? on two ranks"; }
echo "$out"
grep -qE '^\| dp comm \| ok \| test_comm as 2 NCCL ranks: [0-9]+ tests passed on every rank' <<<"$out" ||
  fail "no ok comm row"
grep -qE '^\| dp train \| ok \| 2 ranks against 1 GPU accumulating 2 micro-batches: 8 steps; step 1: ' <<<"$out" ||
  fail "no ok train row"
grep -qE '^\| dp scaling \| ok \| .* 1 GPU [0-9]+ tok/s, 2 GPUs [0-9]+ tok/s: [0-9]+% of 2 x one' <<<"$out" ||
  fail "no ok scaling row"

rc=0
out=$(dp_check RANKS_ARGS="--set train.seed=7" SCALE_STEPS=0) || rc=$?
echo "$out"
[ "$rc" -eq 1 ] || fail "exited with $rc, not 1, where the ranks trained another model"
# Another seed's first step: its loss near the other's (both near ln 257; 9.4e-5 and 3.0e-4 apart
# on this repository's text as it stood on 2026-12-06, either side of dp_check's 1e-4), its
# gradient norm 10-17% away, past dp_check's bound of 1e-3 for any text.
grep -qE '^\| dp train \| FAILED \| .*step 1: loss [0-9.]+ \(rel. difference [0-9.e+-]+\), gradient norm [0-9.]+ \([0-9.]+e-0[0-3]\)' <<<"$out" ||
  fail "the train row does not fail on the first step's gradient norm"

out=$(GPUS=1 "$root/scripts/dp_check.sh")
grep -qxF '| dp | skipped | 1 GPU(s): NCCL refuses two ranks on one GPU, so this needs a machine of two or more |' <<<"$out" ||
  fail "one device: $out"
echo "dp_check_emu: ok"
