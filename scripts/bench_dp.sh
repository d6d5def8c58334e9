#!/usr/bin/env bash
# Data-parallel scaling on the CPU: trains configs/tiny.yaml for a fixed number of steps as 1, 2
# and 4 MPI ranks of one thread each with the same global batch (768 tokens per step: batch
# 12 / 6 / 3 x 64 per rank), then one rank with a thread per core (what a plain `build/train` does:
# the alternative to ranks on one machine), then ZeRO-1 (dist.zero=1) on 2 and 4 ranks, and prints
# one table row per run:
#   step ms      median and mean over the steps after the warm-up, from metrics.jsonl
#                (768 / tokens_per_s: the loop's own time per step, forward to update, rank 0)
#   exposed ms   gradient communication backward did not hide, per step (the final `dist:` line:
#                its total over every step, warm-up included, divided by the step count)
#   grad MiB     gradient bytes each rank hands to the all-reduce per step (f32: 4 x parameters)
#   busbw GB/s   build/bench_comm's all_reduce bus bandwidth at exactly that size, same ranks
#   state MiB    AdamW moments held per rank (1/W of them with ZeRO-1)
#   PyTorch ms   the comparison run: scripts/bench_dp_torch.py, the same model, optimizer, batch
#                shapes and timed steps in plain PyTorch on the CPU (f32), N ranks in
#                DistributedDataParallel over gloo (one rank: the plain model), the same threads
#                per rank; its median step time (rank 0). Rows without ZeRO only.
#   tessera / PyTorch   tessera's median step time / PyTorch's (< 1: tessera is faster)
# The PyTorch runs need TORCH_PYTHON (default /usr/bin/python3, Debian's: apt-get install
# python3-torch) to import torch; without it the table says the comparison was skipped.
# Eval is off and the only checkpoint is the last step's, into a temporary directory.
#
# Usage: scripts/bench_dp.sh            (about 4 minutes on 2 cores, 3 without PyTorch)
#   BUILD_DIR (default build), STEPS (default 60), WARMUP (default 10), ROUNDS (default 2: every
#   run repeated, the fastest kept), ZERO (1: also the ZeRO-1 runs; 0: skip them), MPIRUN
#   (default mpirun), TORCH (1: the PyTorch comparison when torch imports; 0: skip it),
#   TORCH_PYTHON (default /usr/bin/python3), KEEP (a directory to keep the logs and metrics in),
#   OPTIM (default adamw; muon: every run with optim.name muon, each block matrix orthogonalised by
#   one rank, docs/muon.md; the state column is then AdamW's m and v plus this rank's momenta;
#   PyTorch 1.13 has no Muon, so no twin).
#
# A benchmark, not a test. On a machine with fewer cores than ranks (4 ranks on 2 cores) the ranks
# are oversubscribed: they take turns on the cores, so those rows time the scheduler as much as
# the communication, and say nothing about scaling on real hardware.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR="${BUILD_DIR:-build}"
STEPS="${STEPS:-60}"
WARMUP="${WARMUP:-10}"
ZERO="${ZERO:-1}"
ROUNDS="${ROUNDS:-2}"
MPIRUN="${MPIRUN:-mpirun}"
TORCH="${TORCH:-1}"
OPTIM="${OPTIM:-adamw}"
source scripts/torch_env.sh
TOTAL=768  # tokens per step: 12 sequences of 64 bytes, tiny.yaml's batch

# Build: configure only when the build directory does not exist yet (an existing one keeps its
# options), then the two binaries.
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  source scripts/configure.sh
  configure "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD_DIR" -j"$(nproc)" --target train bench_comm >/dev/null
if ! command -v "$MPIRUN" >/dev/null; then
  echo "bench_dp: needs $MPIRUN (Open MPI: apt-get install openmpi-bin libopenmpi-dev, then a" \
       "build with TESSERA_MPI)" >&2
  exit 1
fi
[ -f data/kjv/byte/train_000.bin ] || scripts/prepare_data.sh kjv

# --oversubscribe: 4 ranks on 2 cores. Single-copy (CMA) shared memory needs ptrace rights that
# containers often lack; copying through the shared segment works everywhere (as tests/ does).
# -x: the thread count reaches every rank.
MPI=("$MPIRUN" --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none
     -x OMP_NUM_THREADS)

WORK="$(mktemp -d /tmp/bench_dp.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# run NAME RANKS ZERO THREADS: one training run; leaves $WORK/NAME.log and
# $WORK/NAME/tiny/metrics.jsonl. THREADS is each rank's OpenMP threads (gemm included: it splits
# its BLAS calls over them, src/backend/cpu/matmul.cpp).
run() {
  local name=$1 np=$2 zero=$3 threads=$4
  local batch=$((TOTAL / 64 / np))
  local t0=$SECONDS
  # One rank runs as a plain process, as a user would start it: under mpirun it would be bound
  # to one core (Open MPI binds to cores for 2 processes or fewer), its threads included.
  local launch=(env)
  if [ "$np" -gt 1 ]; then launch=("${MPI[@]}" -np "$np"); fi
  if ! OMP_NUM_THREADS="$threads" "${launch[@]}" \
       "$BUILD_DIR/train" --config configs/tiny.yaml \
       --set train.batch_size="$batch" --set train.total_batch_size="$TOTAL" \
       --set train.max_steps="$STEPS" --set eval.interval=0 --set checkpoint.interval=0 \
       --set checkpoint.dir="$WORK/$name" --set log.interval=1 --set dist.zero="$zero" \
       --set optim.name="$OPTIM" \
       >"$WORK/$name.log" 2>&1; then
    echo "bench_dp: run $name failed:" >&2
    tail -20 "$WORK/$name.log" >&2
    exit 1
  fi
  echo "  $name: $np rank(s) x batch $batch x $threads thread(s), dist.zero=$zero, $OPTIM," \
       "$((SECONDS - t0)) s" >&2
}

# torch_run NAME RANKS THREADS: one run of the PyTorch twin; leaves its JSON line in
# $WORK/NAME.json. The same steps as run(): WARMUP untimed, then STEPS - WARMUP timed.
torch_run() {
  local name=$1 np=$2 threads=$3
  local t0=$SECONDS
  if ! OMP_NUM_THREADS="$threads" torch_python scripts/bench_dp_torch.py --ranks "$np" \
       --threads "$threads" --warmup "$WARMUP" --steps "$((STEPS - WARMUP))" \
       >"$WORK/$name.json" 2>"$WORK/$name.log"; then
    echo "bench_dp: PyTorch run $name failed:" >&2
    tail -20 "$WORK/$name.log" >&2
    exit 1
  fi
  echo "  $name: PyTorch, $np rank(s) x batch $((TOTAL / 64 / np)) x $threads thread(s)," \
       "$((SECONDS - t0)) s" >&2
}

# busbw NP BYTES: bench_comm's bus bandwidth (GB/s) of one all_reduce size on NP ranks.
busbw() {
  local np=$1 bytes=$2
  OMP_NUM_THREADS=1 "${MPI[@]}" -np "$np" "$BUILD_DIR/bench_comm" \
    --min-bytes "$bytes" --max-bytes "$bytes" --warmup 5 --iters 30 >"$WORK/comm$np.log" 2>&1 ||
    { echo "bench_dp: bench_comm on $np ranks failed:" >&2; cat "$WORK/comm$np.log" >&2; exit 1; }
  awk '!/^#/ && NF >= 5 { print $5 }' "$WORK/comm$np.log"
}

LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench_dp: $STEPS steps of configs/tiny.yaml, $TOTAL tokens per step, first $WARMUP" \
     "not timed, $ROUNDS round(s) ($(nproc) cores)" >&2
ROWS=()
for np in 1 2 4; do ROWS+=("r${np}z0 $np 0 1"); done
ROWS+=("r1t 1 0 $(nproc)")
if [ "$ZERO" = 1 ]; then for np in 2 4; do ROWS+=("r${np}z1 $np 1 1"); done; fi
# The PyTorch twin of every row without ZeRO, when torch imports (TORCH_NOTE says why not).
TORCH_NOTE=""
if [ "$TORCH" != 1 ]; then
  TORCH_NOTE="PyTorch comparison skipped: TORCH=$TORCH."
elif [ "$OPTIM" != adamw ]; then
  TORCH_NOTE="PyTorch comparison skipped: its twin trains with AdamW, this run with $OPTIM."
elif ! torch_err="$("$TORCH_PYTHON" -c 'import torch' 2>&1)"; then
  TORCH_NOTE="PyTorch comparison skipped: '$TORCH_PYTHON -c \"import torch\"' failed"
  TORCH_NOTE+=" ($(printf '%s\n' "$torch_err" | tail -1)); Debian: apt-get install python3-torch."
fi
# Rounds: every configuration once per round, in turn, so a burst of other work on the cores
# slows one run of each rather than every run of one; the table keeps each row's fastest run.
for ((round = 1; round <= ROUNDS; ++round)); do
  for row in "${ROWS[@]}"; do
    read -r name np zero threads <<<"$row"
    run "${name}_$round" "$np" "$zero" "$threads"
    if [ -z "$TORCH_NOTE" ] && [ "$zero" = 0 ]; then
      torch_run "pt${np}x${threads}_$round" "$np" "$threads"
    fi
  done
done

# Gradient bytes: 4 x the parameter count the model line reports (f32 gradients on the CPU).
params=$(sed -n 's/^model: \([0-9]*\) parameters.*/\1/p' "$WORK/r1z0_1.log")
if [ -z "$params" ]; then
  echo "bench_dp: no 'model: N parameters' line in $WORK/r1z0_1.log" >&2
  exit 1
fi
grad_bytes=$((params * 4))
declare -A BUS=([1]="-")
for np in 2 4; do
  best=0
  for ((round = 1; round <= ROUNDS; ++round)); do
    best=$(busbw "$np" "$grad_bytes" | awk -v b="$best" '{ print ($1 > b ? $1 : b) }')
  done
  BUS[$np]=$best
done

echo
cpu="$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
mpi="$("$MPIRUN" --version 2>/dev/null | head -1)"
echo "configs/tiny.yaml (optim.name $OPTIM), $params parameters, $TOTAL tokens per step; $STEPS steps, the first"
echo "$WARMUP untimed; each row the fastest of $ROUNDS run(s) by median step time, busbw the best"
echo "of $ROUNDS; $(nproc) CPU cores ($cpu), $mpi; load average before: $LOAD0, after:"
echo "$(cut -d' ' -f1-3 /proc/loadavg) (other work on the cores slows every row)"
if [ -z "$TORCH_NOTE" ]; then
  torch_version="$(/usr/bin/env python3 -c 'import json, sys; print(json.load(sys.stdin)["torch"])' \
                   <"$WORK/pt1x1_1.json")"
  deb="$(dpkg-query -W -f='${Version}' python3-torch 2>/dev/null || true)"
  echo "PyTorch: $TORCH_PYTHON, torch $torch_version${deb:+ (Debian python3-torch $deb)},"
  echo "scripts/bench_dp_torch.py (same model, AdamW, clipping, shapes and timed steps; f32;"
  echo "DistributedDataParallel over gloo on 2 and 4 ranks, the plain model on one; one OpenBLAS"
  echo "thread; GLIBC_TUNABLES='$TORCH_TUNABLES', scripts/torch_env.sh), the fastest of $ROUNDS"
  echo "run(s) by median step time"
else
  echo "$TORCH_NOTE"
fi
printf '| %5s | %7s | %4s | %5s | %11s | %12s | %10s | %8s | %10s | %9s | %19s | %17s |\n' \
  ranks threads zero batch "step ms med" "step ms mean" "exposed ms" "grad MiB" "busbw GB/s" \
  "state MiB" "PyTorch ms per step" "tessera / PyTorch"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------: --------: -----: ------: ------------: \
  -------------: -----------: ---------: -----------: ----------: --------------------: \
  ------------------:
for row in "${ROWS[@]}"; do
  read -r name np zero threads <<<"$row"
  /usr/bin/env python3 - "$WORK" "$name" "$ROUNDS" "$np" "$threads" "$zero" "$WARMUP" "$TOTAL" \
    "$grad_bytes" "${BUS[$np]}" <<'EOF'
import json, os, re, statistics, sys
work, name, rounds, np, threads, zero, warmup, total, grad_bytes, bus = sys.argv[1:]

def summary(run):
    ms = [1000.0 * int(total) / r["tokens_per_s"]
          for r in map(json.loads, open(f"{work}/{run}/tiny/metrics.jsonl"))
          if "tokens_per_s" in r and r["step"] > int(warmup)]
    text = open(f"{work}/{run}.log").read()
    m = re.search(r"dist: .*?([0-9.]+) s waiting.*?over ([0-9]+) steps", text)
    exposed = 1000.0 * float(m.group(1)) / int(m.group(2)) if m else 0.0
    s = re.search(r"optimizer state ([0-9.]+) MiB", text)
    return statistics.median(ms), statistics.mean(ms), exposed, s.group(1) if s else "?"

med, mean, exposed, state = min(summary(f"{name}_{r}") for r in range(1, int(rounds) + 1))
batch = int(total) // 64 // int(np)
# The PyTorch twin (same ranks and threads, no ZeRO), its fastest run by median.
twins = [f"{work}/pt{np}x{threads}_{r}.json" for r in range(1, int(rounds) + 1)]
if zero == "0" and all(os.path.exists(t) for t in twins):
    pt = min(json.loads(open(t).read().strip().splitlines()[-1])["median_ms"] for t in twins)
    pt_ms, ratio = f"{pt:.1f}", f"{med / pt:.2f}"
else:
    pt_ms = ratio = "-"
print(f"| {np:>5} | {threads:>7} | {zero:>4} | {batch:>5} | {med:11.1f} | {mean:12.1f} | "
      f"{exposed:10.1f} | {int(grad_bytes) / 2**20:8.2f} | {bus:>10} | {state:>9} | "
      f"{pt_ms:>19} | {ratio:>17} |")
EOF
done
echo
echo "exposed ms: the dist: line's total wait / steps (warm-up included); busbw: bench_comm,"
echo "all_reduce average f32 of $grad_bytes bytes, busbw = algbw x 2(W-1)/W (NCCL-tests)."
echo "More ranks than cores ($(nproc)): oversubscribed, the ranks take turns on the cores."
if [ -z "$TORCH_NOTE" ]; then
  echo "PyTorch ms per step: the median of the same timed steps (rank 0); tessera / PyTorch: the"
  echo "two medians' ratio, < 1 when tessera is faster. '-': no PyTorch twin (ZeRO-1 rows)."
fi
if [ -n "${KEEP:-}" ]; then
  mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/ && echo "logs kept in $KEEP"
fi
