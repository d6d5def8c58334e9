// causal_attention: the kernel choice for every attention kind (ops/causal_attention.h). A new
// attention variant adds its kind to ops/attention_spec.h and its branch here.
#include "ops/causal_attention.h"

#include "ops/attention.h"
#include "ops/packed_attention.h"
#include "ops/shape.h"
#include "ops/sparse_attention.h"
#include "ops/stick_breaking.h"

namespace tessera::ops {

namespace detail {
bool softmax_runs_flash(const AttentionSpec& spec, Device device, int64_t head_dim, bool decoding) {
  // On the GPU the fused flash kernel for head dims 64 and 128 (its tensor-core tiles), else the
  // materialised CUDA kernel; on the CPU the materialised kernel, whose saved P spares the
  // backward the flash kernel's second Q K^T product. A window, ALiBi or a query offset needs the
  // flash kernels, which take all three on every device (on the GPU the offset through their
  // one-warp-per-query-row path).
  return decoding || spec.window > 0 || spec.alibi ||
         (!device.is_cpu() && (head_dim == 64 || head_dim == 128));
}
}  // namespace detail

Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                        const AttentionSpec& spec, bool training, const Documents* docs,
                        const Tensor& forget) {
  detail::check_attention_inputs("causal_attention", q, k, v, /*allow_offset=*/true);
  const std::string why =
      attention_support(spec, q.device(), q.dtype(), q.size(3), q.size(2), k.size(2));
  TESSERA_CHECK(why.empty(), "causal_attention: ", why, " (q ", q.str(), ")");
  const bool forgetting = spec.kind == AttentionKind::Forgetting;
  TESSERA_CHECK(forgetting == forget.defined(), "causal_attention: ",
                forgetting ? "forgetting attention needs the forget gate's sums"
                           : "forget gate sums given to attention of kind ",
                forgetting ? "" : attention_kind_name(spec.kind), " (q ", q.str(), ")");
  const bool offset = q.size(2) != k.size(2);
  if (forgetting) {
    AttentionMask m = spec.mask();
    m.forget = forget;
    if (!docs || docs->whole_rows()) return flash_attention(q, k, v, spec.scale, m);
    TESSERA_CHECK(!offset, "causal_attention: attention within documents takes self-attention (q ",
                  q.str(), ", k ", k.str(), ")");
    // Each document's rows on their own, composed from views: the gate's sums run on across a
    // row's documents, but a document's scores read only differences within it.
    std::vector<Tensor> rows(size_t(q.size(0)));
    std::vector<std::vector<Tensor>> pieces(size_t(q.size(0)));
    docs->for_each([&](int64_t b, int64_t start, int64_t length) {
      auto part = [&](const Tensor& t) { return t.narrow(0, b, 1).narrow(2, start, length); };
      m.forget = part(forget).contiguous();
      pieces[size_t(b)].push_back(flash_attention(part(q), part(k), part(v), spec.scale, m));
    });
    for (size_t b = 0; b < rows.size(); ++b) rows[b] = concat(pieces[b], 2);
    return concat(rows, 0);
  }
  if (docs && !docs->whole_rows()) {
    TESSERA_CHECK(!offset && !(spec.s2_attn && training),
                  "causal_attention: attention within documents takes self-attention (q ", q.str(),
                  ", k ", k.str(), ")", offset ? "" : " without S^2-Attn");
    return document_attention(q, k, v, spec, *docs, training);
  }

  const AttentionFn full = [&spec](const Tensor& q, const Tensor& k, const Tensor& v) {
    const bool decoding = q.size(2) != k.size(2);
    if (spec.kind == AttentionKind::StickBreaking) {
      StickBreakingOptions o;
      o.attend_current = spec.attend_current;
      o.remainder = spec.sb_remainder ? StickBreakingRemainder::Current : StickBreakingRemainder::None;
      o.scale = spec.scale;
      return stick_breaking_attention(q, k, v, o);
    }
    const bool flash = detail::softmax_runs_flash(spec, q.device(), q.size(3), decoding);
    return flash ? flash_attention(q, k, v, spec.scale, spec.mask())
                 : attention(q, k, v, spec.scale);
  };
  // S^2-Attn is a training-time approximation (LongLoRA); evaluation and decoding attend fully.
  if (spec.s2_attn && training && !offset)
    return shifted_sparse_attention(q, k, v, q.size(2) / 4, full);
  return full(q, k, v);
}

}  // namespace tessera::ops
