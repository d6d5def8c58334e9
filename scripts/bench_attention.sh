#!/usr/bin/env bash
# Fused attention speed on the GPU: tessera's flash (softmax) and stick-breaking kernels
# (build/bench_attention, src/apps/bench_attention.cpp) and PyTorch's
# scaled_dot_product_attention (scripts/bench_attention.py), bf16, causal, T = 1k..16k,
# D = 64 and 128, in one markdown table. Names the GPU and the versions it ran with.
# Usage: scripts/bench_attention.sh [flags for both, e.g. --seqlens 2048,8192 --dims 128 --iters 20]
#   BUILD_DIR (default build) picks the build directory; PYTHON (default python3) the
#   interpreter that has torch; NO_BUILD=1 runs that build's bench_attention as it is (gpu_check.sh,
#   whose offline build a reconfigure here would redo).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR="${BUILD_DIR:-build}"
PYTHON="${PYTHON:-python3}"
if [ "${NO_BUILD:-0}" != 1 ]; then
  source scripts/configure.sh
  configure "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target bench_attention >/dev/null
fi

gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo unknown)
echo "GPU: $gpu; tessera $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "FLOPs: forward 4 T^2 D H B / 2 (causal), backward 2.5x forward; B x T = 16k, H x D = 2048"
echo
echo "| impl | T | D | B x H | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |"
echo "|---|---|---|---|---|---|---|---|"
status=0
# One process per row kind (bench_attention --list-impls: each kernel family, stick-breaking): a
# kernel that faults leaves the device unusable to its process only, so the other rows still come.
impls=$("$BUILD_DIR/bench_attention" --list-impls) || status=$?
for impl in $impls; do
  rc=0
  "$BUILD_DIR/bench_attention" --no-header --impls "$impl" "$@" || rc=$?
  if [ $rc -ne 0 ]; then
    echo "bench_attention --impls $impl failed (rc $rc): its rows are missing"
    status=$rc
  fi
done
"$PYTHON" scripts/bench_attention.py --no-header "$@" || status=$?
exit $status
