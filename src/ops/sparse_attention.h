#pragma once

#include <cstdint>
#include <functional>

#include "core/tensor.h"

namespace tessera::ops {

// An attention over (B', H, T', D) queries and (B', Hkv, T', D) keys and values, causal within T'.
using AttentionFn = std::function<Tensor(const Tensor& q, const Tensor& k, const Tensor& v)>;

// Shifted sparse attention, S^2-Attn (LongLoRA, Chen et al. 2023, arXiv:2309.12307): attention
// within groups of `group` tokens, with half of the heads looking through groups shifted by
// group / 2 tokens so information crosses group borders. A training-time approximation of full
// attention at group / T of its cost.
//
//   Tensor y = ops::shifted_sparse_attention(q, k, v, T / 4);                  // softmax inside
//   Tensor z = ops::shifted_sparse_attention(q, k, v, T / 4, [](auto& q, auto& k, auto& v) {
//     return ops::stick_breaking_attention(q, k, v);
//   });
//
// q (B, H, T, D), k and v (B, Hkv, T, D) with H a multiple of Hkv; T a multiple of group; with
// shift, group, H and Hkv even (the shifted half of the query heads reads exactly the shifted
// half of the kv heads, through groups shifted by exactly group / 2 tokens). Returns
// (B, H, T, D). `inner` (default: attention()) runs on the groups folded into the batch,
// (B * T / group, H, group, D).
//
// Heads [0, H/2) attend causally within groups [0, G), [G, 2G), ...; heads [H/2, H) (and kv heads
// [Hkv/2, Hkv)) within groups shifted by G/2: [0, G/2), [G/2, 3G/2), ..., [T - G/2, T). LongLoRA's
// pseudocode (Algorithm 1) gets the shift by rolling those heads by -G/2, which puts the last G/2
// tokens and the first G/2 in one group, so tokens 0 .. G/2 - 1 attend to the end of the sequence
// -- a leak of the future into the training loss. Here the two halves stay separate groups: the
// same grouping, causal. Use full attention for evaluation and generation (it is a training-time
// approximation). shift = false gives plain block-diagonal (grouped) attention.
Tensor shifted_sparse_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t group,
                                const AttentionFn& inner = {}, bool shift = true);

}  // namespace tessera::ops
