// rope: rotary position embedding (Su et al. 2021, RoFormer), half-split layout (GPT-NeoX,
// HF Llama). Each pair (x_i, x_{i + D/2}) is rotated by a position-dependent angle and multiplied
// by freqs.scale; the Jacobian is scale times the rotation, so the gradient is dy rotated back by
// the same angle and multiplied by the same scale (the kernel with inverse).
#include "ops/rope.h"

#include <cmath>

#include "ops/util.h"

namespace tessera::ops {

RopeFreqs rope_freqs(int64_t head_dim, double theta) {
  TESSERA_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: the head dimension must be even and "
                "positive, got ", head_dim);
  TESSERA_CHECK(theta > 0, "rope: theta must be positive, got ", theta);
  RopeFreqs f;
  f.inv_freq.resize(size_t(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i)
    f.inv_freq[size_t(i)] = std::pow(theta, -2.0 * double(i) / double(head_dim));
  return f;
}

Tensor rope(const Tensor& x, double theta, int64_t pos_offset) {
  TESSERA_CHECK(x.dim() == 4 && x.size(3) % 2 == 0,
                "rope: x must be (B, H, T, D) with D even (pairs (x_i, x_{i + D/2})), got ",
                shape_str(x.shape()));
  TESSERA_CHECK(theta > 0, "rope: theta must be positive, got ", theta, " for x ",
                shape_str(x.shape()));
  return rope(x, rope_freqs(x.size(3), theta), pos_offset);
}

Tensor rope(const Tensor& x, const RopeFreqs& freqs, int64_t pos_offset) {
  TESSERA_CHECK(x.dim() == 4 && x.size(3) % 2 == 0,
                "rope: x must be (B, H, T, D) with D even (pairs (x_i, x_{i + D/2})), got ",
                shape_str(x.shape()));
  TESSERA_CHECK(int64_t(freqs.inv_freq.size()) == x.size(3) / 2, "rope: ",
                freqs.inv_freq.size(), " inverse frequencies for head dimension ", x.size(3),
                " (x ", shape_str(x.shape()), "); one per pair is needed");
  TESSERA_CHECK(std::isfinite(freqs.scale) && freqs.scale > 0,
                "rope: the cos/sin scale must be positive and finite, got ", freqs.scale);
  Tensor y = Tensor::empty(x.shape(), x.options());
  TESSERA_KERNEL(x, rope)(y, detail::dense(x), freqs.inv_freq, freqs.scale, pos_offset, false);
  return record("rope", y, {x}, [freqs, pos_offset](const Tensor& dy, GradSink& g) {
    Tensor dx = Tensor::empty(dy.shape(), dy.options());
    TESSERA_KERNEL(dy, rope)(dx, dy, freqs.inv_freq, freqs.scale, pos_offset, true);
    g.add(0, dx);
  });
}

}  // namespace tessera::ops
