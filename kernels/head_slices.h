// The passes of an attention backward whose scratch grows with B H T^2 (stick-breaking's
// checkpoints, the stored dS of FlashKernels::MmaStoredDs): where the whole would pass a budget,
// the backward runs over slices of the batch, or of one batch element's kv heads, each with the
// query heads of their groups, and each pass's scratch is freed for the next. Every block of a
// pass computes what it would in one pass over the whole (the same tiles, the same order of sums),
// so the results are the same bits; only the peak memory and the number of launches change.
// Plain C++ (kernels/stick_breaking.cu and flash_mma.cu slice their tensors by it; tests/kernels
// checks it on the CPU).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "core/error.h"

namespace tessera::cuda::attn {

// Batch elements [b0, b0 + nb) and kv heads [g0, g0 + ng) with their query heads
// [g0 G, (g0 + ng) G), G = H / Hkv.
struct HeadSlice {
  int64_t b0, nb, g0, ng;
};

// n items in as few runs of at most `most` (>= 1) as can hold them, their lengths within one of
// each other (the longer first): passes of even size, none a small tail grid. fn(start, length).
template <class F>
void even_runs(int64_t n, int64_t most, F&& fn) {
  const int64_t runs = (n + most - 1) / most, base = n / runs, longer = n % runs;
  for (int64_t r = 0, at = 0; r < runs; ++r) {
    const int64_t len = base + (r < longer ? 1 : 0);
    fn(at, len);
    at += len;
  }
}

// The slices, in order, that cover B batch elements of H query heads (Hkv kv heads, H a multiple
// of Hkv) when each query head of a batch element needs bytes_per_head of scratch and a pass should
// hold at most budget: the whole at once if it fits; else whole batch elements, as few passes as
// fit them; else, one batch element at a time, whole kv-head groups, as few passes as fit them,
// one group a pass at least (a pass may then hold G bytes_per_head, more than the budget: a caller
// that cannot afford that checks group_fits first). Passes of a kind differ by one at most.
inline std::vector<HeadSlice> head_slices(int64_t B, int64_t H, int64_t Hkv, int64_t bytes_per_head,
                                          int64_t budget) {
  if (B == 0 || H == 0 || B * H * bytes_per_head <= budget) return {{0, B, 0, Hkv}};
  std::vector<HeadSlice> out;
  if (H * bytes_per_head <= budget) {
    even_runs(B, budget / (H * bytes_per_head), [&](int64_t b, int64_t n) {
      out.push_back({b, n, 0, Hkv});
    });
    return out;
  }
  const int64_t G = H / Hkv, fit = budget / (G * bytes_per_head);
  for (int64_t b = 0; b < B; ++b)
    even_runs(Hkv, fit > 1 ? fit : 1, [&](int64_t g, int64_t n) { out.push_back({b, 1, g, n}); });
  return out;
}

// Whether one kv-head group's scratch (G query heads) fits the budget.
inline bool group_fits(int64_t H, int64_t Hkv, int64_t bytes_per_head, int64_t budget) {
  return H / Hkv * bytes_per_head <= budget;
}

// The scratch budget a pass aims for: the environment variable `var` (bytes, for tests and
// tuning; read at every call), else 1 GiB.
inline int64_t scratch_budget(const char* var) {
  const char* e = std::getenv(var);
  if (!e || !*e) return int64_t(1) << 30;
  char* end = nullptr;
  const long long bytes = std::strtoll(e, &end, 10);
  TESSERA_CHECK(*end == '\0' && bytes >= 1, var, "='", e, "' is not a positive number of bytes");
  return int64_t(bytes);
}

}  // namespace tessera::cuda::attn
