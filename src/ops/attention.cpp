// attention: causal softmax attention with grouped-query heads (GQA; Ainslie et al. 2023),
// materialised. The forward keeps P = softmax(scale * q k^T) (B, H, T, T) so the backward needs no
// recomputation; the formulas live beside the kernels in src/backend/*/attention.*.
#include "ops/attention.h"

#include <cmath>

#include "ops/util.h"

namespace tessera::ops {

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
  detail::check_compatible("attention", {&q, &k, &v});
  TESSERA_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && k.shape() == v.shape() &&
                    q.size(0) == k.size(0) && k.size(1) > 0 && q.size(1) % k.size(1) == 0 &&
                    q.size(2) == k.size(2) && q.size(3) == k.size(3),
                "attention: expected q (B, H, T, D) and k, v (B, Hkv, T, D) with H a multiple of "
                "Hkv, got q ",
                shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  if (scale <= 0) scale = 1.0 / std::sqrt(double(D));  // Vaswani et al. 2017: keeps var(S) ~ 1

  Tensor Q = detail::dense(q), K = detail::dense(k), V = detail::dense(v);
  Tensor out = Tensor::empty(q.shape(), q.options());
  Tensor probs = Tensor::empty({B, H, T, T}, q.options());
  TESSERA_KERNEL(q, attention_forward)(out, probs, Q, K, V, scale);

  return record("attention", out, {q, k, v},
                [Q, K, V, probs, scale](const Tensor& dout, GradSink& g) {
                  Tensor dq = Tensor::empty(Q.shape(), Q.options());
                  Tensor dk = Tensor::empty(K.shape(), K.options());
                  Tensor dv = Tensor::empty(V.shape(), V.options());
                  TESSERA_KERNEL(dout, attention_backward)(dq, dk, dv, dout, Q, K, V, probs, scale);
                  g.add(0, dq);
                  g.add(1, dk);
                  g.add(2, dv);
                });
}

}  // namespace tessera::ops
