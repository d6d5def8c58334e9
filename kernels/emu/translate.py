#!/usr/bin/env python3
"""Turns a kernels/*.cu file into C++ that g++ compiles against kernels/emu/cuda_emu.h.

  translate.py IN.cu OUT.cpp

Seven rewrites, nothing else (line numbers are kept, so compiler errors point at the .cu file):
  - a launch `KERNEL<<<CONFIG>>>(ARGS)` becomes
    `::tessera::emu::launch("KERNEL", ::tessera::emu::config(CONFIG), ID, [=](auto&... a_) { KERNEL(a_...); })(ARGS)`
    (ID: `::tessera::emu::function_id(KERNEL)` when CONFIG passes dynamic shared memory, else nullptr):
    the arguments are evaluated once, on the host, as CUDA does, then every emulated thread calls
    the kernel with its own copies;
  - `extern __shared__ [__align__(N)] TYPE NAME[];` becomes a pointer to the launch's dynamic
    shared memory;
  - `__shared__ TYPE A[N][M], B[K];` (static shared memory) becomes
    `static TYPE A[N][M], B[K]; ::tessera::emu::static_shared(A, sizeof A); ...`: the first thread
    of a block to reach the declaration fills the arrays with 0xff bytes, as the dynamic shared
    memory is filled, so a read of what no thread of the block wrote sees NaN, not the last block's
    values;
  - an inline PTX statement `asm [volatile] ("TEXT" : OUTPUTS : INPUTS : CLOBBERS);` becomes
    `::tessera::emu::ptx_asm("TEXT", {OPERANDS});`, each `"=r"(x)` a `ptx_out("=r", x)`, `"+f"(y)` a
    `ptx_inout("+f", y)`, an input `"r"(z)` a `ptx_in("r", z)`, in the statement's order, so that
    %0, %1, ... keep their meaning (kernels/emu/ptx.h, which ptx.cpp interprets);
  - a kernel's `__launch_bounds__(MAX[, ...])` becomes a call at the start of its body,
    `::tessera::emu::launch_bounds(MAX);`, which fails a launch of more threads a block than MAX
    as a GPU refuses it (a declaration without a body just loses the attribute);
  - `#include <cub/...>` is dropped (cuda_emu.h has the one CUB call the kernels make);
  - `reinterpret_cast<[const] V*>` of a CUDA vector type V (float2, float4, uint2, uint4, int2,
    int4, double2, __nv_bfloat162, __half2) becomes `::tessera::emu::vector_cast<[const] V*>`,
    which fails an address not aligned to V's size, as the GPU faults on it.
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


def top_level_args(text):
    """The number of comma-separated arguments of text, commas inside brackets not counted."""
    depth, count = 0, 1 if text.strip() else 0
    for ch in text:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            count += 1
    return count


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
        # A launch that passes dynamic shared memory (a third configuration argument) names its
        # kernel by address, for the 48 KiB opt-in check; the others may name an overload set.
        function = f"::tessera::emu::function_id({kernel})" if top_level_args(config) >= 3 else "nullptr"
        out.append(f'::tessera::emu::launch("{kernel}", ::tessera::emu::config({config}), '
                   f"{function}, [=](auto&... a_) {{ {kernel}(a_...); }}){newlines}")
        pos = close + 3


EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?([A-Za-z_][\w\s:]*?)\s+(\w+)\s*\[\s*\]\s*;")


def rewrite_extern_shared(text):
    return EXTERN_SHARED.sub(
        lambda m: f"{m.group(1)}* {m.group(2)} = "
                  f"static_cast<{m.group(1)}*>(::tessera::emu::dynamic_shared());", text)


STATIC_SHARED = re.compile(r"(?<!extern )\b__shared__\s+([A-Za-z_][\w:]*)\s+([^;]+);")


def rewrite_static_shared(text):
    def one(m):
        names = [re.match(r"\s*(\w+)", d).group(1) for d in split_top(m.group(2), ",")]
        fills = " ".join(f"::tessera::emu::static_shared({n}, sizeof {n});" for n in names)
        return f"static {m.group(1)} {m.group(2)}; {fills}"
    return STATIC_SHARED.sub(one, text)


ASM = re.compile(r"\basm\s*(?:(?:volatile|__volatile__)\s*)?\(")


def split_top(text, sep):
    """Splits at `sep` outside string literals and brackets."""
    parts, depth, cur, i = [], 0, [], 0
    while i < len(text):
        c = text[i]
        if c == '"':  # a string literal, escapes included
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur).strip())
    return parts


def asm_operand(text, path, is_output):
    m = re.fullmatch(r'("[^"]*")\s*\((.*)\)', text, re.S)
    if not m:
        sys.exit(f"{path}: an asm operand '{text}' is not \"constraint\"(expression)")
    constraint, expr = m.group(1), " ".join(m.group(2).split())
    kind = "in"
    if is_output:
        kind = "inout" if constraint.startswith('"+') else "out"
        if constraint[1] not in "=+":
            sys.exit(f"{path}: an asm output '{text}' without '=' or '+'")
    return f"::tessera::emu::ptx_{kind}({constraint}, {expr})"


def past_closing_paren(text, i, path):
    """The index just past the ')' that closes a '(' opened before i (string literals skipped)."""
    depth = 1
    while depth:
        if i >= len(text):
            sys.exit(f"{path}: a '(' without its ')'")
        if text[i] == '"':
            i = text.index('"', i + 1)
        elif text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
        i += 1
    return i


def rewrite_each(text, pattern, path, rewrite):
    """Each match of pattern, which ends just past a '(': rewrite(m, close), close the index just
    past its ')', returns the text that replaces text[m.start():end], and end."""
    out, pos = [], 0
    for m in pattern.finditer(text):
        if m.start() < pos:
            continue
        new, end = rewrite(m, past_closing_paren(text, m.end(), path))
        out.append(text[pos:m.start()] + new)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def rewrite_asm(text, path):
    def statement(m, close):
        body = text[m.end():close - 1]
        sections = split_top(body, ":") + ["", ""]
        operands = [asm_operand(o, path, True) for o in split_top(sections[1], ",") if o]
        operands += [asm_operand(o, path, False) for o in split_top(sections[2], ",") if o]
        template = " ".join(sections[0].split())
        return (f"::tessera::emu::ptx_asm({template}, {{{', '.join(operands)}}})" +
                "\n" * body.count("\n"), close)
    return rewrite_each(text, ASM, path, statement)


LAUNCH_BOUNDS = re.compile(r"\b__launch_bounds__\s*\(")


def rewrite_launch_bounds(text, path):
    def attribute(m, close):
        max_threads = split_top(text[m.end():close - 1], ",")[0]
        newlines = "\n" * text.count("\n", m.start(), close)
        body, end = text.find("{", close), text.find(";", close)
        if body < 0 or (0 <= end < body):  # a declaration: no body to check in
            return newlines, close
        return (newlines + text[close:body + 1] + f" ::tessera::emu::launch_bounds({max_threads});",
                body + 1)
    return rewrite_each(text, LAUNCH_BOUNDS, path, attribute)


VECTOR_CAST = re.compile(
    r"\breinterpret_cast<(\s*(?:const\s+)?(?:float[24]|u?int[24]|double2|__nv_bfloat162|__half2)\s*\*\s*)>")


def rewrite_vector_casts(text):
    return VECTOR_CAST.sub(r"::tessera::emu::vector_cast<\1>", text)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        text = f.read()
    text = re.sub(r"^\s*#\s*include\s*<cub/[^>]*>", "// (cub: kernels/emu/cuda_emu.h)", text,
                  flags=re.M)
    text = rewrite_extern_shared(text)
    text = rewrite_static_shared(text)
    text = rewrite_asm(text, src)
    text = rewrite_launch_bounds(text, src)
    text = rewrite_launches(text, src)
    text = rewrite_vector_casts(text)
    with open(dst, "w") as f:
        f.write(f'#line 1 "{src}"\n')
        f.write(text)


if __name__ == "__main__":
    main()
