#!/usr/bin/python3
"""Draws train/val loss (and the learning rate) from a tessera run's metrics.jsonl to a PNG.

usage: scripts/plot.py checkpoints/tiny/metrics.jsonl [-o loss.png]
       scripts/plot.py checkpoints/tiny/metrics.jsonl checkpoints/tiny-wsd/metrics.jsonl -o runs.png
       scripts/plot.py --contexts lengthgen.csv [-o lengthgen.png] [--trained 128]

Several metrics.jsonl files draw their runs side by side, each in a colour of its own named by its
run directory: losses above, learning rates below, on one step axis. Runs whose evaluations scored
multiple-choice items (eval.choices: "choices_acc", "choices_acc_norm") or answered prompts
(eval.answers: "answers_exact", "answers_formed") get a panel of those shares between the two.

--contexts draws loss against context length from a CSV with columns model,context,loss (what
scripts/lengthgen.sh writes), one line per model, the context axis in powers of two; --trained
marks the length the models trained at.

metrics.jsonl holds one JSON object per line; lines with "loss" are training steps, lines with
"val_loss" are evaluations ("val_loss_ema", the weights' moving average's, dashed), lines with
"event" (e.g. a rollback) are marked as vertical lines.
Runs with Debian's python3-matplotlib (/usr/bin/python3).
"""
import argparse
import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", nargs="+",
                    help="metrics.jsonl of one run or more (or, with --contexts, the CSV)")
    ap.add_argument("-o", "--output", default=None,
                    help="PNG to write (default, for one file: next to it)")
    ap.add_argument("--contexts", action="store_true",
                    help="the input is a model,context,loss CSV: plot loss vs context length")
    ap.add_argument("--trained", type=int, default=0, help="--contexts: the trained length")
    ap.add_argument("--ymax", type=float, default=None,
                    help="top of the loss axis (the first steps' losses dwarf the rest)")
    args = ap.parse_args()
    if len(args.metrics) > 1 and not args.output:
        sys.exit("plot.py: several inputs need -o, the PNG to write")
    if args.contexts:
        if len(args.metrics) > 1:
            sys.exit("plot.py: --contexts takes one CSV")
        args.metrics = args.metrics[0]
        plot_contexts(args)
        return
    runs = [read_run(path) for path in args.metrics]
    if len(runs) == 1:
        plot_run(runs[0], args.output or args.metrics[0].rsplit(".", 1)[0] + ".png", args.ymax)
    else:
        plot_runs(runs, args.metrics, args.output, args.ymax)


def read_run(path):
    """The (step, value) series of one metrics.jsonl: train loss, val loss, lr, events, the
    multiple-choice accuracies (step, acc, acc_norm) and the answers' shares (step, exact, formed)."""
    train, val, val_ema, lr, events, choices, answers = [], [], [], [], [], [], []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{n}: not JSON ({e.msg})")
                step = rec.get("step")
                if step is None:
                    continue
                if "loss" in rec:
                    train.append((step, rec["loss"]))
                if "lr" in rec:
                    lr.append((step, rec["lr"]))
                if "val_loss" in rec:
                    val.append((step, rec["val_loss"]))
                if "val_loss_ema" in rec:
                    val_ema.append((step, rec["val_loss_ema"]))
                if "event" in rec:
                    events.append((step, rec["event"]))
                if "choices_acc" in rec:
                    choices.append((step, rec["choices_acc"], rec.get("choices_acc_norm")))
                if "answers_exact" in rec:
                    answers.append((step, rec["answers_exact"], rec.get("answers_formed")))
    except OSError as e:
        sys.exit(f"{path}: {e.strerror}")
    if not train and not val:
        sys.exit(f"{path}: no loss records")
    return {"train": train, "val": val, "val_ema": val_ema, "lr": lr, "events": events,
            "choices": choices, "answers": answers}


def plot_run(run, out, ymax=None):
    train, val, lr, events = run["train"], run["val"], run["lr"], run["events"]
    if run["choices"] or run["answers"]:
        fig, (ax, ax_mc) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True,
                                        gridspec_kw={"height_ratios": [3, 1.2]})
        for key, names in (("choices", ("acc", "acc_norm")), ("answers", ("exact", "formed"))):
            if run[key]:
                steps, first, second = zip(*run[key])
                ax_mc.plot(steps, first, "o-", ms=3, label=names[0])
                ax_mc.plot(steps, second, "s--", ms=3, label=names[1])
        ax_mc.set_ylabel("share right")
        ax_mc.set_xlabel("step")  # below the panel, which shares the loss plot's step axis
        ax_mc.grid(alpha=0.3)
        ax_mc.legend(fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.set_xlabel("step")
    if train:
        ax.plot(*zip(*train), lw=0.8, alpha=0.8, label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="val loss")
    if run["val_ema"]:
        ax.plot(*zip(*run["val_ema"]), "s--", ms=3, label="ema val loss")
    for step, name in events:
        ax.axvline(step, color="red", lw=0.6, ls="--")
        ax.text(step, ax.get_ylim()[1], name, color="red", fontsize=7, rotation=90, va="top")
    ax.set_ylabel("loss (nats per token)")
    ax.set_ylim(top=ymax)
    ax.grid(alpha=0.3)
    if lr:
        ax2 = ax.twinx()
        ax2.plot(*zip(*lr), color="gray", lw=0.6, alpha=0.6, label="lr")
        ax2.set_ylabel("learning rate")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


def run_names(paths):
    """Each file's run directory name; the whole folder path where two names are the same."""
    names = [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in paths]
    return [os.path.dirname(p) or "." if names.count(n) > 1 else n for p, n in zip(paths, names)]


def plot_runs(runs, paths, out, ymax=None):
    scores = any(run["choices"] or run["answers"] for run in runs)
    if scores:
        fig, (ax, ax_mc, ax_lr) = plt.subplots(3, 1, figsize=(8, 8), sharex=True,
                                               gridspec_kw={"height_ratios": [3, 1.2, 1]})
    else:
        fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True,
                                        gridspec_kw={"height_ratios": [3, 1]})
    for i, (run, name) in enumerate(zip(runs, run_names(paths))):
        color = f"C{i}"
        if run["train"]:
            ax.plot(*zip(*run["train"]), color=color, lw=0.6, alpha=0.35)
        if run["val"]:
            ax.plot(*zip(*run["val"]), "o-", color=color, ms=3, lw=1.2,
                    label=f"{name}: val {run['val'][-1][1]:.4f} at step {run['val'][-1][0]}")
        elif run["train"]:
            ax.plot([], [], color=color, label=f"{name} (train)")
        if run["val_ema"]:
            step, loss = run["val_ema"][-1]
            ax.plot(*zip(*run["val_ema"]), "s--", color=color, ms=3, lw=1.0,
                    label=f"{name}: ema val {loss:.4f} at step {step}")
        for step, _ in run["events"]:
            ax.axvline(step, color=color, lw=0.6, ls="--")
        if run["lr"]:
            ax_lr.plot(*zip(*run["lr"]), color=color, lw=1.0)
        if run["choices"]:
            steps, _, norm = zip(*run["choices"])
            ax_mc.plot(steps, norm, "o-", color=color, ms=3, lw=1.2,
                       label=f"{name}: acc_norm {norm[-1]:.4f} at step {steps[-1]}")
        if run["answers"]:
            steps, exact, _ = zip(*run["answers"])
            ax_mc.plot(steps, exact, "s--", color=color, ms=3, lw=1.2,
                       label=f"{name}: exact {exact[-1]:.4f} at step {steps[-1]}")
    if scores:
        ax_mc.set_ylabel("acc_norm, exact")
        ax_mc.grid(alpha=0.3)
        ax_mc.legend(fontsize=8)
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("train loss (thin), val loss (dots; the moving average's dashed)", fontsize=9)
    ax.set_ylim(top=ymax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
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
