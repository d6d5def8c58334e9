#!/usr/bin/env python3
"""Independent check of build/export: reads DIR/model.safetensors with json + numpy only (no
tessera code) and compares every tensor's name, shape, dtype and values with the checkpoint's
/model group read by h5py. GPT-2 (model_type gpt2) block matrices are Conv1D, stored [in, out]:
the transpose of the checkpoint's [out, in]. A tied head (no lm_head.weight in the checkpoint) is
absent from both. bf16 checkpoint datasets are U16 with attribute dtype=bf16; safetensors BF16 is
compared as the same 16-bit patterns.  Usage: check_export.py DIR CHECKPOINT(.h5 | run dir)"""
import json, os, struct, sys
import h5py, numpy as np

def main(out_dir, ckpt):
    if os.path.isdir(ckpt):
        ckpt = os.path.join(ckpt, open(os.path.join(ckpt, "latest")).read().strip())
    raw = open(os.path.join(out_dir, "model.safetensors"), "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert (8 + n) % 8 == 0, "data does not start 8-byte aligned"
    header.pop("__metadata__", None)
    conv1d = json.load(open(os.path.join(out_dir, "config.json")))["model_type"] == "gpt2"
    kinds = {"F32": np.float32, "BF16": np.uint16, "F64": np.float64}
    with h5py.File(ckpt, "r") as f:
        model = f["model"]
        assert set(header) == set(model.keys()), sorted(set(header) ^ set(model.keys()))
        for name, e in header.items():
            b, end = e["data_offsets"]
            st = np.frombuffer(raw[8 + n + b:8 + n + end], kinds[e["dtype"]]).reshape(e["shape"])
            ref = model[name][()]
            want = "BF16" if model[name].attrs.get("dtype") in ("bf16", b"bf16") else \
                {np.dtype("float32"): "F32", np.dtype("float64"): "F64"}[ref.dtype]
            assert e["dtype"] == want, f"{name}: {e['dtype']} vs {want}"
            if conv1d and ref.ndim == 2 and ".h." in name and name.endswith(".weight"):
                ref = ref.T
            assert st.shape == ref.shape, f"{name}: shape {st.shape} vs {ref.shape}"
            assert np.array_equal(st, ref), f"{name}: values differ"
    print(f"check_export: {len(header)} tensors match {ckpt} (names, shapes, dtypes, values)")

if __name__ == "__main__":
    main(*sys.argv[1:3])
