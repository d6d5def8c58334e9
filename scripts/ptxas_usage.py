#!/usr/bin/env python3
"""Registers, spills and static shared memory of every CUDA kernel, as ptxas reports them for one
architecture, most registers first. A build-time look at what decides occupancy, for a machine with
nvcc and no GPU as much as for one with a GPU.

  scripts/ptxas_usage.py [BUILD_DIR (default build)] [ARCH (default 90)] [FILE.cu ...]

FILE.cu: only these of kernels/ (by name), for a quick before-and-after of one change.

Recompiles each kernels/*.cu with the command in BUILD_DIR/compile_commands.json (a CUDA build:
cmake -DTESSERA_CUDA=ON), for sm_ARCH only, with -Xptxas -v, writing no object. A block of T
threads needs T x registers (rounded up to 8 per thread) of the SM's 65536: a kernel launched
wider than that fails with "too many resources requested for launch", so compare the top rows
with their launches' block sizes (every kernel above 64 registers runs 128-thread blocks).
"""
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    arch = sys.argv[2] if len(sys.argv) > 2 else "90"
    path = os.path.join(build, "compile_commands.json")
    if not os.path.exists(path):
        sys.exit(f"ptxas_usage.py: no {path} (configure a CUDA build first)")
    only = set(sys.argv[3:])
    commands = [c for c in json.load(open(path))
                if c["file"].endswith(".cu") and "/kernels/" in c["file"]
                and (not only or os.path.basename(c["file"]) in only)]
    if not commands:
        sys.exit(f"ptxas_usage.py: {path} compiles no kernels/*.cu (not a CUDA build?)")

    def run(c):
        # A file built for an architecture-specific target (flash_wgmma.cu: sm_90a) keeps it.
        suffix = "a" if re.search(r"compute_\d+a\b", c["command"]) else ""
        cmd = re.sub(r"--generate-code=arch=compute_\d+a?,code=\[compute_\d+a?,sm_\d+a?\]", "",
                     c["command"])
        cmd = re.sub(r" -o \S+", " -o /dev/null", cmd)
        cmd += f" --generate-code=arch=compute_{arch}{suffix},code=sm_{arch}{suffix} -Xptxas -v"
        r = subprocess.run(cmd, shell=True, cwd=c["directory"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"ptxas_usage.py: compiling {c['file']} failed:\n{r.stderr[-2000:]}")
        return os.path.basename(c["file"]), r.stderr

    rows = []
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for name, log in pool.map(run, commands):
            kernel, spill = None, 0
            for line in log.splitlines():
                m = re.search(r"Compiling entry function '(\S+)' for 'sm_\d+a?'", line)
                if m:
                    kernel, spill = m.group(1), 0
                    continue
                m = re.search(r"(\d+) bytes spill stores", line)
                if m and kernel:
                    spill = int(m.group(1))
                m = re.search(r"Used (\d+) registers", line)
                if m and kernel:
                    smem = re.search(r"(\d+) bytes smem", line)
                    rows.append((int(m.group(1)), spill, int(smem.group(1)) if smem else 0, name,
                                 kernel))
                    kernel = None
    demangled = subprocess.run(["c++filt"], input="\n".join(r[4] for r in rows),
                               capture_output=True, text=True).stdout.splitlines()
    rows = [r[:4] + (d,) for r, d in zip(rows, demangled)] if len(demangled) == len(rows) else rows
    rows.sort(key=lambda r: (-r[0], -r[1]))
    print(f"{'regs':>4} {'spill':>6} {'smem':>6}  file: kernel (sm_{arch}, {len(rows)} kernels; "
          "spill: bytes of spill stores; smem: static shared bytes)")
    for regs, spill, smem, name, kernel in rows:
        print(f"{regs:>4} {spill:>6} {smem:>6}  {name}: {kernel[:150]}")


if __name__ == "__main__":
    main()
