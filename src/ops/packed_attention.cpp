// packed_causal_attention: causal attention (softmax or stick-breaking) on a fused q, k, v
// projection, its heads read and written where they lie (ops/packed_attention.h). The formulas are
// those of ops/attention.h and ops/stick_breaking.h; the kernels are the same ones, handed strided
// views (backend/attention_shapes.h).
#include "ops/packed_attention.h"

#include <memory>

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

// The parts of the batch that kernel calls attend one at a time: every document's rows (row after
// row, as check_document_spans wants them), or one part {-1, 0, 0}, the whole batch.
std::vector<DocumentSpan> parts_of(const Documents* docs) {
  if (!docs || docs->whole_rows()) return {DocumentSpan{-1, 0, 0}};
  std::vector<DocumentSpan> parts;
  parts.reserve(size_t(docs->count()));
  docs->for_each([&](int64_t b, int64_t start, int64_t length) {
    parts.push_back({b, start, length});
  });
  return parts;
}

// Part p of a (B, n, T, ...) view (or the (B, n, T) statistics): itself for the whole batch, else
// the (1, n, length, ...) view of the document's rows, with the view's own strides (the kernels'
// strided contract).
Tensor cut(const Tensor& t, const DocumentSpan& p) {
  if (p.b < 0) return t;
  Shape shape = t.shape();
  shape[0] = 1, shape[2] = p.length;
  return make_view(t, shape, t.strides(),
                   t.offset() + p.b * t.strides()[0] + p.start * t.strides()[2]);
}

}  // namespace

bool packed_attention_runs(const AttentionSpec& spec, Device device, DType dtype, int64_t head_dim,
                           bool training) {
  if (spec.s2_attn && training) return false;
  // The forget gate's sums are an input of their own, with a gradient: causal_attention's.
  if (spec.kind == AttentionKind::Forgetting) return false;
  if (!attention_support(spec, device, dtype, head_dim).empty()) return false;
  // Every CPU kernel keeps the strided contract; on CUDA the stick-breaking and flash kernels do
  // and the materialised one does not.
  return device.is_cpu() || spec.kind == AttentionKind::StickBreaking ||
         detail::softmax_runs_flash(spec, device, head_dim, false);
}

namespace {

// What a call keeps for its backward: the kernel's q, k (rotated copies under RoPE, else views of
// the inputs) and v, the output O (a view of the result), and for each part (parts_of: the whole
// batch, or each document) its lse (flash), P (materialised) or log rem (stick-breaking). A forward
// over documents in one call (the kernel table's *_documents entries, where a backend has them:
// flash and stick-breaking) saves the batch's statistics alone.
struct Attended {
  Tensor q, k, v, o;
  std::vector<DocumentSpan> parts;
  std::vector<Tensor> saved;  // one a part; one in all when one_call
  bool one_call = false;
  double scale = 0;
  AttentionSpec spec;
  bool flash = false;
  std::shared_ptr<const RopeFreqs> rope;  // null: no rotation

  // Part i's saved statistics (a view of the batch's under one_call).
  Tensor saved_of(size_t i) const { return one_call ? cut(saved[0], parts[i]) : saved[i]; }
};

// The checks both entry points share, then the forward: q, k, v (B, n, T, D) views with contiguous
// rows, out the (B, H, T, D) view of the result the kernel writes.
Attended attend(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                const Tensor& out, const AttentionSpec& spec, bool training, const RopeFreqs* rope,
                const Tensor& input, const Documents* docs) {
  const int64_t T = q.size(2), D = q.size(3);
  TESSERA_CHECK(packed_attention_runs(spec, input.device(), input.dtype(), D, training), op, ": ",
                attention_kind_name(spec.kind), " attention with head dim ", D,
                spec.s2_attn && training ? " and S^2-Attn" : "", " has no strided kernel for ",
                input.str(), "; split the heads and call causal_attention");
  const std::string why = attention_support(spec, input.device(), input.dtype(), D, T, T);
  TESSERA_CHECK(why.empty(), op, ": ", why, " (", input.str(), ")");
  if (docs)
    TESSERA_CHECK(docs->batch() == q.size(0) && docs->length() == T, op, ": documents of a (",
                  docs->batch(), ", ", docs->length(), ") batch for ", input.str());
  Attended a;
  a.scale = detail::attention_scale(spec.scale, D);
  a.spec = spec;
  a.flash = spec.kind == AttentionKind::Softmax &&
            detail::softmax_runs_flash(spec, input.device(), D, false);
  a.q = q, a.k = k, a.v = v, a.o = out;
  if (rope) {
    TESSERA_CHECK(int64_t(rope->inv_freq.size()) * 2 == D, op, ": ", rope->inv_freq.size(),
                  " RoPE frequencies for head dim ", D);
    a.rope = std::make_shared<const RopeFreqs>(*rope);
    a.q = Tensor::empty(q.shape(), q.options());
    a.k = Tensor::empty(k.shape(), k.options());
    TESSERA_KERNEL(q, rope)(a.q, q, rope->inv_freq, rope->scale, 0, false);
    TESSERA_KERNEL(k, rope)(a.k, k, rope->inv_freq, rope->scale, 0, false);
  }
  a.parts = parts_of(docs);
  const int64_t H = q.size(1);
  const DType stat = q.dtype() == DType::F64 ? DType::F64 : DType::F32;
  // Documents in one call where the backend has the entry (and takes these tensors so).
  const bool sb = spec.kind == AttentionKind::StickBreaking;
  const Kernels& kern = kernels_for(q);
  if (a.parts[0].b >= 0 && (sb ? kern.stick_breaking_forward_documents != nullptr
                               : a.flash && kern.flash_attention_forward_documents != nullptr)) {
    const Tensor stats = Tensor::empty({q.size(0), H, T}, {stat, q.device()});
    if (sb)
      a.one_call = TESSERA_KERNEL(q, stick_breaking_forward_documents)(
          out, stats, Tensor(), a.q, a.k, v, a.scale, spec.attend_current, spec.sb_remainder,
          a.parts);
    else
      a.one_call = TESSERA_KERNEL(q, flash_attention_forward_documents)(
          out, stats, a.q, a.k, v, a.scale, spec.mask(), a.parts);
    if (a.one_call) {
      a.saved = {stats};
      return a;
    }
  }
  // Each part is a batch of its own: a document's rows attend within it (positions relative to
  // its start; RoPE's rotation above depends on the difference alone).
  for (const DocumentSpan& p : a.parts) {
    const Tensor Q = cut(a.q, p), K = cut(a.k, p), V = cut(v, p), O = cut(out, p);
    const int64_t B = Q.size(0), L = Q.size(2);
    if (spec.kind == AttentionKind::StickBreaking) {
      a.saved.push_back(Tensor::empty({B, H, L}, {stat, q.device()}));
      const auto forward = TESSERA_KERNEL(q, stick_breaking_forward);
      forward(O, a.saved.back(), Tensor(), Q, K, V, a.scale, spec.attend_current,
              spec.sb_remainder);
    } else if (a.flash) {
      a.saved.push_back(Tensor::empty({B, H, L}, {stat, q.device()}));
      TESSERA_KERNEL(q, flash_attention_forward)(O, a.saved.back(), Q, K, V, a.scale, spec.mask());
    } else {
      a.saved.push_back(Tensor::empty({B, H, L, L}, q.options()));
      TESSERA_KERNEL(q, attention_forward)(O, a.saved.back(), Q, K, V, a.scale);
    }
  }
  return a;
}

// The backward into dq, dk, dv: views laid out as the inputs' gradients (every element written).
// Under RoPE the kernel's dq, dk are the rotated heads' and rotate back into place.
void attend_backward(const Attended& a, const Tensor& dO, const Tensor& dq, const Tensor& dk,
                     const Tensor& dv) {
  const Tensor dQ = a.rope ? Tensor::empty(a.q.shape(), a.q.options()) : dq;
  const Tensor dK = a.rope ? Tensor::empty(a.k.shape(), a.k.options()) : dk;
  // A forward in one call has its backward in one call too, unless the kernels chosen changed in
  // between (TESSERA_FLASH_KERNELS, TESSERA_FLASH_DOCUMENTS) or stick-breaking's checkpoints would
  // pass their budget: then each document's, on its rows of the batch's statistics.
  bool one_call = false;
  if (a.one_call && a.spec.kind == AttentionKind::StickBreaking)
    one_call = TESSERA_KERNEL(dO, stick_breaking_backward_documents)(
        dQ, dK, dv, dO, a.q, a.k, a.v, a.o, a.saved[0], a.scale, a.spec.attend_current,
        a.spec.sb_remainder, a.parts);
  else if (a.one_call)
    one_call = TESSERA_KERNEL(dO, flash_attention_backward_documents)(
        dQ, dK, dv, dO, a.q, a.k, a.v, a.o, a.saved[0], a.scale, a.spec.mask(), a.parts);
  for (size_t i = 0; i < a.parts.size() && !one_call; ++i) {
    const DocumentSpan& p = a.parts[i];
    const Tensor gq = cut(dQ, p), gk = cut(dK, p), gv = cut(dv, p), go = cut(dO, p);
    const Tensor Q = cut(a.q, p), K = cut(a.k, p), V = cut(a.v, p);
    if (a.spec.kind == AttentionKind::StickBreaking) {
      const auto backward = TESSERA_KERNEL(dO, stick_breaking_backward);
      backward(gq, gk, gv, go, Q, K, V, cut(a.o, p), a.saved_of(i).contiguous(), a.scale,
               a.spec.attend_current, a.spec.sb_remainder);
    } else if (a.flash) {
      const auto backward = TESSERA_KERNEL(dO, flash_attention_backward);
      backward(gq, gk, gv, go, Q, K, V, cut(a.o, p), a.saved_of(i).contiguous(), a.scale,
               a.spec.mask());
    } else {
      TESSERA_KERNEL(dO, attention_backward)(gq, gk, gv, go, Q, K, V, a.saved[i], a.scale);
    }
  }
  if (a.rope) {
    TESSERA_KERNEL(dO, rope)(dq, dQ, a.rope->inv_freq, a.rope->scale, 0, true);
    TESSERA_KERNEL(dO, rope)(dk, dK, a.rope->inv_freq, a.rope->scale, 0, true);
  }
}

}  // namespace

Tensor packed_causal_attention(const Tensor& qkv, int64_t H, int64_t Hkv, const AttentionSpec& spec,
                               bool training, const Documents* docs) {
  TESSERA_CHECK(qkv.dim() == 3 && H > 0 && Hkv > 0 && H % Hkv == 0 &&
                    qkv.size(2) % (H + 2 * Hkv) == 0 && qkv.size(2) > 0,
                "packed_causal_attention: expected qkv (B, T, (H + 2 Hkv) D) with H = ", H,
                " a multiple of Hkv = ", Hkv, ", got ", qkv.str());
  const int64_t B = qkv.size(0), T = qkv.size(1), D = qkv.size(2) / (H + 2 * Hkv);
  const Tensor X = detail::dense(qkv);
  Tensor out = Tensor::empty({B, T, H * D}, qkv.options());
  // The closure holds a detached alias of out, not the output's own handle (a cycle through its
  // autograd node).
  const Attended a = attend("packed_causal_attention", heads(X, 0, H, D), heads(X, H, Hkv, D),
                            heads(X, H + Hkv, Hkv, D), heads(out.detach(), 0, H, D), spec, training,
                            nullptr, qkv, docs);
  return record("packed_attention", out, {qkv}, [a, H, Hkv, D](const Tensor& dout, GradSink& g) {
    // Every element of dX is written: dq for every query, dk and dv for every key.
    const int64_t B = a.o.size(0), T = a.o.size(2);
    Tensor dX = Tensor::empty({B, T, (H + 2 * Hkv) * D}, a.v.options());
    attend_backward(a, heads(detail::dense(dout), 0, H, D), heads(dX, 0, H, D),
                    heads(dX, H, Hkv, D), heads(dX, H + Hkv, Hkv, D));
    g.add(0, dX);
  });
}

Tensor projected_causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H,
                                  int64_t Hkv, const AttentionSpec& spec, bool training,
                                  const RopeFreqs* rope, const Documents* docs) {
  TESSERA_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && H > 0 && Hkv > 0 &&
                    H % Hkv == 0 && q.size(2) % H == 0 && q.size(2) > 0 &&
                    k.shape() == v.shape() && k.size(0) == q.size(0) && k.size(1) == q.size(1) &&
                    k.size(2) * H == q.size(2) * Hkv,
                "projected_causal_attention: expected q (B, T, H D), k and v (B, T, Hkv D) with ",
                "H = ", H, " a multiple of Hkv = ", Hkv, ", got q ", q.str(), ", k ", k.str(),
                ", v ", v.str());
  detail::check_compatible("projected_causal_attention", {&q, &k, &v});
  const int64_t B = q.size(0), T = q.size(1), D = q.size(2) / H;
  const Tensor Qi = detail::dense(q), Ki = detail::dense(k), Vi = detail::dense(v);
  Tensor out = Tensor::empty({B, T, H * D}, q.options());
  const Attended a =
      attend("projected_causal_attention", heads(Qi, 0, H, D), heads(Ki, 0, Hkv, D),
             heads(Vi, 0, Hkv, D), heads(out.detach(), 0, H, D), spec, training, rope, q, docs);
  return record("projected_attention", out, {q, k, v},
                [a, H, Hkv, D](const Tensor& dout, GradSink& g) {
                  const int64_t B = a.o.size(0), T = a.o.size(2);
                  Tensor dq = Tensor::empty({B, T, H * D}, a.v.options());
                  Tensor dk = Tensor::empty({B, T, Hkv * D}, a.v.options());
                  Tensor dv = Tensor::empty({B, T, Hkv * D}, a.v.options());
                  attend_backward(a, heads(detail::dense(dout), 0, H, D), heads(dq, 0, H, D),
                                  heads(dk, 0, Hkv, D), heads(dv, 0, Hkv, D));
                  g.add(0, dq);
                  g.add(1, dk);
                  g.add(2, dv);
                });
}

Tensor document_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionSpec& spec, const Documents& docs, bool training) {
  detail::check_attention_inputs("document_attention", q, k, v);
  TESSERA_CHECK(packed_attention_runs(spec, q.device(), q.dtype(), q.size(3), training),
                "document_attention: attention within documents runs the kernels that read "
                "strided heads, which ",
                attention_kind_name(spec.kind), " attention",
                spec.s2_attn && training ? " with S^2-Attn" : "", " lacks for q ", q.str());
  const Tensor Q = detail::unit_rows(q), K = detail::unit_rows(k), V = detail::unit_rows(v);
  Tensor out = Tensor::empty(q.shape(), q.options());
  const Attended a =
      attend("document_attention", Q, K, V, out.detach(), spec, training, nullptr, q, &docs);
  return record("document_attention", out, {q, k, v}, [a](const Tensor& dout, GradSink& g) {
    Tensor dq = Tensor::empty(a.q.shape(), a.q.options());
    Tensor dk = Tensor::empty(a.k.shape(), a.k.options());
    Tensor dv = Tensor::empty(a.v.shape(), a.v.options());
    attend_backward(a, detail::unit_rows(dout), dq, dk, dv);
    g.add(0, dq);
    g.add(1, dk);
    g.add(2, dv);
  });
}

}  // namespace tessera::ops
