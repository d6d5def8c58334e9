#!/usr/bin/env python3
"""Logits of an exported Hugging Face directory from PyTorch modules laid out like transformers'
GPT2LMHeadModel (Conv1D weights [in, out], fused c_attn split into q, k, v, gelu_new, LayerNorm)
and LlamaForCausalLM (RMSNorm, rotate_half RoPE with HF's rope_scaling types, grouped-query
attention by repeat_kv, SwiGLU MLP), Qwen2ForCausalLM (Llama's, q_proj, k_proj and v_proj with
biases, modeling_qwen2.py), and Qwen3ForCausalLM (Llama's, with each head's q and k
RMS-normalised before RoPE, modeling_qwen3.py's q_norm and k_norm, and head_dim apart from
hidden_size / num_attention_heads), and their mixtures of experts MixtralForCausalLM (Llama's
attention, each layer's block_sparse_moe of w1/w3/w2 experts, modeling_mixtral.py),
Qwen3MoeForCausalLM (Qwen3's attention, each layer's mlp of gate_proj/up_proj/down_proj experts,
modeling_qwen3_moe.py) and Qwen2MoeForCausalLM (Qwen2's attention, Qwen3-MoE's experts and a shared
expert scaled by a sigmoid gate, modeling_qwen2_moe.py),
written from those models' published structure without importing transformers (Debian's
python3-torch 1.13 has none). The state dict is loaded strictly, so every name and shape the
export wrote must be the one HF's module expects. Compares with the logits `build/export
--reference-logits FILE` wrote and exits 1 when they differ by more than --tol times the largest
|logit| (or --tol, when every logit is below 1).
Usage: hf_logits.py DIR REFERENCE [--tol T]      exit 77 (skip) without numpy or torch"""
import json, math, os, struct, sys

try:
    import numpy as np
    import torch
    from torch import nn
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        buf = raw[8 + n + b:8 + n + end]
        if e["dtype"] == "BF16":  # the top half of an f32
            a = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(buf, {"F32": np.float32, "I32": np.int32, "F64": np.float64}[e["dtype"]])
        out[name] = torch.from_numpy(a.copy().reshape(e["shape"]))
    return out

def causal_softmax_attention(q, k, v):  # (B, H, T, hd) each
    T = q.size(-2)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
    return s.softmax(-1) @ v

# ---- GPT-2 (transformers modeling_gpt2.py structure) ----
class Conv1D(nn.Module):
    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))  # [in, out]
        self.bias = nn.Parameter(torch.zeros(nf))
    def forward(self, x):
        y = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight)
        return y.view(*x.shape[:-1], self.nf)

def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))

class GPT2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.E, self.H = c["n_embd"], c["n_head"]
        self.c_attn = Conv1D(3 * self.E, self.E)
        self.c_proj = Conv1D(self.E, self.E)
    def forward(self, x):
        B, T, E = x.shape
        q, k, v = self.c_attn(x).split(self.E, dim=2)
        heads = lambda t: t.view(B, T, self.H, E // self.H).permute(0, 2, 1, 3)
        y = causal_softmax_attention(heads(q), heads(k), heads(v))
        return self.c_proj(y.permute(0, 2, 1, 3).reshape(B, T, E))

class GPT2MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        inner = c.get("n_inner") or 4 * c["n_embd"]
        self.c_fc, self.c_proj = Conv1D(inner, c["n_embd"]), Conv1D(c["n_embd"], inner)
    def forward(self, x):
        return self.c_proj(gelu_new(self.c_fc(x)))

class GPT2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        eps = c["layer_norm_epsilon"]
        self.ln_1, self.attn = nn.LayerNorm(c["n_embd"], eps=eps), GPT2Attention(c)
        self.ln_2, self.mlp = nn.LayerNorm(c["n_embd"], eps=eps), GPT2MLP(c)
    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

class GPT2Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c["vocab_size"], c["n_embd"])
        self.wpe = nn.Embedding(c["n_positions"], c["n_embd"])
        self.h = nn.ModuleList(GPT2Block(c) for _ in range(c["n_layer"]))
        self.ln_f = nn.LayerNorm(c["n_embd"], eps=c["layer_norm_epsilon"])
    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.size(1)))[None]
        for block in self.h:
            x = block(x)
        return self.ln_f(x)

class GPT2LMHeadModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = GPT2Model(c)
        self.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=False)
    def forward(self, ids):
        return self.lm_head(self.transformer(ids))

# ---- Llama (transformers modeling_llama.py structure) ----
class LlamaRMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(n)), eps
    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

def rotate_half(x):
    x1, x2 = x[..., : x.size(-1) // 2], x[..., x.size(-1) // 2:]
    return torch.cat((-x2, x1), dim=-1)

def repeat_kv(x, n_rep):  # (B, Hkv, T, hd) -> (B, Hkv * n_rep, T, hd)
    B, Hkv, T, hd = x.shape
    return x[:, :, None].expand(B, Hkv, n_rep, T, hd).reshape(B, Hkv * n_rep, T, hd)

class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        E, self.H, self.Hkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c.get("head_dim") or E // self.H
        bias = c.get("attention_bias", False)
        qkv_bias = bias or c["model_type"] in ("qwen2", "qwen2_moe")  # q, k, v biased, o_proj not
        self.q_proj = nn.Linear(E, self.H * self.hd, bias=qkv_bias)
        self.k_proj = nn.Linear(E, self.Hkv * self.hd, bias=qkv_bias)
        self.v_proj = nn.Linear(E, self.Hkv * self.hd, bias=qkv_bias)
        self.o_proj = nn.Linear(self.H * self.hd, E, bias=bias)
        if c["model_type"] in ("qwen3", "qwen3_moe"):  # Qwen3Attention: over head_dim, on (B, T, n, hd)
            self.q_norm = LlamaRMSNorm(self.hd, c["rms_norm_eps"])
            self.k_norm = LlamaRMSNorm(self.hd, c["rms_norm_eps"])
    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        def heads(t, n, norm=None):
            t = t.view(B, T, n, self.hd)
            return (t if norm is None else norm(t)).transpose(1, 2)
        q = heads(self.q_proj(x), self.H, getattr(self, "q_norm", None))
        k = heads(self.k_proj(x), self.Hkv, getattr(self, "k_norm", None))
        v = heads(self.v_proj(x), self.Hkv)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        n_rep = self.H // self.Hkv
        y = causal_softmax_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep))
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.H * self.hd))

class LlamaMLP(nn.Module):  # also Qwen3MoeMLP, an expert of width F
    def __init__(self, c, F=None):
        super().__init__()
        E, F, bias = c["hidden_size"], F or c["intermediate_size"], c.get("mlp_bias", False)
        self.gate_proj, self.up_proj = nn.Linear(E, F, bias=bias), nn.Linear(E, F, bias=bias)
        self.down_proj = nn.Linear(F, E, bias=bias)
    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))

# ---- Mixtral and Qwen3-MoE (modeling_mixtral.py, modeling_qwen3_moe.py structure) ----
class MixtralBlockSparseTop2MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        E, F = c["hidden_size"], c["intermediate_size"]
        self.w1, self.w3 = nn.Linear(E, F, bias=False), nn.Linear(E, F, bias=False)
        self.w2 = nn.Linear(F, E, bias=False)
    def forward(self, x):  # act(w1 x) * w3 x -> w2
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))

def sparse_moe(gate, experts, top_k, norm_topk_prob, x):
    """MixtralSparseMoeBlock.forward / Qwen3MoeSparseMoeBlock.forward: router softmax, torch.topk,
    the k probabilities divided by their sum when norm_topk_prob, and each expert's output for its
    tokens times their weights added back with index_add_. transformers takes the softmax with
    dtype=torch.float; here it stays in the model's float64, so that the reference carries no f32
    rounding of its own."""
    B, T, C = x.shape
    x = x.reshape(-1, C)
    weights, chosen = torch.topk(gate(x).softmax(dim=-1), top_k, dim=-1)  # (N, k) each
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(x)
    mask = nn.functional.one_hot(chosen, num_classes=len(experts)).permute(2, 1, 0)  # (E, k, N)
    for e in range(len(experts)):
        slot, token = torch.where(mask[e])
        if token.numel():
            out.index_add_(0, token, experts[e](x[token]) * weights[token, slot, None])
    return out.reshape(B, T, C)

class MixtralSparseMoeBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.top_k = c["num_experts_per_tok"]
        self.gate = nn.Linear(c["hidden_size"], c["num_local_experts"], bias=False)
        self.experts = nn.ModuleList(MixtralBlockSparseTop2MLP(c) for _ in range(c["num_local_experts"]))
    def forward(self, x):  # Mixtral always renormalises
        return sparse_moe(self.gate, self.experts, self.top_k, True, x)

class Qwen3MoeSparseMoeBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        assert c["decoder_sparse_step"] == 1 and not c["mlp_only_layers"], "a dense layer is not modelled"
        self.top_k, self.norm_topk_prob = c["num_experts_per_tok"], c["norm_topk_prob"]
        self.gate = nn.Linear(c["hidden_size"], c["num_experts"], bias=False)
        self.experts = nn.ModuleList(LlamaMLP(c, c["moe_intermediate_size"]) for _ in range(c["num_experts"]))
    def forward(self, x):
        return sparse_moe(self.gate, self.experts, self.top_k, self.norm_topk_prob, x)

class Qwen2MoeSparseMoeBlock(Qwen3MoeSparseMoeBlock):
    """Qwen3-MoE's routing, and beside it a shared expert every token goes through, scaled by
    sigmoid(shared_expert_gate x), a Linear(hidden_size, 1) (modeling_qwen2_moe.py)."""
    def __init__(self, c):
        super().__init__(c)
        self.shared_expert = LlamaMLP(c, c["shared_expert_intermediate_size"])
        self.shared_expert_gate = nn.Linear(c["hidden_size"], 1, bias=False)
    def forward(self, x):
        shared = torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        return super().forward(x) + shared

class LlamaDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        E, eps = c["hidden_size"], c["rms_norm_eps"]
        self.input_layernorm, self.self_attn = LlamaRMSNorm(E, eps), LlamaAttention(c)
        self.post_attention_layernorm = LlamaRMSNorm(E, eps)
        # The MLP's attribute is the state dict's name: MixtralDecoderLayer's block_sparse_moe.
        self.mlp_name = "block_sparse_moe" if c["model_type"] == "mixtral" else "mlp"
        setattr(self, self.mlp_name, {"mixtral": MixtralSparseMoeBlock,
                                      "qwen3_moe": Qwen3MoeSparseMoeBlock,
                                      "qwen2_moe": Qwen2MoeSparseMoeBlock}.get(c["model_type"], LlamaMLP)(c))
    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + getattr(self, self.mlp_name)(self.post_attention_layernorm(x))

def rope_inv_freq(c, d, seq_len):
    """Inverse frequencies and cos/sin multiplier as transformers' modeling_rope_utils computes them
    for rope_scaling types default, linear, dynamic, yarn and llama3."""
    base, rs = c.get("rope_theta", 10000.0), c.get("rope_scaling") or {}
    kind, s = rs.get("rope_type", rs.get("type", "default")), rs.get("factor", 1.0)
    L = c["max_position_embeddings"]
    i2 = torch.arange(0, d, 2, dtype=torch.float64)
    inv = 1.0 / base ** (i2 / d)
    if kind == "default":
        return inv, 1.0
    if kind == "linear":
        return inv / s, 1.0
    if kind == "dynamic":
        if seq_len > L:
            base = base * ((s * seq_len / L) - (s - 1)) ** (d / (d - 2))
        return 1.0 / base ** (i2 / d), 1.0
    if kind == "yarn":
        L0 = rs.get("original_max_position_embeddings") or L
        corr = lambda rot: d * math.log(L0 / (rot * 2 * math.pi)) / (2 * math.log(base))
        low = max(math.floor(corr(rs.get("beta_fast") or 32)), 0)
        high = min(math.ceil(corr(rs.get("beta_slow") or 1)), d - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(d // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        extrapolation = 1 - ramp
        inv = (inv / s) * (1 - extrapolation) + inv * extrapolation
        mult = rs.get("attention_factor") or (0.1 * math.log(s) + 1.0 if s > 1 else 1.0)
        return inv, mult
    if kind == "llama3":
        L0, lo, hi = rs["original_max_position_embeddings"], rs["low_freq_factor"], rs["high_freq_factor"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > L0 / lo, inv / s, inv)
        t = (L0 / wavelen - lo) / (hi - lo)
        smoothed = (1 - t) * scaled / s + t * scaled
        medium = (wavelen >= L0 / hi) & (wavelen <= L0 / lo)
        return torch.where(medium, smoothed, scaled), 1.0
    raise SystemExit(f"hf_logits: rope_type {kind} is not modelled here")

class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(LlamaDecoderLayer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = LlamaRMSNorm(c["hidden_size"], c["rms_norm_eps"])
    def forward(self, ids):
        c = self.c
        d = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        inv_freq, mult = rope_inv_freq(c, d, ids.size(1))
        freqs = torch.arange(ids.size(1), dtype=torch.float64)[:, None] * inv_freq[None]
        emb = torch.cat((freqs, freqs), dim=-1)
        x = self.embed_tokens(ids)
        cos, sin = (emb.cos() * mult).to(x.dtype), (emb.sin() * mult).to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)

class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.model = LlamaModel(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
    def forward(self, ids):
        return self.lm_head(self.model(ids))

def main(argv):
    out_dir, ref_path = argv[0], argv[1]
    tol = float(argv[argv.index("--tol") + 1]) if "--tol" in argv else 1e-4
    c = json.load(open(os.path.join(out_dir, "config.json")))
    model = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "qwen3": LlamaForCausalLM,
             "qwen2": LlamaForCausalLM, "qwen2_moe": LlamaForCausalLM,
             "mixtral": LlamaForCausalLM, "qwen3_moe": LlamaForCausalLM}[c["model_type"]](c).double()
    state = {k: v.double() for k, v in read_safetensors(os.path.join(out_dir, "model.safetensors")).items()}
    if c.get("tie_word_embeddings", c["model_type"] == "gpt2"):
        assert "lm_head.weight" not in state, "a tied head must not be stored"
        embed = "transformer.wte.weight" if c["model_type"] == "gpt2" else "model.embed_tokens.weight"
        state["lm_head.weight"] = state[embed]
    model.load_state_dict(state, strict=True)  # every name and shape as HF's modules have them
    ref = read_safetensors(ref_path)
    with torch.no_grad():
        logits = model(ref["tokens"].long())  # float64: the difference is tessera's f32 error
    diff = (logits - ref["logits"].double()).abs().max().item()
    # f32 rounding error grows with the size of the numbers summed: the tolerance is relative to
    # the largest logit (and absolute below 1).
    scale = max(1.0, logits.abs().max().item())
    print(f"hf_logits: {c['model_type']} logits {tuple(logits.shape)}, max |tessera - reference| "
          f"= {diff:.3e}, largest |logit| {scale:.3g} (tolerance {tol:g} x {scale:.3g})")
    return 0 if diff <= tol * scale else 1

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
