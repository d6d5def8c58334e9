#!/usr/bin/env bash
# scripts/sass_loop_stats.py on a hand-written listing (tests/scripts/sass/loop_stats.sass): the
# main loop is the one with products, its shortest path skips the masking block, the inner copy
# loop counts once, a 64-bit division takes its inline 32-bit path rather than the call to nvcc's
# helper, and a kernel without products is not reported.
set -euo pipefail
cd "$(dirname "$0")/../.."
got=$(python3 scripts/sass_loop_stats.py tests/scripts/sass/loop_stats.sass)
want="toy_kernel
  static 13  path 10  mma 2  per mma 5.00
  BRA 3 HMMA 2 IADD3 2 LDSM 1 MUFU 1 LDGSTS 1
toy_division
  static 11  path 8  mma 1  per mma 8.00
  BRA 2 IMAD 2 HMMA 1 I2F 1 MUFU 1 IADD3 1"
if [ "$got" != "$want" ]; then
  printf 'sass_loop_stats: got\n%s\nwhere the listing has\n%s\n' "$got" "$want"
  exit 1
fi
echo "sass_loop_stats: ok"
