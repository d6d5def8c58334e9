# Sourced by the scripts that configure a build (from the repository root):
#   configure BUILD_DIR [cmake arguments...]
# Ninja when it is installed (a build directory keeps the generator it was made with), and ccache
# as the compiler launcher when it is installed (scripts/setup.sh installs it): objects that compile
# the same in another build directory of the tree are reused, as CI's builds with and without nvcc
# and the emulator's do (core/build.h says how the sources keep them the same).
configure() {
  local dir="$1"
  shift
  local args=()
  if command -v ninja >/dev/null && [ ! -f "$dir/CMakeCache.txt" ]; then args+=(-G Ninja); fi
  # (only where its cache folder can be written: a compile through ccache fails where it cannot)
  local cache
  if command -v ccache >/dev/null && cache="$(ccache -k cache_dir 2>/dev/null)" &&
     mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; then
    args+=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S . -B "$dir" "${args[@]}" "$@"
}

# The sanitizer builds' flags (fuzz_checkpoints.sh; build_emu.sh and test_emu.sh with
# EMU_SANITIZE=1): AddressSanitizer and UndefinedBehaviorSanitizer, a report ends the process.
SANITIZE_ARGS=(
  "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
  "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined")
