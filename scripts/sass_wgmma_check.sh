#!/usr/bin/env bash
# The wgmma kernels' SASS, checked without a GPU: compiles kernels/flash_wgmma.cu and
# wgmma_probe.cu for sm_90a as the build does, disassembles them and runs
# scripts/sass_wgmma_check.py (every register-sourced wgmma reads one value the source defined).
# First the checker's own test, on listings written with and without the pattern it finds.
# Usage: scripts/sass_wgmma_check.sh [nvcc] [work dir]   (ctest: scripts.sass_wgmma_check)
# Exit 77 (ctest: skipped) where no nvdisasm can be had (scripts/get_nvdisasm.sh says why).
set -euo pipefail
cd "$(dirname "$0")/.."
nvcc="${1:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
work="${2:-build/sass}"
mkdir -p "$work"

fixtures=tests/scripts/sass
python3 scripts/sass_wgmma_check.py "$fixtures/held_kept.sass"
python3 scripts/sass_wgmma_check.py --expect-failure "$fixtures/held_lost.sass" ||
  { echo "sass_wgmma_check.sh: the checker missed a finding in $fixtures/held_lost.sass"; exit 1; }

if ! nvdisasm="$(scripts/get_nvdisasm.sh)"; then
  echo "sass_wgmma_check.sh: skipped, no nvdisasm (above)"
  exit 77
fi
for f in flash_wgmma wgmma_probe; do
  "$nvcc" -O3 -DNDEBUG -std=c++20 --expt-relaxed-constexpr -DTESSERA_WGMMA_SM90A=1 -I src \
    -I kernels --generate-code=arch=compute_90a,code=sm_90a -cubin "kernels/$f.cu" \
    -o "$work/$f.cubin"
done
python3 scripts/sass_wgmma_check.py --nvdisasm "$nvdisasm" "$work/flash_wgmma.cubin" \
  "$work/wgmma_probe.cubin"
