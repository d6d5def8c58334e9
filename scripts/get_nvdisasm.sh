#!/usr/bin/env bash
# Prints the path of an nvdisasm that scripts/sass_wgmma_check.sh can use, fetching one if needed.
# Usage: scripts/get_nvdisasm.sh [cache dir]   (default third_party/nvdisasm)
#
# In order: $NVDISASM; the nvdisasm beside nvcc (a full CUDA toolkit has it); one fetched before
# into the cache; else Debian 12's nvidia-cuda-toolkit (non-free, CUDA 11.8), downloaded with
# apt-get into the cache and unpacked there, without touching the system's apt sources or
# installing anything. nvdisasm 11.8 reads sm_90 code (HGMMA included) but not the ELF header
# that CUDA 12 and later write; sass_wgmma_check.py rewrites a copy's header for it.
# Exit 1, saying why on stderr, where none can be had.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${1:-third_party/nvdisasm}"

if [ -n "${NVDISASM:-}" ]; then
  [ -x "$NVDISASM" ] || { echo "get_nvdisasm.sh: NVDISASM=$NVDISASM is not executable" >&2; exit 1; }
  echo "$NVDISASM"
  exit 0
fi
nvcc_path="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
if [ -x "$(dirname "$nvcc_path")/nvdisasm" ]; then
  echo "$(dirname "$nvcc_path")/nvdisasm"
  exit 0
fi
fetched="$cache/usr/bin/nvdisasm"
if [ -x "$fetched" ]; then
  echo "$fetched"
  exit 0
fi

# Debian's non-free component through a private apt configuration: its own sources, lists and
# cache under $cache/apt, so the machine's apt state stays as it was.
apt_dir="$(realpath -m "$cache/apt")"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
cat > "$apt_dir/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm non-free
EOF
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
          -o "Debug::NoLocking=1")
if ! apt-get "${apt_opts[@]}" update -qq >"$apt_dir/update.log" 2>&1; then
  echo "get_nvdisasm.sh: apt-get update of Debian's non-free component failed ($apt_dir/update.log)" >&2
  exit 1
fi
if ! (cd "$apt_dir/archives" && apt-get "${apt_opts[@]}" download nvidia-cuda-toolkit \
        >"$apt_dir/download.log" 2>&1); then
  echo "get_nvdisasm.sh: apt-get download nvidia-cuda-toolkit failed ($apt_dir/download.log)" >&2
  exit 1
fi
deb="$(ls "$apt_dir"/archives/nvidia-cuda-toolkit_*.deb | head -1)"
dpkg-deb -x "$deb" "$apt_dir/unpacked"
mkdir -p "$cache/usr/bin"
cp "$apt_dir/unpacked/usr/bin/nvdisasm" "$fetched"
rm -rf "$apt_dir"
echo "$fetched"
