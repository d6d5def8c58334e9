#!/usr/bin/env bash
# Builds and runs build/bench_memory: peak CPU memory and time of one training step with AdamW,
# LOMO and AdaLomo on the same GPT (src/apps/bench_memory.cpp says what is measured).
# Usage: scripts/bench_memory.sh [bench_memory flags, e.g. --n-layer 4 --batch 8 --untied]
#   BUILD_DIR (default build) picks the build directory.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR="${BUILD_DIR:-build}"
GEN=()
if command -v ninja >/dev/null; then GEN=(-G Ninja); fi
if [ -f "$BUILD_DIR/CMakeCache.txt" ]; then GEN=(); fi  # keep the generator it was made with

cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target bench_memory
"$BUILD_DIR/bench_memory" "$@"
