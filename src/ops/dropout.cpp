// Inverted dropout. The op keeps no mask: it reserves x.numel() Philox counters from the generator
// and backward calls the same kernel on dy with the same (seed, offset), which regenerates the mask.
// Restoring a generator's state before a forward (as recompute does) therefore replays the mask.
#include "ops/dropout.h"

#include "ops/util.h"

namespace tessera::ops {

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  // Checked even when it would not be used, so a bad config fails in evaluation too. p == 1 is
  // refused: it would scale by 1 / 0, and a layer that drops everything is a config mistake.
  TESSERA_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p, " (for ",
                shape_str(x.shape()), ")");
  if (!training || p == 0.0) return x;
  const uint64_t seed = gen.seed();
  const uint64_t offset = gen.reserve(uint64_t(x.numel()));
  Tensor y = Tensor::empty(x.shape(), x.options());
  TESSERA_KERNEL(x, dropout)(y, detail::dense(x), p, seed, offset);
  return record("dropout", y, {x}, [p, seed, offset](const Tensor& dy, GradSink& g) {
    Tensor dx = Tensor::empty(dy.shape(), dy.options());
    TESSERA_KERNEL(dy, dropout)(dx, dy, p, seed, offset);
    g.add(0, dx);
  });
}

Tensor dropout(const Tensor& x, double p, bool training) {
  return dropout(x, p, training, default_generator());
}

}  // namespace tessera::ops
