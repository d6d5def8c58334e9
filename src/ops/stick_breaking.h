#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// Stick-breaking attention (Tan et al. 2024, "Stick-breaking Attention", arXiv:2410.17980):
//
//   StickBreakingOptions opt;                   // keys i < j, no remainder term, scale 1 / sqrt(D)
//   Tensor rem;
//   Tensor y = ops::stick_breaking_attention(q, k, v, opt, &rem);  // y (B, H, T, D)
//                                                                   // rem (B, H, T)
//
// Query j gives key i the weight A[i, j] = beta[i, j] prod_{i<k<j} (1 - beta[k, j]) with
// beta = sigmoid(scale q_j . k_i): the nearest key takes its share of a unit stick first and each
// earlier key a share of what is left. No softmax and no position encoding (the order is built in).
// rem_j = prod_i (1 - beta[i, j]) = 1 - sum_i A[i, j] is the stick nobody took.
enum class StickBreakingRemainder {
  None,     // out_j = sum_i A[i, j] v_i
  Current,  // out_j += rem_j v_j: the leftover stick goes to the token's own value (the paper's
            // remainder correction)
};

struct StickBreakingOptions {
  bool attend_current = false;  // keys i <= j instead of i < j
  StickBreakingRemainder remainder = StickBreakingRemainder::None;
  double scale = 0.0;  // <= 0: 1 / sqrt(D)
};

// q (B, H, T, D), k and v (B, Hkv, T, D) with H a multiple of Hkv (query head h reads kv head
// h / (H / Hkv)). Returns (B, H, T, D). When rem is given it receives rem (B, H, T) in q's dtype;
// rem is an inspection output without a gradient (the remainder term's own gradient flows through
// the returned tensor). q may be (B, H, Tq, D) with Tq < T: queries at positions T - Tq + i
// (KV-cached decoding; inference only, no backward), and out and rem then have Tq rows.
Tensor stick_breaking_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                const StickBreakingOptions& opt = {}, Tensor* rem = nullptr);

}  // namespace tessera::ops
