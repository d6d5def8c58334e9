#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// b has a's shape, or is one row of a's last dimension (a bias) broadcast over a's rows.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double s);  // s * x

}  // namespace tessera::ops
