#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// b has a's shape, or is one row of a's last dimension (a bias) broadcast over a's rows.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double s);  // s * x

// x (B, T, C) + rows [start, start + T) of table (P, C), the same rows added to each of the B
// sequences (a GPT's learned positions). The table's gradient is dy summed over B, written
// straight into those rows of the table's gradient: a bf16 table's into its f32 buffer, unrounded.
Tensor add_rows(const Tensor& x, const Tensor& table, int64_t start);

}  // namespace tessera::ops
