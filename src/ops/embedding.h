#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// table (V, C), ids i32 of any shape S -> S + (C). Backward scatter-adds into the table; ids out of
// [0, V) are an error naming the id and V.
Tensor embedding(const Tensor& table, const Tensor& ids);

}  // namespace tessera::ops
