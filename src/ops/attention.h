#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// Causal softmax attention, materialised (the reference the fused kernels are tested against):
// q (B, H, T, D), k and v (B, Hkv, T, D) with H a multiple of Hkv (grouped-query attention: query
// head h reads kv head h / (H / Hkv)). Returns (B, H, T, D). scale <= 0 means 1 / sqrt(D).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale = 0.0);

}  // namespace tessera::ops
