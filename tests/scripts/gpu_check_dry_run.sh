#!/usr/bin/env bash
# scripts/gpu_check.sh's training and memory stages on the CPU (GPU_DEVICE=cpu), so that a change to
# train's or bench_memory's command line, to metrics.jsonl or to the script shows here rather than
# in a 15-minute GPU lease:
#   1. parity with the real train: the row must say ok (both runs train alike on the CPU).
#   2. parity with a train wrapper whose "GPU" runs barely train (learning rate 1e-9) unless
#      TESSERA_FLASH_KERNELS=wmma is set: parity must fail, the bisect must pass under all the
#      switches, fail under the two listed before that one, pass under it and apply it, and the
#      memory stage must then run under it. The test stage runs ctest -L gpu on three stand-in
#      tests (one passes, one fails, one skips; not the build's own, whose ctest runs this one):
#      its count and its rows per suite must say so.
#
#   tests/scripts/gpu_check_dry_run.sh BUILD_DIR   (a build with train, tokenize and bench_memory)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$(cd "$1" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "gpu_check_dry_run: $*" >&2; for f in "$work"/out*/summary.md; do cat "$f" >&2; done; exit 1; }

# Byte shards of this repository's own text stand in for the KJV corpus.
"$build/tokenize" --tokenizer byte --input "$root/README.md" --input "$root/docs/gpu-notes.md" \
  --output "$work/data" >/dev/null
sed "s#data/kjv/byte/#$work/data/#" "$root/configs/tiny.yaml" >"$work/tiny.yaml"
grep -q "$work/data/train_" "$work/tiny.yaml" || fail "configs/tiny.yaml no longer names data/kjv/byte/"

check() {  # check OUT-DIR ROW-REGEX: a line of its summary.md matches
  grep -qE "$2" "$1/summary.md" || fail "no summary row matches '$2'"
}
dry_run() {  # dry_run OUT-DIR BUILD-DIR STAGES
  local rc=0
  OUT="$1" BUILD_DIR="$2" STAGES="$3" RUNS="$work/runs" CONFIG="$work/tiny.yaml" GPU_DEVICE=cpu \
    JOBS=2 BUDGET_S=300 "$root/scripts/gpu_check.sh" >"$1.log" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then cat "$1.log" >&2; fail "gpu_check.sh exited with $rc"; fi
}

dry_run "$work/out1" "$build" parity
check "$work/out1" '^\| parity \| ok \| 50 steps: .* in [0-9]+s \|$'

mkdir -p "$work/bin"
ln -s "$build/bench_memory" "$work/bin/bench_memory"
cat >"$work/bin/train" <<WRAP
#!/usr/bin/env bash
case " \$* " in
  *" parity-cpu "*) exec "$build/train" "\$@" ;;
esac
if [ "\${TESSERA_FLASH_KERNELS:-}" = wmma ]; then exec "$build/train" "\$@"; fi
exec "$build/train" "\$@" --set optim.lr=1e-9 --set optim.min_lr=0
WRAP
chmod +x "$work/bin/train"
cat >"$work/bin/CTestTestfile.cmake" <<'TESTS'
add_test(cuda.GemmCuda.passes /bin/true)
add_test(cuda.AttentionCuda.fails /bin/false)
add_test(cuda.Modes/PeftCuda.skips/0 /bin/sh -c "exit 77")
set_tests_properties(cuda.GemmCuda.passes cuda.AttentionCuda.fails cuda.Modes/PeftCuda.skips/0
                     PROPERTIES LABELS gpu SKIP_RETURN_CODE 77)
TESTS
dry_run "$work/out2" "$work/bin" "test parity memory"
check "$work/out2" '^\| test \| 1 passed, 1 failed, 1 skipped \| ctest -L gpu in '
check "$work/out2" '^\|   AttentionCuda \| FAILED \| 0 passed, 1 failed \|'
check "$work/out2" '^\|   GemmCuda \| passed \| 1 passed, 0 failed \|'
check "$work/out2" '^\|   PeftCuda \| skipped \| 0 passed, 0 failed, 1 skipped \|'
check "$work/out2" '^\|   failed \| cuda.AttentionCuda.fails \|'
check "$work/out2" '^\| parity \| FAILED \| 50 steps: '
check "$work/out2" '^\|   parity, all switches \| ok \| TESSERA_ZERO_GRAD=fill TESSERA_GEMM_EPILOGUES=none TESSERA_FLASH_KERNELS=wmma TESSERA_UNFUSED=1 TESSERA_CE_STREAMED=on TESSERA_NORM_FUSED=off: '
check "$work/out2" '^\|   parity, TESSERA_ZERO_GRAD=fill \| FAILED \|'
check "$work/out2" '^\|   parity, TESSERA_GEMM_EPILOGUES=none \| FAILED \|'
check "$work/out2" '^\|   parity, TESSERA_FLASH_KERNELS=wmma \| ok \|'
check "$work/out2" '^\| switches applied \| TESSERA_FLASH_KERNELS=wmma \|'
! grep -qE 'TESSERA_UNFUSED=1 \|' "$work/out2/summary.md" || fail "the bisect went on past the switch that passed"
check "$work/out2" '^\| memory \| ok \| bench_memory --device cpu .*lomo=[0-9.]+,'
check "$work/out2" '^\|   peft/lomo tests \| 0 passed, 0 failed \|'
echo "gpu_check_dry_run: ok"
