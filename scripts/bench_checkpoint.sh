#!/usr/bin/env bash
# Builds and runs build/bench_checkpoint (src/apps/bench_checkpoint.cpp): the time to save and load a
# GPT checkpoint with AdamW's state (GPT-2 124M by default: 1.5 GB), with the digests computed by the
# CPU's instructions and by the portable code (TESSERA_DIGEST=portable), beside:
#   sha256sum and OpenSSL (Python's hashlib) hashing the same file;
#   PyTorch's torch.save / torch.load of the same tensors (scripts/bench_checkpoint_torch.py), when
#   TORCH_PYTHON (default /usr/bin/python3: apt-get install python3-torch) imports torch; with
#   glibc's malloc asking for huge pages as tessera's tensors do (scripts/torch_env.sh).
# Usage: scripts/bench_checkpoint.sh [bench_checkpoint flags, e.g. --n-layer 2 --repeats 5]
#   BUILD_DIR (default build), DIR (where the files go, default checkpoints/bench_checkpoint).
# Every file is read from the page cache (each is written just before): the rows compare the CPU's
# work, not the disk's.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
DIR="${DIR:-checkpoints/bench_checkpoint}"
source scripts/torch_env.sh
source scripts/configure.sh
configure "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target bench_checkpoint >/dev/null
[ -e "$DIR/bench.h5" ] && { echo "bench_checkpoint.sh: $DIR/bench.h5 exists; remove it" >&2; exit 1; }

# ms_of CMD...: wall milliseconds of one run.
ms_of() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}

echo "== tessera, digests by the CPU's instructions"
"$BUILD_DIR/bench_checkpoint" --dir "$DIR" --keep "$@" | tee /tmp/bench_checkpoint.$$.best
file="$DIR/bench.h5"
mb=$(($(stat -c %s "$file") / 1000000))
cat "$file" >/dev/null
echo "== the same file ($mb MB) hashed by other tools"
printf '%-28s %8s %8s\n' tool ms MB/s
sum_ms=$(ms_of sha256sum "$file")
printf '%-28s %8d %8d\n' "sha256sum ($(sha256sum --version | head -1 | awk '{print $NF}'))" \
  "$sum_ms" $((mb * 1000 / (sum_ms > 0 ? sum_ms : 1)))
if ssl_ms=$(ms_of "$TORCH_PYTHON" -c "
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], 'rb') as f:
    while (b := f.read(1 << 20)):
        h.update(b)" "$file" 2>/dev/null); then
  printf '%-28s %8d %8d\n' "OpenSSL (Python hashlib)" "$ssl_ms" $((mb * 1000 / (ssl_ms > 0 ? ssl_ms : 1)))
fi
rm -f "$file" "$file.sha256"

echo "== tessera, digests by the portable code (TESSERA_DIGEST=portable)"
TESSERA_DIGEST=portable "$BUILD_DIR/bench_checkpoint" --dir "$DIR" "$@" | tee /tmp/bench_checkpoint.$$.portable

echo "== PyTorch (torch.save with fsync, torch.load)"
flags=()
for f in n-layer n-embd vocab seq repeats; do
  v=$(printf '%s\n' "$@" | awk -v f="--$f" 'p { print; exit } $0 == f { p = 1 }')
  [ -n "$v" ] && flags+=("--$f" "$v")
done
if torch_json=$(torch_python scripts/bench_checkpoint_torch.py --dir "$DIR" "${flags[@]}" 2>&1); then
  echo "$torch_json"
  "$TORCH_PYTHON" - "$torch_json" /tmp/bench_checkpoint.$$.best /tmp/bench_checkpoint.$$.portable \
    "$TORCH_TUNABLES" <<'EOF'
import json, sys
t = json.loads(sys.argv[1].strip().splitlines()[-1])
def rows(path):
    return {l.split()[0]: float(l.split()[1]) for l in open(path) if l.split()[0] in ("save", "load")}
best, portable = rows(sys.argv[2]), rows(sys.argv[3])
print(f"\n{'row':6} {'tessera ms':>11} {'portable ms':>12} {'PyTorch ms':>11} {'tessera/PyTorch':>16}")
for r in ("save", "load"):
    print(f"{r:6} {best[r]:11.0f} {portable[r]:12.0f} {t[r + '_ms']:11.0f} {best[r] / t[r + '_ms']:16.2f}")
print("(time ratios: below 1 is tessera faster; tessera's save and load include a SHA-256 of the"
      " file and a CRC-32C of every tensor, PyTorch " + t["torch"] + "'s zip writer a CRC-32 per record as it saves;"
      " PyTorch ran with GLIBC_TUNABLES='" + sys.argv[4] + "', scripts/torch_env.sh)")
EOF
else
  echo "PyTorch comparison skipped: $TORCH_PYTHON could not run scripts/bench_checkpoint_torch.py:"
  echo "$torch_json" | tail -3
fi
rm -f /tmp/bench_checkpoint.$$.best /tmp/bench_checkpoint.$$.portable
rmdir "$DIR" 2>/dev/null || true
