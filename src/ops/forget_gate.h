// Forgetting Attention's forget gate (Lin et al. 2025, "Forgetting Transformer: Softmax Attention
// with a Forget Gate", ICLR 2025, arXiv:2503.02130):
//
//   Tensor g = ops::linear(x, w_f, b_f);      // (B, T, H): one logit a token and query head
//   Tensor c = ops::forget_gate(g);           // (B, H, T): c[t] = sum_{s <= t} log sigmoid(g[s])
//   AttentionMask m;  m.forget = c;           // score (i, j) += c[i] - c[j] (attention_mask.h)
//
// f = sigmoid(g) in (0, 1) is how much of the past a token lets through: the product of the gates
// after key j up to query i, exp(c[i] - c[j]), down-weights that key's unnormalised attention. c is
// in the statistics dtype (f32; f64 for f64 g), summed in double. start (B, H), without a gradient,
// is added to every position: KV-cached decoding continues the sums of the positions before
// (c[L0 - 1]). Differentiable in g.
#pragma once

#include "core/tensor.h"

namespace tessera::ops {

Tensor forget_gate(const Tensor& g, const Tensor& start = Tensor());

}  // namespace tessera::ops
