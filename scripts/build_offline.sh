#!/usr/bin/env bash
# Builds tessera with CUDA on a machine without network or Debian packages (the lent GPU machine:
# nvcc, CMake, ninja and g++ are there; yaml-cpp, HDF5, cxxopts, OpenBLAS, googletest are not), from
# the .deb files scripts/collect_debs.sh downloaded, then runs the GPU tests.
#
#   scripts/build_offline.sh              # unpack, configure, build, ctest -L gpu
#   STEPS=configure scripts/build_offline.sh   # stop after configuring (what can be checked sans GPU)
#   STEPS=build scripts/build_offline.sh       # stop after building
#   STEPS=build TARGETS="bench_gpu" scripts/build_offline.sh   # build only these targets
#   NCCL=off scripts/build_offline.sh          # without the NCCL communicator (see "NCCL" below)
#
# Nothing is installed: every .deb is unpacked with `dpkg-deb -x` into PREFIX, CMake is pointed at
# it (CMAKE_PREFIX_PATH for the CMake packages, CMAKE_LIBRARY_PATH / CMAKE_INCLUDE_PATH for
# OpenBLAS, Debian's h5cc with its prefix rewritten for HDF5), the linker resolves the libraries'
# own dependencies through -rpath-link, and the binaries carry an RPATH (old-style, so that it also
# serves the libraries' own dependencies) to a folder holding only the unpacked shared libraries this
# system lacks; the same folder goes on LD_LIBRARY_PATH for the build (gtest_discover_tests runs
# each test binary) and the tests. CMake, Python and the rest keep their own libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

DEBS="${DEBS:-third_party/debs}"
PREFIX="${PREFIX:-$ROOT/.deps/offline}"
BUILD_DIR="${BUILD_DIR:-build-offline}"
STEPS="${STEPS:-test}"  # configure | build | test
CUDA_ARCH="${CUDA_ARCH:-90}"
JOBS="${JOBS:-$(nproc)}"

ls "$DEBS"/*.deb >/dev/null 2>&1 || { echo "build_offline: no .deb files in $DEBS (run scripts/collect_debs.sh where apt works)" >&2; exit 1; }
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

# ---- unpack ------------------------------------------------------------------------------------
stamp="$PREFIX/.unpacked"
if [ ! -f "$stamp" ] || [ -n "$(find "$DEBS" -name '*.deb' -newer "$stamp" -print -quit)" ]; then
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  for f in "$DEBS"/*.deb; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$f" "$PREFIX"
    else  # a .deb is an ar archive holding data.tar.*
      tmp="$(mktemp -d)"
      (cd "$tmp" && ar x "$ROOT/$f" && tar -xf data.tar.* -C "$PREFIX")
      rm -rf "$tmp"
    fi
  done
  touch "$stamp"
fi
U="$PREFIX/usr"
L="$U/lib/x86_64-linux-gnu"
# Debian 12 packages still put some libraries (zlib, libcom_err, ...) under /lib, not /usr/lib.
LIBDIRS=("$L" "$PREFIX/lib/x86_64-linux-gnu" "$L/openblas-pthread" "$L/hdf5/serial")

# Debian's h5cc (FindHDF5 asks it for flags) has prefix=/usr written into it.
sed -i "s|^prefix=\"/usr\"|prefix=\"$U\"|" "$U/bin/h5cc"
# Links that point at absolute /usr/... paths would leave the prefix: re-point them inside it.
find "$PREFIX" -type l | while read -r link; do
  target="$(readlink "$link")"
  case "$target" in /usr/*|/lib/*) [ -e "$PREFIX$target" ] && ln -sfn "$PREFIX$target" "$link" ;; esac
done

# Run-time folder: the unpacked shared libraries that the system's loader does not know.
RUNLIB="$PREFIX/runtime-lib"
rm -rf "$RUNLIB"
mkdir -p "$RUNLIB"
known="$(ldconfig -p 2>/dev/null | awk '{print $1}' | sort -u)"
for dir in "${LIBDIRS[@]}"; do
  for so in "$dir"/*.so.*; do
    [ -e "$so" ] || continue
    name="$(basename "$so")"
    grep -qxF "$name" <<<"$known" || ln -sfn "$so" "$RUNLIB/$name"
  done
done
echo "build_offline: $(ls "$RUNLIB" | wc -l) unpacked libraries the system lacks go on LD_LIBRARY_PATH"

# ---- NCCL --------------------------------------------------------------------------------------
# NCCL=auto (the default) builds the NCCL communicator where a libnccl.so.2 is found: in the CUDA
# toolkit's folders, else in the NCCL wheel the machine's PyTorch depends on (nvidia-nccl-cu13,
# whose file list python3 reads: nvidia/nccl/lib in site-packages; no Debian package reaches that
# machine). Its header: the wheel's or the one beside the library, else the toolkit's, else the
# copy collect_debs.sh carried ($DEBS/nccl/nccl.h). NCCL=off builds without it. The line
# "build_offline: NCCL ..." says which.
NCCL="${NCCL:-auto}"
NCCL_LIB="" NCCL_INC="" NCCL_WHEEL=""
nccl_version() {  # the NCCL_MAJOR.MINOR.PATCH a header declares
  awk '$1 == "#define" && $2 ~ /^NCCL_(MAJOR|MINOR|PATCH)$/ { v = v (v ? "." : "") $3 } END { print v }' "$1"
}
find_nccl() {
  local nvcc_dir toolkit dir wheel_inc=""
  nvcc_dir="$(dirname "$(command -v nvcc)")"
  toolkit="$(cd "$nvcc_dir/.." && pwd)"
  for dir in "$toolkit/lib64" "$toolkit/lib" "$toolkit/targets/x86_64-linux/lib" /usr/lib/x86_64-linux-gnu; do
    [ -e "$dir/libnccl.so.2" ] && { NCCL_LIB="$dir/libnccl.so.2"; break; }
  done
  if [ -z "$NCCL_LIB" ]; then
    # The wheel's library, header folder, name and version (the library's, which a header taken
    # from elsewhere may not share), found in its file list whatever its layout.
    local wheel
    wheel="$("${PYTHON:-python3}" - 2>/dev/null <<'PY' || true
import importlib.metadata as m
for d in m.distributions():
    name = d.metadata["Name"] or ""
    if not name.lower().startswith("nvidia-nccl"):
        continue
    lib = inc = ""
    for f in d.files or []:
        if f.name == "libnccl.so.2":
            lib = str(d.locate_file(f))
        elif f.name == "nccl.h":
            inc = str(d.locate_file(f).parent)
    if lib:
        print(lib, inc, f"{name} {d.version}", sep="\n")
        break
PY
)"
    NCCL_LIB="$(sed -n 1p <<<"$wheel")"
    [ -n "$NCCL_LIB" ] && [ -e "$NCCL_LIB" ] || NCCL_LIB=""
    wheel_inc="$(sed -n 2p <<<"$wheel")"
    [ -n "$NCCL_LIB" ] && NCCL_WHEEL="$(sed -n 3p <<<"$wheel")"
  fi
  [ -n "$NCCL_LIB" ] || return 1
  for dir in ${wheel_inc:+"$wheel_inc"} "$(dirname "$NCCL_LIB")/../include" "$toolkit/include" "$toolkit/targets/x86_64-linux/include" "$DEBS/nccl"; do
    [ -e "$dir/nccl.h" ] && { NCCL_INC="$(cd "$dir" && pwd)"; break; }
  done
  [ -n "$NCCL_INC" ]
}
case "$NCCL" in
  off) NCCL_FLAGS=(-DTESSERA_NCCL=OFF); echo "build_offline: NCCL off (NCCL=off)" ;;
  auto)
    if find_nccl; then
      NCCL_FLAGS=(-DTESSERA_NCCL=ON -DTESSERA_NCCL_LIBRARY="$NCCL_LIB" -DTESSERA_NCCL_INCLUDE="$NCCL_INC")
      echo "build_offline: NCCL $(nccl_version "$NCCL_INC/nccl.h") (header $NCCL_INC/nccl.h, library $NCCL_LIB${NCCL_WHEEL:+ of the wheel $NCCL_WHEEL})"
      # The loader finds it where the binaries run: beside the unpacked libraries.
      ln -sfn "$NCCL_LIB" "$RUNLIB/libnccl.so.2"
    else
      NCCL_FLAGS=(-DTESSERA_NCCL=OFF)
      if [ -n "$NCCL_LIB" ]; then why="$NCCL_LIB but no nccl.h"; else why="no libnccl.so.2"; fi
      echo "build_offline: NCCL off ($why found)"
    fi ;;
  *) echo "build_offline: NCCL must be auto or off, got '$NCCL'" >&2; exit 1 ;;
esac

# ---- configure ---------------------------------------------------------------------------------
join() { local IFS="$1"; shift; echo "$*"; }
GEN=()
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then GEN=(-G Ninja); fi
configure() {
  cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DTESSERA_CUDA=ON "${NCCL_FLAGS[@]}" -DTESSERA_MPI=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
    -DCMAKE_PREFIX_PATH="$(join ';' "$U" "$L/cmake")" \
    -DCMAKE_LIBRARY_PATH="$(join ';' "${LIBDIRS[@]}")" \
    -DTESSERA_CBLAS_INCLUDE="$U/include/x86_64-linux-gnu/openblas-pthread" \
    -DHDF5_C_COMPILER_EXECUTABLE="$U/bin/h5cc" \
    -DCMAKE_DISABLE_FIND_PACKAGE_OpenBLAS=ON \
    -DCMAKE_EXE_LINKER_FLAGS="-Wl,--disable-new-dtags -Wl,-rpath-link,$(join ':' "${LIBDIRS[@]}")" \
    -DCMAKE_BUILD_RPATH="$RUNLIB"
}
configure
# What was found must come from the prefix, not from a stray system copy.
for key in yaml-cpp_DIR GTest_DIR cxxopts_DIR HDF5_C_LIBRARY_hdf5 BLAS_openblas_LIBRARY TESSERA_CBLAS_INCLUDE; do
  line="$(grep -E "^$key:" "$BUILD_DIR/CMakeCache.txt" || true)"
  echo "build_offline: $line"
  case "$line" in *"$PREFIX"*) ;; "") ;; *) echo "build_offline: warning: $key is outside $PREFIX" >&2 ;; esac
done
[ "$STEPS" = configure ] && exit 0

# ---- build and test ----------------------------------------------------------------------------
export LD_LIBRARY_PATH="$RUNLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
read -r -a targets <<<"${TARGETS:-}"
build() { cmake --build "$BUILD_DIR" -j"$JOBS" ${targets[@]:+--target "${targets[@]}"}; }
if ! build 2>&1 | tee "$BUILD_DIR/build_offline.log"; then
  # A build that failed in NCCL's code alone (ninja's "FAILED: <the communicator's object>", or
  # a link missing an NCCL symbol: a header older than the code's calls, say) must not cost a GPU
  # session its build: the same build without the communicator.
  grep -qE 'FAILED: .*nccl|undefined reference to .nccl' "$BUILD_DIR/build_offline.log" &&
    [ "${NCCL_FLAGS[0]}" = -DTESSERA_NCCL=ON ] || exit 1
  echo "build_offline: NCCL off (the build with NCCL failed, above): building without it"
  NCCL_FLAGS=(-DTESSERA_NCCL=OFF -UTESSERA_NCCL_LIBRARY -UTESSERA_NCCL_INCLUDE)
  configure
  build
fi
[ "$STEPS" = build ] && exit 0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
# tests/cuda: every GPU test, labelled gpu.
ctest --test-dir "$BUILD_DIR" --output-on-failure -j4 -L gpu
