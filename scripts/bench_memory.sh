#!/usr/bin/env bash
# Builds and runs build/bench_memory: peak memory and time of one training step with AdamW,
# LOMO, AdaLomo, LoRA and QLoRA (nf4, nf4-dq) on the same GPT (src/apps/bench_memory.cpp says what
# is measured).
# Usage: scripts/bench_memory.sh [bench_memory flags, e.g. --n-layer 4 --batch 8 --untied]
#        scripts/bench_memory.sh --device cuda [flags]   # on cuda:0, with the caching allocator's
#                                                        # reserved bytes per row
#   BUILD_DIR (default build, or build-cuda with --device cuda) picks the build directory; with
#   --device cuda it is configured with -DTESSERA_CUDA=ON.
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_OPTS=()
DEFAULT_DIR=build
for a in "$@"; do
  if [ "$a" = cuda ] || [ "$a" = --device=cuda ]; then
    CUDA_OPTS=(-DTESSERA_CUDA=ON)
    DEFAULT_DIR=build-cuda
  fi
done
BUILD_DIR="${BUILD_DIR:-$DEFAULT_DIR}"
source scripts/configure.sh
configure "$BUILD_DIR" "${CUDA_OPTS[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target bench_memory
"$BUILD_DIR/bench_memory" "$@"
