// Causal attention straight off a fused q, k, v projection, with no head split or merge:
//
//   Tensor qkv = ops::linear(x, c_attn_w, c_attn_b);                    // (B, T, (H + 2 Hkv) D)
//   if (ops::packed_attention_runs(spec, qkv.device(), qkv.dtype(), D, training))
//     y = ops::packed_causal_attention(qkv, H, Hkv, spec, training);    // (B, T, H D)
//
// qkv holds, for each position, H query heads, then Hkv key heads, then Hkv value heads of D
// values each (GPT-2's c_attn layout, GQA when Hkv < H). The result holds each position's H
// output heads side by side, as the output projection reads them. It equals
// causal_attention(q, k, v, spec, training) on the split heads (ops/causal_attention.h) merged
// back to (B, T, H D), to rounding.
//
// The kernels keep the strided contract of backend/attention_shapes.h: they read q, k and v where
// the projection left them, write the output heads into (B, T, H D) in place, and the backward
// writes dq, dk and dv into one (B, T, (H + 2 Hkv) D) gradient of qkv. The split path spends a
// permute copy per head split and merge forward and as many backward, plus the slices' zero-filled
// gradient; this one spends none.
//
// It serves softmax attention (with or without a sliding window) and stick-breaking attention on
// the kernels that keep the strided contract: the flash and stick-breaking kernels on every device
// and the materialised ones on the CPU. Not S^2-Attn while training, and not softmax on CUDA with a
// head dim the flash kernels lack (packed_attention_runs says so). RoPE:
// projected_causal_attention below.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/attention_spec.h"
#include "ops/documents.h"
#include "ops/rope.h"

namespace tessera::ops {

// Whether packed_causal_attention runs this spec for a qkv of this device, dtype and head dim.
bool packed_attention_runs(const AttentionSpec& spec, Device device, DType dtype, int64_t head_dim,
                           bool training);

// qkv (B, T, (H + 2 Hkv) D) -> (B, T, H D). Throws, naming the shapes, when qkv's last dimension
// is not (H + 2 Hkv) D for H a multiple of Hkv, and when packed_attention_runs is false.
//
// docs (ops/documents.h; null: every row one sequence) keeps each query to the keys of its own
// document: the kernels run on each document's rows as a sequence of its own (a (1, H, length, D)
// view of the same strides), one call a document, forward and backward. A sliding window then
// applies within the document. Every entry point here takes it.
Tensor packed_causal_attention(const Tensor& qkv, int64_t H, int64_t Hkv, const AttentionSpec& spec,
                               bool training = false, const Documents* docs = nullptr);

// The same off three projections (Llama's q_proj, k_proj, v_proj): q (B, T, H D), k and v
// (B, T, Hkv D) -> (B, T, H D), optionally with rotary embeddings on q and k (positions 0..T-1):
// the rope kernel reads q's and k's heads where the projections left them and writes the rotated
// heads the attention kernel reads (the copies the split path makes anyway), v is read in place,
// and the backward writes dq and dk (rotated back) and dv straight into (B, T, H D) and
// (B, T, Hkv D) gradients. Equals causal_attention on rope(split heads), merged, to rounding.
Tensor projected_causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H,
                                  int64_t Hkv, const AttentionSpec& spec, bool training = false,
                                  const RopeFreqs* rope = nullptr, const Documents* docs = nullptr);

// The same on split heads: q (B, H, T, D), k and v (B, Hkv, T, D) -> (B, H, T, D), each
// document's rows attended on their own (causal_attention given documents; the heads may be any
// views with contiguous rows).
Tensor document_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionSpec& spec, const Documents& docs, bool training = false);

}  // namespace tessera::ops
