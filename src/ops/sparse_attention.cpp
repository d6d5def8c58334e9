// shifted_sparse_attention (S^2-Attn, LongLoRA): composed from views, concat and an inner
// attention op, so its gradient is the composition of theirs and needs no backward of its own.
#include "ops/sparse_attention.h"

#include "ops/attention.h"
#include "ops/shape.h"

namespace tessera::ops {
namespace {

// (B, H, T, D) -> (B * T / G, H, G, D): each group of G tokens becomes a batch entry.
Tensor to_groups(const Tensor& x, int64_t G) {
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  return x.reshape({B, H, T / G, G, D}).permute({0, 2, 1, 3, 4}).reshape({B * (T / G), H, G, D});
}

// The inverse of to_groups.
Tensor from_groups(const Tensor& y, int64_t B, int64_t T) {
  const int64_t H = y.size(1), G = y.size(2), D = y.size(3);
  return y.reshape({B, T / G, H, G, D}).permute({0, 2, 1, 3, 4}).reshape({B, H, T, D});
}

}  // namespace

Tensor shifted_sparse_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t group,
                                const AttentionFn& inner, bool shift) {
  detail::check_attention_inputs("shifted_sparse_attention", q, k, v);
  const int64_t B = q.size(0), H = q.size(1), Hkv = k.size(1), T = q.size(2);
  TESSERA_CHECK(group > 0 && T % group == 0, "shifted_sparse_attention: T = ", T,
                " must be a positive multiple of group = ", group, " (q ", shape_str(q.shape()),
                ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()), ")");
  // The shifted groups [0, G/2), [G/2, 3G/2), ..., [T - G/2, T) cover T only for an even G (an odd
  // one would drop a token; G = 1 would make empty groups).
  TESSERA_CHECK(!shift || group % 2 == 0, "shifted_sparse_attention: shifting by half a group "
                "needs an even group, got group = ", group, " (q ", shape_str(q.shape()), ")");
  TESSERA_CHECK(!shift || (H % 2 == 0 && Hkv % 2 == 0),
                "shifted_sparse_attention: shifting half "
                "of the heads needs an even number of query and kv heads, got q ",
                shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
  const AttentionFn attend = inner ? inner : [](const Tensor& a, const Tensor& b, const Tensor& c) {
    return attention(a, b, c);
  };
  // Attention inside groups of G tokens of (B, n, T, D) views; T a multiple of G.
  auto grouped = [&](const Tensor& q, const Tensor& k, const Tensor& v, int64_t G) {
    const int64_t b = q.size(0), t = q.size(2);
    Tensor y = attend(to_groups(q, G), to_groups(k, G), to_groups(v, G));
    TESSERA_CHECK(y.dim() == 4 && y.size(0) == b * (t / G) && y.size(1) == q.size(1) &&
                      y.size(2) == G,
                  "shifted_sparse_attention: the inner attention returned ",
                  shape_str(y.shape()), " for grouped queries ",
                  shape_str({b * (t / G), q.size(1), G, q.size(3)}));
    return from_groups(y, b, t);
  };
  if (!shift) return grouped(q, k, v, group);
  // Heads [0, H/2) attend in groups [0, G), [G, 2G), ...; heads [H/2, H) (and kv heads
  // [Hkv/2, Hkv)) in groups shifted by s = G/2: [0, s), [s, s + G), ..., [T - s, T). LongLoRA's
  // Algorithm 1 rolls those heads by -s instead, which joins [T - s, T) and [0, s) into one group
  // and lets tokens 0 .. s-1 attend to the end of the sequence; keeping the two halves apart is
  // the same grouping without that leak, so the training loss never sees a later token.
  const int64_t s = group / 2;
  auto half = [](const Tensor& x, bool second) {
    const int64_t n = x.size(1);
    return second ? x.narrow(1, n / 2, n - n / 2) : x.narrow(1, 0, n / 2);
  };
  auto span = [](const Tensor& x, int64_t t0, int64_t len) { return x.narrow(2, t0, len); };
  const Tensor q2 = half(q, true), k2 = half(k, true), v2 = half(v, true);
  // The two edge half-groups side by side in the batch: (2B, n, s, D), one call.
  auto edges = [&](const Tensor& x) { return concat({span(x, 0, s), span(x, T - s, s)}, 0); };
  const Tensor e = grouped(edges(q2), edges(k2), edges(v2), s);
  std::vector<Tensor> parts{e.narrow(0, 0, B)};
  if (T > group)
    parts.push_back(grouped(span(q2, s, T - group), span(k2, s, T - group),
                            span(v2, s, T - group), group));
  parts.push_back(e.narrow(0, B, B));
  return concat({grouped(half(q, false), half(k, false), half(v, false), group),
                 concat(parts, 2)},
                1);
}

}  // namespace tessera::ops
