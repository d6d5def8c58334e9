#!/usr/bin/env python3
"""PyTorch twins of configs/llama-small.yaml and configs/moe-small.yaml (scripts/bench_moe.sh): a
training step of each on the CPU in f32, timed as build/bench_gpu --device cpu times tessera's.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/bench_moe_torch.py --threads 2 --batch 8 --seq 128

Both models are Llama-style, in plain PyTorch (nothing from tessera): 4 layers of 128 channels,
RMSNorm (eps 1e-5), rotary positions (theta 10000, the two halves of each head rotated as in
transformers' rotate_half), 4 query heads sharing 2 key/value heads, SwiGLU, no biases, an untied
head over 257 bytes. The dense one's MLP is 384 wide; the mixture's is Mixtral's sparse block
(transformers' models/mixtral/modeling_mixtral.py, MixtralSparseMoeBlock): a router Linear, a
softmax in f32, the top 2 of 8 SwiGLU experts 192 wide, their weights renormalised, each expert
run on its tokens and index_add_-ed back. Training adds tessera's load-balancing loss (nn/moe.h):
0.01 x sum over blocks of E / (N k) sum_e count_e P_e, to the gradient but not the loss's value.
A step is scripts/torch_gpt.py's train_step: forward + loss, backward, clip_grad_norm_(1.0),
AdamW (lr 1e-3, betas 0.9/0.95, weight decay 0.1 on 2-D tensors), zero_grad, loss.item(), on one
fixed random batch. Prints one JSON line: each model's median ms per step over --steps steps after
--warmup untimed ones, and its parameter count (tessera's bench_gpu prints the same counts).

Threads as in scripts/bench_cpu_torch.py: --threads for PyTorch's kernels, OPENBLAS_NUM_THREADS
(read when torch loads) for its gemms.
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_gpt import HAS_SDPA, adamw, causal_attention, train_step

L, C, H, HKV, V = 4, 128, 4, 2, 257   # both configs' model: section
DENSE_HIDDEN = 384                    # llama-small: round_up(8 * 128 / 3, 64)
EXPERTS, TOP_K, EXPERT_HIDDEN, AUX = 8, 2, 192, 0.01   # moe-small


class RMSNorm(nn.Module):
    def __init__(self, C, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(C))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): Llama's MLP and each of Mixtral's experts."""
    def __init__(self, C, hidden):
        super().__init__()
        self.gate = nn.Linear(C, hidden, bias=False)
        self.up = nn.Linear(C, hidden, bias=False)
        self.down = nn.Linear(hidden, C, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class SparseMoE(nn.Module):
    """MixtralSparseMoeBlock.forward; forward returns (y, the load-balancing loss)."""
    def __init__(self, C, hidden, E, k):
        super().__init__()
        self.E, self.k = E, k
        self.router = nn.Linear(C, E, bias=False)
        self.experts = nn.ModuleList(SwiGLU(C, hidden) for _ in range(E))

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])                                # (N, C)
        probs = F.softmax(self.router(x), dim=-1, dtype=torch.float)
        weights, chosen = torch.topk(probs, self.k, dim=-1)         # (N, k)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
        y = torch.zeros_like(x)
        mask = F.one_hot(chosen, num_classes=self.E).permute(2, 1, 0)   # (E, k, N)
        for e, expert in enumerate(self.experts):
            slot, rows = torch.where(mask[e])
            if rows.numel() == 0:
                continue
            y.index_add_(0, rows, expert(x[rows]) * weights[rows, slot, None])
        # Switch Transformer's eq. 4 with k choices a token (tessera's nn/moe.h); Mixtral's
        # load_balancing_loss_func is k times this, taken over all layers' tokens at once.
        counts = torch.bincount(chosen.flatten(), minlength=self.E).to(probs.dtype)
        aux = self.E / (x.shape[0] * self.k) * (counts * probs.mean(0)).sum()
        return y.view(shape), aux


class Block(nn.Module):
    def __init__(self, T, moe):
        super().__init__()
        self.D = C // H
        self.attn_norm, self.mlp_norm = RMSNorm(C), RMSNorm(C)
        self.q = nn.Linear(C, H * self.D, bias=False)
        self.k = nn.Linear(C, HKV * self.D, bias=False)
        self.v = nn.Linear(C, HKV * self.D, bias=False)
        self.o = nn.Linear(H * self.D, C, bias=False)
        self.mlp = SparseMoE(C, EXPERT_HIDDEN, EXPERTS, TOP_K) if moe else SwiGLU(C, DENSE_HIDDEN)
        # (T, T) causal mask, read only without SDPA (torch_gpt.causal_attention)
        self.mask = None if HAS_SDPA else torch.ones(T, T, dtype=torch.bool).tril()

    def forward(self, x, cos, sin):
        B, t, _ = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(B, t, H, self.D).transpose(1, 2)                  # (B, H, t, D)
        k, v = (proj(h).view(B, t, HKV, self.D).transpose(1, 2) for proj in (self.k, self.v))
        q, k = rope(q, cos, sin), rope(k, cos, sin)                          # k, v: (B, Hkv, t, D)
        # Grouped-query attention: query head i reads key/value head i // (H / Hkv), as
        # transformers' repeat_kv lays them out.
        k, v = (z.repeat_interleave(H // HKV, dim=1) for z in (k, v))
        y = causal_attention(q, k, v, self.mask)
        x = x + self.o(y.transpose(1, 2).reshape(B, t, C))
        out = self.mlp(self.mlp_norm(x))
        if isinstance(out, tuple):
            return x + out[0], out[1]
        return x + out, None


def rope(x, cos, sin):
    """x (B, H, t, D) rotated by position: channel i paired with i + D/2 (rotate_half)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Llama(nn.Module):
    def __init__(self, T, moe, theta=10000.0):
        super().__init__()
        self.embed = nn.Embedding(V, C)
        self.blocks = nn.ModuleList(Block(T, moe) for _ in range(L))
        self.norm = RMSNorm(C)
        self.head = nn.Linear(C, V, bias=False)
        D = C // H
        inv_freq = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float) / D)
        angles = torch.outer(torch.arange(T, dtype=torch.float), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)                        # (T, D)
        self.cos, self.sin = angles.cos(), angles.sin()
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.embed(idx)
        aux = []
        for blk in self.blocks:
            x, a = blk(x, self.cos[:t], self.sin[:t])
            if a is not None:
                aux.append(a)
        logits = self.head(self.norm(x))
        loss = F.cross_entropy(logits.view(-1, V), targets.reshape(-1))
        if aux:
            # aux - detach(aux) is 0 in value and 1 in gradient, as in tessera's GPT::loss.
            balance = torch.stack(aux).sum()
            loss = loss + AUX * (balance - balance.detach())
        return loss


def time_steps(model, x, y, steps, warmup):
    opt = adamw(model, lr=1e-3)
    times = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        last = train_step(model, model, opt, x, y)
        times.append(1e3 * (time.perf_counter() - t0))
    return round(statistics.median(times[warmup:]), 1), round(last, 4)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1337)
    data = torch.randint(0, V, (a.batch, a.seq + 1))
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    out = {"impl": "pytorch", "torch": torch.__version__, "threads": a.threads,
           "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
           "batch": a.batch, "seq": a.seq}
    for name, moe in (("dense", False), ("moe", True)):
        model = Llama(a.seq, moe)
        ms, last = time_steps(model, x, y, a.steps, a.warmup)
        out[name] = {"params": sum(p.numel() for p in model.parameters()), "median_ms": ms,
                     "last_loss": last}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
