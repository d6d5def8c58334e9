#!/usr/bin/env python3
"""PyTorch twin of build/bench_gpu --device cpu (scripts/bench_cpu.sh): a GPT-2-style training step
on the CPU in f32, the shapes given by flags.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/bench_cpu_torch.py --threads 2 --batch 2 --seq 256

The model is scripts/torch_gpt.py's (nothing from tessera), the vocabulary padded as tessera's
logits are (--vocab 50304 for GPT-2's 50257). A step is what bench_gpu times: forward + loss,
backward, clip_grad_norm_(1.0), AdamW (lr 6e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on 2-D
tensors only), zero_grad, loss.item(), on one fixed random batch drawn before the clock starts.
Prints one JSON line: the median ms per step over --steps steps after --warmup untimed ones.

Threads: torch.set_num_threads(--threads) for PyTorch's own kernels; Debian's torch runs its gemms
through OpenBLAS, whose threads follow OPENBLAS_NUM_THREADS (read when torch loads) instead, so
bench_cpu.sh runs this under more than one split and keeps PyTorch's best.
"""
import argparse
import json
import os
import statistics
import time

import torch

from torch_gpt import GPT, adamw, train_step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--n-embd", type=int, default=768)
    ap.add_argument("--n-head", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1337)
    model = GPT(a.n_layer, a.n_embd, a.n_head, a.vocab, a.seq)
    opt = adamw(model, lr=6e-4)
    data = torch.randint(0, a.vocab, (a.batch, a.seq + 1))
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    times = []
    for _ in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        last = train_step(model, model, opt, x, y)
        times.append(1e3 * (time.perf_counter() - t0))
    timed = times[a.warmup:]
    print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "threads": a.threads,
                      "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
                      "batch": a.batch, "seq": a.seq,
                      "params": sum(p.numel() for p in model.parameters()),
                      "median_ms": round(statistics.median(timed), 1),
                      "last_loss": round(last, 4)}), flush=True)


if __name__ == "__main__":
    main()
