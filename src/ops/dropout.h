#pragma once

#include "core/rng.h"
#include "core/tensor.h"

namespace tessera::ops {

// Inverted dropout: zeroes each element with probability p and scales the rest by 1 / (1 - p).
// The mask comes from gen's counters (reserved here), so it is regenerated in backward and replayed
// exactly by recompute. With training == false or p == 0 it returns x.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);
Tensor dropout(const Tensor& x, double p, bool training = true);  // default_generator()

}  // namespace tessera::ops
