#!/usr/bin/env bash
# scripts/plot.py on hand-written metrics.jsonl files: one run, two runs side by side (named by
# their run directories, the last validation loss in the legend), multiple-choice accuracies and
# answers' shares in their own panel, the errors that name a file and line, and several inputs
# without -o. Skipped (77) without Debian's matplotlib.
# Usage: tests/scripts/plot_smoke.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
py=/usr/bin/python3
"$py" -c "import matplotlib" 2>/dev/null || { echo "no matplotlib for $py: skipped"; exit 77; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
mkdir -p "$work/cosine" "$work/wsd"
for run in cosine wsd; do
  for s in 1 2 3 4; do
    lr=$([ "$run" = wsd ] && echo 0.001 || awk "BEGIN { print 0.001 / $s }")
    echo "{\"step\": $s, \"loss\": $((6 - s)).5, \"lr\": $lr}"
  done >"$work/$run/metrics.jsonl"
  echo "{\"step\": 4, \"val_loss\": $([ "$run" = wsd ] && echo 1.25 || echo 1.5)}" >>"$work/$run/metrics.jsonl"
done
echo '{"step": 3, "event": "rollback"}' >>"$work/wsd/metrics.jsonl"
echo '{"step": 4, "val_loss_ema": 1.125}' >>"$work/wsd/metrics.jsonl"  # train.ema_decay's
# Multiple-choice accuracies in one run only: their panel holds that run's line alone.
for s in 2 4; do
  echo "{\"step\": $s, \"choices_acc\": 0.2$s, \"choices_acc_norm\": 0.3$s, \"choices_items\": 50}"
done >>"$work/wsd/metrics.jsonl"
# The answers' shares in the other run: the panel holds its exact line beside wsd's acc_norm.
for s in 2 4; do
  echo "{\"step\": $s, \"answers_exact\": 0.0$s, \"answers_formed\": 0.9$s, \"answers_items\": 9}"
done >>"$work/cosine/metrics.jsonl"
out=$("$py" "$root/scripts/plot.py" "$work/cosine/metrics.jsonl")
[ "$out" = "$work/cosine/metrics.png" ] && [ -s "$out" ] || fail "one run: '$out'"
out=$("$py" "$root/scripts/plot.py" "$work/wsd/metrics.jsonl")
[ "$out" = "$work/wsd/metrics.png" ] && [ -s "$out" ] || fail "one run with choices: '$out'"
out=$("$py" "$root/scripts/plot.py" "$work/cosine/metrics.jsonl" "$work/wsd/metrics.jsonl" \
  -o "$work/both.png" --ymax 5)
[ "$out" = "$work/both.png" ] && [ -s "$work/both.png" ] || fail "two runs: '$out'"
# The legend's labels, as the figure has them.
labels=$("$py" - "$root/scripts/plot.py" "$work" <<'PY'
import importlib.util, sys
import matplotlib.pyplot as plt
spec = importlib.util.spec_from_file_location("plot", sys.argv[1])
plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)
paths = [f"{sys.argv[2]}/{r}/metrics.jsonl" for r in ("cosine", "wsd")]
saved = []
plt.Figure.savefig = lambda fig, *a, **k: saved.append(fig)
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()):  # its "unused.png" line
    plot.plot_runs([plot.read_run(p) for p in paths], paths, "unused.png")
print("|".join(t.get_text() for t in saved[0].axes[0].get_legend().get_texts()))
print("|".join(t.get_text() for t in saved[0].axes[1].get_legend().get_texts()))
run = plot.read_run(paths[1])
with contextlib.redirect_stdout(io.StringIO()):
    plot.plot_run(run, "unused.png")
print("|".join(t.get_text() for t in saved[1].axes[1].get_legend().get_texts()),
      [list(line.get_ydata()) for line in saved[1].axes[1].get_lines()])
with contextlib.redirect_stdout(io.StringIO()):
    plot.plot_run(plot.read_run(paths[0]), "unused.png")
print("|".join(t.get_text() for t in saved[2].axes[1].get_legend().get_texts()),
      [list(line.get_ydata()) for line in saved[2].axes[1].get_lines()])
PY
)
[ "$labels" = "cosine: val 1.5000 at step 4|wsd: val 1.2500 at step 4|wsd: ema val 1.1250 at step 4
cosine: exact 0.0400 at step 4|wsd: acc_norm 0.3400 at step 4
acc|acc_norm [[0.22, 0.24], [0.32, 0.34]]
exact|formed [[0.02, 0.04], [0.92, 0.94]]" ] || fail "labels '$labels'"
if "$py" "$root/scripts/plot.py" "$work/cosine/metrics.jsonl" "$work/wsd/metrics.jsonl" \
  >"$work/err" 2>&1; then fail "two inputs without -o"; fi
grep -q "several inputs need -o" "$work/err" || fail "$(cat "$work/err")"
echo '{"step": 5, "loss": ' >>"$work/wsd/metrics.jsonl"
if "$py" "$root/scripts/plot.py" "$work/cosine/metrics.jsonl" "$work/wsd/metrics.jsonl" \
  -o "$work/x.png" >"$work/err" 2>&1; then fail "a broken line was drawn"; fi
grep -q "$work/wsd/metrics.jsonl:10: not JSON" "$work/err" || fail "$(cat "$work/err")"
echo ok
