#!/usr/bin/env bash
# The GPU parity tests (ctest -L gpu) and the emulator's own tests (-L emu) on the CUDA emulator
# (kernels/emu/cuda_emu.h): every kernels/*.cu compiled by g++ and run on the CPU,
# one fiber per CUDA thread, inline PTX interpreted, cuBLASLt emulated, NCCL emulated between
# processes. Checks the kernels' logic on a machine without a GPU; it says nothing of speed.
#   BUILD_DIR (default build-emu), EMU_CMAKE_ARGS (scripts/build_emu.sh); EMU_ORDER=forward
#   (default), reverse or random: the order the threads of a block run in (kernels/emu/cuda_emu.h,
#   emu::Order); CI uses random.
#   EMU_SANITIZE=1: the same under AddressSanitizer and UndefinedBehaviorSanitizer (build_emu.sh;
#   default BUILD_DIR build-emu-asan; ~20 min of tests on 2 cores, the flash and training tests
#   several times slower), with the allocator's cache off (TESSERA_CUDA_CACHE=0: a freed block goes
#   back at once, so ASan sees each at the size asked for; the tests of the cache skip).
# Needs the CUDA headers (a CUDA toolkit), not nvcc's compiler or a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
if [ "${EMU_SANITIZE:-0}" = 1 ]; then
  BUILD_DIR="${BUILD_DIR:-build-emu-asan}"
  export TESSERA_CUDA_CACHE=0 UBSAN_OPTIONS="print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
fi
BUILD_DIR="${BUILD_DIR:-build-emu}"
export BUILD_DIR
# test_comm, test_multirank and train: NCCL between emulated devices (ranks as processes, mpirun
# as the launcher), tests/CMakeLists.txt's comm.nccl.* and multirank.cuda_nccl_emu; with tokenize,
# scripts.dp_check_emu (the ranks started as torchrun starts them).
scripts/build_emu.sh test_cuda test_emu test_comm test_multirank train tokenize
JOBS="$(nproc)"
TESSERA_EMU_ORDER="${EMU_ORDER:-}" ctest --test-dir "$BUILD_DIR" -L "gpu|emu" --output-on-failure -j"$JOBS"
