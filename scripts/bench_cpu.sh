#!/usr/bin/env bash
# A GPT-2 124M training step on the CPU (f32): tessera (build/bench_gpu --device cpu: forward,
# backward, clipping and the flat AdamW step that `train` runs) beside the same step in PyTorch
# (scripts/bench_cpu_torch.py: scripts/torch_gpt.py's model, torch.optim.AdamW), the same shapes
# and cores, one table.
#
#   scripts/bench_cpu.sh            # batch 2 x 256 tokens, 3 timed steps after 1 (~1.5 minutes on 2 cores)
#   BATCH=4 SEQ=128 STEPS=5 scripts/bench_cpu.sh
#
# PyTorch runs twice and its faster run is the comparison: all cores as PyTorch threads with one
# OpenBLAS thread, then one PyTorch thread with OpenBLAS on all cores (Debian's torch does its gemms
# through OpenBLAS, whose threads ignore torch.set_num_threads; which split wins depends on the
# shapes: bench_dp_torch.py explains the first), with glibc's malloc asking for huge pages as
# tessera's tensors do (scripts/torch_env.sh). tessera runs with its defaults (OpenMP on every
# core, one BLAS thread per call). Needs TORCH_PYTHON (default /usr/bin/python3, Debian's:
# apt-get install python3-torch); without it only tessera's row is printed.
# BUILD_DIR (default build) is configured and built first. A benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
BATCH="${BATCH:-2}"
SEQ="${SEQ:-256}"
STEPS="${STEPS:-3}"
WARMUP="${WARMUP:-1}"
source scripts/torch_env.sh
CORES="$(nproc)"
source scripts/configure.sh
configure "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$CORES" --target bench_gpu >/dev/null

echo "== $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2 }'), $CORES cores;" \
  "GPT-2 124M (configs/gpt2-124m.yaml), batch $BATCH x $SEQ tokens, f32"
tessera=$("$BUILD_DIR/bench_gpu" --device cpu --config configs/gpt2-124m.yaml --batch-size "$BATCH" \
  --set model.block_size="$SEQ" --set train.seq_len="$SEQ" --steps "$STEPS" --warmup "$WARMUP" \
  --no-kernels)
echo "$tessera"
t_ms=$(sed -n 's/^bench_gpu: \([0-9.]*\) ms\/step.*/\1/p' <<<"$tessera")
[ -n "$t_ms" ] || { echo "bench_cpu.sh: no ms/step line from bench_gpu" >&2; exit 1; }

printf '\n%-48s %10s %16s\n' run "ms/step" "tessera/run"
printf '%-48s %10.0f %16s\n' "tessera (OpenMP x $CORES)" "$t_ms" -
if ! "$TORCH_PYTHON" -c 'import torch' 2>/dev/null; then
  echo "PyTorch comparison skipped: $TORCH_PYTHON cannot import torch"
  exit 0
fi
best=""
for split in "$CORES 1" "1 $CORES"; do
  read -r threads blas <<<"$split"
  json=$(OPENBLAS_NUM_THREADS="$blas" torch_python scripts/bench_cpu_torch.py --threads "$threads" \
    --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --warmup "$WARMUP")
  ms=$("$TORCH_PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])["median_ms"])' "$json")
  version=$("$TORCH_PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])["torch"])' "$json")
  printf '%-48s %10.0f %16.2f\n' "PyTorch $version ($threads threads, OpenBLAS x $blas)" "$ms" \
    "$(awk -v a="$t_ms" -v b="$ms" 'BEGIN { print a / b }')"
  if [ -z "$best" ] || awk -v a="$ms" -v b="$best" 'BEGIN { exit !(a < b) }'; then best="$ms"; fi
done
printf '%-48s %10.0f %16.2f\n' "PyTorch, its faster run" "$best" \
  "$(awk -v a="$t_ms" -v b="$best" 'BEGIN { print a / b }')"
echo "(tessera/run: time ratio, below 1 is tessera faster; PyTorch ran with" \
  "GLIBC_TUNABLES='$TORCH_TUNABLES', scripts/torch_env.sh)"
