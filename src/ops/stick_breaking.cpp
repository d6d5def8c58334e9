// stick_breaking_attention: forward and backward through the fused kernels of the table. Besides
// q, k, v the forward saves its output and log_rem (B, H, T) = sum_i log(1 - beta[i, j]), O(T) per
// head; the backward recomputes the weights (the formulas are derived in
// src/backend/cpu/stick_breaking.cpp).
#include "ops/stick_breaking.h"

#include "ops/attention.h"
#include "ops/util.h"

namespace tessera::ops {

Tensor stick_breaking_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                const StickBreakingOptions& opt, Tensor* rem) {
  detail::check_attention_inputs("stick_breaking_attention", q, k, v, /*allow_offset=*/true);
  detail::check_offset_inference_only("stick_breaking_attention", q, k, v);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);  // T: queries
  const double scale = detail::attention_scale(opt.scale, D);
  const bool current = opt.attend_current;
  const bool add_rem = opt.remainder == StickBreakingRemainder::Current;

  // With fewer queries than keys (decoding), a cache's filled prefix is read in place.
  const std::pair<Tensor, Tensor> kv = detail::dense_kv(k, v, /*offset=*/T < k.size(2));
  Tensor Q = detail::dense(q), K = kv.first, V = kv.second;
  Tensor out = Tensor::empty(q.shape(), q.options());
  // log rem_j reaches -T * softplus(z) at long contexts: kept in f32 (f64 for f64 inputs), never
  // as rem itself, which underflows.
  Tensor log_rem =
      Tensor::empty({B, H, T}, {q.dtype() == DType::F64 ? DType::F64 : DType::F32, q.device()});
  Tensor rem_out;
  if (rem) rem_out = Tensor::empty({B, H, T}, q.options());
  TESSERA_KERNEL(q, stick_breaking_forward)(out, log_rem, rem_out, Q, K, V, scale, current,
                                            add_rem);
  if (rem) *rem = rem_out;

  // A detached alias of out: the closure must not hold the output's own handle (a cycle through
  // its autograd node).
  Tensor O = out.detach();
  return record("stick_breaking_attention", out, {q, k, v},
                [Q, K, V, O, log_rem, scale, current, add_rem](const Tensor& dout, GradSink& g) {
                  Tensor dq = Tensor::empty(Q.shape(), Q.options());
                  Tensor dk = Tensor::empty(K.shape(), K.options());
                  Tensor dv = Tensor::empty(V.shape(), V.options());
                  TESSERA_KERNEL(dout, stick_breaking_backward)(dq, dk, dv, dout, Q, K, V, O,
                                                                log_rem, scale, current, add_rem);
                  g.add(0, dq);
                  g.add(1, dk);
                  g.add(2, dv);
                });
}

}  // namespace tessera::ops
