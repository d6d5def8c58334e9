#pragma once

#include <vector>

#include "core/tensor.h"

namespace tessera::ops {

// The rotation of each pair: inv_freq[i] (i < D/2) turns pair i by (pos_offset + t) * inv_freq[i];
// scale multiplies cos and sin (YaRN's attention factor; 1 leaves the rotation orthogonal).
// nn/rope_scaling.h computes scaled tables; rope_freqs gives the plain one, theta^(-2i/D).
struct RopeFreqs {
  std::vector<double> inv_freq;
  double scale = 1.0;
};
RopeFreqs rope_freqs(int64_t head_dim, double theta);

// Rotary position embedding (Su et al. 2021) on x (B, H, T, D), D even, half-split layout as in
// GPT-NeoX / Hugging Face Llama: pairs (x_i, x_{i + D/2}) rotated by angle (pos_offset + t) *
// theta^(-2i/D). pos_offset places the first row at a later position (generation with a cache).
Tensor rope(const Tensor& x, double theta = 10000.0, int64_t pos_offset = 0);
// The same with a given table (freqs.inv_freq has D/2 entries): y = scale * rotation(x).
Tensor rope(const Tensor& x, const RopeFreqs& freqs, int64_t pos_offset = 0);

}  // namespace tessera::ops
