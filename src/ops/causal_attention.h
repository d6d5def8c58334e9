// The one entry point the model calls for attention: the spec says what to compute
// (ops/attention_spec.h), this op picks the kernel for the tensors' device, dtype and head dim.
//
//   AttentionSpec s;  s.kind = AttentionKind::StickBreaking;
//   Tensor y = ops::causal_attention(q, k, v, s, /*training=*/true);  // q, k, v (B, *, T, D)
//   Tensor z = ops::causal_attention(q1, k_cache, v_cache, s);        // q1 (B, H, 1, D): decoding
//
// q (B, H, Tq, D), k and v (B, Hkv, Tk, D) with H a multiple of Hkv and Tq <= Tk. Query i sits at
// position Tk - Tq + i and attends the keys up to it (causal); Tq == Tk is ordinary causal
// self-attention with a backward. Tq < Tk (the new tokens of KV-cached decoding over the cache's
// filled positions) runs the same forward kernels with a query offset on the tensors' device,
// reading k and v in place when they are the filled prefix of a cache buffer (a narrow along
// positions); it has no backward (an error if a gradient would be needed). Returns (B, H, Tq, D).
//
// Kernel choice:
//   softmax         CUDA: flash for head dims 64 and 128, the materialised kernel for others;
//                   CPU: the materialised kernel. A sliding window or a query offset always
//                   runs the flash kernels (CPU ones included).
//   stick_breaking  the fused stick-breaking kernels (CUDA: bf16 head dims 64/128, f32 <= 128).
//   forgetting      the flash kernels with the forget gate's sums `forget` (B, H, Tk) as their
//                   bias (ops/forget_gate.h); within documents, a call on each one's views.
//   s2_attn         when training: S^2-Attn (LongLoRA) over groups of Tq / 4 around the above;
//                   otherwise full attention.
// A combination no kernel runs is an error carrying attention_support()'s reason.
#pragma once

#include "core/tensor.h"
#include "ops/attention_spec.h"
#include "ops/documents.h"

namespace tessera::ops {

// docs (null: none) keeps each query to its own document's keys (document_attention,
// ops/packed_attention.h); not with a query offset or S^2-Attn while training. forget: the forget
// gate's sums for spec.kind forgetting (required there, refused elsewhere).
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                        const AttentionSpec& spec, bool training = false,
                        const Documents* docs = nullptr, const Tensor& forget = Tensor());

namespace detail {
// The softmax kernel family causal_attention picks (packed_causal_attention picks the same): flash
// for a sliding window, a query offset (decoding) or a CUDA head dim of 64 or 128; else the
// materialised one.
bool softmax_runs_flash(const AttentionSpec& spec, Device device, int64_t head_dim, bool decoding);
}  // namespace detail

}  // namespace tessera::ops
