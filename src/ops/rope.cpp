// rope: rotary position embedding (Su et al. 2021, RoFormer), half-split layout (GPT-NeoX,
// HF Llama). Each pair (x_i, x_{i + D/2}) is rotated by a position-dependent angle; a rotation's
// Jacobian is the rotation itself, so the gradient is dy rotated back by the same angle (the kernel
// with inverse).
#include "ops/rope.h"

#include "ops/util.h"

namespace tessera::ops {

Tensor rope(const Tensor& x, double theta, int64_t pos_offset) {
  TESSERA_CHECK(x.dim() == 4 && x.size(3) % 2 == 0,
                "rope: x must be (B, H, T, D) with D even (pairs (x_i, x_{i + D/2})), got ",
                shape_str(x.shape()));
  TESSERA_CHECK(theta > 0, "rope: theta must be positive, got ", theta, " for x ",
                shape_str(x.shape()));
  Tensor y = Tensor::empty(x.shape(), x.options());
  TESSERA_KERNEL(x, rope)(y, detail::dense(x), theta, pos_offset, false);
  return record("rope", y, {x}, [theta, pos_offset](const Tensor& dy, GradSink& g) {
    Tensor dx = Tensor::empty(dy.shape(), dy.options());
    TESSERA_KERNEL(dy, rope)(dx, dy, theta, pos_offset, true);
    g.add(0, dx);
  });
}

}  // namespace tessera::ops
