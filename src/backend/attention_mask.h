// What beyond causality shapes a softmax attention's scores, for the flash kernels of every device
// (backend/kernels.h): a sliding window (keys i - window < j <= i) and ALiBi's linear bias.
//
// ALiBi (Press et al. 2022, "Train Short, Test Long", arXiv:2108.12409): no position embeddings;
// query head h of H adds -m_h (i - j) to its score for key j from the query at position i, so
// attention decays with distance at a rate of its own per head. The slopes form a geometric
// sequence: for H a power of two, m_h = 2^(-8 (h + 1) / H) (1/2, 1/4, ..., 1/256 for 8 heads);
// otherwise, with c the largest power of two below H, the first c heads take c's slopes and the
// other H - c take every other slope of 2c's, 2^(-4 (2 (h - c) + 1) / c) (the paper's reference
// code, which BLOOM's ALiBi follows). Under grouped-query attention the slope is the query head's.
// The bias depends on i - j alone, so a KV-cached query (position Tk - Tq + row) and a document's
// view (positions from the document's start) bias alike.
//
// Forgetting Attention (Lin et al. 2025, "Forgetting Transformer: Softmax Attention with a Forget
// Gate", ICLR 2025, arXiv:2503.02130): a forget gate f_t in (0, 1) per token and query head, and
// the score of key j from the query at position i gets sum_{l = j+1..i} log f_l, the log of the
// gates' product between them. With c the running sum of log f (ops/forget_gate.h) that is
// c[i] - c[j]: `forget` holds c (B, H, Tk) for every key position, the queries' entries being those
// of their positions (Tk - Tq + row). The backward writes dL/dc into `forget_grad` (same shape):
// sum_j dS[i, j] at query i minus sum_i dS[i, j] at key j. The queries' share would be zero (one
// constant added to a row leaves its softmax alone) but for the flash backward's rowsum(dO O) in
// place of rowsum(P dP), with O rounded (bf16 on a GPU): with it dL/dc sums to zero over a row
// as the exact gradient does (every c moved by one constant changes nothing), so the gate's
// gradient, a suffix sum of dL/dc (ops/forget_gate.h), does not gather that rounding along the
// row. ALiBi is the special case c[i] = -m_h i.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/host_device.h"
#include "core/tensor.h"

namespace tessera {

struct AttentionMask {
  int64_t window = 0;  // > 0: each query sees its last `window` keys, itself included
  bool alibi = false;  // ALiBi's bias -alibi_slope(h, H) (i - j) added to every score
  // Forgetting Attention (the header): c (B, H, Tk) in the statistics' dtype (f32, f64 for f64),
  // contiguous; undefined: no forget gate. forget_grad: the backward's dL/dc, written whole.
  Tensor forget, forget_grad;
  // A window alone converts, so the callers that know no ALiBi pass the integer they always did.
  AttentionMask(int64_t window_ = 0, bool alibi_ = false) : window(window_), alibi(alibi_) {}
  // ... but a lone bool does not: `true` would otherwise mean a window of one key.
  template <class B, std::enable_if_t<std::is_same_v<B, bool>, int> = 0>
  AttentionMask(B) = delete;
};

// The slope m_h of query head h among H (the header's rule); 0 <= h < H.
TESSERA_HD double alibi_slope(int64_t h, int64_t H) {
  int64_t c = 1;
  while (2 * c <= H) c *= 2;
  const double e =
      h < c ? 8.0 * double(h + 1) / double(c) : 4.0 * double(2 * (h - c) + 1) / double(c);
  return exp2(-e);
}

}  // namespace tessera
