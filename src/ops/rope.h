#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// Rotary position embedding (Su et al. 2021) on x (B, H, T, D), D even, half-split layout as in
// GPT-NeoX / Hugging Face Llama: pairs (x_i, x_{i + D/2}) rotated by angle (pos_offset + t) *
// theta^(-2i/D). pos_offset places the first row at a later position (generation with a cache).
Tensor rope(const Tensor& x, double theta = 10000.0, int64_t pos_offset = 0);

}  // namespace tessera::ops
