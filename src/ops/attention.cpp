// attention: causal softmax attention with grouped-query heads (GQA; Ainslie et al. 2023), either
// materialised (attention: the forward keeps P = softmax(scale * q k^T), (B, H, T, T), so the
// backward needs no recomputation) or flash-style (flash_attention: keeps only lse (B, H, T) and
// recomputes P in the backward). The formulas live beside the kernels in
// src/backend/cpu/attention.cpp.
#include "ops/attention.h"

#include <cmath>

#include "ops/util.h"

namespace tessera::ops {

namespace detail {

void check_attention_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                            bool allow_offset) {
  check_compatible(op, {&q, &k, &v});
  TESSERA_CHECK(
      q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && k.shape() == v.shape() &&
          q.size(0) == k.size(0) && k.size(1) > 0 && q.size(1) % k.size(1) == 0 &&
          (allow_offset ? q.size(2) <= k.size(2) : q.size(2) == k.size(2)) &&
          q.size(3) == k.size(3),
      op, ": expected q (B, H, ", allow_offset ? "Tq" : "T",
      ", D) and k, v (B, Hkv, T, D) with H a multiple of Hkv", allow_offset ? " and Tq <= T" : "",
      ", got q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ",
      shape_str(v.shape()));
}

void check_offset_inference_only(const char* op, const Tensor& q, const Tensor& k,
                                 const Tensor& v) {
  if (q.size(2) == k.size(2) || !grad_enabled()) return;
  TESSERA_CHECK(!q.requires_grad() && !k.requires_grad() && !v.requires_grad(), op,
                ": queries offset into longer keys (q ", shape_str(q.shape()), ", k ",
                shape_str(k.shape()),
                ") are for inference only and have no backward; run under NoGradGuard");
}

double attention_scale(double scale, int64_t D) {
  return scale > 0 ? scale : 1.0 / std::sqrt(double(D));
}

}  // namespace detail

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
  detail::check_attention_inputs("attention", q, k, v);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  scale = detail::attention_scale(scale, D);

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

Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                       const AttentionMask& mask) {
  detail::check_attention_inputs("flash_attention", q, k, v, /*allow_offset=*/true);
  detail::check_offset_inference_only("flash_attention", q, k, v);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);  // T: queries
  scale = detail::attention_scale(scale, D);

  // The flash kernels read any views with contiguous rows (a cache's filled prefix in decoding).
  const Tensor Q = detail::unit_rows(q), K = detail::unit_rows(k), V = detail::unit_rows(v);
  // Row statistics stay f32 for bf16 and f32 inputs (f64 for f64): lse feeds an exp.
  const DType stat = q.dtype() == DType::F64 ? DType::F64 : DType::F32;
  // The forget gate's sums (B, H, Tk): an input with a gradient of its own (attention_mask.h).
  AttentionMask m = mask;
  m.forget_grad = Tensor();
  const bool forget = mask.forget.defined();
  if (forget) {
    const Shape want = {B, H, k.size(2)};
    TESSERA_CHECK(mask.forget.shape() == want && mask.forget.dtype() == stat &&
                      mask.forget.device() == q.device(),
                  "flash_attention: the forget gate's sums must be a ", dtype_name(stat), " (", B,
                  ", ", H, ", ", k.size(2), ") on ", q.device().str(), " for q ", q.str(), ", got ",
                  mask.forget.str());
    m.forget = detail::dense(mask.forget);
  }
  Tensor out = Tensor::empty(q.shape(), q.options());
  Tensor lse = Tensor::empty({B, H, T}, {stat, q.device()});
  TESSERA_KERNEL(q, flash_attention_forward)(out, lse, Q, K, V, scale, m);

  // A detached alias of out: the closure must not hold the output's own handle (a cycle through
  // its autograd node).
  Tensor O = out.detach();
  std::vector<Tensor> inputs = {q, k, v};
  if (forget) inputs.push_back(mask.forget);
  return record("flash_attention", out, inputs,
                [Q, K, V, O, lse, scale, m](const Tensor& dout, GradSink& g) {
                  Tensor dq = Tensor::empty(Q.shape(), Q.options());
                  Tensor dk = Tensor::empty(K.shape(), K.options());
                  Tensor dv = Tensor::empty(V.shape(), V.options());
                  AttentionMask mb = m;
                  if (m.forget.defined())
                    mb.forget_grad = Tensor::empty(m.forget.shape(), m.forget.options());
                  TESSERA_KERNEL(dout, flash_attention_backward)
                  (dq, dk, dv, detail::unit_rows(dout), Q, K, V, O, lse, scale, mb);
                  g.add(0, dq);
                  g.add(1, dk);
                  g.add(2, dv);
                  if (mb.forget_grad.defined()) g.add(3, mb.forget_grad);
                });
}

}  // namespace tessera::ops
