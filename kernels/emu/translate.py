#!/usr/bin/env python3
"""Turns a kernels/*.cu file into C++ that g++ compiles against kernels/emu/cuda_emu.h.

  translate.py IN.cu OUT.cpp

Three rewrites, nothing else (line numbers are kept, so compiler errors point at the .cu file):
  - a launch `KERNEL<<<CONFIG>>>(ARGS)` becomes
    `::tessera::emu::launch("KERNEL", ::tessera::emu::config(CONFIG), [&](auto&... a_) { KERNEL(a_...); })(ARGS)`:
    the arguments are evaluated once, on the host, as CUDA does, then every emulated thread calls
    the kernel with its own copies;
  - `extern __shared__ [__align__(N)] TYPE NAME[];` becomes a pointer to the launch's dynamic
    shared memory;
  - `#include <cub/...>` is dropped (cuda_emu.h has the one CUB call the kernels make).
"""
import re
import sys

IDENT = re.compile(r"[A-Za-z0-9_:]")


def kernel_start(text, end):
    """Start of the kernel expression that ends just before `end` (a name, maybe templated)."""
    i = end
    while i > 0 and text[i - 1].isspace():
        i -= 1
    if text[i - 1] == ">":  # template arguments: balance the angle brackets
        depth = 0
        while True:
            i -= 1
            c = text[i]
            if c == ">":
                depth += 1
            elif c == "<":
                depth -= 1
                if depth == 0:
                    break
    while i > 0 and IDENT.match(text[i - 1]):
        i -= 1
    return i


def rewrite_launches(text, path):
    out, pos = [], 0
    while True:
        open_ = text.find("<<<", pos)
        if open_ < 0:
            out.append(text[pos:])
            return "".join(out)
        close = text.find(">>>", open_)
        if close < 0:
            sys.exit(f"{path}: '<<<' without '>>>'")
        start = kernel_start(text, open_)
        raw_kernel, raw_config = text[start:open_], text[open_ + 3:close]
        kernel, config = " ".join(raw_kernel.split()), " ".join(raw_config.split())
        if not kernel:
            sys.exit(f"{path}: no kernel name before '<<<' at offset {open_}")
        out.append(text[pos:start])
        # Both are put on one line and their newlines after the launch, so the lines after it
        # keep their numbers.
        newlines = "\n" * (raw_kernel.count("\n") + raw_config.count("\n"))
        out.append(f'::tessera::emu::launch("{kernel}", ::tessera::emu::config({config}), '
                   f"[&](auto&... a_) {{ {kernel}(a_...); }}){newlines}")
        pos = close + 3


EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?([A-Za-z_][\w\s:]*?)\s+(\w+)\s*\[\s*\]\s*;")


def rewrite_extern_shared(text):
    return EXTERN_SHARED.sub(
        lambda m: f"{m.group(1)}* {m.group(2)} = "
                  f"static_cast<{m.group(1)}*>(::tessera::emu::dynamic_shared());", text)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        text = f.read()
    text = re.sub(r"^\s*#\s*include\s*<cub/[^>]*>", "// (cub: kernels/emu/cuda_emu.h)", text,
                  flags=re.M)
    text = rewrite_extern_shared(text)
    text = rewrite_launches(text, src)
    with open(dst, "w") as f:
        f.write(f'#line 1 "{src}"\n')
        f.write(text)


if __name__ == "__main__":
    main()
