#!/usr/bin/env python3
"""PyTorch twin of scripts/bench_dp.sh's runs: configs/tiny.yaml trained data-parallel on the CPU.

    /usr/bin/python3 scripts/bench_dp_torch.py --ranks 2 [--threads 1] [--steps 60] [--warmup 10]

The model is configs/tiny.yaml in plain PyTorch (scripts/torch_gpt.py, shared with
scripts/bench_gpu.py; nothing from tessera): byte-level vocabulary 257, 4 layers, 128 channels,
4 heads, context 64, learned positions, LayerNorm, tanh-GELU MLP of 4 x 128, fused qkv,
materialised causal attention on Debian's PyTorch 1.13 (as tessera's CPU path), tied embedding and
head, biases, no dropout; f32. AdamW lr 1e-3, betas
0.9/0.95, eps 1e-8, weight decay 0.1 on 2-D tensors only, clip_grad_norm_(1.0), constant lr.

Data parallelism as PyTorch users run it on CPUs: --ranks N processes (torch.multiprocessing,
MASTER_ADDR 127.0.0.1 and a free port), torch.distributed over gloo, the model wrapped in
DistributedDataParallel (default buckets: 25 MiB, the first 1 MiB, all-reduce overlapped with
backward). One step takes a global batch of 12 sequences x 64 tokens (768 tokens, as bench_dp.sh),
12 / N per rank, no accumulation; the batches are random tokens from a fixed seed, drawn before
the clock starts. --ranks 1 trains the plain model (no DDP, no process group) unless --ddp.
Each rank runs torch.set_num_threads(--threads) and, unless OPENBLAS_NUM_THREADS is set, one
OpenBLAS thread (see below).

A step is forward + backward (+ DDP's all-reduce) + clip + AdamW step + zero_grad + loss.item(),
timed with time.perf_counter on every rank; rank 0 prints one JSON line with the median and mean
ms per step over the --steps steps after --warmup untimed ones. scripts/bench_dp.sh passes
--warmup $WARMUP --steps $((STEPS - WARMUP)), the very steps it reads from tessera's metrics.jsonl.
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time

# Debian's torch does its gemms through OpenBLAS (the pthread build), whose own threads ignore
# torch.set_num_threads and default to one per core: a "1 thread" run would use every core, and a
# 2-thread run put 2 OpenBLAS threads next to 2 OpenMP threads on 2 cores (2x slower, measured).
# One BLAS thread, the --threads OpenMP threads for the rest: on 2 cores, one process, that is
# within noise of PyTorch's best (2026-11-30: 93.5 ms per step; 1 torch and 2 BLAS threads 90.6,
# 2 and 2 158). tessera likewise runs each BLAS call on one thread and spreads them over its team.
# Must be set before torch loads OpenBLAS; an OPENBLAS_NUM_THREADS already set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from torch_gpt import GPT, adamw, train_step

V, L, C, H, T = 257, 4, 128, 4, 64   # configs/tiny.yaml
GLOBAL_BATCH = 12                    # sequences per step: 768 tokens
SEED = 1337


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, args, port):
    torch.set_num_threads(args.threads)
    world = args.ranks
    ddp = world > 1 or args.ddp
    if ddp:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(SEED)  # the same initial model on every rank (DDP also broadcasts rank 0's)
    model = GPT(L, C, H, V, T)
    params = sum(p.numel() for p in model.parameters())
    opt = adamw(model, lr=1e-3)
    net = nn.parallel.DistributedDataParallel(model) if ddp else model

    # Every step's global batch of random tokens, the same on every rank; rank r takes its rows.
    steps = args.warmup + args.steps
    b = GLOBAL_BATCH // world
    g = torch.Generator().manual_seed(SEED)
    data = torch.randint(0, V - 1, (steps, GLOBAL_BATCH, T + 1), generator=g)
    data = data[:, rank * b:(rank + 1) * b].contiguous()

    times = []
    for s in range(steps):
        x, y = data[s, :, :T], data[s, :, 1:]
        t0 = time.perf_counter()
        last = train_step(net, model, opt, x, y)
        times.append(1e3 * (time.perf_counter() - t0))
    timed = times[args.warmup:]
    if rank == 0:
        print(json.dumps({
            "impl": "pytorch", "torch": torch.__version__, "ranks": world, "threads": args.threads,
            "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "ddp": ddp, "backend": "gloo" if ddp else None, "batch_per_rank": b, "seq": T,
            "tokens_per_step": GLOBAL_BATCH * T, "params": params, "warmup": args.warmup,
            "steps": args.steps, "median_ms": round(statistics.median(timed), 3),
            "mean_ms": round(statistics.mean(timed), 3), "last_loss": round(last, 4)}),
            flush=True)
    if ddp:
        dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per rank")
    ap.add_argument("--steps", type=int, default=60, help="timed steps")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    ap.add_argument("--ddp", action="store_true", help="wrap in DDP (gloo) also on one rank")
    args = ap.parse_args()
    if args.ranks < 1 or GLOBAL_BATCH % args.ranks:
        sys.exit(f"bench_dp_torch.py: --ranks must divide the global batch {GLOBAL_BATCH}")
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        sys.exit("bench_dp_torch.py: --steps >= 1, --warmup >= 0, --threads >= 1")
    if args.ranks == 1 and not args.ddp:
        worker(0, args, None)
    else:
        mp.spawn(worker, args=(args, free_port()), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    main()
