// shifted_sparse_attention (S^2-Attn, LongLoRA): composed from views, concat and an inner
// attention op, so its gradient is the composition of theirs and needs no backward of its own.
#include "ops/sparse_attention.h"

#include "ops/attention.h"
#include "ops/shape.h"

namespace tessera::ops {
namespace {

// torch.roll(x, shift, dim=2) for x (B, H, T, D): out[:, :, t] = x[:, :, (t - shift) mod T].
Tensor roll_time(const Tensor& x, int64_t shift) {
  const int64_t T = x.size(2);
  const int64_t r = ((shift % T) + T) % T;
  if (r == 0) return x;
  return concat({x.narrow(2, T - r, r), x.narrow(2, 0, T - r)}, 2);
}

// Heads [0, n/2) as they are, heads [n/2, n) rolled by `shift` along T.
Tensor roll_second_half(const Tensor& x, int64_t shift) {
  const int64_t n = x.size(1);
  return concat({x.narrow(1, 0, n / 2), roll_time(x.narrow(1, n / 2, n - n / 2), shift)}, 1);
}

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
  TESSERA_CHECK(!shift || (H % 2 == 0 && Hkv % 2 == 0), "shifted_sparse_attention: shifting half "
                "of the heads needs an even number of query and kv heads, got q ",
                shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
  const AttentionFn attend = inner ? inner : [](const Tensor& a, const Tensor& b, const Tensor& c) {
    return attention(a, b, c);
  };
  // LongLoRA, Algorithm 1: roll half the heads by -G/2, attend in groups, roll them back.
  const int64_t s = shift ? group / 2 : 0;
  auto roll = [s](const Tensor& x, int64_t by) { return s ? roll_second_half(x, by) : x; };
  Tensor y = attend(to_groups(roll(q, -s), group), to_groups(roll(k, -s), group),
                    to_groups(roll(v, -s), group));
  TESSERA_CHECK(y.dim() == 4 && y.size(0) == B * (T / group) && y.size(1) == H &&
                    y.size(2) == group,
                "shifted_sparse_attention: the inner attention returned ", shape_str(y.shape()),
                " for grouped queries ", shape_str({B * (T / group), H, group, q.size(3)}));
  return roll(from_groups(y, B, T), s);
}

}  // namespace tessera::ops
