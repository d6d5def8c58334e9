#!/usr/bin/env bash
# Configures the CUDA emulator build (kernels/emu/cuda_emu.h: every kernels/*.cu compiled by g++,
# run on the CPU) in BUILD_DIR (default build-emu) and builds the targets given:
#   scripts/build_emu.sh test_cuda bench_gpu
# Extra CMake configure arguments go in EMU_CMAKE_ARGS. EMU_SANITIZE=1 builds with AddressSanitizer
# and UndefinedBehaviorSanitizer (default BUILD_DIR build-emu-asan): device memory is host memory,
# so ASan checks the kernels' reads and writes. Needs the CUDA headers (CUDA_ROOT, default
# /usr/local/cuda), not nvcc's compiler or a GPU. Used by test_emu.sh and bench_host.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"
if [ ! -f "$CUDA_ROOT/include/cuda_runtime.h" ]; then
  echo "build_emu.sh: no CUDA headers at $CUDA_ROOT/include (set CUDA_ROOT)" >&2
  exit 1
fi
source scripts/configure.sh
SANITIZE=()
if [ "${EMU_SANITIZE:-0}" = 1 ]; then
  SANITIZE=("${SANITIZE_ARGS[@]}")
  BUILD_DIR="${BUILD_DIR:-build-emu-asan}"
fi
BUILD_DIR="${BUILD_DIR:-build-emu}"
# shellcheck disable=SC2086  # EMU_CMAKE_ARGS is a list of arguments
configure "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA_EMU=ON \
  -DCUDAToolkit_ROOT="$CUDA_ROOT" "${SANITIZE[@]}" ${EMU_CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j"$(nproc)" --target "$@"
