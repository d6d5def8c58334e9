#!/usr/bin/env bash
# Installs everything tessera needs on Debian 12. Idempotent: prints nothing and exits 0 when all
# packages are already present.
#   scripts/setup.sh         # building, training, the scripts
#   scripts/setup.sh tests   # and Debian's PyTorch (scripts/test.sh): the tests' independent
#                            # check of an export's logits (hf_logits.py) runs on it, as the CPU
#                            # benches' comparisons do (bench_cpu.sh, bench_dp.sh); and the
#                            # Unicode data files, whose NormalizationTest.txt the NFC tests read
set -euo pipefail

PACKAGES=(
  cmake g++ ninja-build pkg-config ccache
  libyaml-cpp-dev libhdf5-dev libcxxopts-dev libgtest-dev
  libopenblas-dev libopenmpi-dev openmpi-bin
  python3-numpy python3-h5py python3-matplotlib
)
case "${1:-}" in
  "") ;;
  tests) PACKAGES+=(python3-torch python3-jinja2 unicode-data bzip2) ;;
  *) echo "setup: unknown argument '$1' (none, or tests)" >&2; exit 2 ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
