"""The PyTorch twin of build/bench_checkpoint: torch.save and torch.load of a GPT-2-shaped state
(weights, then AdamW's m and v per parameter, f32), with the same flags for the shapes.

  /usr/bin/python3 scripts/bench_checkpoint_torch.py --n-layer 12 --dir /tmp/b --repeats 3

"save" is torch.save to a file, then fsync of the file and its directory (tessera's save_checkpoint
fsyncs both); "load" is torch.load of it. Prints one JSON line: tensor count and bytes, file bytes,
and the median milliseconds of each.
"""
import argparse
import json
import os
import time

import torch


def gpt2_shapes(n_layer, c, vocab, seq):
    """(name, shape) of GPT-2's parameters in tessera's order (nn/hf_names.h)."""
    out = [("transformer.wte.weight", (vocab, c)), ("transformer.wpe.weight", (seq, c))]
    for i in range(n_layer):
        h = f"transformer.h.{i}."
        out += [(h + "ln_1.weight", (c,)), (h + "ln_1.bias", (c,)),
                (h + "attn.c_attn.weight", (3 * c, c)), (h + "attn.c_attn.bias", (3 * c,)),
                (h + "attn.c_proj.weight", (c, c)), (h + "attn.c_proj.bias", (c,)),
                (h + "ln_2.weight", (c,)), (h + "ln_2.bias", (c,)),
                (h + "mlp.c_fc.weight", (4 * c, c)), (h + "mlp.c_fc.bias", (4 * c,)),
                (h + "mlp.c_proj.weight", (c, 4 * c)), (h + "mlp.c_proj.bias", (c,))]
    return out + [("transformer.ln_f.weight", (c,)), ("transformer.ln_f.bias", (c,))]


def median_ms(repeats, f):
    ms = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ms.append((time.perf_counter() - t) * 1e3)
    return sorted(ms)[len(ms) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--n-embd", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--dir", default="checkpoints/bench_checkpoint")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = {n: torch.randn(s) for n, s in gpt2_shapes(a.n_layer, a.n_embd, a.vocab, a.seq)}
    state = {"model": model, "optimizer": {}}
    for n, p in model.items():
        state["optimizer"][n + "/m"] = p.clone()
        state["optimizer"][n + "/v"] = p.clone()
    tensors = list(model.values()) + list(state["optimizer"].values())
    os.makedirs(a.dir, exist_ok=True)
    path = os.path.join(a.dir, "bench.pt")

    def save():
        torch.save(state, path)
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        fd = os.open(a.dir, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    save_ms = median_ms(a.repeats, save)
    load_ms = median_ms(a.repeats, lambda: torch.load(path))
    file_bytes = os.path.getsize(path)
    os.remove(path)
    print(json.dumps({"torch": torch.__version__, "tensors": len(tensors),
                      "tensor_bytes": sum(t.numel() * t.element_size() for t in tensors),
                      "file_bytes": file_bytes, "save_ms": save_ms, "load_ms": load_ms}))


if __name__ == "__main__":
    main()
