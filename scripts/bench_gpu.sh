#!/usr/bin/env bash
# GPT-2 124M training step on the GPU: tessera (build/bench_gpu) beside its PyTorch twin
# (scripts/bench_gpu.py: torch.compile, F.scaled_dot_product_attention, bf16 autocast, fused AdamW,
# vocabulary padded to 50304),
# then the fused kernels (layernorm, GELU, cross-entropy, AdamW) against PyTorch's, as one table
# (and tessera's alone: a Linear's weight and bias gradients with the bias summed by the gemm,
# dw_db_bgrad_*, and apart, dw_db_sum_dim_*).
# A benchmark, not a test: it asserts nothing; it prints what it measured and on what.
#
#   scripts/bench_gpu.sh [batch size]        # default 8 sequences of 1024 tokens per step
#   BENCH_STEPS=20 BENCH_WARMUP=5 BENCH_PROFILE=3 RESULTS=bench-results scripts/bench_gpu.sh 16
#
# BENCH_PROFILE (default 3) more steps run with the kernel profile on after the timed ones
# (src/backend/profile.h): tessera.log then ends with where their device time went, kernel by
# kernel and shape by shape. The timed steps run without it.
# Variants of tessera's step, each a column of the table beside PyTorch:
#   BENCH_UNFUSED=1 (the default): without its fusions (bench_gpu --unfused: split attention heads,
#     unpadded logits, bias and GELU after the gemm, bias gradients summed apart, the loss's
#     gradient in its backward), the "before" column;
#   BENCH_TUNED=1: cuBLASLt's algorithms timed per gemm (TESSERA_GEMM_TUNE=8, kernels/blas.cu)
#     instead of the heuristic's first;
#   BENCH_WGMMA=1: the attention kernels on Hopper's wgmma (TESSERA_FLASH_KERNELS=wgmma,
#     kernels/flash_wgmma.cu; a 9.0 GPU);
#   BENCH_DS=1: the attention backward's dQ from the dS its dK dV kernel stores
#     (TESSERA_FLASH_KERNELS=mma-ds, kernels/flash_mma_ds.h's backward_dq_stored_block);
#   BENCH_2STAGE=1: the attention forward with K and V in two stages
#     (TESSERA_FLASH_KERNELS=mma-2stage, kernels/flash_mma.h's forward_block<..., 2>);
#     with BENCH_DS=1 too, also both together (TESSERA_FLASH_KERNELS=mma-2stage-ds);
#   BENCH_DOCUMENTS=1: the step with a document every 256 tokens, attention within each
#     (bench_gpu --documents 256, data.windows: documents): softmax over all of them in one
#     launch a pass (kernels/doc_tiles.h), then a launch a document (TESSERA_FLASH_DOCUMENTS=views);
#   BENCH_MUON=1: the step with Muon for the blocks' matrices (bench_gpu --muon, optim.name muon:
#     its Newton-Schulz gemms in f32), then the same with TF32 tensor cores for f32 gemms
#     (TESSERA_TF32=1: in a bf16 step only Muon's are f32);
#   BENCH_SWITCHES=1: the step with each of the latest changes switched off (docs/gpu.md), the
#     "before" of each: no bias gradient in the weight gradient's gemm
#     (TESSERA_GEMM_EPILOGUES=bias,gelu,dgelu,residual), no cuBLASLt fusion at all
#     (TESSERA_GEMM_EPILOGUES=none), the gradient buffer's zeros written (TESSERA_ZERO_GRAD=fill),
#     the cross-entropy's rows streamed twice instead of held (TESSERA_CE_STREAMED=on), the norms'
#     backward in its separate kernels (TESSERA_NORM_FUSED=off), the attention forward rescaling O
#     at every key tile (TESSERA_FLASH_RESCALE=eager).
#
# Builds first: with the Debian packages installed, an ordinary CMake build (build-bench/);
# without them (the lent GPU machine), through scripts/build_offline.sh from third_party/debs/.
# Results (JSON and logs) go to RESULTS, or to $OUT where that is set (the device machine's
# output folder).
set -uo pipefail
cd "$(dirname "$0")/.."

B="${1:-${BATCH:-8}}"
STEPS_N="${BENCH_STEPS:-20}"
WARMUP_N="${BENCH_WARMUP:-5}"
PROFILE_N="${BENCH_PROFILE:-3}"
RESULTS="${RESULTS:-${OUT:-bench-results}}"
mkdir -p "$RESULTS"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

# ---- build -------------------------------------------------------------------------------------
# NO_BUILD=1 with BUILD_DIR: that build's bench_gpu as it is (gpu_check.sh, which built it).
if [ "${NO_BUILD:-0}" = 1 ]; then
  BUILD_DIR="${BUILD_DIR:-build-offline}"
  export LD_LIBRARY_PATH="${PREFIX:-$PWD/.deps/offline}/runtime-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
elif dpkg-query -W -f='${Status}' libyaml-cpp-dev 2>/dev/null | grep -q "install ok installed"; then
  BUILD_DIR="${BUILD_DIR:-build-bench}"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" >"$RESULTS/build.log" 2>&1 &&
    cmake --build "$BUILD_DIR" -j"$(nproc)" --target bench_gpu >>"$RESULTS/build.log" 2>&1
else
  BUILD_DIR="${BUILD_DIR:-build-offline}"
  STEPS=build TARGETS=bench_gpu BUILD_DIR="$BUILD_DIR" scripts/build_offline.sh >"$RESULTS/build.log" 2>&1
  export LD_LIBRARY_PATH="${PREFIX:-$PWD/.deps/offline}/runtime-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ ! -x "$BUILD_DIR/bench_gpu" ]; then
  echo "bench_gpu.sh: the build failed; the end of $RESULTS/build.log:" >&2
  tail -30 "$RESULTS/build.log" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader 2>/dev/null |
  sed 's/^/gpu: /' | tee "$RESULTS/gpu.txt"

# ---- run both ----------------------------------------------------------------------------------
rm -f "$RESULTS"/tessera*.json "$RESULTS/pytorch.json"
"$BUILD_DIR/bench_gpu" --config configs/gpt2-124m.yaml --batch-size "$B" \
  --set train.seq_len=1024 --set train.total_batch_size=0 \
  --steps "$STEPS_N" --warmup "$WARMUP_N" --profile "$PROFILE_N" --json "$RESULTS/tessera.json" 2>&1 |
  tee "$RESULTS/tessera.log"
tessera_rc=${PIPESTATUS[0]}  # the script's status at the end: a crashed tessera step is a failure
PYTHONUNBUFFERED=1 python3 scripts/bench_gpu.py --batch-size "$B" --seq 1024 --steps "$STEPS_N" \
  --warmup "$WARMUP_N" --json "$RESULTS/pytorch.json" 2>&1 | tee "$RESULTS/pytorch.log"

# variant NAME [VAR=value ...] -- [bench_gpu flags]: tessera's step so, into tessera-NAME.json.
# After the main comparison, so that it is done first.
variant() {
  local name=$1 envs=()
  shift
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  env "${envs[@]}" "$BUILD_DIR/bench_gpu" --config configs/gpt2-124m.yaml --batch-size "$B" \
    --set train.seq_len=1024 --set train.total_batch_size=0 --no-kernels \
    --steps "$STEPS_N" --warmup "$WARMUP_N" --json "$RESULTS/tessera-$name.json" "$@" 2>&1 |
    tee "$RESULTS/tessera-$name.log"
}
if [ "${BENCH_UNFUSED:-1}" = 1 ]; then variant unfused -- --unfused; fi
if [ "${BENCH_TUNED:-0}" = 1 ]; then variant tuned TESSERA_GEMM_TUNE="${GEMM_TUNE:-8}" --; fi
if [ "${BENCH_WGMMA:-0}" = 1 ]; then variant wgmma TESSERA_FLASH_KERNELS=wgmma --; fi
if [ "${BENCH_DS:-0}" = 1 ]; then variant mma-ds TESSERA_FLASH_KERNELS=mma-ds --; fi
if [ "${BENCH_2STAGE:-0}" = 1 ]; then variant mma-2stage TESSERA_FLASH_KERNELS=mma-2stage --; fi
if [ "${BENCH_DS:-0}" = 1 ] && [ "${BENCH_2STAGE:-0}" = 1 ]; then
  variant mma-2stage-ds TESSERA_FLASH_KERNELS=mma-2stage-ds --
fi
if [ "${BENCH_DOCUMENTS:-0}" = 1 ]; then
  variant documents -- --documents 256
  variant documents-views TESSERA_FLASH_DOCUMENTS=views -- --documents 256
fi
if [ "${BENCH_MUON:-0}" = 1 ]; then
  variant muon -- --muon
  variant muon-tf32 TESSERA_TF32=1 -- --muon
fi
if [ "${BENCH_SWITCHES:-0}" = 1 ]; then
  variant no-bgrad TESSERA_GEMM_EPILOGUES=bias,gelu,dgelu,residual --
  variant no-epilogues TESSERA_GEMM_EPILOGUES=none --
  variant zero-fill TESSERA_ZERO_GRAD=fill --
  variant ce-streamed TESSERA_CE_STREAMED=on --
  variant norm-split TESSERA_NORM_FUSED=off --
  variant rescale-eager TESSERA_FLASH_RESCALE=eager --
fi

# ---- the table ---------------------------------------------------------------------------------
python3 - "$RESULTS" <<'PY'
import json, os, sys
d = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(d, name)) as f:
            return json.load(f)
    except Exception:
        return {}
t, p = load("tessera.json"), load("pytorch.json")
variants = [(name, load(f"tessera-{name}.json"), note) for name, note in (
    ("unfused", "tessera's step without its fusions, bench_gpu --unfused: split attention heads, "
                "unpadded logits, bias and GELU after the gemm, bias gradients summed apart, "
                "the loss's gradient in its backward"),
    ("tuned", "TESSERA_GEMM_TUNE, each gemm's cuBLASLt algorithm the fastest of the heuristic's "
              "first 8, timed on its first call; tessera-tuned.log says how many changed"),
    ("wgmma", "TESSERA_FLASH_KERNELS=wgmma, the attention kernels on Hopper's wgmma"),
    ("mma-ds", "TESSERA_FLASH_KERNELS=mma-ds, the attention backward's dQ from the dS its dK dV "
               "kernel stores instead of recomputing S and dP"),
    ("mma-2stage", "TESSERA_FLASH_KERNELS=mma-2stage, the attention forward with the next key "
                   "tile's K and V streaming into a second stage (one barrier a tile)"),
    ("mma-2stage-ds", "TESSERA_FLASH_KERNELS=mma-2stage-ds, the two-stage forward and the "
                      "stored-dS backward together"),
    ("documents", "bench_gpu --documents 256, a document every 256 tokens attended within "
                  "itself: softmax over all of them in one launch a pass"),
    ("documents-views", "the same with TESSERA_FLASH_DOCUMENTS=views: a launch a document, "
                        "forward and backward, each layer"),
    ("muon", "bench_gpu --muon, Muon for the blocks' matrices (its Newton-Schulz gemms in f32), "
             "AdamW for the rest"),
    ("muon-tf32", "the same with TESSERA_TF32=1: Muon's f32 gemms on TF32 tensor cores"),
    ("no-bgrad", "TESSERA_GEMM_EPILOGUES=bias,gelu,dgelu,residual, bias gradients summed apart "
                 "(sum_dim) instead of by the weight gradient's gemm"),
    ("no-epilogues", "TESSERA_GEMM_EPILOGUES=none, no cuBLASLt fusion: bias, GELU, its "
                     "derivative, bias gradient and residual each by its fallback"),
    ("zero-fill", "TESSERA_ZERO_GRAD=fill, zero_grad writing the flat gradient buffer's zeros"),
    ("ce-streamed", "TESSERA_CE_STREAMED=on, the cross-entropy's rows streamed twice instead of "
                    "held in registers"),
    ("norm-split", "TESSERA_NORM_FUSED=off, the norms' backward as dx, then the dw / db partial "
                   "sums (dy and x read twice) instead of one kernel"),
    ("rescale-eager", "TESSERA_FLASH_RESCALE=eager, the attention forward rescaling O at every "
                      "key tile instead of when a row's maximum grows by more than 2^8"))]
variants = [v for v in variants if v[1]]
def fmt(v, nd=2):
    return "n/a" if v is None else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{nd}f}")
def ratio(a, b):
    return "n/a" if a is None or b in (None, 0) else f"{a / b:.2f}x"
print()
print(f"GPT-2 124M training step, batch {t.get('batch', p.get('batch'))} x {t.get('seq', p.get('seq'))} tokens, "
      f"on {p.get('device', 'the GPU')}; pytorch = {p.get('impl', 'n/a')}")
print("FLOPs/token = 6N + 12 L H Q T (N without the position embedding, attention not halved); "
      "MFU against 989 TFLOP/s (H100 SXM dense bf16)")
rows = [("ms / step", "ms_per_step", 2), ("tokens / s", "tokens_per_s", 0), ("MFU %", "mfu", 1),
        ("host waits / step", "host_reads_per_step", 1),
        ("2-stage fwd / step", "two_stage_forwards_per_step", 0),
        ("stored-dS bwd / step", "stored_ds_backwards_per_step", 0),
        ("recomputing bwd / step", "recomputed_ds_backwards_per_step", 0),
        ("document calls / step", "document_calls_per_step", 0),
        ("peak allocated MiB", "peak_alloc_mib", 0), ("peak reserved MiB", "peak_reserved_mib", 0),
        ("loss, first step", "loss_first", 4), ("loss, last step", "loss_last", 4)]
print(f"{'':22s} {'tessera':>12s} {'pytorch':>12s} {'tessera/pytorch':>16s}" +
      "".join(f" {name:>12s} {name + '/pytorch':>16s}" for name, _, _ in variants))
for label, key, nd in rows:
    a, b = t.get(key), p.get(key)
    others = [v.get(key) for _, v, _ in variants]
    if key == "mfu":
        a, b = [None if x is None else 100 * x for x in (a, b)]
        others = [None if x is None else 100 * x for x in others]
    print(f"{label:22s} {fmt(a, nd):>12s} {fmt(b, nd):>12s} {ratio(a, b):>16s}" +
          "".join(f" {fmt(e, nd):>12s} {ratio(e, b):>16s}" for e in others))
for name, _, note in variants:
    print(f"({name}: {note})")
print("(losses: each run memorises its own random batch from its own initial draw at a constant "
      "lr 6e-4; their last losses differ by draw as much as by implementation, 1.0-4.7 over three "
      "of tessera's seeds on the CPU, docs/gpu-notes.md; parity is gpu_check's parity stage)")
tk, pk = t.get("kernels", {}), p.get("kernels", {})
if tk or pk:
    print()
    print(f"{'fused kernel (ms)':22s} {'tessera':>12s} {'pytorch':>12s} {'tessera/pytorch':>16s} {'tessera GB/s':>13s}")
    for name in sorted(set(tk) | set(pk)):
        a, b = tk.get(name, {}).get("ms"), pk.get(name, {}).get("ms")
        gbs = None if a in (None, 0) else tk[name]["bytes"] / (a * 1e6)
        print(f"{name:22s} {fmt(a, 3):>12s} {fmt(b, 3):>12s} {ratio(a, b):>16s} {fmt(gbs, 0):>13s}")
    print("(pytorch backward = (forward + backward) - forward; its cross-entropy casts bf16 logits "
          "to f32 as autocast does; AdamW: one flat tensor of the model's size, 28 bytes/element)")
PY
exit "$tessera_rc"
