#!/usr/bin/env bash
# The whole GPU check in one command, sized so that two runs fit in one 15-minute lease of the lent
# H100 or H200 (docs/gpu-notes.md records each run): each call is a machine start (1-2 minutes,
# counted), then BUDGET_S, and a machine left idle goes back after 30 s, so a second call after
# reading the first one's table starts a fresh machine and builds again. 2 x (~90 s + 330 s) fits
# 900 s. Stages, each under its own time limit, each adding rows to one summary table that is
# printed last:
#
#   build      offline build from the carried .debs (scripts/build_offline.sh), only the targets
#              the later stages run, ninja with every core; with the NCCL communicator where the
#              machine has a libnccl.so.2 (its toolkit's, else PyTorch's NCCL wheel), so the
#              one-rank Nccl tests run on the GPU
#   test       ctest -L gpu (tests/cuda: every CUDA kernel family against the CPU reference)
#   parity     50 steps of configs/tiny.yaml on the GPU and on the CPU, losses compared step by step
#   tiny       300 steps of tiny with head dimension 64 on the GPU: the loss must fall
#              (either failing: the GPU run again under the switches for what has never run on a
#              GPU, to name the part at fault and keep the switch for the later stages; "bisect")
#   hf         that model (the bisect's, where a switch made it train) and 20 GPU steps each of
#              llama-small, qwen3-small and llama-small with qkv_bias (Qwen2) exported
#              (build/export) and loaded by Hugging Face transformers: their logits against
#              tessera's (hf_transformers_check.py)
#   bench      GPT-2 124M step beside its PyTorch twin (scripts/bench_gpu.sh), then tessera's
#              kernel profile of that step (which kernels and shapes its device time goes to)
#   attention  fused attention beside PyTorch's SDPA (scripts/bench_attention.sh), a short sweep
#   memory     (see the section marked "memory" below)
#   dp         data parallelism over NCCL where the machine has two GPUs or more
#              (scripts/dp_check.sh: test_comm as one rank a GPU, tiny on every GPU against one
#              GPU accumulating as many micro-batches, tokens/s on 1 and on every GPU); on one
#              GPU a row saying so (NCCL refuses two ranks on one GPU)
#   diag       (not run unless STAGES names it) Nsight Compute on one launch of each kernel family
#              that dominates the GPT-2 step, and compute-sanitizer's racecheck and memcheck on
#              the wgmma attention test that failed on the H200 (diag.log)
#   async      (not run unless STAGES names it) what checkpoints cost a run of an 85 M-parameter
#              GPT with a save every 2 steps, saved synchronously and in the background
#              (checkpoint.async; scripts/bench_async_save.sh)
#
# On the device machine (from the repository root, with the .debs and the KJV bytes carried):
#   run(command="scripts/gpu_check.sh", carry=["third_party/debs", "data/kjv/byte"], timeout_s=330)
#   (BUDGET_S, default 300, keeps the whole run under that timeout: stages that no longer fit, or
#   would start with less than their minimum, are skipped with a row in the summary naming the
#   STAGES of a second call, build included: a fresh machine has none)
#   STAGES="build bench attention memory" scripts/gpu_check.sh    # such a second call
# Time limits are what a stage should take on the H200 (calls 1-4) with room to spare, not what the budget
# allows: a hung kernel costs its stage's limit (a training run 90 s, a GPU test 60 s), and every
# timeout sends SIGKILL 10 s after its SIGTERM (a process stuck in a driver call).
# Here, where there is no GPU, `STAGES=build CUDA_ARCH=90 scripts/gpu_check.sh` checks the build
# stage (needs third_party/debs from scripts/collect_debs.sh).
# CI dry-runs the parity stage, its bisect and the memory stage on the CPU (GPU_DEVICE=cpu, RUNS
# and CONFIG pointing elsewhere): tests/scripts/gpu_check_dry_run.sh.
#
# Output: $OUT (the device machine's output folder; ./gpu-check-out elsewhere) gets at most 8 files
# (the device tool brings back no more): summary.md, and one log per stage group.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

OUT="${OUT:-$ROOT/gpu-check-out}"
mkdir -p "$OUT"
STAGES="${STAGES:-build test parity tiny hf bench attention memory dp}"
BUILD_DIR="${BUILD_DIR:-build-offline}"
JOBS="${JOBS:-$(nproc)}"
SUMMARY="$OUT/summary.md"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
export LD_LIBRARY_PATH="${PREFIX:-$ROOT/.deps/offline}/runtime-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The python that has torch: the device machine's python3; Debian's here.
PYTHON="${PYTHON:-python3}"
# GPU_DEVICE=cpu dry-runs the training stages here, without a GPU (the logic, not the numbers).
GPU_DEVICE="${GPU_DEVICE:-cuda}"

# The whole run's wall-clock budget, under the device call's timeout_s, so that the summary is always
# written and printed: each stage's time limit is cut to what is left (less 15 s for the summary),
# and a stage that would get under 30 s is skipped with a row saying so.
BUDGET_S="${BUDGET_S:-300}"
START_S=$(date +%s)
limit() {  # limit SECONDS -> SECONDS, or what is left of the budget when that is less
  local left=$(( BUDGET_S - ($(date +%s) - START_S) - 15 ))
  if (( left < $1 )); then echo $(( left > 0 ? left : 1 )); else echo "$1"; fi
}
timed_out() { [ "$1" = 124 ] && echo " (stopped by its time limit)"; }
want() {  # want STAGE [MIN_S]: STAGE is in STAGES and at least MIN_S (30) of the budget is left
  [[ " $STAGES " == *" $1 "* ]] || return 1
  local min=${2:-30}
  if (( $(limit "$min") < min )); then
    local rest="" st seen=""
    for st in $STAGES; do [[ $st == "$1" ]] && seen=1; [ -n "$seen" ] && rest+=" $st"; done
    row "$1" skipped "under $min s of the time budget left (BUDGET_S=$BUDGET_S s); a second call: STAGES=\"build$rest\""
    return 1
  fi
}
row() { echo "| $1 | $2 | $3 |" >>"$SUMMARY"; }  # stage | result | detail
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
  echo
  # bf16 flash attention outside the tests (which run both): the register-tile kernels unless
  # TESSERA_FLASH_KERNELS=wmma was passed in (src/backend/cuda.h).
  echo "flash kernels: ${TESSERA_FLASH_KERNELS:-mma}"
  echo
  echo "| stage | result | detail |"
  echo "|---|---|---|"
} >"$SUMMARY"

# ---- build -------------------------------------------------------------------------------------
TARGETS="train eval export test_cuda test_comm bench_gpu bench_attention bench_memory"
if want build; then
  t0=$(date +%s)
  # WGMMA_PTXAS_CHECK=warn: a wgmma kernel ptxas serialises is built and run anyway here, and the
  # build row says so (scripts/wgmma_ptxas_check.sh).
  if STEPS=build TARGETS="$TARGETS" BUILD_DIR="$BUILD_DIR" JOBS="$JOBS" WGMMA_PTXAS_CHECK=warn \
      timeout -k 10 "$(limit 400)" scripts/build_offline.sh >"$OUT/build.log" 2>&1; then
    serial=$(grep -c 'ptxas serialised wgmma' "$OUT/build.log")
    # Which NCCL the communicator was built with (the Nccl tests run where one was), or why none.
    nccl=$(grep 'build_offline: NCCL' "$OUT/build.log" | tail -1 | sed 's/^build_offline: //')
    row build ok "$TARGETS in $(elapsed "$t0"); ${nccl:-NCCL: no line in build.log}$( ((serial > 0)) && echo "; ptxas serialised the wgmma products of $serial file(s): see build.log")"
  else
    row build FAILED "see build.log; its last error: $(grep -m1 -E 'error|Error' "$OUT/build.log" | cut -c1-160)"
    tail -40 "$OUT/build.log"
    cat "$SUMMARY"
    exit 1
  fi
fi
B="$BUILD_DIR"

# ---- test: every GPU test ----------------------------------------------------------------------
if want test; then
  t0=$(date +%s)
  # NCCL_DEBUG=WARN: an Nccl test's failure carries NCCL's own reason into ctest.log.
  NCCL_DEBUG="${NCCL_DEBUG:-WARN}" timeout -k 10 "$(limit 300)" \
    ctest --test-dir "$B" -L gpu --timeout 60 -j4 --output-on-failure >"$OUT/ctest.log" 2>&1
  # ctest's result lines: "Test #12: cuda.Suite.name ....   Passed", "...***Failed", "***Skipped",
  # "***Exception: SegFault", "***Timeout", "***Not Run" (the dots vanish for long names).
  bad_re='Test +#[0-9]+: .*(\*\*\*(Failed|Exception|Timeout|Not Run)|SEGFAULT|Child aborted)'
  pass=$(grep -cE 'Test +#[0-9]+: .*[ .]Passed +[0-9.]+ sec' "$OUT/ctest.log")
  fail=$(grep -cE "$bad_re" "$OUT/ctest.log")
  skip=$(grep -cE 'Test +#[0-9]+: .*\*\*\*Skipped' "$OUT/ctest.log")
  row test "$pass passed, $fail failed, $skip skipped" "ctest -L gpu in $(elapsed "$t0")"
  # One row per test suite (a kernel family: AttentionCuda, GemmCuda, CoreKernelsCuda, ...), the
  # record docs/gpu-notes.md keeps: ran and passed, or how many failed.
  grep -E 'Test +#[0-9]+: ' "$OUT/ctest.log" |
    awk '{ for (i = 1; i < NF && $i !~ /^#[0-9]+:$/; ++i) {}
           name = $(i + 1); sub(/\.\.+.*/, "", name); sub(/\*\*\*.*/, "", name)
           sub(/^cuda\./, "", name); split(name, part, "."); suite = part[1]; sub(/^.*\//, "", suite)
           if ($0 ~ /[ .]Passed +[0-9.]+ sec/) ok[suite]++
           else if ($0 ~ /\*\*\*Skipped +[0-9.]+ sec/) sk[suite]++
           else bad[suite]++
           seen[suite] = 1 }
         END { for (s in seen) printf "%s|%d|%d|%d\n", s, ok[s], bad[s], sk[s] }' | sort |
    while IFS='|' read -r suite ok bad sk; do
      row "  $suite" "$( ((bad > 0)) && echo FAILED || { ((ok > 0)) && echo passed || echo skipped; })" \
        "$ok passed, $bad failed$([ "$sk" -gt 0 ] && echo ", $sk skipped")"
    done
  grep -E "$bad_re" "$OUT/ctest.log" |
    sed -E 's/.*Test +#[0-9]+: ([^ ]+).*/\1/' | head -40 | while read -r name; do row "  failed" "$name" ""; done
  # The wgmma probe's verdict on each building block that failed (tests/cuda/test_wgmma_probe.cpp):
  # whether swapping a descriptor's LBO and SBO makes it match, or what else to suspect.
  awk '/LBO and SBO swapped/ { v = $0; sub(/.*With the /, "", v) }
       /test_wgmma_probe\.cpp:[0-9]+: (Abt|AbtHeld|Pm) D / && v != "" {
         b = $0; sub(/.*test_wgmma_probe\.cpp:[0-9]+: /, "", b); print b "|" v; v = "" }' \
    "$OUT/ctest.log" | while IFS='|' read -r block verdict; do row "  wgmma probe" "$block" "$verdict"; done
fi

# ---- training: GPU against CPU, then a longer GPU run ------------------------------------------
RUNS="${RUNS:-$ROOT/checkpoints/gpu-check}"  # the training stages' run directories
losses() {  # metrics.jsonl -> "step loss" lines
  "$PYTHON" - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "loss" in r:
        print(r["step"], r["loss"])
PY
}
# Without configs/tiny.yaml's samples (log.sample_interval): these stages check training, and a
# sampler's failure would read as a training failure and send the bisect after the wrong part.
train_run() {  # name device steps extra-args... ; logs go to train.log; CONFIG=... for another config
  local name=$1 dev=$2 steps=$3
  shift 3
  rm -rf "$RUNS/$name"
  echo "== $name: train on $dev for $steps steps $*" >>"$OUT/train.log"
  local threads=$JOBS
  [ "$dev" = cpu ] && threads=$(( JOBS > 2 ? JOBS / 2 : 1 ))  # the CPU twin runs beside a GPU run
  OMP_NUM_THREADS=$threads timeout -k 10 "$(limit "${TRAIN_LIMIT_S:-90}")" "$B/train" --config "${CONFIG:-configs/tiny.yaml}" --device "$dev" --max-steps "$steps" \
    --run-name "$name" --set checkpoint.dir="$RUNS" --set log.interval=1 --set eval.interval=0 \
    --set checkpoint.interval=0 --set log.sample_interval=0 "$@" >>"$OUT/train.log" 2>&1
}
# Verdicts on a finished run, one line "ok ..." or "FAILED ...": the run's losses against the CPU
# twin's (parity), and the loss falling (tiny).
parity_verdict() {  # parity_verdict RUN
  # The GPU computes in bf16 (train/device.h): operands carry 8 bits of mantissa, so each step's
  # loss may move by ~1e-2 relative; the curves must agree to that, not to f32 rounding.
  paste <(losses "$RUNS/parity-cpu/metrics.jsonl") <(losses "$RUNS/$1/metrics.jsonl") |
    "$PYTHON" -c '
import math, sys
d = [(float(a[1]), float(a[3])) for a in (l.split() for l in sys.stdin) if len(a) == 4]
if not d: print("FAILED no losses"); sys.exit()
diff = [abs(c - g) for c, g in d]
rel = max(x / max(abs(c), 1e-9) for x, (c, _) in zip(diff, d))
ok = rel < 0.03 and d[-1][1] < d[0][1] and not any(math.isnan(x) for x in diff)
print(("ok" if ok else "FAILED"), f"{len(d)} steps: max abs(cpu - gpu) {max(diff):.4f} ({rel:.2%} rel),",
      f"mean {sum(diff)/len(diff):.4f}; loss {d[0][0]:.4f}->{d[-1][0]:.4f} cpu, {d[0][1]:.4f}->{d[-1][1]:.4f} gpu")'
}
falls_verdict() {  # falls_verdict RUN
  losses "$RUNS/$1/metrics.jsonl" | "$PYTHON" -c '
import sys
l = [float(x.split()[1]) for x in sys.stdin]
if len(l) < 20: print("FAILED", len(l), "steps logged"); sys.exit()
first, last = sum(l[:10]) / 10, sum(l[-10:]) / 10
print(("ok" if last < first - 1.0 else "FAILED"), f"{len(l)} steps: mean loss of the first 10 {first:.3f}, of the last 10 {last:.3f}")'
}

# ---- when a training stage fails: which part that has never run on a GPU is to blame ----------
# The failed stage's GPU run again under the switches that put back what came before the changes
# of docs/gpu-notes.md's watch list: the flat gradient buffer's zeros written by zero_grad
# (TESSERA_ZERO_GRAD=fill, src/optim/flat.cpp), every cuBLASLt fusion's fallback
# (TESSERA_GEMM_EPILOGUES=none, kernels/blas.cu), the wmma flash kernels (TESSERA_FLASH_KERNELS=wmma),
# the model's unfused paths (TESSERA_UNFUSED=1, nn/unfused.h: split heads, unpadded logits), the
# cross-entropy's streaming kernels for GPT-2's rows (TESSERA_CE_STREAMED=on, kernels/softmax.cu)
# and the norms' separate backward kernels (TESSERA_NORM_FUSED=off, kernels/norm.cu).
# All of them at once first: if the stage still fails, the fault is elsewhere. If it passes, one at
# a time, and the first that passes alone (else all of them) is exported for the rest of the run,
# so the later stages measure a step that trains; a row says so.
SWITCHES="TESSERA_ZERO_GRAD=fill TESSERA_GEMM_EPILOGUES=none TESSERA_FLASH_KERNELS=wmma TESSERA_UNFUSED=1"
SWITCHES+=" TESSERA_CE_STREAMED=on TESSERA_NORM_FUSED=off"
APPLIED=""
PASSED_RUN=""  # the run of the last bisect that passed under the switch it found, if it found one
switched_run() {  # switched_run "VAR=value ..." VERDICT-FUNCTION RUN STEPS [train args] -> verdict
  local envs=$1 verdict_of=$2 name=$3 rc
  shift 2
  (
    for e in $envs; do export "${e?}"; done
    train_run "$name" "$GPU_DEVICE" "${@:2}"
  )
  rc=$?
  if [ $rc -ne 0 ]; then echo "FAILED train exited with $rc$(timed_out $rc)"; else "$verdict_of" "$name"; fi
}
bisect() {  # bisect STAGE VERDICT-FUNCTION STEPS [train args]: STAGE's GPU run failed
  local stage=$1 verdict_of=$2 candidates="" e v found=""
  shift 2
  PASSED_RUN=""
  for e in $SWITCHES; do [[ " $APPLIED " == *" $e "* ]] || candidates+="${candidates:+ }$e"; done
  if [ -z "$candidates" ]; then
    row "  $stage, switches" "still FAILED" "with $APPLIED applied: the fault is elsewhere"; return
  fi
  if (( $(limit 60) < 60 )); then
    row "  $stage, switches" skipped "no time left to rerun under $candidates"; return
  fi
  v=$(switched_run "$candidates" "$verdict_of" "$stage-switched" "$@")
  row "  $stage, all switches" "${v%% *}" "$candidates: ${v#* }"
  [[ $v == ok* ]] || return 0
  for e in $candidates; do
    if (( $(limit 60) < 60 )); then
      row "  $stage, $e" skipped "no time left for the switches one at a time"; break
    fi
    v=$(switched_run "$e" "$verdict_of" "$stage-switched" "$@")
    row "  $stage, $e" "${v%% *}" "${v#* }"
    if [[ $v == ok* ]]; then found=$e; PASSED_RUN=$stage-switched; break; fi
  done
  for e in ${found:-$candidates}; do export "${e?}"; APPLIED+="${APPLIED:+ }$e"; done
  row "switches applied" "${found:-$candidates}" "for the rest of this run: the $stage stage passes with it and fails without"
}

if want parity; then
  t0=$(date +%s)
  # Both at once: the CPU run uses the host's cores while the GPU run waits on the device.
  train_run parity-cpu cpu 50 & cpu_pid=$!
  train_run parity-gpu "$GPU_DEVICE" 50; gpu_rc=$?
  wait $cpu_pid; cpu_rc=$?
  if [ $cpu_rc -ne 0 ]; then
    row parity FAILED "the CPU run exited with $cpu_rc$(timed_out $cpu_rc) (gpu $gpu_rc; train.log)"
  else
    if [ $gpu_rc -ne 0 ]; then
      verdict="FAILED the GPU run exited with $gpu_rc$(timed_out $gpu_rc) (train.log)"
    else
      verdict=$(parity_verdict parity-gpu)
    fi
    row parity "${verdict%% *}" "${verdict#* } in $(elapsed "$t0")"
    [[ $verdict == ok* ]] || bisect parity parity_verdict 50
  fi
fi
if want tiny; then
  t0=$(date +%s)
  # Head dimension 64 (n_embd 256 / 4 heads), so the fused flash path is the one that runs.
  train_run tiny-hd64 "$GPU_DEVICE" 300 --set model.n_embd=256; rc=$?
  if [ $rc -eq 0 ]; then
    verdict=$(falls_verdict tiny-hd64)
    tps=$(grep -oE '[0-9.]+ tok/s' "$OUT/train.log" | tail -1)
    row tiny "${verdict%% *}" "${verdict#* }; ${tps:-?}; $(elapsed "$t0")"
  else
    verdict=FAILED
    row tiny FAILED "train exited with $rc$(timed_out $rc) (train.log)"
  fi
  [[ $verdict == ok* ]] || bisect tiny falls_verdict 300 --set model.n_embd=256
  # The hf stage exports the run that trained: the bisect's, where the switch it found saved it.
  [[ $verdict == ok* ]] || TINY_RUN=${PASSED_RUN:-tiny-hd64}
fi

if want hf; then
  # Exported as Hugging Face directories and loaded by transformers itself (CI has only
  # scripts/hf_logits.py's re-implementation), both sides computing on the CPU in f32: the tiny
  # run's last checkpoint (GPT2LMHeadModel), 20 GPU steps of llama-small (LlamaForCausalLM:
  # RMSNorm, SwiGLU, RoPE, grouped-query heads, untied head) and of qwen3-small (Qwen3ForCausalLM:
  # q and k normalised, heads of 64 on a width of 128, tied head), and llama-small with biases on
  # q, k and v (Qwen2ForCausalLM: model.qkv_bias, trained away from their zeros).
  CONFIG=configs/llama-small.yaml train_run hf-llama "$GPU_DEVICE" 20; llama_rc=$?
  CONFIG=configs/qwen3-small.yaml train_run hf-qwen3 "$GPU_DEVICE" 20; qwen3_rc=$?
  CONFIG=configs/llama-small.yaml train_run hf-qwen2 "$GPU_DEVICE" 20 --set model.qkv_bias=true
  qwen2_rc=$?
  for run in "${TINY_RUN:-tiny-hd64}" hf-llama hf-qwen3 hf-qwen2; do
    t0=$(date +%s)
    hf_dir=/tmp/gpu-check-hf-$run
    rm -rf "$hf_dir" "$hf_dir.ref" "$hf_dir.log"
    {
      echo "== hf: export $RUNS/$run, then transformers"
      timeout -k 10 "$(limit 60)" "$B/export" --checkpoint "$RUNS/$run" --output "$hf_dir" \
        --reference-logits "$hf_dir.ref" &&
        HF_HUB_OFFLINE=1 timeout -k 10 "$(limit 120)" "$PYTHON" scripts/hf_transformers_check.py "$hf_dir" "$hf_dir.ref"
    } >"$hf_dir.log" 2>&1; rc=$?
    cat "$hf_dir.log" >>"$OUT/train.log"
    line=$(grep -E '^(transformers|SKIP)' "$hf_dir.log" | tail -1)
    [ $rc -ne 0 ] && [ $rc -ne 77 ] && line=$(tail -1 "$hf_dir.log" | cut -c1-200)
    line=$(echo "$line" | tr -d '|')
    [ "$run" = hf-llama ] && [ $llama_rc -ne 0 ] && line="training exited with $llama_rc; $line"
    [ "$run" = hf-qwen3 ] && [ $qwen3_rc -ne 0 ] && line="training exited with $qwen3_rc; $line"
    [ "$run" = hf-qwen2 ] && [ $qwen2_rc -ne 0 ] && line="training exited with $qwen2_rc; $line"
    case $rc in
      0) row "hf $run" ok "${line:-?} in $(elapsed "$t0")" ;;
      77) row "hf $run" skipped "${line:-no transformers}" ;;
      *) row "hf $run" FAILED "rc $rc$(timed_out $rc): $line (train.log)" ;;
    esac
  done
fi

# ---- benchmarks --------------------------------------------------------------------------------
if want bench 150; then
  t0=$(date +%s)
  # BENCH_UNFUSED=1 adds the step without its fusions (the before of a before-and-after),
  # BENCH_TUNED=1 the step with timed cuBLASLt algorithms (TESSERA_GEMM_TUNE) and BENCH_WGMMA=1
  # the step with the wgmma attention kernels, BENCH_SWITCHES=1 the step with each of the latest
  # changes switched off (scripts/bench_gpu.sh); off by default here, where the first run's time
  # goes to correctness. BENCH_DS=1 (on by default: not yet measured in a step) the step with the
  # attention's dQ from the stored dS (TESSERA_FLASH_KERNELS=mma-ds), BENCH_2STAGE=1 (likewise)
  # the step with the two-stage attention forward (TESSERA_FLASH_KERNELS=mma-2stage), and the two
  # together (mma-2stage-ds). BENCH_DOCUMENTS=1 (off: not part of issue 14) adds the step with
  # a document every 256 tokens, softmax over all of them in one launch a pass, and the same a
  # launch a document (TESSERA_FLASH_DOCUMENTS=views). BENCH_MUON=1 (off: not part of issue 14)
  # adds the step with Muon for the blocks' matrices, its f32 gemms without and with TF32.
  NO_BUILD=1 BUILD_DIR="$B" RESULTS=/tmp/gpu-check-bench BENCH_STEPS=20 BENCH_WARMUP=5 \
    BENCH_UNFUSED="${BENCH_UNFUSED:-0}" BENCH_TUNED="${BENCH_TUNED:-0}" BENCH_WGMMA="${BENCH_WGMMA:-0}" \
    BENCH_SWITCHES="${BENCH_SWITCHES:-0}" BENCH_DS="${BENCH_DS:-1}" BENCH_2STAGE="${BENCH_2STAGE:-1}" \
    BENCH_DOCUMENTS="${BENCH_DOCUMENTS:-0}" BENCH_MUON="${BENCH_MUON:-0}" \
    timeout -k 10 "$(limit 300)" scripts/bench_gpu.sh 8 >"$OUT/bench.log" 2>&1; rc=$?
  # torch.compile needs Python.h for Triton's launcher; without it PyTorch falls back to eager.
  compiled=yes
  grep -qiE 'Python.h|falling back to eager|suppress_errors|BackendCompilerFailed|compiled no graph|compile failed' "$OUT/bench.log" && compiled="NO (eager fallback: see bench.log)"
  # Whether cuBLASLt offered the bias and GELU epilogues (cuda::BlasStats), from tessera's step.
  epilogues=$(grep -m1 -o 'Linear biases in the gemm epilogue.*' "$OUT/bench.log")
  tuning=$(grep -m1 -o 'TESSERA_GEMM_TUNE: [0-9]* gemm plans timed, [0-9]* of them kept another' "$OUT/bench.log")
  row bench "$([ $rc -eq 0 ] && echo ok || echo "FAILED rc $rc")" "GPT-2 124M B=8 T=1024 in $(elapsed "$t0"); torch.compile compiled: $compiled; ${epilogues:-epilogues: ?}${tuning:+; $tuning}; table in bench.log"
fi
if want attention 60; then
  t0=$(date +%s)
  NO_BUILD=1 BUILD_DIR="$B" PYTHON="$PYTHON" timeout -k 10 "$(limit 200)" scripts/bench_attention.sh --seqlens 1024,4096,16384 \
    >"$OUT/attention.log" 2>&1; rc=$?
  # The project's goal for stick-breaking: forward + backward within 1.25x of tessera's softmax.
  sb_ratio=$(awk -F'|' '{ gsub(/^ +| +$/, "", $2); key = $3 "/" $4 }
    $2 == "tessera flash (softmax)" { soft[key] = $8 }
    $2 == "tessera stick-breaking" { sb[key] = $8; order[++n] = key }
    END { for (i = 1; i <= n; i++) { k = order[i]; if (soft[k] > 0)
            printf "%sT %s D %s: %.2fx", (i > 1 ? ", " : ""), substr(k, 1, index(k, "/") - 1) + 0,
                   substr(k, index(k, "/") + 1) + 0, sb[k] / soft[k] } }' "$OUT/attention.log")
  # The project's goal for softmax: at least 0.9x the speed of PyTorch's best SDPA backend, i.e.
  # tessera's forward + backward time at most 1.11x the fastest "torch ... sdpa (backend)" row.
  sdpa_ratio=$(awk -F'|' '{ gsub(/^ +| +$/, "", $2); key = $3 "/" $4 }
    $2 == "tessera flash (softmax)" { soft[key] = $8; order[++n] = key }
    $2 ~ /^torch .* sdpa \(/ && $8 + 0 > 0 && (!(key in best) || $8 + 0 < best[key]) {
      best[key] = $8 + 0; b = $2; sub(/.*sdpa \(/, "", b); sub(/\)$/, "", b); which[key] = b }
    END { for (i = 1; i <= n; i++) { k = order[i]; if (best[k] > 0)
            printf "%sT %s D %s: %.2fx (%s)", (i > 1 ? ", " : ""), substr(k, 1, index(k, "/") - 1) + 0,
                   substr(k, index(k, "/") + 1) + 0, soft[k] / best[k], which[k] } }' "$OUT/attention.log")
  # A family's time over another's (the default's unless a third argument names it) per T and D
  # (column 6: the forward; 8: forward and backward; "bwd": the difference): below 1, it is the
  # faster (kernels/flash_mma.cu, flash_wgmma.cu).
  time_ratio() {
    awk -F'|' -v name="$1" -v col="$2" -v base="${3:-tessera flash (softmax)}" '{
      gsub(/^ +| +$/, "", $2); key = $3 "/" $4; t = col == "bwd" ? $8 - $6 : $col }
      $2 == base { soft[key] = t }
      $2 == name { other[key] = t; order[++n] = key }
      END { for (i = 1; i <= n; i++) { k = order[i]; if (soft[k] > 0)
              printf "%sT %s D %s: %.2fx", (i > 1 ? ", " : ""), substr(k, 1, index(k, "/") - 1) + 0,
                     substr(k, index(k, "/") + 1) + 0, other[k] / soft[k] } }' "$OUT/attention.log"
  }
  # The D 64 forward on 128-query blocks at 3 an SM against the default's 64-query blocks (< 1:
  # make it the default); the wgmma kernels (sm_90a) against the mma.sync ones, forward and backward; and at
  # D 64 their register-heavy kernels against wgmma-narrow's: the forward on 128-query blocks
  # against 64-query ones, dK dV with K and V held against read from shared memory (< 1: keep
  # the heavy one).
  occ_ratio=$(time_ratio "tessera flash, 128-row forward at 3 blocks/SM" 6)
  wgmma_ratio=$(time_ratio "tessera flash, wgmma kernels" 8)
  wgmma_fwd=$(time_ratio "tessera flash, wgmma kernels" 6 "tessera flash, wgmma, fewer registers")
  wgmma_bwd=$(time_ratio "tessera flash, wgmma kernels" bwd "tessera flash, wgmma, fewer registers")
  # Not yet defaults (< 1: make them so): the forward with K and V in two stages (softmax and
  # stick-breaking), the backward's dQ from the stored dS.
  stage_ratio=$(time_ratio "tessera flash, K and V in two stages" 6)
  sb_stage_ratio=$(time_ratio "tessera stick-breaking, K and V in two stages" 6 "tessera stick-breaking")
  ds_ratio=$(time_ratio "tessera flash, dQ from the stored dS" bwd)
  # The default forward's lazy rescaling against O rescaled at every key tile (< 1: keep it).
  lazy_ratio=$(time_ratio "tessera flash (softmax)" 6 "tessera flash, O rescaled at every key tile")
  # ALiBi's bias on every score (the kAlibi kernels) against plain softmax: its cost, fwd+bwd.
  alibi_ratio=$(time_ratio "tessera flash with ALiBi" 8)
  # Forgetting Attention's bias c_i - c_j (its kernels read c a tile, dK dV sums dS's columns).
  fox_ratio=$(time_ratio "tessera flash with a forget gate" 8)
  row attention "$([ $rc -eq 0 ] && echo ok || echo "FAILED rc $rc")" "table in attention.log, $(elapsed "$t0"); fwd+bwd time, stick-breaking / softmax: ${sb_ratio:-?}; softmax / fastest PyTorch SDPA backend: ${sdpa_ratio:-?}; forward time, 128-row blocks at 3 an SM / the default 64-row: ${occ_ratio:-?}; fwd+bwd time, wgmma / mma: ${wgmma_ratio:-?}; wgmma forward time, 128-row / 64-row blocks: ${wgmma_fwd:-?}; wgmma backward time, K V held / not: ${wgmma_bwd:-?}; forward time, two stages / one: softmax ${stage_ratio:-?}, stick-breaking ${sb_stage_ratio:-?}; backward time, dQ from the stored dS / recomputed: ${ds_ratio:-?}; forward time, lazy / eager rescaling: ${lazy_ratio:-?}; fwd+bwd time, ALiBi / softmax: ${alibi_ratio:-?}; fwd+bwd time, forget gate / softmax: ${fox_ratio:-?}"
fi

# ---- memory ------------------------------------------------------------------------------------
# >>> memory section (bench_memory --device cuda: LoRA/QLoRA/LOMO on the GPU, issue 17) >>>>>>>>>>>
# The peak of each training mode on cuda:0 (src/apps/bench_memory.cpp): tensor bytes and the
# caching allocator's reserved bytes per row (AdamW, LOMO, AdaLomo with and without two-pass norm
# clipping, LoRA, QLoRA nf4 / nf4-dq), on the benchmark's default GPT (8 x 512, GPT-2 vocabulary)
# at batch 8, with its ratios to AdamW. Then the gpu-labelled LoRA/QLoRA/LOMO tests are named on
# their own row, so the summary says whether those modes ran on the GPU.
if want memory 45; then
  t0=$(date +%s)
  if [ "$GPU_DEVICE" = cuda ]; then
    timeout -k 10 "$(limit 240)" "$B/bench_memory" --device cuda --batch 8 --seq 256 --steps 3 >"$OUT/memory.log" 2>&1; rc=$?
  else
    timeout -k 10 "$(limit 240)" "$B/bench_memory" --n-layer 2 --n-embd 128 --vocab 257 --steps 1 >"$OUT/memory.log" 2>&1; rc=$?
  fi
  ratios=$(awk '/^(lomo|adalomo|lora|qlora)/ && $NF ~ /^[0-9.]+$/ {print $1 ($2 ~ /^(nf4|nf4-dq|\+clip)$/ ? " " $2 : "") "=" $(NF)}' "$OUT/memory.log" | paste -sd, -)
  row memory "$([ $rc -eq 0 ] && echo ok || echo "FAILED rc $rc")" \
    "bench_memory --device $GPU_DEVICE in $(elapsed "$t0"); last column per row (reserved/AdamW on cuda): ${ratios:-?}; table in memory.log"
  if [ -f "$OUT/ctest.log" ]; then
    peft=$(grep -cE 'Test +#[0-9]+: cuda\.(PeftCuda|Modes/PeftCuda|LomoCuda|Optimizers/FusedCuda).* Passed' "$OUT/ctest.log")
    peft_bad=$(grep -cE 'Test +#[0-9]+: cuda\.(PeftCuda|Modes/PeftCuda|LomoCuda|Optimizers/FusedCuda).* (Failed|Exception|Timeout|SEGFAULT)' "$OUT/ctest.log")
    row "  peft/lomo tests" "$peft passed, $peft_bad failed" "tests/cuda/test_peft_cuda.cpp, test_lomo_cuda.cpp (from ctest.log)"
  fi
fi
# <<< memory section <<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<
# ---- dp: data parallelism over NCCL, on a machine of two GPUs or more ----------------------------
# Every process's output goes to train.log (the device tool brings back at most 8 files); the
# script's rows join the summary.
if want dp; then
  BUILD_DIR="$B" RUNS="$RUNS" LOG="$OUT/train.log" PYTHON="$PYTHON" LIMIT_S="$(limit 120)" \
    timeout -k 10 "$(limit 400)" scripts/dp_check.sh >/tmp/gpu-check-dp.rows 2>>"$OUT/train.log"; rc=$?
  grep -E '^\| dp' /tmp/gpu-check-dp.rows >>"$SUMMARY" ||
    row dp "FAILED rc $rc$(timed_out $rc)" "scripts/dp_check.sh gave no rows (train.log)"
fi
# ---- diag: where the kernels' time goes, and the wgmma backward under compute-sanitizer ----------
# (not run unless STAGES names it). Nsight Compute (ncu, on the device image; --clock-control none
# leaves the card's clocks alone) on one launch of each kernel family that dominates the GPT-2
# step, at the step's shapes (bench_gpu, B 8, T 1024): the flash forward and its two backward
# kernels, the LayerNorm backward's, the fused cross-entropy; then the two-stage forward
# (mma-2stage) and the stored-dS dQ kernel (mma-ds), not yet the default. Its sections: speed of light,
# occupancy, launch statistics, warp states (the stall reasons), compute and memory workload (issue
# slots, the pipes' and shared memory's use: whether the flash kernels' ldmatrix traffic, not their
# products, binds them, docs/gpu-notes.md). Then compute-sanitizer's racecheck
# and memcheck on the wgmma kernels' failing test (docs/gpu-notes.md, GPU session 1): a race or a
# bad access there says what the per-tile errors cannot. One log, diag.log (the device tool brings
# back at most 8 files); the summary takes a row per kernel and per tool.
if want diag 60; then
  t0=$(date +%s)
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
  # ncu's report lines: "    Duration                         us       415.62", name then unit
  # then value; pick NAME prints the value (with its unit unless it is %).
  pick() {
    awk -v k="$1" '{ l = $0; sub(/^ +/, "", l) }
      index(l, k) == 1 && substr(l, length(k) + 1, 1) == " " {
        print ($(NF - 1) == "%" ? $NF : $NF " " $(NF - 1)); exit }' /tmp/gpu-check-ncu.log
  }
  if [ -z "$NCU" ]; then
    row "  ncu" skipped "no ncu on this machine"
  else
    # Regular expressions: the D 64 dK dV is flash_backward_dkdv_mma_3blocks since 46dd89a, the
    # GPT-2 cross-entropy cross_entropy_held_kernel since the forty-third session, GPT-2's norm
    # backward norm_backward_fused_kernel (dx and the dw / db partial sums) since the forty-fourth,
    # the D 64 dQ flash_backward_dq_mma_4blocks since the forty-sixth.
    # FAMILY:REGEX runs the step under TESSERA_FLASH_KERNELS=FAMILY (kernels not yet the default,
    # last, so that a short budget drops them first).
    for spec in flash_forward_kernel 'flash_(dkdv_kernel|backward_dkdv)' \
        'flash_(dq_kernel|backward_dq_mma)' \
        'norm_backward_(dx|fused)_kernel' norm_weight_grad_final_kernel \
        'cross_entropy_(fused|held)' mma-2stage:flash_forward_mma_2stage \
        mma-ds:flash_dq_stored_kernel; do
      family=; kernel=$spec
      [[ $spec == *:* ]] && family=${spec%%:*} kernel=${spec#*:}
      (( $(limit 30) < 30 )) && { row "  ncu ${kernel//|/ or }" skipped "no time left"; continue; }
      echo "== ncu: $kernel${family:+ (TESSERA_FLASH_KERNELS=$family)}" >>"$OUT/diag.log"
      timeout -k 10 "$(limit 60)" env ${family:+TESSERA_FLASH_KERNELS=$family} \
        "$NCU" --clock-control none -k "regex:$kernel" -c 1 \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
        --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        "$B/bench_gpu" --config configs/gpt2-124m.yaml --batch-size 8 --steps 1 --warmup 1 \
        --no-kernels >/tmp/gpu-check-ncu.log 2>&1; rc=$?
      cat /tmp/gpu-check-ncu.log >>"$OUT/diag.log"
      row "  ncu ${kernel//|/ or }" "$([ $rc -eq 0 ] && echo ok || echo "FAILED rc $rc$(timed_out $rc)")" \
        "duration $(pick Duration); SM throughput $(pick 'Compute (SM) Throughput')%; memory throughput $(pick 'Memory Throughput')%; issue slots busy $(pick 'Issue Slots Busy')%; memory pipes busy $(pick 'Mem Pipes Busy')%; registers $(pick 'Registers Per Thread'); occupancy $(pick 'Achieved Occupancy')% achieved, $(pick 'Theoretical Occupancy')% theoretical"
    done
  fi
  if [ -z "$SANITIZER" ]; then
    row "  sanitizer" skipped "no compute-sanitizer on this machine"
  else
    for tool in racecheck memcheck; do
      (( $(limit 45) < 45 )) && { row "  sanitizer $tool" skipped "no time left"; continue; }
      echo "== compute-sanitizer --tool $tool" >>"$OUT/diag.log"
      timeout -k 10 "$(limit 150)" "$SANITIZER" --tool "$tool" "$B/tests/test_cuda" \
        --gtest_filter=AttentionCuda.flash_bf16_wgmma_narrow_kernels_match_cpu_reference \
        >/tmp/gpu-check-sanitizer.log 2>&1; rc=$?
      cat /tmp/gpu-check-sanitizer.log >>"$OUT/diag.log"
      verdict=$(grep -m1 -E '(RACECHECK|ERROR) SUMMARY' /tmp/gpu-check-sanitizer.log | tr -d '|=')
      row "  sanitizer $tool" "${verdict:-rc $rc$(timed_out $rc)}" "wgmma-narrow's test (exit $rc: a test failure alone exits 1)"
    done
  fi
  row diag done "in $(elapsed "$t0"); ncu and sanitizer output in diag.log"
fi
if want async; then
  t0=$(date +%s)
  NO_BUILD=1 BUILD_DIR="$B" DEVICE="$GPU_DEVICE" DIR="$ROOT/checkpoints/gpu_check_async" \
    timeout -k 10 "$(limit 180)" scripts/bench_async_save.sh >"$OUT/async.log" 2>&1; rc=$?
  rows=$(awk '$1 == "synchronous" || $1 == "background" { printf "%s%s %s s (step after a save %s, others %s; stalled %s s)", n++ ? "; " : "", $1, $2, $3, $4, $5 }' "$OUT/async.log")
  row async "$([ $rc -eq 0 ] && echo ok || echo "FAILED rc $rc$(timed_out $rc)")" \
    "bench_async_save.sh on $GPU_DEVICE in $(elapsed "$t0"): ${rows:-?}"
fi

# The logs' tables first, the summary last: the device tool returns the output's last 12,000
# characters, and the summary is what must be read within the machine's idle window.
if [ -f "$OUT/bench.log" ]; then  # scripts/bench_gpu.sh ends with its side-by-side table
  echo; echo "## bench.log (table)"; sed -n '/^GPT-2 124M training step/,$p' "$OUT/bench.log" | head -30
fi
[ -f "$OUT/attention.log" ] && { echo; echo "## attention.log (table)"; grep -E '^\|' "$OUT/attention.log" | tail -80; }
if [ -f "$OUT/bench.log" ]; then  # where tessera's step time goes (src/backend/profile.h)
  echo; echo "## bench.log (kernel profile of the GPT-2 step: the top groups, then per kernel)"
  sed -n '/kernel profile of/,$p' "$OUT/bench.log" | sed -n '1,/^$/p;/^kernel  /,+24p;/^per kernel:/,+20p'
fi
echo
cat "$SUMMARY"
exit 0
