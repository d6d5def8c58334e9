#!/usr/bin/env python3
"""The instructions of each kernel's main loop in a SASS listing (nvdisasm -c): how many issue for
every tensor-core product, without running anything.

For each kernel the main loop is the loop (a back edge's target and the blocks that reach the back
edge from it) with the most HMMA/HGMMA instructions. Printed per kernel:
  static  the instructions in the loop's body (every path, inner loops once);
  path    the instructions on the shortest path from the loop's head round to its back edge,
          inner loops once: the iteration where every skippable branch skips (for the flash
          kernels, a key tile every query sees: no mask); a 64-bit integer division or remainder
          whose operands fit 32 bits runs inline, so the path avoids the blocks that call
          nvcc's helper for wider ones (a call is two instructions here, dozens when it runs);
  mma     the tensor-core instructions on that path;
  per mma path / mma: instructions issued per product, the overhead a GPU pays in issue slots;
and the path's most frequent opcodes. A kernel change that moves `path` is visible here on a
machine without a GPU; what it costs or saves in time only a GPU says.

Usage: sass_loop_stats.py [--nvdisasm PATH] [--match REGEX] FILE...
FILE is a listing, or with --nvdisasm a cubin (sass_wgmma_check.disassemble).
"""
import collections
import heapq
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sass_wgmma_check import blocks_of, disassemble, kernels  # noqa: E402

MMA = ("HMMA", "HGMMA")
WIDE_DIVISION = re.compile(r"__cuda_sm20_(div|rem)_[su]64")


def loops(succ):
    """(head, latch, body) for each back edge latch -> head (head <= latch in address order)."""
    pred = [[] for _ in succ]
    for i, s in enumerate(succ):
        for j in s:
            pred[j].append(i)
    found = []
    for latch, s in enumerate(succ):
        for head in s:
            if head > latch:
                continue
            body, work = {head, latch}, [latch]
            while work:
                b = work.pop()
                for p in pred[b]:
                    if p not in body and head <= p <= latch:
                        body.add(p)
                        work.append(p)
            found.append((head, latch, body))
    return found


def shortest_path(blocks, succ, head, latch, body):
    """The blocks of the fewest-instruction path head -> latch inside body, forward edges only."""
    size = [len(insns) + (1 << 20) * any(i[2].startswith("CALL") and WIDE_DIVISION.search(i[3])
                                         for i in insns) for _, insns in blocks]
    dist, prev = {head: size[head]}, {}
    queue = [(size[head], head)]
    while queue:
        d, b = heapq.heappop(queue)
        if b == latch:
            break
        if d > dist.get(b, 1 << 60):
            continue
        for n in succ[b]:
            if n in body and n > b and d + size[n] < dist.get(n, 1 << 60):
                dist[n], prev[n] = d + size[n], b
                heapq.heappush(queue, (d + size[n], n))
    path, b = [latch], latch
    while b != head:
        b = prev[b]
        path.append(b)
    return path[::-1]


def stats(lines):
    blocks, succ = blocks_of(lines)
    best = None
    for head, latch, body in loops(succ):
        mma = sum(1 for b in body for i in blocks[b][1] if i[2].startswith(MMA))
        if mma and (best is None or mma > best[0]):
            best = (mma, head, latch, body)
    if best is None:
        return None
    _, head, latch, body = best
    path = shortest_path(blocks, succ, head, latch, body)
    insns = [i for b in path for i in blocks[b][1]]
    ops = collections.Counter(i[2].split(".")[0] for i in insns)
    return {
        "static": sum(len(blocks[b][1]) for b in body),
        "path": len(insns),
        "mma": sum(n for op, n in ops.items() if op in MMA),
        "ops": ops,
    }


def main():
    argv = sys.argv[1:]
    nvdisasm, match = None, None
    if "--nvdisasm" in argv:
        k = argv.index("--nvdisasm")
        nvdisasm = argv[k + 1]
        del argv[k:k + 2]
    if "--match" in argv:
        k = argv.index("--match")
        match = re.compile(argv[k + 1])
        del argv[k:k + 2]
    if not argv:
        raise SystemExit(__doc__)
    for f in argv:
        text = disassemble(nvdisasm, f) if nvdisasm else open(f).read()
        for name, lines in kernels(text):
            if match and not match.search(name):
                continue
            s = stats(lines)
            if s is None:
                continue
            per = s["path"] / s["mma"] if s["mma"] else float("inf")
            top = " ".join(f"{op} {n}" for op, n in s["ops"].most_common(10))
            print(f"{name}\n  static {s['static']}  path {s['path']}  mma {s['mma']}  "
                  f"per mma {per:.2f}\n  {top}")


if __name__ == "__main__":
    main()
