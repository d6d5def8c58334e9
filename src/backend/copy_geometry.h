// The geometry of an elementwise copy between two tensors of one shape (any strides), shared by the
// CPU copy kernel and the CUDA one. Plain C++.
//
// Dimensions of size 1 are dropped, and a dimension is merged into the one outside it wherever both
// tensors step over the pair as over one dimension. A permute copy (B, T, H, D) -> (B, H, T, D)
// stays rank 4; a narrow's copy becomes rank 2; a cast between contiguous tensors rank 1. The
// innermost dimension is then the run a kernel moves with fixed strides.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tessera {

struct CopyGeometry {
  static constexpr int kMaxRank = 8;
  int rank = 0;
  int64_t shape[kMaxRank] = {};
  int64_t dst_strides[kMaxRank] = {};
  int64_t src_strides[kMaxRank] = {};
};

// Throws, naming the kernel, when more than kMaxRank dimensions remain after merging.
inline CopyGeometry copy_geometry(const char* kernel, const Tensor& dst, const Tensor& src) {
  CopyGeometry g;
  for (int64_t d = 0; d < dst.dim(); ++d) {
    const int64_t size = dst.shape()[size_t(d)];
    if (size == 1) continue;
    const int64_t ds = dst.strides()[size_t(d)], ss = src.strides()[size_t(d)];
    const int r = g.rank - 1;  // the dimension outside this one, already kept
    if (r >= 0 && g.dst_strides[r] == ds * size && g.src_strides[r] == ss * size) {
      g.shape[r] *= size;
      g.dst_strides[r] = ds;
      g.src_strides[r] = ss;
      continue;
    }
    TESSERA_CHECK(g.rank < CopyGeometry::kMaxRank, kernel, ": ", shape_str(dst.shape()), " has more than ",
                  CopyGeometry::kMaxRank, " dimensions after merging");
    g.shape[g.rank] = size, g.dst_strides[g.rank] = ds, g.src_strides[g.rank] = ss;
    ++g.rank;
  }
  if (g.rank == 0) {  // one element
    g.rank = 1, g.shape[0] = 1, g.dst_strides[0] = 1, g.src_strides[0] = 1;
  }
  return g;
}

// The largest element offset the copy touches in either tensor (strides are never negative).
inline int64_t max_offset(const CopyGeometry& g) {
  int64_t d_max = 0, s_max = 0;
  for (int d = 0; d < g.rank; ++d) {
    d_max += (g.shape[d] - 1) * g.dst_strides[d];
    s_max += (g.shape[d] - 1) * g.src_strides[d];
  }
  return d_max > s_max ? d_max : s_max;
}

// Whether a copy of n elements in blocks of `threads` threads, one element each, may index in 32
// bits: every thread's index (up to the last block's last thread, blocks x threads - 1, past n by
// up to threads - 1) and every offset must fit in an int32_t.
inline bool fits_int32_index(int64_t n, int64_t threads, int64_t max_offset) {
  constexpr int64_t kMax = 2147483647;  // INT32_MAX
  return n > 0 && threads > 0 && n <= kMax - (threads - 1) && max_offset <= kMax;
}

}  // namespace tessera
