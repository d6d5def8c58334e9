#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (Hendrycks & Gimpel; GPT-2).
Tensor gelu(const Tensor& x);
Tensor silu(const Tensor& x);                          // x * sigmoid(x)
Tensor swiglu(const Tensor& gate, const Tensor& up);   // silu(gate) * up (Shazeer 2020)

namespace detail {
// Records y = gelu(x) in the graph, y already computed from X (x's dense values), which the
// backward keeps: ops::gelu, and ops::linear_gelu whose gemm wrote y itself.
Tensor record_gelu(const Tensor& x, const Tensor& X, const Tensor& y);
}  // namespace detail

}  // namespace tessera::ops
