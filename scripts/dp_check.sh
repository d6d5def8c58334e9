#!/usr/bin/env bash
# Data parallelism over NCCL on this machine's GPUs: one process a GPU, started as torchrun starts
# them (RANK, WORLD_SIZE, LOCAL_RANK), NCCL's unique id handed over in a file (dist.init), so no
# mpirun is needed. Three checks, a row each of a markdown table ("| stage | result | detail |"),
# printed at the end:
#
#   dp comm     tests/test_comm as G ranks over NCCL (TESSERA_TEST_COMM_BACKEND=nccl): every
#               collective in every dtype on CUDA tensors with exact values, shards that do not
#               divide, async handles, the bucketed gradient all-reduce and ZeRO-1's shards;
#   dp train    CONFIG (tiny, head dimension 64) for STEPS steps on G ranks against one GPU that
#               reaches the same global batch by accumulating G micro-batches (the same windows in
#               the same steps, src/data/loader.h): losses and gradient norms step by step;
#   dp scaling  a GPT-2-shaped byte-level model (12 layers, 768 channels, 12 heads, T 1024, 8
#               sequences a rank) for SCALE_STEPS steps on 1 and on G GPUs: tokens/s, and G GPUs'
#               over G times one GPU's.
#
# NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): with fewer than two GPUs the table
# is one row saying so. scripts/gpu_check.sh runs this as its dp stage. On a machine of your own:
#   scripts/dp_check.sh                            # build/ holds train and tests/test_comm
#   GPUS=4 BUILD_DIR=build-offline scripts/dp_check.sh
# Env: GPUS (default: nvidia-smi's count; at most 8 are used), BUILD_DIR (build), CONFIG
# (configs/tiny.yaml), RUNS (run directories: checkpoints/dp-check), LOG (every process's output,
# appended: RUNS/dp.log), STEPS (30), BATCH and SEQ (a rank's micro-batch in the dp train runs: 12
# x 64), TRAIN_ARGS (more train flags for those runs), SCALE_STEPS (20; 0 skips that row), LIMIT_S
# (each launch's time limit: 120), SCALE_ARGS (train flags in place of the scaling row's model and
# batch), RANKS_ARGS (flags the G-rank train runs alone get: how tests/scripts/dp_check_emu.sh makes
# the runs differ, to see the verdict fail), PYTHON (python3).
# Exits 1 when a row says FAILED.
set -uo pipefail
cd "$(dirname "$0")/.."
B="${BUILD_DIR:-build}"
CONFIG="${CONFIG:-configs/tiny.yaml}"
RUNS="${RUNS:-$PWD/checkpoints/dp-check}"
mkdir -p "$RUNS"
LOG="${LOG:-$RUNS/dp.log}"
STEPS="${STEPS:-30}"
SCALE_STEPS="${SCALE_STEPS:-20}"
LIMIT_S="${LIMIT_S:-120}"
BATCH="${BATCH:-12}"
SEQ="${SEQ:-64}"
PYTHON="${PYTHON:-python3}"
read -r -a train_args <<<"${TRAIN_ARGS:-}"
read -r -a ranks_args <<<"${RANKS_ARGS:-}"
G="${GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')}"
((G > 8)) && G=8

ROWS="" failed=0
row() {  # row STAGE RESULT DETAIL
  ROWS+="| $1 | $2 | $(tr -d '|' <<<"$3") |"$'\n'
  [[ $2 == FAILED* ]] && failed=1
  return 0
}
finish() { printf '%s' "$ROWS"; exit "$failed"; }
elapsed() { echo "$(($(date +%s) - $1))s"; }
timed_out() { [ "$1" = 124 ] && echo " (stopped by its time limit)"; }

if ((G < 2)); then
  row dp skipped "$G GPU(s): NCCL refuses two ranks on one GPU, so this needs a machine of two or more"
  finish
fi

# ranks NAME N CMD...: N processes of CMD at once, rank r on GPU r (LOCAL_RANK); each one's output
# in RUNS/ranks/NAME.r.log and appended to LOG; returns the first nonzero exit status, else 0.
ranks() {
  local name=$1 n=$2 r s rc=0 pids=()
  shift 2
  mkdir -p "$RUNS/ranks"
  for ((r = 0; r < n; ++r)); do
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r timeout -k 10 "$LIMIT_S" "$@" >"$RUNS/ranks/$name.$r.log" 2>&1 &
    pids+=($!)
  done
  for r in "${!pids[@]}"; do
    wait "${pids[$r]}"; s=$?
    ((rc == 0)) && rc=$s
  done
  for ((r = 0; r < n; ++r)); do echo "== $name, rank $r of $n: $*"; cat "$RUNS/ranks/$name.$r.log"; done >>"$LOG"
  return "$rc"
}

# train NAME N STEPS [train flags]: CONFIG on N GPUs (N 1: one plain process).
train() {
  local name=$1 n=$2 steps=$3 init rc
  shift 3
  rm -rf "${RUNS:?}/$name"
  local cmd=("$B/train" --config "$CONFIG" --device cuda --max-steps "$steps" --run-name "$name"
    --set checkpoint.dir="$RUNS" --set log.interval=1 --set eval.interval=0
    --set checkpoint.interval=0 "$@")
  if ((n == 1)); then
    echo "== $name: ${cmd[*]}" >>"$LOG"
    timeout -k 10 "$LIMIT_S" "${cmd[@]}" >>"$LOG" 2>&1
    return
  fi
  # A fresh folder for the id: a launch by hand has no job name to tell an old id file from its own.
  # dist.timeout under LIMIT_S: a rank left waiting for a dead peer stops with tessera's error
  # naming it, not with timeout's signal.
  init=$(mktemp -d /tmp/dp-check-init.XXXXXX)
  ranks "$name" "$n" "${cmd[@]}" --set dist.backend=nccl --set dist.init="file://$init" \
    --set dist.timeout=$((LIMIT_S > 40 ? LIMIT_S / 2 : 20)) "${ranks_args[@]}"
  rc=$?
  rm -rf "$init"
  return "$rc"
}

# ---- dp comm -----------------------------------------------------------------------------------
t0=$(date +%s)
init=$(mktemp -d /tmp/dp-check-init.XXXXXX)
ranks comm "$G" env TESSERA_TEST_COMM_BACKEND=nccl TESSERA_TEST_COMM_INIT="file://$init" \
  NCCL_DEBUG="${NCCL_DEBUG:-WARN}" "$B/tests/test_comm"
rc=$?
rm -rf "$init"
passed=$(grep -m1 -oE '\[  PASSED  \] [0-9]+ tests?' "$RUNS/ranks/comm.0.log" | grep -oE '[0-9]+')
skipped=$(grep -m1 -oE '\[  SKIPPED \] [0-9]+ tests?' "$RUNS/ranks/comm.0.log" | grep -oE '[0-9]+')
if ((rc == 0)); then
  row "dp comm" ok "test_comm as $G NCCL ranks: ${passed:-?} tests passed on every rank, ${skipped:-0} skipped, $(elapsed "$t0")"
else
  row "dp comm" FAILED "test_comm as $G NCCL ranks exited with $rc$(timed_out $rc): each rank's failures in the log"
fi

# ---- dp train ----------------------------------------------------------------------------------
# Head dimension 64 (n_embd 256, 4 heads): the flash kernels. One micro-batch of BATCH x SEQ
# tokens a rank (tiny's 12 x 64); the single GPU accumulates G of them.
t0=$(date +%s)
hd64=(--set model.n_embd=256 --set model.block_size="$SEQ" --set train.batch_size="$BATCH"
  --set train.total_batch_size=$((G * BATCH * SEQ)) "${train_args[@]}")
train dp-1 1 "$STEPS" "${hd64[@]}"
rc1=$?
train "dp-$G" "$G" "$STEPS" "${hd64[@]}"
rcg=$?
if ((rc1 != 0 || rcg != 0)); then
  row "dp train" FAILED "1 GPU exited with $rc1$(timed_out $rc1), $G ranks with $rcg$(timed_out $rcg)"
else
  # Both runs compute each micro-batch's gradient with the same kernels; they differ in the order
  # f32 partial gradients are added (the flat buffer's accumulation, NCCL's sum) and in how the
  # loss is averaged, each ~1e-7 relative. So step 1 (the same weights) agrees to 1e-4 in the loss
  # and 1e-3 in the gradient norm, where a sum in place of the mean multiplies the norm by G and a
  # bucket left unreduced leaves a rank's own noisier gradient in it. Later steps drift apart as
  # bf16 rounds the updated weights differently: every step's loss within 1%, and falling.
  verdict=$("$PYTHON" - "$RUNS/dp-1/metrics.jsonl" "$RUNS/dp-$G/metrics.jsonl" <<'PY'
import json, sys
def series(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if "loss" in r and "grad_norm" in r:
            out[r["step"]] = (r["loss"], r["grad_norm"])
    return out
one, many = series(sys.argv[1]), series(sys.argv[2])
steps = sorted(set(one) & set(many))
if len(steps) < 5:
    print(f"FAILED {len(steps)} steps logged by both runs"); sys.exit()
rel = lambda a, b: abs(a - b) / max(abs(a), 1e-12)
s0 = steps[0]
loss0, norm0 = rel(one[s0][0], many[s0][0]), rel(one[s0][1], many[s0][1])
worst = max(steps, key=lambda s: rel(one[s][0], many[s][0]))
falls = many[steps[-1]][0] < many[s0][0]
ok = loss0 < 1e-4 and norm0 < 1e-3 and rel(one[worst][0], many[worst][0]) < 1e-2 and falls
print("ok" if ok else "FAILED",
      f"{len(steps)} steps; step {s0}: loss {many[s0][0]:.5f} (rel. difference {loss0:.1e}),",
      f"gradient norm {many[s0][1]:.4f} ({norm0:.1e}); largest loss difference {rel(one[worst][0], many[worst][0]):.1e}",
      f"(step {worst}); loss {many[s0][0]:.3f} -> {many[steps[-1]][0]:.3f}")
PY
)
  row "dp train" "${verdict%% *}" "$G ranks against 1 GPU accumulating $G micro-batches: ${verdict#* }; $(elapsed "$t0")"
fi

# ---- dp scaling --------------------------------------------------------------------------------
if ((SCALE_STEPS <= 0)); then
  row "dp scaling" skipped "SCALE_STEPS=0"
  finish
fi
t0=$(date +%s)
big=(--set model.n_layer=12 --set model.n_head=12 --set model.n_embd=768 --set model.block_size=1024
  --set train.batch_size=8 --set train.total_batch_size=0)
shape="12 x 768, T 1024, B 8 a GPU"
[ -n "${SCALE_ARGS:-}" ] && read -r -a big <<<"$SCALE_ARGS" && shape="SCALE_ARGS $SCALE_ARGS"
median_tps() {  # the median tokens/s of a run's steps after its first 5 (warm-up)
  "$PYTHON" - "$1" <<'PY'
import json, statistics, sys
v = [r["tokens_per_s"] for r in map(json.loads, open(sys.argv[1])) if "tokens_per_s" in r and r.get("step", 0) > 5]
print(f"{statistics.median(v):.0f}" if v else "")
PY
}
train dp-scale-1 1 "$SCALE_STEPS" "${big[@]}"
rc1=$?
train "dp-scale-$G" "$G" "$SCALE_STEPS" "${big[@]}"
rcg=$?
one=$(median_tps "$RUNS/dp-scale-1/metrics.jsonl" 2>/dev/null)
many=$(median_tps "$RUNS/dp-scale-$G/metrics.jsonl" 2>/dev/null)
if ((rc1 != 0 || rcg != 0)) || [ -z "$one" ] || [ -z "$many" ]; then
  row "dp scaling" FAILED "1 GPU exited with $rc1$(timed_out $rc1), $G ranks with $rcg$(timed_out $rcg); tokens/s ${one:-?} and ${many:-?}"
else
  row "dp scaling" ok "$shape, $SCALE_STEPS steps: 1 GPU $one tok/s, $G GPUs $many tok/s: $(awk -v a="$one" -v b="$many" -v g="$G" 'BEGIN { printf "%.0f%%", 100 * b / (g * a) }') of $G x one; $(elapsed "$t0")"
fi
finish
