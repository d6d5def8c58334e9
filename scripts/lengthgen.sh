#!/usr/bin/env bash
# Length generalisation on the KJV bytes: stick-breaking, ALiBi and Forgetting Attention against
# RoPE with inference-time scaling (none, linear, dynamic, yarn) and against RoPE extended by a
# short LongLoRA-style fine-tune, with YaRN (configs/extend-context.yaml) and with LongLoRA's
# linear interpolation.
#
#   scripts/lengthgen.sh [BUILD_DIR]          # default build/; writes docs/lengthgen.{csv,md,png}
#   LENGTHGEN_CK=/tmp/ck LENGTHGEN_SMOKE=1 scripts/lengthgen.sh build   # the pipeline in a minute
#
# 1. trains configs/sb-small.yaml and configs/rope-small.yaml (1000 steps at 128 bytes each), unless
#    checkpoints/<name>/latest exists (then reuses it);
# 2. extends rope-small to 512 bytes with configs/extend-context.yaml (YaRN x4, S^2-Attn, LoRA on
#    q,k,v,o, embeddings and norms trained), and again with linear interpolation x4
#    (--set model.rope_scaling.type=linear), each unless that run exists too; and trains
#    configs/alibi-small.yaml (the same as rope-small with ALiBi for its positions) after the first
#    and configs/fox-small.yaml (forgetting attention, no positions) after the second;
# 3. evaluates every model at 64 .. 4096 bytes (eval --contexts, 4 batches of max(1024, context)
#    bytes, the start of the validation split): the RoPE base with each scaling at
#    factor = max(1, context / 128) (eval --rope-factor auto; dynamic: factor 1, its base follows
#    the length);
# 4. writes docs/lengthgen.csv (model,context,loss), docs/lengthgen.md (the table) and
#    docs/lengthgen.png (scripts/plot.py --contexts).
# Each phase runs two processes on one thread each (two independent runs use a 2-core CPU better
# than one run on two threads at these sizes). Wall time is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
CK=${LENGTHGEN_CK:-checkpoints}
OUT=${LENGTHGEN_OUT:-docs}
CONTEXTS=64,128,256,512,1024,2048,4096
BATCHES=4
SMOKE=()
if [[ -n ${LENGTHGEN_SMOKE:-} ]]; then  # a pipeline check, not a measurement
  CONTEXTS=64,256 BATCHES=1 SMOKE=(--max-steps 3)
fi
PY=/usr/bin/python3  # Debian's, with matplotlib
export OMP_NUM_THREADS=1

for bin in train eval; do
  [[ -x $BUILD/$bin ]] || { echo "lengthgen: $BUILD/$bin missing: build it first (ninja -C $BUILD train eval)" >&2; exit 1; }
done
[[ -n $(ls data/kjv/byte/train_*.bin 2>/dev/null) ]] || { echo "lengthgen: no KJV shards: run scripts/prepare_data.sh" >&2; exit 1; }
mkdir -p "$OUT" "$CK/lengthgen-logs"
LOGS=$CK/lengthgen-logs
start=$(date +%s)

# train NAME CONFIG [args...]: skipped when checkpoints/NAME/latest exists.
train() {
  local name=$1 config=$2
  shift 2
  if [[ -f $CK/$name/latest ]]; then
    echo "reuse  $CK/$name ($(cat "$CK/$name/latest"))"
    return 0
  fi
  echo "train  $name ($config) -> $LOGS/train-$name.log"
  "$BUILD/train" --config "$config" --run-name "$name" --set checkpoint.dir="$CK" "${SMOKE[@]}" "$@" \
    > "$LOGS/train-$name.log" 2>&1 ||
    { echo "lengthgen: training $name failed; see $LOGS/train-$name.log" >&2; tail -5 "$LOGS/train-$name.log" >&2; return 1; }
}

# evaluate LABEL CHECKPOINT [eval args...]: appends LABEL,context,loss rows to $LOGS/LABEL.csv.
evaluate() {
  local label=$1 ck=$2
  shift 2
  local log=$LOGS/eval-${label// /_}.log
  "$BUILD/eval" --checkpoint "$ck" --contexts "$CONTEXTS" --batches "$BATCHES" "$@" > "$log" 2>&1 ||
    { echo "lengthgen: eval $label failed; see $log" >&2; tail -5 "$log" >&2; return 1; }
  awk -v m="$label" '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9.]+$/ { print m "," $1 "," $2 }' "$log" \
    > "$LOGS/rows-${label// /_}.csv"
  echo "eval   $label: $(wc -l < "$LOGS/rows-${label// /_}.csv") lengths"
}

# Phase 1: the two bases.
train sb-small configs/sb-small.yaml & p1=$!
train rope-small configs/rope-small.yaml & p2=$!
wait $p1 && wait $p2
echo "phase 1 done at $(( $(date +%s) - start )) s"

# Phase 2: the two extensions side by side.
{ train extend-context configs/extend-context.yaml --init "$CK/rope-small" &&
  train alibi-small configs/alibi-small.yaml; } & p1=$!
{ train extend-context-linear configs/extend-context.yaml --init "$CK/rope-small" \
    --set model.rope_scaling.type=linear &&
  train fox-small configs/fox-small.yaml; } & p2=$!
wait $p1 && wait $p2
echo "phase 2 done at $(( $(date +%s) - start )) s"

# Phase 3: every evaluation, in two streams.
LABELS=("sb-small (stick-breaking)" "rope-small (no scaling)" "rope-small + linear (PI)"
        "rope-small + dynamic NTK" "rope-small + YaRN" "rope-small extended to 512 (YaRN)"
        "rope-small extended to 512 (linear as LongLoRA)" "alibi-small (ALiBi)"
        "fox-small (forgetting)")
(
  evaluate "${LABELS[0]}" "$CK/sb-small"
  evaluate "${LABELS[1]}" "$CK/rope-small"
  evaluate "${LABELS[2]}" "$CK/rope-small" --rope-scaling linear --rope-factor auto
  evaluate "${LABELS[6]}" "$CK/extend-context-linear"
  evaluate "${LABELS[8]}" "$CK/fox-small"
) & p1=$!
(
  evaluate "${LABELS[3]}" "$CK/rope-small" --rope-scaling dynamic --rope-factor auto
  evaluate "${LABELS[4]}" "$CK/rope-small" --rope-scaling yarn --rope-factor auto
  evaluate "${LABELS[5]}" "$CK/extend-context"
  evaluate "${LABELS[7]}" "$CK/alibi-small"
) & p2=$!
wait $p1 && wait $p2

echo "model,context,loss" > "$OUT/lengthgen.csv"
for label in "${LABELS[@]}"; do
  cat "$LOGS/rows-${label// /_}.csv" >> "$OUT/lengthgen.csv"  # labels hold no comma
done
$PY scripts/plot.py --contexts "$OUT/lengthgen.csv" --trained 128 -o "$OUT/lengthgen.png"
$PY - "$OUT/lengthgen.csv" > "$OUT/lengthgen.md" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
models = list(dict.fromkeys(r["model"] for r in rows))
ctx = sorted({int(r["context"]) for r in rows})
loss = {(r["model"], int(r["context"])): float(r["loss"]) for r in rows}
print("| model | " + " | ".join(f"{c}{' (trained)' if c == 128 else ''}" for c in ctx) + " |")
print("|---|" + "---:|" * len(ctx))
best = {c: min(v for (m, k), v in loss.items() if k == c) for c in ctx}  # bold: best at a length
for m in models:
    vals = [loss.get((m, c)) for c in ctx]
    cells = ["-" if v is None else (f"**{v:.4f}**" if v == best[c] else f"{v:.4f}")
             for v, c in zip(vals, ctx)]
    print(f"| {m} | " + " | ".join(cells) + " |")
EOF
cat "$OUT/lengthgen.md"
echo "lengthgen: wall time $(( $(date +%s) - start )) s; $OUT/lengthgen.png, $OUT/lengthgen.md"
