#pragma once

#include "core/tensor.h"

namespace tessera::ops {

Tensor sum(const Tensor& x);   // all elements -> shape ()
Tensor mean(const Tensor& x);  // all elements -> shape ()
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);
// x with size 1 at dim -> size n there, each element repeated along it (sum's adjoint: the
// gradient sums over dim). A weight per row (M, 1) expanded to (M, C) to scale each row.
Tensor expand(const Tensor& x, int64_t dim, int64_t n);

}  // namespace tessera::ops
