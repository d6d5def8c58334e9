#!/usr/bin/env python3
"""Checks the A registers of every register-sourced wgmma in a SASS listing (nvdisasm -c).

A wgmma whose left operand comes from registers (HGMMA ... Rd, Ra, gdesc ...) reads Ra .. Ra + 3
when it issues. For each such instruction this finds, over the kernel's control-flow graph, the
definitions of those registers that can reach it, and reports the instruction when
  - the kernel's entry reaches it (a register read before any write on some path), or
  - the reaching definitions are of more than one kind (say the LDSM that took a held tile and
    the F2FP that packed a later product's P into the same register).
Either means the operand is not one value the source defined. The flash backward at D 64 showed
both (kernels/flash_mma_backward.h, backward_dkdv_block): K and V (or Q and dO) taken into registers in
the loop's first iteration only, then before the loop; ptxas (nvcc 13.0) gave those registers to
the packed P^T and dS^T after the products, so every later iteration read those instead.

Usage: sass_wgmma_check.py [--nvdisasm PATH] [--expect-failure] FILE...
FILE is a listing, or with --nvdisasm a cubin to disassemble first (a copy's ELF header is
rewritten into the pre-CUDA-12 form where nvdisasm is older than the compiler: see
old_header). Exit 1 on a finding or on nothing to check; --expect-failure inverts the findings'
verdict: then every kernel must have a finding (the checker's own test on listings written
to have them).
"""
import os
import re
import struct
import subprocess
import sys
import tempfile

INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
LABEL = re.compile(r"^\s*(\.L_x_\d+):")
SECTION = re.compile(r"^//-+ \.text\.(\S+)\s+-+")
REG = re.compile(r"^R(\d+)$")


def dest_width(op):
    if op.startswith("HGMMA"):
        m = re.match(r"HGMMA\.64x(\d+)x", op)
        return int(m.group(1)) // 2 if m else 1
    if op.startswith("LDSM"):
        return 4 if op.endswith(".4") else 2 if op.endswith(".2") else 1
    if op.startswith("HMMA"):
        return 4 if ".F32" in op else 2
    if op.startswith(("LD", "ATOM")):
        return 4 if ".128" in op else 2 if ".64" in op else 1
    if "WIDE" in op or op.startswith(("DADD", "DMUL", "DFMA", "F2F.F64", "I2F.F64")):
        return 2
    return 1


def defined(op, operands):
    """The R registers an instruction writes: its first operand, when that is a register."""
    first = operands.split(",")[0].strip().split(".")[0] if operands else ""
    m = REG.match(first)
    if not m or op.startswith(("ST", "RED", "BRA", "BAR", "EXIT")):
        return ()
    base = int(m.group(1))
    return tuple(range(base, base + dest_width(op)))


def kernels(text):
    name, lines = None, []
    for line in text.splitlines():
        m = SECTION.match(line)
        if m:
            if name and lines:
                yield name, lines
            name, lines = m.group(1), []
        elif name:
            lines.append(line)
    if name and lines:
        yield name, lines


def blocks_of(lines):
    """Basic blocks: (label or None, [(address, predicated, op, operands)]) and their successors."""
    blocks, current, label = [], [], None
    for line in lines:
        m = LABEL.match(line)
        if m:
            if current or label:
                blocks.append((label, current))
            current, label = [], m.group(1)
            continue
        m = INSN.search(line)
        if not m:
            continue
        op, operands = m.group(3), m.group(4).strip()
        current.append((int(m.group(1), 16), bool(m.group(2)), op, operands))
        if op.startswith(("BRA", "EXIT", "BRX", "RET", "JMP", "CALL")):
            blocks.append((label, current))
            current, label = [], None
    if current or label:
        blocks.append((label, current))
    index = {label: i for i, (label, _) in enumerate(blocks) if label}
    succ = []
    for i, (_, insns) in enumerate(blocks):
        s = []
        last = insns[-1] if insns else None
        ends = last and last[2].startswith(("BRA", "EXIT", "BRX", "RET", "JMP"))
        if last and last[2].startswith(("BRA", "JMP")):
            t = re.search(r"\.L_x_\d+", last[3])
            if t and t.group(0) in index:
                s.append(index[t.group(0)])
        if (not ends or last[1] or last[2].startswith("BRA.DIV")) and i + 1 < len(blocks):
            s.append(i + 1)
        succ.append(s)
    return blocks, succ


def reaching(blocks, r, bi, state, upto=None):
    """The definitions of register r that reach instruction upto of block bi (its end if None)
    from `state` at its start: a set of (address, opcode); a predicated write kills nothing."""
    s = set(state)
    for (ad, pr, o, ops) in blocks[bi][1][:upto]:
        if r in defined(o, ops):
            s = (s if pr else set()) | {(ad, o.split(".")[0])}
    return s


def reaching_in(blocks, succ, pred, r):
    """Per block, the definitions of register r reaching its start (("entry", "entry"): none yet
    on some path), by the usual fixed point over the control-flow graph."""
    ins, outs = [None] * len(blocks), [None] * len(blocks)
    work = list(range(len(blocks)))
    while work:
        bi = work.pop()
        i_set = {("entry", "entry")} if bi == 0 else set()
        for p in pred[bi]:
            if outs[p] is not None:
                i_set |= outs[p]
        ins[bi] = i_set
        o_set = reaching(blocks, r, bi, i_set)
        if o_set != outs[bi]:
            outs[bi] = o_set
            work.extend(succ[bi])
    return ins


def check_kernel(lines):
    blocks, succ = blocks_of(lines)
    pred = [[] for _ in blocks]
    for i, s in enumerate(succ):
        for j in s:
            pred[j].append(i)
    findings, checked, ins_of = [], 0, {}
    uses = [(b, k, insn) for b, (_, insns) in enumerate(blocks) for k, insn in enumerate(insns)
            if insn[2].startswith("HGMMA") and REG.match(insn[3].split(",")[1].strip())]
    for b, k, (addr, _, op, operands) in uses:
        checked += 1
        a0 = int(REG.match(operands.split(",")[1].strip()).group(1))
        for r in range(a0, a0 + 4):
            if r not in ins_of:  # a register's fixed point serves every wgmma that reads it
                ins_of[r] = reaching_in(blocks, succ, pred, r)
            reach = reaching(blocks, r, b, ins_of[r][b], k)
            kinds = {kind for _, kind in reach}
            if "entry" in kinds or len(kinds) > 1:
                where = ", ".join(f"{kind}@{ad if isinstance(ad, str) else hex(ad)}"
                                  for ad, kind in sorted(reach, key=str))
                findings.append(f"  {hex(addr)} {op} reads R{r}, reached by {where}")
                break
    return checked, findings


def old_header(cubin, out):
    """A copy of a CUDA 12+ cubin whose ELF header an nvdisasm of CUDA 11 reads: ABI version 7
    (e_ident[8]) and e_flags in that ABI's form, SM | (SM << 16) | 64-bit address | unified
    texture mode. The new form keeps the SM number in bits 8-15 of e_flags (0x6005a04 for
    sm_90a); the code itself is unchanged."""
    data = bytearray(open(cubin, "rb").read())
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise SystemExit(f"sass_wgmma_check: {cubin} is not a 64-bit ELF cubin")
    (flags,) = struct.unpack_from("<I", data, 0x30)
    sm = (flags >> 8) & 0xFF if data[8] >= 8 else flags & 0xFF
    data[8] = 7
    struct.pack_into("<I", data, 0x30, sm | 0x500 | (sm << 16))
    open(out, "wb").write(data)


def disassemble(nvdisasm, cubin):
    run = subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True)
    if run.returncode == 0:
        return run.stdout
    if "architecture information" not in run.stderr:
        raise SystemExit(f"sass_wgmma_check: {nvdisasm} {cubin}: {run.stderr.strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "old_header.cubin")
        old_header(cubin, copy)
        run = subprocess.run([nvdisasm, "-c", copy], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"sass_wgmma_check: {nvdisasm} {cubin} (header rewritten): "
                         f"{run.stderr.strip()}")
    return run.stdout


def main():
    argv = sys.argv[1:]
    expect_failure = "--expect-failure" in argv
    argv = [a for a in argv if a != "--expect-failure"]
    nvdisasm = None
    if "--nvdisasm" in argv:
        i = argv.index("--nvdisasm")
        nvdisasm = argv[i + 1]
        del argv[i:i + 2]
    if not argv:
        raise SystemExit(__doc__)
    total, bad, clean = 0, 0, 0
    for path in argv:
        text = disassemble(nvdisasm, path) if nvdisasm else open(path).read()
        for name, lines in kernels(text):
            checked, findings = check_kernel(lines)
            if not checked:
                continue
            total += checked
            print(f"{os.path.basename(path)}: {name[:100]}: {checked} register-sourced wgmma, "
                  f"{len(findings)} findings")
            for f in findings:
                print(f)
            bad += len(findings)
            clean += not findings
    print(f"sass_wgmma_check: {total} register-sourced wgmma checked, {bad} findings")
    if total == 0:
        print("sass_wgmma_check: no register-sourced wgmma in the input")
        return 1
    if expect_failure:  # every kernel of the input must have a finding
        return 1 if clean else 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
