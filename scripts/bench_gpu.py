#!/usr/bin/env python3
"""PyTorch twin of build/bench_gpu: the same GPT-2 step and the same fused-kernel shapes.

    python3 scripts/bench_gpu.py --batch-size 8 [--seq 1024] [--steps 20] [--warmup 5] [--json F]
                                 [--seed 1337] [--device cpu]

The model is GPT-2 small in plain PyTorch (scripts/torch_gpt.py; nothing from tessera): 12 layers,
768 channels, 12 heads, learned positions, LayerNorm, tanh-GELU MLP, fused qkv, tied embedding and
head, vocabulary 50257 padded to 50304 as nanoGPT does (--vocab-pad 64; tessera pads its logits
to the same width itself; the tokens stay below 50257), biases; attention through
F.scaled_dot_product_attention(is_causal=True) (flash kernels on an H100). Mixed precision as PyTorch users run it: f32 parameters under
torch.autocast(bfloat16), loss in f32 (autocast's rule for cross_entropy), fused AdamW (lr 6e-4,
betas 0.9/0.95, eps 1e-8, weight decay 0.1 on 2-D tensors only), clip_grad_norm_(1.0), and the
model wrapped in torch.compile (its graph count is read from dynamo's counters after the warm-up:
none means it ran eager, and the impl says so). One step is forward + backward + clip + step + zero_grad + the
loss read back with .item(), on a fixed random batch already on the GPU, exactly as tessera's
bench times it; FLOPs per token are counted the same way (6 N + 12 L H Q T, N without the
position embedding, attention not halved; peak 989 TFLOP/s).

--device cpu runs the same step in f32 on the CPU (no autocast, torch.compile or fused AdamW, no
kernel table), beside `build/bench_gpu --device cpu`: the two benches' loss trajectories at a
small shape (docs/gpu-notes.md, "The two benches' losses"); its times say nothing about a GPU.
"""
import argparse
import contextlib
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from torch_gpt import GPT

PEAK_FLOPS = 989e12  # H100 SXM dense bf16


DEVICE = "cuda"


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def dynamo_counts():
    """(graphs compiled, graph breaks) from torch._dynamo's counters; (None, None) if unreadable."""
    try:
        from torch._dynamo.utils import counters
        return counters["stats"].get("unique_graphs", 0), sum(counters["graph_break"].values())
    except Exception:
        return None, None


def time_ms(f, warmup=3, reps=20):
    """Mean ms of one call over reps calls, the device synchronised around them (as tessera's)."""
    for _ in range(warmup):
        f()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    sync()
    return (time.perf_counter() - t0) * 1e3 / reps


def bench_kernels(rows, C, V, params):
    """The PyTorch counterparts of tessera's fused kernels, at the same shapes and dtypes."""
    dev, bf = "cuda", torch.bfloat16
    out = {}

    def run(name, f, nbytes):
        try:
            out[name] = {"ms": time_ms(f), "bytes": nbytes}
        except Exception as e:  # report and go on
            out[name] = {"ms": None, "bytes": nbytes, "note": str(e)[:200]}

    # Forward alone, and backward timed as (forward + backward) - forward; autograd.grad returns
    # fresh gradients (no accumulation into .grad, which tessera's kernels do not do either).
    x = torch.randn(rows, C, device=dev, dtype=bf, requires_grad=True)
    w = torch.ones(C, device=dev, dtype=bf, requires_grad=True)
    b = torch.zeros(C, device=dev, dtype=bf, requires_grad=True)
    dy = torch.randn(rows, C, device=dev, dtype=bf)
    with torch.no_grad():
        run("layernorm_fwd", lambda: F.layer_norm(x, (C,), w, b, 1e-5), 4.0 * rows * C)
    fb = time_ms(lambda: torch.autograd.grad(F.layer_norm(x, (C,), w, b, 1e-5), (x, w, b), dy))
    if out["layernorm_fwd"]["ms"] is not None:
        out["layernorm_bwd"] = {"ms": fb - out["layernorm_fwd"]["ms"], "bytes": 6.0 * rows * C}

    h = torch.randn(rows, 4 * C, device=dev, dtype=bf, requires_grad=True)
    dh = torch.randn(rows, 4 * C, device=dev, dtype=bf)
    with torch.no_grad():
        run("gelu_fwd", lambda: F.gelu(h, approximate="tanh"), 4.0 * rows * 4 * C)
    fb = time_ms(lambda: torch.autograd.grad(F.gelu(h, approximate="tanh"), (h,), dh))
    if out["gelu_fwd"]["ms"] is not None:
        out["gelu_bwd"] = {"ms": fb - out["gelu_fwd"]["ms"], "bytes": 6.0 * rows * 4 * C}

    # cross-entropy as autocast runs it: bf16 logits cast to f32, then the f32 loss.
    logits = torch.randn(rows, V, device=dev, dtype=bf, requires_grad=True)
    tg = (torch.arange(rows, device=dev) * 7919) % V
    with torch.no_grad():
        run("cross_entropy_fwd", lambda: F.cross_entropy(logits.float(), tg), 2.0 * rows * V)
    fb = time_ms(lambda: torch.autograd.grad(F.cross_entropy(logits.float(), tg), (logits,)))
    if out["cross_entropy_fwd"]["ms"] is not None:
        out["cross_entropy_bwd"] = {"ms": fb - out["cross_entropy_fwd"]["ms"], "bytes": 4.0 * rows * V}
    # Beside tessera's fused classifier (loss and gradient in one kernel): forward and backward.
    out["cross_entropy_fused"] = {"ms": fb, "bytes": 4.0 * rows * V}

    # fused AdamW on one flat f32 parameter of the model's size (f32 weights and gradient under
    # autocast: 28 bytes per element, as tessera's bf16 weights + f32 master).
    p = torch.nn.Parameter(torch.randn(params, device=dev))
    p.grad = torch.randn(params, device=dev)
    opt = torch.optim.AdamW([p], lr=6e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
    run("adamw_step", opt.step, 28.0 * params)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-kernels", action="store_true")
    ap.add_argument("--seed", type=int, default=1337, help="the weights' and the batch's draw")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--vocab-pad", type=int, default=64,
                    help="round the model's vocabulary up to a multiple of this (1: unpadded)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    on_gpu = DEVICE == "cuda"
    if on_gpu and not torch.cuda.is_available():
        sys.exit("bench_gpu.py: no CUDA device")
    torch.manual_seed(args.seed)
    B, T, L, C, H, V = args.batch_size, args.seq, 12, 768, 12, 50257
    Vp = -(-V // args.vocab_pad) * args.vocab_pad
    model = GPT(L, C, H, Vp, T).to(DEVICE)
    # The padding rows are not counted (as tessera counts its padded logits): the same N.
    n_params = sum(p.numel() for p in model.parameters()) - (Vp - V) * C
    n_flop = n_params - model.wpe.weight.numel()
    flops_per_token = 6 * n_flop + 12 * L * H * (C // H) * T
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if on_gpu else {}))
    compiled = "eager"
    fwd = model
    if on_gpu and not args.no_compile:
        try:
            fwd = torch.compile(model)
            compiled = "torch.compile"
        except Exception as e:
            print(f"bench_gpu.py: torch.compile unavailable ({e}); eager", file=sys.stderr)
    x = torch.randint(0, V, (B, T), device=DEVICE)
    y = torch.randint(0, V, (B, T), device=DEVICE)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext():
            loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    t0 = time.perf_counter()
    try:
        first = step()
    except Exception as e:  # a compile failure shows up at the first call
        if compiled == "eager":
            raise
        print(f"bench_gpu.py: compiled step failed ({str(e)[:300]}); eager", file=sys.stderr)
        fwd, compiled = model, "eager (compile failed)"
        first = step()
    for _ in range(args.warmup - 1):
        step()
    if compiled == "torch.compile":
        graphs, breaks = dynamo_counts()
        if graphs == 0:
            compiled = "eager (torch.compile compiled no graph)"
        elif graphs is not None:
            compiled += f", {graphs} graph{'s' if graphs != 1 else ''}, {breaks} graph breaks"
    print(f"bench_gpu.py: {args.warmup} warm-up steps ({compiled}) in {time.perf_counter() - t0:.1f} s")
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    times = []
    last = float("nan")
    for _ in range(args.steps):
        sync()
        t = time.perf_counter()
        last = step()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    ms = statistics.median(times)
    tok_s = B * T / (ms / 1e3)
    mfu = flops_per_token * tok_s / PEAK_FLOPS
    res = {"impl": f"pytorch {torch.__version__} ({compiled}; vocabulary {Vp})", "batch": B, "seq": T,
           "params": n_params, "flop_params": n_flop, "flops_per_token": flops_per_token,
           "ms_per_step": ms, "tokens_per_s": tok_s, "mfu": mfu,
           "peak_alloc_mib": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else 0.0,
           "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20 if on_gpu else 0.0,
           "loss_first": first, "loss_last": last,
           "device": torch.cuda.get_device_name(0) if on_gpu else "cpu (f32)"}
    print(f"bench_gpu.py: {ms:.2f} ms/step, {tok_s:.0f} tokens/s, MFU {100 * mfu:.1f}%; peak "
          f"{res['peak_alloc_mib']:.0f} MiB allocated; loss {first:.4f} -> {last:.4f}")
    if on_gpu and not args.no_kernels:
        del opt
        torch.cuda.empty_cache()
        res["kernels"] = bench_kernels(B * T, C, V, n_params)
        for k, v in res["kernels"].items():
            print(f"  {k:18s} {v['ms'] if v['ms'] is None else round(v['ms'], 3)} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f)
            f.write("\n")


if __name__ == "__main__":
    main()
