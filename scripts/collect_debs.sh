#!/usr/bin/env bash
# Downloads the Debian 12 packages tessera builds against (headers, link-time libraries and their
# runtime libraries) into third_party/debs/, for a machine that has a compiler, CMake and CUDA but
# no network and no such packages (the lent GPU machine): scripts/build_offline.sh unpacks them
# there with `dpkg-deb -x` (nothing is installed) and builds against the unpacked tree.
#
#   scripts/collect_debs.sh            # here, where apt works; prints every file and the total
#   DEBS=/elsewhere scripts/collect_debs.sh
#
# The set is the closure of the packages below over their Depends (the first of alternatives),
# stopping at what every glibc + g++ machine has (libc6, libstdc++6, ...) and leaving out parts
# tessera does not link (HDF5's Fortran and C++ bindings, googletest's sources, MPI). The folder
# travels with the working tree (<= 64 MiB in all), so the total is checked against DEBS_MAX_MIB.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS="${DEBS:-third_party/debs}"
DEBS_MAX_MIB="${DEBS_MAX_MIB:-48}"

ROOTS=(
  libyaml-cpp-dev libcxxopts-dev libgtest-dev
  libopenblas-dev libopenblas-pthread-dev libopenblas0 libopenblas0-pthread
  libhdf5-dev libhdf5-103-1 libhdf5-hl-100 hdf5-helpers
  # FindHDF5 links what `h5cc -show` names: -lcrypto -lcurl -lsz -lz need their .so symlinks.
  libssl-dev libcurl4-openssl-dev libaec-dev zlib1g-dev
)
# Present wherever g++ and glibc are, or not needed to build and run tessera.
SKIP=(
  libc6 libc6-dev libgcc-s1 libstdc++6 gcc-12-base libcrypt1 libcrypt-dev linux-libc-dev
  libnsl-dev libtirpc-dev rpcsvc-proto libc-dev-bin debconf dpkg perl-base
  googletest libgmock-dev
  libhdf5-fortran-102 libhdf5-hl-fortran-100 libhdf5-cpp-103-1 libhdf5-hl-cpp-100
  libjpeg-dev libjpeg62-turbo-dev libjpeg62-turbo
)

skipped() { local p; for p in "${SKIP[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

# Depends of one package, the first alternative of each group, architecture qualifiers dropped.
depends_of() {
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances "$1" 2>/dev/null | awk '
      /^ *\|?(Pre)?Depends:/ {
        alt = ($1 ~ /^\|/)
        name = $2; sub(/:.*/, "", name)
        if (!in_group && name !~ /^</) print name
        in_group = alt
      }'
}

declare -A seen=()
queue=("${ROOTS[@]}")
while [ ${#queue[@]} -gt 0 ]; do
  p="${queue[0]}"
  queue=("${queue[@]:1}")
  [ -n "${seen[$p]:-}" ] && continue
  skipped "$p" && continue
  apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || { echo "collect_debs: no package $p (apt-get update?)" >&2; exit 1; }
  seen[$p]=1
  while read -r d; do
    [ -n "$d" ] && [ -z "${seen[$d]:-}" ] && queue+=("$d")
  done < <(depends_of "$p")
done

mkdir -p "$DEBS"
cd "$DEBS"
rm -f ./*.deb
mapfile -t pkgs < <(printf '%s\n' "${!seen[@]}" | sort)
echo "collect_debs: downloading ${#pkgs[@]} packages into $DEBS"
apt-get download -q "${pkgs[@]}" >/dev/null
# NCCL's header, for a GPU machine whose NCCL library came without one (build_offline.sh's last
# choice): the toolkit's here.
rm -rf nccl
for h in /usr/local/cuda/include/nccl.h /usr/include/nccl.h; do
  [ -e "$h" ] && { mkdir -p nccl && cp "$h" nccl/ && echo "collect_debs: nccl/nccl.h from $h"; break; }
done
ls -l --block-size=K ./*.deb | awk '{printf "  %8s  %s\n", $5, $9}'
total_kib=$(du -ck ./*.deb | tail -1 | cut -f1)
echo "collect_debs: ${#pkgs[@]} files, $((total_kib / 1024)) MiB in all"
if [ "$total_kib" -gt $((DEBS_MAX_MIB * 1024)) ]; then
  echo "collect_debs: more than ${DEBS_MAX_MIB} MiB: the working tree that travels to the GPU machine is limited to 64 MiB" >&2
  exit 1
fi
