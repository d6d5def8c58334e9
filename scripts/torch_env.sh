# Sourced by the CPU benchmarks (bench_cpu.sh, bench_checkpoint.sh, bench_dp.sh): how their
# PyTorch comparison runs, so that it gets what tessera gets.
#
# tessera's large host tensors ask for transparent huge pages (src/core/storage.cpp). PyTorch's CPU
# tensors come from glibc's malloc, which asks for them under GLIBC_TUNABLES=glibc.malloc.hugetlb=1
# (glibc 2.35 and later; Debian 12 has 2.36). On a VM whose page faults are slow that decides
# PyTorch's figures: on the 2-core AMD EPYC VM of 2026-12-05 its GPT-2 124M CPU step took 7.4-8.2 s
# without and 3.4 s with, torch.load of a 1.5 GB checkpoint 4.7 s without and 0.70 s with.
# TORCH_TUNABLES="" runs PyTorch with glibc's defaults.
TORCH_TUNABLES="${TORCH_TUNABLES-glibc.malloc.hugetlb=1}"

# torch_python ARGS...: $TORCH_PYTHON (default /usr/bin/python3, Debian's: apt-get install
# python3-torch) under those tunables.
TORCH_PYTHON="${TORCH_PYTHON:-/usr/bin/python3}"
torch_python() { GLIBC_TUNABLES="$TORCH_TUNABLES" "$TORCH_PYTHON" "$@"; }
