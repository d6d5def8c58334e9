#!/usr/bin/env bash
# scripts/bench_moe.sh at a small batch: tessera's row, and (where /usr/bin/python3 has torch) each
# PyTorch row, come out with figures in all three columns, and scripts/bench_moe_torch.py's two
# models hold as many parameters as bench_gpu counts in configs/llama-small.yaml and
# configs/moe-small.yaml (so the twins cannot drift from the configs unseen).
# Usage: tests/scripts/bench_moe_smoke.sh BUILD_DIR   (a build with bench_gpu)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$(cd "$1" && pwd)"
fail() { echo "FAIL: $*" >&2; exit 1; }
out=$(NO_BUILD=1 BUILD_DIR="$build" BATCH=2 SEQ=32 STEPS=1 WARMUP=1 "$root/scripts/bench_moe.sh")
echo "$out"
num='[0-9]+'
grep -qE "^tessera \(OpenMP x [0-9]+\) +$num +$num +$num\.$num$" <<<"$out" || fail "no tessera row"
source "$root/scripts/torch_env.sh"
if grep -q '^PyTorch comparison skipped' <<<"$out"; then
  echo "ok (no torch: PyTorch's rows skipped)"
  exit 0
fi
rows=$(grep -cE "^PyTorch[ ,].* +$num +$num +$num\.$num$" <<<"$out") || true
[ "$rows" = 3 ] || fail "$rows PyTorch rows with figures, not 3"
grep -qE "^tessera / PyTorch .* +$num\.$num +$num\.$num +-$" <<<"$out" || fail "no ratio row"
# bench_gpu's "N parameters" lines, llama-small's first, against the twins' counts.
read -r -d '' dense moe < <(sed -n 's/^bench_gpu: \([0-9]*\) parameters.*/\1/p' <<<"$out") || true
json=$(cd "$root/scripts" && torch_python bench_moe_torch.py --threads 1 --batch 1 --seq 8 \
  --steps 1 --warmup 0)
"$TORCH_PYTHON" - "$json" "$dense" "$moe" <<'PY' || fail "parameter counts differ"
import json, sys
r = json.loads(sys.argv[1])
got, want = (r["dense"]["params"], r["moe"]["params"]), (int(sys.argv[2]), int(sys.argv[3]))
assert got == want, f"PyTorch twins {got}, tessera {want}"
PY
echo ok
