#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (Hendrycks & Gimpel; GPT-2).
Tensor gelu(const Tensor& x);
Tensor silu(const Tensor& x);                          // x * sigmoid(x)
Tensor swiglu(const Tensor& gate, const Tensor& up);   // silu(gate) * up (Shazeer 2020)
// 1 / (1 + e^-x): the first column of a softmax over (x, 0), which the softmax kernels and their
// gradient compute stably on every device. For gates of a number a row (a shared expert's): it
// reads and writes two columns where an elementwise kernel would one.
Tensor sigmoid(const Tensor& x);

namespace detail {
// Records y = gelu(x) in the graph, y already computed from X (x's dense values), which the
// backward keeps: ops::gelu, and ops::linear_gelu whose gemm wrote y itself.
Tensor record_gelu(const Tensor& x, const Tensor& X, const Tensor& y);
}  // namespace detail

}  // namespace tessera::ops
