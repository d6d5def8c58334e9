#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// Over the last dimension C: x (..., C), weight and bias (C). Statistics in the kernel's precision.
Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps = 1e-6);

}  // namespace tessera::ops
