#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// a (..., M, K) @ b (..., K, N) -> (..., M, N); with trans_a, a is (..., K, M) and used transposed
// (likewise b). b may be 2-D and is then shared by every batch of a; otherwise the batch
// dimensions of a and b must be equal.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// y = x w^T + bias: x (..., in), w (out, in) as a PyTorch Linear, bias (out) or undefined.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = {});

}  // namespace tessera::ops
