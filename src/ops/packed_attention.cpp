// packed_causal_attention: causal softmax attention on a fused q, k, v projection, its heads read
// and written where they lie (ops/packed_attention.h). The formulas are those of ops/attention.h;
// the kernels are the same ones, handed strided views (backend/attention_shapes.h).
#include "ops/packed_attention.h"

#include "ops/attention.h"
#include "ops/causal_attention.h"
#include "ops/util.h"

namespace tessera::ops {
namespace {

// Heads [first, first + n) of a contiguous (B, T, W) tensor whose rows hold heads of D values side
// by side, as a (B, n, T, D) view: head h of position t of batch b starts at b T W + t W + h D.
Tensor heads(const Tensor& t, int64_t first, int64_t n, int64_t D) {
  const int64_t B = t.size(0), T = t.size(1), W = t.size(2);
  return make_view(t, {B, n, T, D}, {T * W, D, W, 1}, t.offset() + first * D);
}

}  // namespace

bool packed_attention_runs(const AttentionSpec& spec, Device device, DType dtype, int64_t head_dim,
                           bool training) {
  if (spec.kind != AttentionKind::Softmax || (spec.s2_attn && training)) return false;
  if (!attention_support(spec, device, dtype, head_dim).empty()) return false;
  // Every CPU kernel keeps the strided contract; on CUDA the flash kernels do and the materialised
  // one does not.
  return device.is_cpu() || detail::softmax_runs_flash(spec, device, head_dim, false);
}

Tensor packed_causal_attention(const Tensor& qkv, int64_t H, int64_t Hkv,
                               const AttentionSpec& spec, bool training) {
  TESSERA_CHECK(qkv.dim() == 3 && H > 0 && Hkv > 0 && H % Hkv == 0 &&
                    qkv.size(2) % (H + 2 * Hkv) == 0 && qkv.size(2) > 0,
                "packed_causal_attention: expected qkv (B, T, (H + 2 Hkv) D) with H = ", H,
                " a multiple of Hkv = ", Hkv, ", got ", qkv.str());
  const int64_t B = qkv.size(0), T = qkv.size(1), D = qkv.size(2) / (H + 2 * Hkv);
  TESSERA_CHECK(packed_attention_runs(spec, qkv.device(), qkv.dtype(), D, training),
                "packed_causal_attention: ", attention_kind_name(spec.kind),
                " attention with head dim ", D, spec.s2_attn && training ? " and S^2-Attn" : "",
                " has no strided kernel for ", qkv.str(), "; split the heads and call "
                "causal_attention");
  const std::string why = attention_support(spec, qkv.device(), qkv.dtype(), D, T, T);
  TESSERA_CHECK(why.empty(), "packed_causal_attention: ", why, " (qkv ", qkv.str(), ")");
  const double scale = detail::attention_scale(spec.scale, D);
  const int64_t window = spec.window;
  const bool flash = detail::softmax_runs_flash(spec, qkv.device(), D, false);

  const Tensor X = detail::dense(qkv);
  const Tensor Q = heads(X, 0, H, D), K = heads(X, H, Hkv, D), V = heads(X, H + Hkv, Hkv, D);
  Tensor out = Tensor::empty({B, T, H * D}, qkv.options());
  // A detached alias of out: the closure must not hold the output's own handle (a cycle through
  // its autograd node).
  const Tensor O = heads(out.detach(), 0, H, D);
  // What the backward needs besides q, k, v: lse (B, H, T) for flash, P (B, H, T, T) otherwise.
  Tensor saved;
  if (flash) {
    saved = Tensor::empty({B, H, T},
                          {qkv.dtype() == DType::F64 ? DType::F64 : DType::F32, qkv.device()});
    TESSERA_KERNEL(X, flash_attention_forward)(O, saved, Q, K, V, scale, window);
  } else {
    saved = Tensor::empty({B, H, T, T}, qkv.options());
    TESSERA_KERNEL(X, attention_forward)(O, saved, Q, K, V, scale);
  }

  return record("packed_attention", out, {qkv},
                [X, O, saved, H, Hkv, D, scale, window, flash](const Tensor& dout, GradSink& g) {
                  const Tensor Q = heads(X, 0, H, D), K = heads(X, H, Hkv, D),
                               V = heads(X, H + Hkv, Hkv, D);
                  const Tensor dO = heads(detail::dense(dout), 0, H, D);
                  // Every element of dX is written: dq for every query, dk and dv for every key.
                  Tensor dX = Tensor::empty(X.shape(), X.options());
                  const Tensor dQ = heads(dX, 0, H, D), dK = heads(dX, H, Hkv, D),
                               dV = heads(dX, H + Hkv, Hkv, D);
                  if (flash)
                    TESSERA_KERNEL(dO, flash_attention_backward)(dQ, dK, dV, dO, Q, K, V, O, saved,
                                                                 scale, window);
                  else
                    TESSERA_KERNEL(dO, attention_backward)(dQ, dK, dV, dO, Q, K, V, saved, scale);
                  g.add(0, dX);
                });
}

}  // namespace tessera::ops
