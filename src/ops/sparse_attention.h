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
// shift, H and Hkv even (the shifted half of the query heads reads exactly the shifted half of
// the kv heads). Returns (B, H, T, D). `inner` (default: attention()) runs on the groups folded
// into the batch, (B * T / group, H, group, D).
//
// It does what LongLoRA's published pseudocode does: heads [H/2, H) (and kv heads [Hkv/2, Hkv))
// are rolled by -group/2 along T, every head is split into groups and attended causally inside
// each, and the shifted heads are rolled back by +group/2. The consequence of rolling before the
// causal mask: in the shifted heads the last group holds the last group/2 positions followed by
// the first group/2, so tokens 0 .. group/2 - 1 attend to tokens T - group/2 .. T - 1 -- the end
// of the sequence leaks into its start. That is harmless for LongLoRA's fine-tuning (the loss at
// those few positions sees a little of the future) but it is not causal: use full attention for
// evaluation and generation. shift = false gives plain block-diagonal (grouped) attention.
Tensor shifted_sparse_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t group,
                                const AttentionFn& inner = {}, bool shift = true);

}  // namespace tessera::ops
