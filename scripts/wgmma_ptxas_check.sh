#!/usr/bin/env bash
# The compiler launcher of CMakeLists.txt's sm_90a object library (kernels/flash_wgmma.cu,
# wgmma_probe.cu): runs the nvcc command it is given with ptxas's -v and fails the compile where
# ptxas reports a "Potential Performance Loss" (C7514: wgmma.mma_async serialised, every product
# waited for as it is issued). The kernels still compute the right thing then, so no test would
# notice; the overlap they are written for would be gone. ptxas's other -v lines are dropped.
set -uo pipefail
out=$("$@" -Xptxas -v 2>&1)
rc=$?
# What nvcc says besides ptxas's -v report (its numbered notes, C7xxx, stay).
printf '%s\n' "$out" | awk '!/^ptxas info/ && !/bytes stack frame/ || /\(C7[0-9]+\)/' >&2
# WGMMA_PTXAS_CHECK=warn (scripts/gpu_check.sh's build) says so and goes on: on the GPU machine a
# serialised kernel is still worth running and timing.
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q 'Potential Performance Loss'; then
  echo "wgmma_ptxas_check.sh: ptxas serialised wgmma products (above); a product issued under a" \
       "condition, or a register access between an issue and its wait, is the usual cause" >&2
  [ "${WGMMA_PTXAS_CHECK:-fail}" = warn ] || exit 1
fi
exit $rc
