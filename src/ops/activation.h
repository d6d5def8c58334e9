#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (Hendrycks & Gimpel; GPT-2).
Tensor gelu(const Tensor& x);
Tensor silu(const Tensor& x);                          // x * sigmoid(x)
Tensor swiglu(const Tensor& gate, const Tensor& up);   // silu(gate) * up (Shazeer 2020)

}  // namespace tessera::ops
