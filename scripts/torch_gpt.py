"""The GPT-2-style model of tessera's PyTorch benchmark twins (scripts/bench_gpu.py on the GPU,
scripts/bench_dp_torch.py on the CPU), written here in plain PyTorch; nothing comes from tessera.
Its attention, optimizer and step also serve scripts/bench_moe_torch.py's Llama-style twins.

    from torch_gpt import GPT, adamw, train_step, causal_attention
    model = GPT(L=4, C=128, H=4, V=257, T=64)     # configs/tiny.yaml
    loss = model(idx, targets)                    # idx, targets: (B, t) int64
    opt = adamw(model, lr=1e-3)
    loss = train_step(model, model, opt, idx, targets)   # forward .. zero_grad, loss.item()

Learned positions, LayerNorm, tanh-GELU MLP of 4C, fused qkv, tied embedding and head, biases,
no dropout, GPT-2 init (the values do not affect speed). Causal attention through
F.scaled_dot_product_attention(is_causal=True) where PyTorch has it (2.0+: flash kernels on a
GPU), else materialised with a mask (Debian 12's 1.13; tessera's CPU path materialises too).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


def causal_attention(q, k, v, mask):
    """q, k, v: (B, H, t, D) -> (B, H, t, D), each position attending to itself and those before.
    mask: a (T, T) lower-triangular bool tensor, T >= t, read only without SDPA (None with it)."""
    if HAS_SDPA:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[2]
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    mask = mask[:t, :t].to(q.device)
    return att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v


class Block(nn.Module):
    def __init__(self, C, H, T):
        super().__init__()
        self.H = H
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)
        # A plain attribute, not a buffer: DDP would broadcast buffers every step (and gloo cannot
        # broadcast bool tensors in 1.13). Only the path without SDPA reads it.
        self.mask = None if HAS_SDPA else torch.ones(T, T, dtype=torch.bool).tril()

    def attend(self, q, k, v):
        return causal_attention(q, k, v, self.mask)

    def forward(self, x):
        B, t, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (z.view(B, t, self.H, C // self.H).transpose(1, 2) for z in (q, k, v))
        y = self.attend(q, k, v)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, t, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L=12, C=768, H=12, V=50257, T=1024):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(C, H, T) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, eps=1e-5)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for blk in self.h:
            x = blk(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def adamw(model, lr, **kwargs):
    """torch.optim.AdamW as tessera's AdamW runs: betas 0.9/0.95, eps 1e-8, weight decay 0.1 on the
    2-D tensors only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8, **kwargs)


def train_step(net, model, opt, x, y):
    """One step as tessera's benchmarks time it: forward and loss through net (the model, or a DDP
    wrapper of it), backward, clip_grad_norm_(1.0) over model's parameters, AdamW, zero_grad;
    returns loss.item()."""
    loss = net(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()
