// The contract of the kernel table's linear_forward (backend/kernels.h), checked the same way by
// the CPU kernel and the CUDA one: y (R, N) = x (R, K) @ w (N, K)^T + bias (N), one dtype, the
// bias contiguous.
#pragma once

#include "core/tensor.h"

namespace tessera {

inline void check_linear_forward(const char* kernel, const Tensor& y, const Tensor& x,
                                 const Tensor& w, const Tensor& bias) {
  TESSERA_CHECK(x.dim() == 2 && w.dim() == 2 && y.dim() == 2 && bias.dim() == 1 &&
                    w.size(1) == x.size(1) && y.size(0) == x.size(0) && y.size(1) == w.size(0) &&
                    bias.size(0) == w.size(0) && bias.is_contiguous() &&
                    bias.dtype() == y.dtype(),
                kernel, ": expected y (R, N) = x (R, K) @ w (N, K)^T + bias (N), got y ", y.str(),
                ", x ", x.str(), ", w ", w.str(), ", bias ", bias.str());
}

}  // namespace tessera
