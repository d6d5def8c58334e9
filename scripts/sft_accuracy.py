#!/usr/bin/env python3
"""Exact-match accuracy of a checkpoint's greedy answers to prompt/response examples.

  scripts/sft_accuracy.py CHECKPOINT EXAMPLES.jsonl [--from N] [--every K] [--base BASE]

For each chosen example (JSON Lines of {"prompt", "response"}, as `tokenize --format sft` reads
them; examples N, N + K, N + 2K, ... counted from 1), continues the prompt greedily (one
`build/generate --prompts FILE --temperature 0` for all of them, the model loaded once) and
compares what follows the prompt, up to the end-of-text id, with the response. Prints
how many answers equal their response exactly, how many equal some response of the file (a
well-formed answer: one of the labels, then the end of text), and the share the most common
response has among the chosen examples (what always answering it would score). Give --from the
first example `tokenize` put in the validation split (it prints the range) to score held-out ones.
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("checkpoint")
    p.add_argument("examples")
    p.add_argument("--from", dest="start", type=int, default=1, help="first example (1-based)")
    p.add_argument("--every", type=int, default=1, help="take every K-th example from there")
    p.add_argument("--base", help="a LoRA checkpoint's base, where it moved since training")
    p.add_argument("--build", default=os.environ.get("BUILD_DIR", "build"))
    a = p.parse_args()
    if a.start < 1 or a.every < 1:
        sys.exit("sft_accuracy: --from and --every must be at least 1")

    rows = []
    with open(a.examples, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if set(row) - {"prompt", "response"}:
                sys.exit(f"sft_accuracy: {a.examples} line {n}: only prompt/response examples")
            rows.append((row.get("prompt", ""), row.get("response", "")))
    labels = {r for _, r in rows}
    chosen = rows[a.start - 1 :: a.every]
    if not chosen:
        sys.exit(f"sft_accuracy: {a.examples} holds {len(rows)} examples, none from {a.start}")

    longest = max(len(r.encode()) for _, r in chosen)  # bytes >= tokens for every tokenizer here
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", encoding="utf-8") as prompts:
        for prompt, _ in chosen:
            prompts.write(json.dumps({"prompt": prompt}) + "\n")
        prompts.flush()
        cmd = [os.path.join(a.build, "generate"), "--checkpoint", a.checkpoint, "--prompts",
               prompts.name, "--temperature", "0", "--max-new-tokens", str(longest + 1)]
        if a.base:
            cmd += ["--base", a.base]
        run = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
    lines = run.stdout.splitlines()
    if run.returncode != 0 or len(lines) != len(chosen):
        sys.exit(f"sft_accuracy: {' '.join(cmd[:3])} failed ({len(lines)} of {len(chosen)} "
                 f"answers): {run.stderr.strip()}")
    exact = formed = 0
    for line, (prompt, response) in zip(lines, chosen):
        row = json.loads(line)
        if row["prompt"] != prompt:
            sys.exit(f"sft_accuracy: generate answered {row['prompt']!r} for {prompt!r}")
        answer = row["completion"]
        exact += answer == response
        formed += answer in labels
    label, count = collections.Counter(r for _, r in chosen).most_common(1)[0]
    n = len(chosen)
    print(f"{a.checkpoint}: {n} examples ({a.examples}, from {a.start}, every {a.every}): "
          f"{exact} exact ({100 * exact / n:.1f}%), {formed} answer some response of the file "
          f"({100 * formed / n:.1f}%); always {label.strip()!r} would score {count} "
          f"({100 * count / n:.1f}%)")


if __name__ == "__main__":
    main()
