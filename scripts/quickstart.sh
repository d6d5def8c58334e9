#!/usr/bin/env bash
# Installs, prepares the King James Bible corpus, builds, trains configs/tiny.yaml on the CPU and
# prints a generated sample. Extra arguments go to train (e.g. --max-steps 200 for a short look).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
source scripts/configure.sh
configure build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target train generate tokenize
scripts/prepare_data.sh kjv
build/train --config configs/tiny.yaml --resume auto "$@"   # a rerun continues (or reuses) checkpoints/tiny
echo "--- sample ---"
build/generate --checkpoint checkpoints/tiny --prompt "And God said" --max-new-tokens 300
