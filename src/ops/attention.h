#pragma once

#include <cstdint>

#include "backend/attention_mask.h"
#include "core/tensor.h"

namespace tessera::ops {

// Causal softmax attention, materialised (the reference the fused kernels are tested against):
// q (B, H, T, D), k and v (B, Hkv, T, D) with H a multiple of Hkv (grouped-query attention: query
// head h reads kv head h / (H / Hkv)). Returns (B, H, T, D). scale <= 0 means 1 / sqrt(D).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale = 0.0);

// The same attention computed flash-style (FlashAttention-2, Dao 2023, arXiv:2307.08691): the
// (T, T) probabilities are never stored; the forward saves lse (B, H, T) and the backward
// recomputes P from it, so memory is O(T) per head and the CUDA kernel runs at 16k tokens.
// q may be (B, H, Tq, D) with Tq < T, queries at positions T - Tq + i (KV-cached decoding; no
// backward).
// window > 0 makes it sliding-window attention: query i attends keys i - window < j <= i
// (Longformer, Beltagy et al. 2020; Mistral 7B). window <= 0 is plain causal attention, equal to
// attention(). mask.alibi adds ALiBi's bias -m_h (i - j) to the scores (Press et al. 2022;
// backend/attention_mask.h has the slopes m_h); an integer converts to a mask of that window.
// mask.forget (Forgetting Attention: c (B, H, T) from ops::forget_gate, in lse's dtype) adds
// c[i] - c[j]; it is an input of the op, its gradient flowing back to the gate.
Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale = 0.0,
                       const AttentionMask& mask = {});

namespace detail {
// Throws unless q is (B, H, T, D) and k, v are (B, Hkv, T, D) with H a multiple of Hkv, naming
// the op and all three shapes; also checks that dtypes and devices agree. allow_offset accepts
// q (B, H, Tq, D) with Tq <= T (queries at positions T - Tq + i: KV-cached decoding).
void check_attention_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                            bool allow_offset = false);
// Throws unless Tq == Tk or no gradient would be recorded: the query-offset path is inference only.
void check_offset_inference_only(const char* op, const Tensor& q, const Tensor& k,
                                 const Tensor& v);
// scale <= 0 -> 1 / sqrt(D) (Vaswani et al. 2017: keeps the variance of q . k near 1).
double attention_scale(double scale, int64_t D);
}  // namespace detail

}  // namespace tessera::ops
