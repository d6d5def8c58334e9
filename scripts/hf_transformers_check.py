#!/usr/bin/env python3
"""Loads an exported directory with transformers itself (GPT2LMHeadModel / LlamaForCausalLM via
from_pretrained) and compares its logits with those `build/export --reference-logits REF` wrote.
For a machine that has transformers (tessera's CI does not; scripts/hf_logits.py is the check
that runs there).  Usage: hf_transformers_check.py DIR REF [--tol T]   exit 77 without transformers"""
import json, os, sys

try:
    import numpy  # noqa: F401  (hf_logits.read_safetensors needs it)
    import torch
    import transformers
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_logits import read_safetensors  # json + numpy: no dependence on the safetensors package

def main(argv):
    out_dir, ref_path = argv[0], argv[1]
    tol = float(argv[argv.index("--tol") + 1]) if "--tol" in argv else 1e-4
    arch = json.load(open(os.path.join(out_dir, "config.json")))["architectures"][0]
    # transformers 4.56 renamed from_pretrained's torch_dtype to dtype (the old name warns).
    version = tuple(int(x) for x in transformers.__version__.split(".")[:2] if x.isdigit())
    dtype_arg = "dtype" if version >= (4, 56) else "torch_dtype"
    model = getattr(transformers, arch).from_pretrained(out_dir, **{dtype_arg: torch.float32}).eval()
    ref = read_safetensors(ref_path)
    with torch.no_grad():
        logits = model(ref["tokens"].long()).logits.double()
    diff = (logits - ref["logits"].double()).abs().max().item()
    scale = max(1.0, logits.abs().max().item())  # f32 error grows with the logits' size
    print(f"transformers {transformers.__version__} {arch}: max |tessera - transformers| = "
          f"{diff:.3e}, largest |logit| {scale:.3g} (tolerance {tol:g} x {scale:.3g})")
    return 0 if diff <= tol * scale else 1

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
