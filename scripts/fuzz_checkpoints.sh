#!/usr/bin/env bash
# Checkpoint fuzzing under AddressSanitizer and UndefinedBehaviorSanitizer: the ctest driver
# (tests/fuzz/test_fuzz_checkpoints.cpp), run for N mutations in a sanitizer build.
#
#   scripts/fuzz_checkpoints.sh [N] [SEED]      (default N = 1000, SEED = 16)
#
# Builds (or reuses) build-asan: -fsanitize=address,undefined, no CUDA, no MPI, only the targets the
# driver needs (train, eval, test_fuzz). Every mutation is loaded by build-asan/eval and by
# build-asan/train --resume; a sanitizer report aborts the process and counts as a crash. Prints
# the driver's summary (mutations, refused with a clear error, crashes, hangs, silent loads) and
# exits non-zero on any crash, hang or silent load. Failing mutants are kept in
# build-asan/fuzz-failures/.
#   BUILD_DIR (default build-asan), JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-1000}"
SEED="${2:-16}"
BUILD_DIR="${BUILD_DIR:-build-asan}"
JOBS="${JOBS:-$(nproc)}"
case "$N$SEED" in *[!0-9]*) echo "usage: $0 [N] [SEED] (non-negative integers)" >&2; exit 2 ;; esac

if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  source scripts/configure.sh
  # -O1 -g1: quick to compile, line numbers in reports; asserts stay on.
  configure "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DTESSERA_CUDA=OFF -DTESSERA_MPI=OFF \
    "${SANITIZE_ARGS[@]}" >/dev/null
fi
cmake --build "$BUILD_DIR" -j"$JOBS" --target train eval test_fuzz

# abort_on_error: a report ends the process with SIGABRT, which the driver counts as a crash.
# detect_leaks=0: memory still held at exit (HDF5's and OpenMP's globals) is not a crash.
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
rm -rf "$BUILD_DIR/fuzz-failures"
start=$(date +%s)
# The driver's summary lines (one per 100 mutations, then the total) as they come; all else to the log.
set +e
TESSERA_FUZZ_MUTATIONS="$N" TESSERA_FUZZ_SEED="$SEED" TESSERA_FUZZ_KEEP="$BUILD_DIR/fuzz-failures" \
  "$BUILD_DIR/tests/test_fuzz" --gtest_brief=1 2>&1 | tee "$BUILD_DIR/fuzz.log" |
  grep --line-buffered '^\[ fuzz \]'
rc=${PIPESTATUS[0]}
set -e
echo "fuzz_checkpoints: $(( $(date +%s) - start )) s; log $BUILD_DIR/fuzz.log"
if [ "$rc" -ne 0 ]; then
  grep -h -A12 'Failure' "$BUILD_DIR/fuzz.log" | head -60
  echo "fuzz_checkpoints: FAILED (mutants kept in $BUILD_DIR/fuzz-failures)" >&2
  exit 1
fi
echo "fuzz_checkpoints: passed"
