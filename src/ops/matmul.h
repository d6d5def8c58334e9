#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// a (..., M, K) @ b (..., K, N) -> (..., M, N); with trans_a, a is (..., K, M) and used transposed
// (likewise b). b may be 2-D and is then shared by every batch of a; otherwise the batch
// dimensions of a and b must be equal.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// y = x w^T + bias: x (..., in), w (out, in) as a PyTorch Linear, bias (out) or undefined.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = {});

// linear(x, w) (..., V), w (V, in), written into the first V of `columns` >= V output columns, the
// rest zero: logits over a vocabulary padded to aligned rows, with no padded copy of the weight.
// The gradients are linear's (the padding's dropped); the gemms read and write rows `columns`
// apart (the kernel table's gemm takes such views), and the weight's goes straight into its
// gradient buffer (f32 for a bf16 weight).
Tensor linear_padded(const Tensor& x, const Tensor& w, int64_t columns);

// gelu(linear(x, w, bias)), the bias required, with one kernel for the product, the bias and the
// GELU (linear_gelu_forward: on CUDA a single gemm, the activation in its epilogue). The graph and
// the gradients are those of the two ops; the pre-activation is what GELU's backward keeps.
Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& bias);

// residual + linear(x, w, bias), bias optional, in one kernel (linear_forward: on CUDA the residual
// is the gemm's C and the bias rides its epilogue, so the add's pass over the output goes). The
// graph and the gradients are those of linear then ops::add(residual, .); on the CPU the same bits.
Tensor linear_add(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual);

// GPT-2's MLP without its dropout: linear(gelu(linear(x, fc_w, fc_b)), proj_w, proj_b), both
// biases required. The forward is linear_gelu's kernel, then linear's; the backward takes the
// second Linear's input gradient through GELU in one kernel (linear_dgelu_backward: on CUDA the
// gemm's DGELU epilogue), so GELU's backward pass over the (..., hidden) activation and the
// gradient it reads are gone. The gradients equal the three ops' (on the CPU, bit for bit). With
// a residual, residual + that, the add in the second Linear's kernel (as linear_add).
Tensor mlp_gelu(const Tensor& x, const Tensor& fc_w, const Tensor& fc_b, const Tensor& proj_w,
                const Tensor& proj_b, const Tensor& residual = {});

}  // namespace tessera::ops
