#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// table (V, C), ids i32 of any shape S -> S + (C). Backward scatter-adds into the table; ids out of
// [0, V) are an error naming the id and V. They are checked on the host: from host_ids, the same
// ids on the CPU, when the caller has them, else read back from ids' device (on CUDA, a wait).
Tensor embedding(const Tensor& table, const Tensor& ids, const Tensor& host_ids = {});

}  // namespace tessera::ops
