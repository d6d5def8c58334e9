#!/usr/bin/env bash
# What a mixture of experts costs a training step on the CPU (f32): configs/llama-small.yaml (dense
# SwiGLU MLPs) and configs/moe-small.yaml (each MLP 8 SwiGLU experts of half the width, a token to
# its top 2: the same MLP arithmetic per token, 4 x the MLP weights), in tessera
# (build/bench_gpu --device cpu: forward, backward, clipping and the flat AdamW step that `train`
# runs) and in PyTorch (scripts/bench_moe_torch.py: the same shapes in plain PyTorch, the mixture as
# transformers' Mixtral runs it), on the same cores, one table: each model's ms per step, tessera's
# time over PyTorch's, and the mixture's over the dense model's in each framework.
#
#   scripts/bench_moe.sh            # batch 8 x 128 tokens, 3 timed steps after 1 (~40 s on 2 cores)
#   BATCH=4 SEQ=64 STEPS=5 scripts/bench_moe.sh
#
# PyTorch runs under both thread splits of scripts/bench_cpu.sh (all cores as PyTorch threads with
# one OpenBLAS thread, then one PyTorch thread with OpenBLAS on all cores; bench_cpu.sh says why)
# and each model's faster run is the comparison, with glibc's malloc asking for huge pages
# (scripts/torch_env.sh). tessera runs with its defaults (OpenMP on every core). Needs TORCH_PYTHON
# (default /usr/bin/python3, Debian's: apt-get install python3-torch); without it only tessera's
# row is printed. BUILD_DIR (default build) is configured and built first unless NO_BUILD=1.
# A benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
BATCH="${BATCH:-8}"
SEQ="${SEQ:-128}"
STEPS="${STEPS:-3}"
WARMUP="${WARMUP:-1}"
source scripts/torch_env.sh
CORES="$(nproc)"
if [ -z "${NO_BUILD:-}" ]; then
  source scripts/configure.sh
  configure "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j"$CORES" --target bench_gpu >/dev/null
fi

echo "== $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2 }'), $CORES cores;" \
  "configs/llama-small.yaml and configs/moe-small.yaml, batch $BATCH x $SEQ tokens, f32"
declare -A tessera
for model in llama-small moe-small; do
  out=$("$BUILD_DIR/bench_gpu" --device cpu --config "configs/$model.yaml" --batch-size "$BATCH" \
    --set model.block_size="$SEQ" --set train.seq_len="$SEQ" --steps "$STEPS" --warmup "$WARMUP" \
    --no-kernels)
  echo "$out"
  tessera[$model]=$(sed -n 's/^bench_gpu: \([0-9.]*\) ms\/step.*/\1/p' <<<"$out")
  [ -n "${tessera[$model]}" ] ||
    { echo "bench_moe.sh: no ms/step line from bench_gpu on $model" >&2; exit 1; }
done
t_dense="${tessera[llama-small]}" t_moe="${tessera[moe-small]}"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
row() { printf '%-48s %12.0f %12.0f %10s\n' "$1" "$2" "$3" "$(ratio "$3" "$2")"; }
printf '\n%-48s %12s %12s %10s\n' "ms/step" llama-small moe-small moe/dense
row "tessera (OpenMP x $CORES)" "$t_dense" "$t_moe"
if ! "$TORCH_PYTHON" -c 'import torch' 2>/dev/null; then
  echo "PyTorch comparison skipped: $TORCH_PYTHON cannot import torch"
  exit 0
fi
# faster A B: the smaller of two times, B alone when A is empty.
faster() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }
best_dense="" best_moe=""
for split in "$CORES 1" "1 $CORES"; do
  read -r threads blas <<<"$split"
  json=$(OPENBLAS_NUM_THREADS="$blas" torch_python scripts/bench_moe_torch.py --threads "$threads" \
    --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --warmup "$WARMUP")
  read -r version dense moe <<<"$("$TORCH_PYTHON" -c 'import json, sys; r = json.loads(sys.argv[1])
print(r["torch"], r["dense"]["median_ms"], r["moe"]["median_ms"])' "$json")"
  row "PyTorch $version ($threads threads, OpenBLAS x $blas)" "$dense" "$moe"
  best_dense=$(faster "$best_dense" "$dense")
  best_moe=$(faster "$best_moe" "$moe")
done
row "PyTorch, each model's faster run" "$best_dense" "$best_moe"
printf '%-48s %12s %12s %10s\n' "tessera / PyTorch (below 1: tessera faster)" \
  "$(ratio "$t_dense" "$best_dense")" "$(ratio "$t_moe" "$best_moe")" -
echo "(PyTorch ran with GLIBC_TUNABLES='$TORCH_TUNABLES', scripts/torch_env.sh)"
