#!/usr/bin/python3
"""Draws train/val loss (and the learning rate) from a tessera run's metrics.jsonl to a PNG.

usage: scripts/plot.py checkpoints/tiny/metrics.jsonl [-o loss.png]
       scripts/plot.py --contexts lengthgen.csv [-o lengthgen.png] [--trained 128]

--contexts draws loss against context length from a CSV with columns model,context,loss (what
scripts/lengthgen.sh writes), one line per model, the context axis in powers of two; --trained
marks the length the models trained at.

metrics.jsonl holds one JSON object per line; lines with "loss" are training steps, lines with
"val_loss" are evaluations, lines with "event" (e.g. a rollback) are marked as vertical lines.
Runs with Debian's python3-matplotlib (/usr/bin/python3).
"""
import argparse
import csv
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", help="path to metrics.jsonl (or, with --contexts, the CSV)")
    ap.add_argument("-o", "--output", default=None, help="PNG to write (default: next to metrics)")
    ap.add_argument("--contexts", action="store_true",
                    help="the input is a model,context,loss CSV: plot loss vs context length")
    ap.add_argument("--trained", type=int, default=0, help="--contexts: the trained length")
    args = ap.parse_args()
    if args.contexts:
        plot_contexts(args)
        return

    train, val, lr, events = [], [], [], []
    try:
        with open(args.metrics) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"{args.metrics}:{n}: not JSON ({e.msg})")
                step = rec.get("step")
                if step is None:
                    continue
                if "loss" in rec:
                    train.append((step, rec["loss"]))
                if "lr" in rec:
                    lr.append((step, rec["lr"]))
                if "val_loss" in rec:
                    val.append((step, rec["val_loss"]))
                if "event" in rec:
                    events.append((step, rec["event"]))
    except OSError as e:
        sys.exit(f"{args.metrics}: {e.strerror}")
    if not train and not val:
        sys.exit(f"{args.metrics}: no loss records")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*train), lw=0.8, alpha=0.8, label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="val loss")
    for step, name in events:
        ax.axvline(step, color="red", lw=0.6, ls="--")
        ax.text(step, ax.get_ylim()[1], name, color="red", fontsize=7, rotation=90, va="top")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    if lr:
        ax2 = ax.twinx()
        ax2.plot(*zip(*lr), color="gray", lw=0.6, alpha=0.6, label="lr")
        ax2.set_ylabel("learning rate")
    ax.legend(loc="upper right")
    out = args.output or args.metrics.rsplit(".", 1)[0] + ".png"
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


def plot_contexts(args):
    series = {}  # model -> [(context, loss)], in file order
    try:
        with open(args.metrics, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"{args.metrics}: {e.strerror}")
    for n, row in enumerate(rows, 2):
        try:
            series.setdefault(row["model"], []).append((int(row["context"]), float(row["loss"])))
        except (KeyError, TypeError, ValueError):
            sys.exit(f"{args.metrics}:{n}: expected columns model,context,loss, got {row}")
    if not series:
        sys.exit(f"{args.metrics}: no rows")

    fig, ax = plt.subplots(figsize=(8, 5))
    for model, points in series.items():
        points.sort()
        ax.plot(*zip(*points), "o-", ms=3, lw=1.2, label=model)
    if args.trained:
        ax.axvline(args.trained, color="gray", lw=0.8, ls="--")
        ax.text(args.trained, ax.get_ylim()[0], " trained", color="gray", fontsize=8, va="bottom")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("validation loss (nats per token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    out = args.output or args.metrics.rsplit(".", 1)[0] + ".png"
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
