// Rows picked by index: the token embedding, and the gather and scatter-add of rows a mixture of
// experts routes tokens with (nn/moe.h). One kernel pair serves all three: the gather's backward is
// the scatter-add, and the scatter-add's backward the gather.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace tessera::ops {

// table (V, C), ids i32 of any shape S -> S + (C). Backward scatter-adds into the table; ids out of
// [0, V) are an error naming the id and V. They are checked on the host: from host_ids, the same
// ids on the CPU, when the caller has them, else read back from ids' device (on CUDA, a wait).
Tensor embedding(const Tensor& table, const Tensor& ids, const Tensor& host_ids = {});

// x (N, C), rows: M indices in [0, N) -> (M, C), row m = x[rows[m]]. Backward scatter-adds into
// x's gradient (a row picked twice gets both).
Tensor gather_rows(const Tensor& x, const std::vector<int32_t>& rows);
// src (M, C), rows: M indices in [0, n) -> (n, C), row i = the sum of src's rows m with
// rows[m] == i, added in m's order (0 where none is). Backward gathers.
Tensor scatter_add_rows(const Tensor& src, const std::vector<int32_t>& rows, int64_t n);

}  // namespace tessera::ops
