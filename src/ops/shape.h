// Shape ops beyond the Tensor methods (view, reshape, narrow, permute, transpose, contiguous).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace tessera::ops {

// Pieces of the given sizes along dim (views; their sizes must add up to x.size(dim)).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
// Pieces of `chunk` elements along dim (the last may be shorter).
std::vector<Tensor> split(const Tensor& x, int64_t chunk, int64_t dim);
// Joins along dim; every other dimension must agree.
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);

}  // namespace tessera::ops
