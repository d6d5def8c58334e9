#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention timed like build/bench_attention times tessera's kernels.

Same shapes (B x T = --tokens, H x D = --hidden), bf16, causal; forward and forward + backward,
mean over --iters calls after --warmup, timed with CUDA events. FLOPs: forward 4 T^2 D H B halved
for causal, backward 2.5x forward (the FlashAttention-2 paper's convention). Prints markdown rows
in build/bench_attention's columns (scripts/bench_attention.sh prints the header): one per SDPA
backend in --backends (torch.nn.attention.sdpa_kernel: "default" is PyTorch's own choice), so
that tessera's kernels can be set beside the best of them. A backend that does not take a shape
gets a row saying why, and the others still run.

    python3 scripts/bench_attention.py --seqlens 1024,4096 --dims 128
"""
import argparse
import contextlib
import sys


def ints(s):
    return [int(x) for x in s.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqlens", type=ints, default=ints("1024,2048,4096,8192,16384"))
    ap.add_argument("--dims", type=ints, default=ints("64,128"))
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--backends", default="default,flash,cudnn,efficient",
                    help="comma-separated: default, flash, cudnn, efficient, math")
    ap.add_argument("--no-header", action="store_true")
    args = ap.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("bench_attention.py: PyTorch is not installed; no SDPA rows", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("bench_attention.py: no CUDA device", file=sys.stderr)
        return 1

    def time_ms(fn):
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(args.iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / args.iters

    if not args.no_header:
        print("| impl | T | D | B x H | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |")
        print("|---|---|---|---|---|---|---|---|")
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # before PyTorch 2.3: PyTorch's own choice only
        SDPBackend = sdpa_kernel = None
    backends = {}
    for b in args.backends.split(","):
        if b == "default":
            backends[b] = contextlib.nullcontext
        elif sdpa_kernel is None:
            print(f"bench_attention.py: this PyTorch has no sdpa_kernel; no '{b}' rows", file=sys.stderr)
        else:
            enum = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                    "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}.get(b)
            if enum is None or not hasattr(SDPBackend, enum):
                print(f"bench_attention.py: no SDPA backend '{b}' in this PyTorch", file=sys.stderr)
                continue
            backends[b] = lambda e=getattr(SDPBackend, enum): sdpa_kernel(e)

    failed = 0
    for D in args.dims:
        for T in args.seqlens:
            B, H = max(1, args.tokens // T), max(1, args.hidden // D)
            gen = torch.Generator(device="cuda").manual_seed(1)
            q, k, v, dout = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16,
                                         generator=gen) for _ in range(4))
            for t in (q, k, v):
                t.requires_grad_(True)

            def fwd():
                with torch.no_grad():
                    F.scaled_dot_product_attention(q, k, v, is_causal=True)

            def fwd_bwd():  # the gradients returned, not added into .grad (no extra kernels)
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                torch.autograd.grad(out, (q, k, v), dout)

            flops = 4.0 * T * T * D * H * B / 2
            for b, context in backends.items():
                name = f"torch {torch.__version__} sdpa ({b})"
                try:
                    with context():
                        f, fb = time_ms(fwd), time_ms(fwd_bwd)
                except RuntimeError as e:  # the backend does not take this shape or device
                    why = " ".join(str(e).split())[:120].replace("|", "/")
                    print(f"| {name} | {T} | {D} | {B} x {H} | n/a | n/a | n/a | n/a ({why}) |",
                          flush=True)
                    failed += b == "default"
                    continue
                print(f"| {name} | {T} | {D} | {B} x {H} | {f:.3f} | {flops / (f * 1e9):.1f} | "
                      f"{fb:.3f} | {3.5 * flops / (fb * 1e9):.1f} |", flush=True)
            del q, k, v, dout
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
