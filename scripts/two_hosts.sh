#!/usr/bin/env bash
# A real two-"host" data-parallel run on one machine: two network namespaces joined by a veth pair
# stand in for two hosts, and mpirun (Open MPI) starts one rank on each, so the ranks' gradients
# cross a TCP connection over the veth instead of shared memory.
#
#   scripts/two_hosts.sh [BUILD_DIR]       # default: build (needs BUILD_DIR/train built with MPI)
#
#   host h1 (netns tessera_h1_<pid>)  10.77.0.1/24 --veth-- 10.77.0.2/24  host h2 (tessera_h2_<pid>)
#   mpirun + rank 0                                                        orted + rank 1
#
# mpirun runs inside h1 and reaches h2 through an rsh agent (written into the temp dir) that, like
# ssh, gets `<host> <command...>` and runs the command in the namespace owning that IP. The script
# trains configs/tiny.yaml for 10 steps and checks that
#   1. mpirun exits 0 and train reports `2 rank(s) (mpi)` and finishes all steps;
#   2. rank 0 ran in h1 and rank 1 in h2 (each rank, just before exec'ing train, records
#      `ip netns identify` of its own pid and the IPv4 address it sees);
#   3. the gradients really crossed the veth: the bytes the veth in h2 sent are at least one byte
#      per parameter per step (an fp32 all-reduce of 2 ranks moves four times that);
#   4. the per-step losses in metrics.jsonl equal (1e-4 relative) those of a 1-process run with the
#      same global batch (batch 12 vs 2 x 6, 768 tokens per step).
# Namespaces, the veth pair and the temp dir are removed on exit, on failure too. Needs root (or
# CAP_NET_ADMIN + CAP_SYS_ADMIN) and `ip`; without them it says why and exits 77 (ctest: skipped).
# Environment: MPIRUN (default: mpirun on PATH), TWO_HOSTS_TIMEOUT (seconds for mpirun, default 120),
# TWO_HOSTS_KEEP=1 keeps the temp dir for inspection.
set -euo pipefail

SKIP=77
die() { echo "two_hosts: FAIL: $*" >&2; exit 1; }
skip() { echo "two_hosts: SKIP: $*" >&2; exit "$SKIP"; }
log() { echo "two_hosts: $*"; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-$ROOT/build}
[[ -d $BUILD ]] || die "build dir '$BUILD' does not exist (usage: $0 [BUILD_DIR])"
BUILD=$(cd "$BUILD" && pwd)
TRAIN=$BUILD/train
[[ -x $TRAIN ]] || die "$TRAIN not found: build the train target first"
MPIRUN=${MPIRUN:-mpirun}
TIMEOUT=${TWO_HOSTS_TIMEOUT:-120}
STEPS=10

# ---- can we do this at all? -------------------------------------------------------------------
command -v ip >/dev/null 2>&1 || skip "'ip' (iproute2) not found"
command -v python3 >/dev/null 2>&1 || skip "python3 not found"
command -v "$MPIRUN" >/dev/null 2>&1 || skip "'$MPIRUN' not found"
"$MPIRUN" --version 2>/dev/null | grep -Eq "Open MPI|OpenRTE" ||
  skip "'$MPIRUN' is not Open MPI (the launch relies on Open MPI's rsh agent and MCA options)"
[[ -x $BUILD/tokenize ]] || die "$BUILD/tokenize missing: build tessera first"

H1=tessera_h1_$$
H2=tessera_h2_$$
IP1=10.77.0.1
IP2=10.77.0.2
SUBNET=10.77.0.0/24  # exists only inside the two namespaces, so it cannot clash with host routes
MPIPID=
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tessera_two_hosts.XXXXXX")

cleanup() {
  local rc=$?
  set +e
  if [[ -n $MPIPID ]] && kill -0 "$MPIPID" 2>/dev/null; then
    kill -TERM "$MPIPID" 2>/dev/null  # timeout passes it on to mpirun, which stops its ranks
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$MPIPID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$MPIPID" 2>/dev/null
  fi
  for ns in "$H1" "$H2"; do
    [[ -n $ns ]] || continue
    if ip netns list 2>/dev/null | grep -qw "^$ns"; then
      # Anything still inside (an orphaned orted or rank after a timeout): ours, end it by pid.
      local pids
      pids=$(ip netns pids "$ns" 2>/dev/null)
      [[ -n $pids ]] && kill -KILL $pids 2>/dev/null
      ip netns del "$ns" 2>/dev/null  # takes its end of the veth pair (and so the pair) with it
    fi
  done
  if [[ ${TWO_HOSTS_KEEP:-0} == 1 ]]; then
    echo "two_hosts: kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Namespaces left by an earlier run that was SIGKILLed (no trap, e.g. a ctest timeout): owner pid
# gone, nobody inside and over 10 minutes old (the age guards a run in another pid namespace).
now=$(date +%s)
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^tessera_h[12]_[0-9]+$'); do
  owner=${ns##*_}
  born=$(stat -c %Y "/run/netns/$ns" 2>/dev/null || echo "$now")
  if ((now - born > 600)) && ! kill -0 "$owner" 2>/dev/null &&
     [[ -z $(ip netns pids "$ns" 2>/dev/null) ]]; then
    ip netns del "$ns" 2>/dev/null && log "removed stale namespace $ns"
  fi
done

# ---- the two "hosts" --------------------------------------------------------------------------
if ! err=$(ip netns add "$H1" 2>&1); then
  H1=; H2=  # nothing of ours to delete
  skip "cannot create a network namespace (needs root or CAP_NET_ADMIN+CAP_SYS_ADMIN): $err"
fi
ip netns add "$H2" || die "ip netns add $H2 failed"
# Both ends are created directly inside the namespaces: no name in the host namespace to collide.
ip link add veth0 netns "$H1" type veth peer name veth0 netns "$H2" ||
  skip "cannot create a veth pair between the namespaces"
ip -n "$H1" addr add "$IP1/24" dev veth0
ip -n "$H2" addr add "$IP2/24" dev veth0
for ns in "$H1" "$H2"; do
  ip -n "$ns" link set lo up
  ip -n "$ns" link set veth0 up
done
ip netns exec "$H1" true || skip "ip netns exec does not work here"
log "hosts: $H1 ($IP1) <-veth-> $H2 ($IP2)"

# rsh agent: what ssh would be for real hosts. Open MPI calls `<agent> [opts] <host> <cmd...>`;
# the command is one shell line split into words (ssh joins them back the same way).
cat >"$TMP/netns_agent.sh" <<EOF
#!/bin/sh
while [ \$# -gt 0 ]; do case "\$1" in -*) shift ;; *) break ;; esac; done
host=\$1; shift
case "\$host" in
  $IP1) ns=$H1 ;;
  $IP2) ns=$H2 ;;
  *) echo "netns_agent: unknown host '\$host'" >&2; exit 255 ;;
esac
echo "\$host -> \$ns: \$*" >>"$TMP/agent.log"
exec ip netns exec "\$ns" /bin/sh -c "\$*"
EOF
# Each rank records where it runs, then becomes train (same pid, so the same namespace).
cat >"$TMP/rank.sh" <<EOF
#!/bin/sh
r=\${OMPI_COMM_WORLD_RANK:-x}
{
  echo "rank=\$r"
  echo "pid=\$\$"
  echo "netns=\$(ip netns identify \$\$)"
  echo "ipv4=\$(ip -4 -o addr show dev veth0 2>/dev/null | awk '{print \$4}')"
} >"$TMP/rank_\$r.where"
exec "\$@"
EOF
chmod +x "$TMP/netns_agent.sh" "$TMP/rank.sh"

# A corpus every Debian machine has (base-files' licence texts, ~90 KB of English), so the test
# needs no prepared data.
cat /usr/share/common-licenses/{GPL-3,LGPL-3,Apache-2.0,GFDL-1.3} >"$TMP/corpus.txt"
"$BUILD/tokenize" --tokenizer byte --input "$TMP/corpus.txt" --output "$TMP/data" >/dev/null ||
  die "tokenizing the licence texts failed"
COMMON=(--config "$ROOT/configs/tiny.yaml"
        --set "data.train=$TMP/data/train_*.bin" --set "data.val=$TMP/data/val_*.bin"
        --set train.total_batch_size=768 --set "train.max_steps=$STEPS"
        --set eval.interval=0 --set log.interval=1)

# ---- reference: one process, the whole batch ---------------------------------------------------
cd "$ROOT"
t0=$EPOCHREALTIME
OMP_NUM_THREADS=1 "$TRAIN" "${COMMON[@]}" --set train.batch_size=12 \
  --set "checkpoint.dir=$TMP/ref" >"$TMP/ref.log" 2>&1 ||
  { tail -20 "$TMP/ref.log" >&2; die "reference 1-process run failed"; }
grep -q "on each of 1 rank(s)" "$TMP/ref.log" || die "reference run did not report 1 rank"
t1=$EPOCHREALTIME

# ---- two hosts: mpirun in h1, one rank per host, TCP only -------------------------------------
# In the background + wait, so that a signal to this script is handled at once (the trap then
# stops mpirun and empties the namespaces) instead of after mpirun returns.
timeout -k 10 "$TIMEOUT" ip netns exec "$H1" \
  "$MPIRUN" --allow-run-as-root -np 2 --host "$IP1:1,$IP2:1" --map-by node --bind-to none \
    --wdir "$ROOT" \
    --mca plm_rsh_agent "$TMP/netns_agent.sh" --mca plm_rsh_no_tree_spawn 1 \
    --mca btl self,tcp --mca btl_tcp_if_include "$SUBNET" --mca oob_tcp_if_include "$SUBNET" \
    --mca pml ob1 \
    -x OMP_NUM_THREADS=1 \
    "$TMP/rank.sh" "$TRAIN" "${COMMON[@]}" --set train.batch_size=6 \
      --set "checkpoint.dir=$TMP/mpi" </dev/null >"$TMP/mpi.log" 2>&1 &
MPIPID=$!
rc=0
wait "$MPIPID" || rc=$?
MPIPID=
t2=$EPOCHREALTIME
if [[ $rc -ne 0 ]]; then
  tail -40 "$TMP/mpi.log" >&2
  [[ -f $TMP/agent.log ]] && cat "$TMP/agent.log" >&2
  [[ $rc -eq 124 || $rc -eq 137 ]] && die "two-host mpirun timed out after ${TIMEOUT}s"
  die "two-host mpirun exited $rc"
fi
grep -E "^(model|dist|done): ." "$TMP/mpi.log" | sed 's/^/  | /'

# 1. two MPI ranks, all steps
grep -q "on each of 2 rank(s) (mpi)" "$TMP/mpi.log" || die "log does not say '2 rank(s) (mpi)'"
grep -q "^done: $STEPS steps" "$TMP/mpi.log" || die "log does not say 'done: $STEPS steps'"

# 2. one rank per namespace, on the expected address
for r in 0 1; do
  [[ -f $TMP/rank_$r.where ]] || die "rank $r left no record of where it ran"
  sed "s/^/  rank $r: /" "$TMP/rank_$r.where" | grep -E "netns=|ipv4="
done
want() { grep -qx "$2" "$TMP/rank_$1.where" || die "rank $1: expected '$2', got: $(tr '\n' ' ' <"$TMP/rank_$1.where")"; }
want 0 "netns=$H1"; want 0 "ipv4=$IP1/24"
want 1 "netns=$H2"; want 1 "ipv4=$IP2/24"
grep -q "^$IP2 -> $H2:" "$TMP/agent.log" 2>/dev/null || die "the rsh agent never started a daemon in $H2"

# 3. the gradients crossed the veth
params=$(sed -n 's/^model: \([0-9][0-9]*\) parameters.*/\1/p' "$TMP/mpi.log" | head -1)
[[ -n $params ]] || die "no parameter count in the log"
tx2=$(ip netns exec "$H2" cat /sys/class/net/veth0/statistics/tx_bytes)
rx2=$(ip netns exec "$H2" cat /sys/class/net/veth0/statistics/rx_bytes)
need=$((params * STEPS))
log "veth in $H2: sent $tx2 B, received $rx2 B (need >= $need B each way: 1 B/param/step)"
((tx2 >= need && rx2 >= need)) || die "too little traffic over the veth for $STEPS all-reduces"

# 4. same losses as the 1-process run
ref_metrics=$(find "$TMP/ref" -name metrics.jsonl | head -1)
mpi_metrics=$(find "$TMP/mpi" -name metrics.jsonl | head -1)
[[ -n $ref_metrics && -n $mpi_metrics ]] || die "metrics.jsonl missing under $TMP/ref or $TMP/mpi"
python3 - "$ref_metrics" "$mpi_metrics" "$STEPS" <<'EOF' || die "losses differ"
import json, sys
def losses(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rec = json.loads(line)
                if "loss" in rec and "step" in rec:
                    if rec["step"] in out:
                        sys.exit(f"{path}: step {rec['step']} logged twice")
                    out[rec["step"]] = rec["loss"]
    return out
ref, mpi, steps = losses(sys.argv[1]), losses(sys.argv[2]), int(sys.argv[3])
want = list(range(1, steps + 1))
if sorted(ref) != want or sorted(mpi) != want:
    sys.exit(f"steps: 1 process {sorted(ref)}, 2 hosts {sorted(mpi)}, want 1..{steps}")
worst = 0.0
for s in want:
    rel = abs(mpi[s] - ref[s]) / max(abs(ref[s]), 1e-12)
    worst = max(worst, rel)
    print(f"  step {s:3d}: 1 process {ref[s]:.6f}  2 hosts {mpi[s]:.6f}  rel {rel:.1e}")
print(f"  worst relative difference {worst:.1e} (limit 1e-4)")
sys.exit(0 if worst <= 1e-4 else 1)
EOF

awk -v a="$t0" -v b="$t1" -v c="$t2" \
  'BEGIN { printf "two_hosts: PASS (1-process run %.1fs, two-host run %.1fs)\n", b - a, c - b }'
