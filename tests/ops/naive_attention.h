// A direct causal softmax attention in f64 for the flash kernels' tests: every score written out,
// no blocks, no BLAS; and the flash forward kernel's two outputs, for those tests to compare.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "backend/attention_mask.h"
#include "backend/kernels.h"

namespace tessera::testing {

struct FlashForward {
  Tensor out, lse;
};
// The flash forward kernel's output and log-sum-exp (f64 for f64 inputs, f32 otherwise).
inline FlashForward flash_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                                  const AttentionMask& mask) {
  const DType stat = q.dtype() == DType::F64 ? DType::F64 : DType::F32;
  FlashForward f{Tensor::empty(q.shape(), q.dtype()),
                 Tensor::empty({q.size(0), q.size(1), q.size(2)}, stat)};
  TESSERA_KERNEL(q, flash_attention_forward)(f.out, f.lse, q, k, v, scale, mask);
  return f;
}

// Causal softmax attention where query i sees keys j with i - window < j <= i (all j <= i when
// window <= 0), written as a mask over the whole row; also returns lse[b, h, i]. alibi adds
// -m_h (i - j) to each score (backend/attention_mask.h's slopes); forget (B, H, T), when given,
// adds forget[b, h, i] - forget[b, h, j] (Forgetting Attention's bias).
inline std::vector<double> naive_window_attention(
    const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
    int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t D, double scale, int64_t window,
    std::vector<double>* lse, bool alibi = false, const std::vector<double>* forget = nullptr) {
  const int64_t G = H / Hkv;
  std::vector<double> out(size_t(B * H * T * D), 0.0);
  lse->assign(size_t(B * H * T), 0.0);
  auto at = [&](int64_t b, int64_t h, int64_t heads, int64_t t, int64_t e) {
    return size_t(((b * heads + h) * T + t) * D + e);
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> s(size_t(T), -std::numeric_limits<double>::infinity());
        for (int64_t j = 0; j < T; ++j) {
          if (j > i || (window > 0 && j <= i - window)) continue;
          double dot = 0;
          for (int64_t e = 0; e < D; ++e) dot += q[at(b, h, H, i, e)] * k[at(b, h / G, Hkv, j, e)];
          s[size_t(j)] = scale * dot - (alibi ? alibi_slope(h, H) * double(i - j) : 0.0);
          if (forget) {
            const size_t row = size_t((b * H + h) * T);
            s[size_t(j)] += (*forget)[row + size_t(i)] - (*forget)[row + size_t(j)];
          }
        }
        double z = 0;  // no max subtraction: these scores are O(1)
        for (int64_t j = 0; j < T; ++j) z += std::exp(s[size_t(j)]);
        (*lse)[size_t((b * H + h) * T + i)] = std::log(z);
        for (int64_t j = 0; j < T; ++j)
          for (int64_t e = 0; e < D; ++e)
            out[at(b, h, H, i, e)] += std::exp(s[size_t(j)]) / z * v[at(b, h / G, Hkv, j, e)];
      }
  return out;
}

}  // namespace tessera::testing
