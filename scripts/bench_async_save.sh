#!/usr/bin/env bash
# What checkpoints cost a training run, saved synchronously and in the background
# (checkpoint.async, src/checkpoint/async_save.h): build/train of a 12-layer, 768-channel byte-level
# GPT (85 M parameters; B 2 x T 256; SHAPE below) on the KJV bytes, STEPS steps with a save every EVERY steps,
# once each way in one call. Prints a row per way: the run's wall time, the time of the steps that
# follow a save and of the others (from the log's tok/s), and what the saves stopped training for
# (the background way: the host copies, and any wait for a write still running).
# Usage: scripts/bench_async_save.sh
#   BUILD_DIR (default build), DEVICE (cpu | cuda, default cpu), STEPS (10), EVERY (2),
#   DIR (run directories, default checkpoints/bench_async_save; removed after),
#   SHAPE ("layers channels heads context batch", default "12 768 12 256 2"),
#   DATA (byte-level shards train_*.bin and val_*.bin, default data/kjv/byte: scripts/prepare_data.sh),
#   NO_BUILD=1 (use BUILD_DIR/train as it is).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
DEVICE="${DEVICE:-cpu}"
STEPS="${STEPS:-10}"
EVERY="${EVERY:-2}"
DIR="${DIR:-checkpoints/bench_async_save}"
DATA="${DATA:-data/kjv/byte}"
read -r N_LAYER N_EMBD N_HEAD SEQ BATCH <<<"${SHAPE:-12 768 12 256 2}"
[ -e "$DATA/train_000.bin" ] || { echo "bench_async_save.sh: no $DATA/train_000.bin (scripts/prepare_data.sh)" >&2; exit 1; }
[ -e "$DIR" ] && { echo "bench_async_save.sh: $DIR exists; remove it" >&2; exit 1; }
if [ -z "${NO_BUILD:-}" ]; then
  source scripts/configure.sh
  configure "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target train >/dev/null
fi

printf '%-12s %8s %12s %12s %14s\n' saves "wall s" "step after" "other steps" "stalled s"
for async in false true; do
  log="$DIR.$async.log"
  t0=$(date +%s%N)
  "$BUILD_DIR/train" --config configs/tiny.yaml --device "$DEVICE" \
    --set model.n_layer="$N_LAYER" --set model.n_embd="$N_EMBD" --set model.n_head="$N_HEAD" \
    --set model.block_size="$SEQ" --set data.train="$DATA/train_*.bin" --set data.val="$DATA/val_*.bin" \
    --set train.batch_size="$BATCH" --set train.max_steps="$STEPS" --set eval.interval=0 \
    --set log.interval=1 --set checkpoint.interval="$EVERY" --set checkpoint.keep=2 \
    --set checkpoint.dir="$DIR" --set checkpoint.async=$async --run-name "$async" >"$log" 2>&1
  t1=$(date +%s%N)
  # Step times from tok/s (B x T tokens a step); a step whose number follows a save's is "after".
  awk -v every="$EVERY" -v wall="$(((t1 - t0) / 1000000))" -v mode="$async" -v tokens=$((BATCH * SEQ)) '
    /^step .*tok\/s/ { split($2, s, "/"); n = s[1] + 0
               for (i = 1; i <= NF; ++i) if ($i == "tok/s") t = tokens / $(i - 1)
               if (n > 1 && (n - 1) % every == 0) { after += t; na++ } else if (n > 1) { other += t; no++ } }
    /host copy in/ { for (i = 1; i <= NF; ++i) if ($i == "in" && $(i - 1) == "copy") stall += $(i + 1) }
    /written in the background in .*; waited/ { for (i = 1; i <= NF; ++i) if ($i == "waited") stall += $(i + 1) }
    END { printf "%-12s %8.1f %11.2fs %11.2fs %14s\n", mode == "true" ? "background" : "synchronous",
                 wall / 1000, na ? after / na : 0, no ? other / no : 0,
                 mode == "true" ? sprintf("%.2f", stall) : "-" }' "$log"
done
echo "(device $DEVICE, $N_LAYER layers x $N_EMBD channels, B $BATCH x T $SEQ, $STEPS steps, a save every $EVERY; logs: $DIR.false.log, $DIR.true.log)"
rm -rf "$DIR"
