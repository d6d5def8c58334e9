// CPU embedding lookup and its scatter-add backward.
// table, dtable (V, C); ids i32 (N); out, dout (N, C)
//
// The backward must be deterministic although ids repeat (every position of a token adds into the
// same table row). Threads therefore own disjoint blocks of channels and each walks all N rows in
// order: no two threads touch one element, and each element sums its contributions in row order
// whatever the thread count. Blocks are a few cache lines wide so a row's slice stays contiguous.
#include <algorithm>

#include "backend/cpu/cpu.h"

namespace tessera::cpu {
namespace {

// Below this many elements the loop is cheaper than starting an OpenMP team, which takes
// microseconds, and milliseconds when OpenMP's thread count exceeds the cores actually available.
constexpr int64_t kParallelWork = 1 << 15;

// Shapes, dtypes and ids in range. The op validates ids with a message for the user; this check
// keeps the kernel itself from reading or writing out of bounds when called directly. It runs
// before the parallel loop because an exception must not escape an OpenMP region.
void check_embedding(const char* kernel, const Tensor& table, const Tensor& rows,
                     const Tensor& ids) {
  TESSERA_CHECK(table.dim() == 2, "cpu kernel ", kernel, ": table must be (V, C), got ",
                table.str());
  const int64_t V = table.size(0), C = table.size(1), N = ids.numel();
  TESSERA_CHECK(ids.dtype() == DType::I32, "cpu kernel ", kernel, ": ids must be i32, got ",
                ids.str());
  TESSERA_CHECK(rows.dtype() == table.dtype() && rows.numel() == N * C, "cpu kernel ", kernel, ": ",
                rows.str(), " is not (N, C) = (", N, ", ", C, ") of ", table.str());
  const int32_t* ip = static_cast<const int32_t*>(ids.data_ptr());
  for (int64_t n = 0; n < N; ++n)
    TESSERA_CHECK(ip[n] >= 0 && ip[n] < V, "cpu kernel ", kernel, ": id ", ip[n], " at position ",
                  n, " is outside [0, ", V, ")");
}

}  // namespace

void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& ids) {
  check_embedding("embedding_forward", table, out, ids);
  const int64_t C = table.size(1), N = ids.numel();
  dispatch_float("embedding_forward", table.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* tp = static_cast<const T*>(table.data_ptr());
    const int32_t* ip = static_cast<const int32_t*>(ids.data_ptr());
    T* op = static_cast<T*>(out.data_ptr());
#pragma omp parallel for if (N * C > kParallelWork)
    for (int64_t n = 0; n < N; ++n) std::copy_n(tp + int64_t(ip[n]) * C, C, op + n * C);
  });
}

void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) {
  check_embedding("embedding_backward", dtable, dout, ids);
  const int64_t V = dtable.size(0), C = dtable.size(1), N = ids.numel();
  dispatch_float("embedding_backward", dtable.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* gp = static_cast<const T*>(dout.data_ptr());
    const int32_t* ip = static_cast<const int32_t*>(ids.data_ptr());
    T* dp = static_cast<T*>(dtable.data_ptr());
    constexpr int64_t kBlock = 64;
    const int64_t n_blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for if ((V + N) * C > kParallelWork)
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t c0 = b * kBlock, c1 = std::min(C, c0 + kBlock);
      for (int64_t n = 0; n < N; ++n) {
        T* dr = dp + int64_t(ip[n]) * C;
        const T* gr = gp + n * C;
        for (int64_t c = c0; c < c1; ++c) dr[c] += gr[c];
      }
    }
  });
}

}  // namespace tessera::cpu
