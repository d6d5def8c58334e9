#!/usr/bin/env bash
# The host side of tessera's GPU training step, measured on a machine without a GPU: bench_gpu on
# the CUDA emulator build with TESSERA_EMU_SKIP_KERNELS=1 (kernels/emu/cuda_emu.h), where every
# launch, matmul, memset and device-to-device copy is checked and then not carried out. What is
# left of a step's time is what the host spends on it: the model's forward and backward (autograd
# and dispatch), the caching allocator, the kernels' argument checks and launch configuration, the
# optimizer. The kernel profile lists the launches and their shapes: the real step's kernel list.
#
#   scripts/bench_host.sh [batch size]        # GPT-2 124M, 8 sequences of 1024 tokens by default
#
# A diagnostic, not a speed claim: it asserts nothing, and every value computed is garbage. On a
# GPU each launch adds the driver's own cost (a few microseconds), which this cannot see. The
# question it answers: can the host keep a GPU busy (is its time per step well under the GPU's)?
set -euo pipefail
cd "$(dirname "$0")/.."

B="${1:-${BATCH:-8}}"
BUILD_DIR="${BUILD_DIR:-build-emu}"
export BUILD_DIR
scripts/build_emu.sh bench_gpu >/dev/null

echo "host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
for mode in fused unfused; do
  flags=()
  [ "$mode" = unfused ] && flags=(--unfused)
  echo "== tessera step, $mode (bench_gpu ${flags[*]:-}), kernels skipped =="
  TESSERA_EMU_SKIP_KERNELS=1 "$BUILD_DIR/bench_gpu" --config configs/gpt2-124m.yaml \
    --batch-size "$B" --set train.seq_len=1024 --set train.total_batch_size=0 --steps 20 \
    --warmup 3 --profile 1 --no-kernels "${flags[@]}" 2>&1 |
    grep -E "parameters \(|ms/step \(|calls per step" |
    sed -e 's/, [0-9.]* tokens\/s, MFU [^;]*;/;/' -e 's/; loss [^;]*;/;/'
done
