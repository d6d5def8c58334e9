#!/usr/bin/env bash
# build/bench_gpu --device cpu (the dry run of the GPU benchmark, and what scripts/bench_cpu.sh
# times) on configs/tiny.yaml: its line and its JSON carry the step's time and losses, and no MFU,
# since a GPU's peak says nothing of a CPU's arithmetic rate; with --documents its line says so
# and its first loss differs (the same weights; separators in the batch, attended within documents);
# with --muon its line and JSON say so, its first loss is the same and its last is not.
# Usage: tests/scripts/bench_gpu_cpu_smoke.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$1/bench_gpu"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
out=$("$bin" --device cpu --config configs/tiny.yaml --steps 2 --warmup 1 --no-kernels \
  --json "$dir/bench.json")
echo "$out"
line=$(grep '^bench_gpu: [0-9.]* ms/step' <<<"$out") || { echo "FAIL: no ms/step line" >&2; exit 1; }
grep -q 'MFU n/a' <<<"$line" || { echo "FAIL: an MFU on the cpu: $line" >&2; exit 1; }
/usr/bin/env python3 - "$dir/bench.json" <<'PY'
import json, math, sys
r = json.load(open(sys.argv[1]))
assert r["mfu"] is None, f"mfu on the cpu: {r['mfu']}"
assert r["ms_per_step"] > 0 and r["tokens_per_s"] > 0, r
assert math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"]), r
assert r["batch"] == 12 and r["seq"] == 64 and r["documents"] == 0, r
PY
out=$("$bin" --device cpu --config configs/tiny.yaml --steps 1 --warmup 1 --no-kernels \
  --documents 16 --json "$dir/documents.json")
grep -q '^bench_gpu: .*, documents of 16 tokens,' <<<"$out" || { echo "FAIL: no documents: $out" >&2; exit 1; }
/usr/bin/env python3 - "$dir/bench.json" "$dir/documents.json" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
assert b["documents"] == 16, b
assert a["loss_first"] != b["loss_first"], (a["loss_first"], b["loss_first"])
PY
# --muon: the same first loss (the same weights, before any update), then Muon's updates.
out=$("$bin" --device cpu --config configs/tiny.yaml --steps 2 --warmup 1 --no-kernels --muon \
  --json "$dir/muon.json")
grep -q '^bench_gpu: .*, muon,' <<<"$out" || { echo "FAIL: no muon: $out" >&2; exit 1; }
/usr/bin/env python3 - "$dir/bench.json" "$dir/muon.json" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
assert (a["optimizer"], b["optimizer"]) == ("adamw", "muon"), (a["optimizer"], b["optimizer"])
assert a["loss_first"] == b["loss_first"], (a["loss_first"], b["loss_first"])
assert a["loss_last"] != b["loss_last"], (a["loss_last"], b["loss_last"])
PY
echo "ok"
