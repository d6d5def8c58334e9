// add, sub, mul (b full-shape or a broadcast bias row), add_rows and scale.
#include "ops/elementwise.h"

#include "ops/util.h"

namespace tessera::ops {
namespace {

// Is b one row of a's last dimension (broadcast), rather than a's full shape?
bool broadcast_row(const char* op, const Tensor& a, const Tensor& b) {
  detail::check_compatible(op, {&a, &b});
  if (a.shape() == b.shape()) return false;
  TESSERA_CHECK(b.dim() == 1 && a.dim() >= 1 && b.size(0) == a.size(-1), op, ": shapes ",
                shape_str(a.shape()), " and ", shape_str(b.shape()),
                " do not match (b must have a's shape or be one row of a's last dimension)");
  return true;
}

Tensor apply(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), a.options());
  TESSERA_KERNEL(a, binary)(op, out, detail::dense(a), detail::dense(b));
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  const bool row = broadcast_row("add", a, b);
  const int64_t C = b.numel();
  return record("add", apply(BinaryOp::Add, a, b), {a, b}, [row, C](const Tensor& dy, GradSink& g) {
    g.add(0, dy);
    if (g.needs(1)) g.add(1, row ? detail::sum_rows(dy, C) : dy);
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  const bool row = broadcast_row("sub", a, b);
  const int64_t C = b.numel();
  return record("sub", apply(BinaryOp::Sub, a, b), {a, b}, [row, C](const Tensor& dy, GradSink& g) {
    g.add(0, dy);
    if (g.needs(1)) {
      Tensor db = row ? detail::sum_rows(dy, C) : dy;
      Tensor neg = Tensor::empty(db.shape(), db.options());
      TESSERA_KERNEL(db, axpby)(neg, -1.0, db, 0.0, Tensor());
      g.add(1, neg);
    }
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  const bool row = broadcast_row("mul", a, b);
  Tensor A = detail::dense(a), B = detail::dense(b);
  const int64_t C = b.numel();
  return record("mul", apply(BinaryOp::Mul, a, b), {a, b},
                [A, B, row, C](const Tensor& dy, GradSink& g) {
                  if (g.needs(0)) g.add(0, apply(BinaryOp::Mul, dy, B));  // B broadcasts as in forward
                  if (g.needs(1)) {
                    Tensor db = apply(BinaryOp::Mul, dy, A);
                    g.add(1, row ? detail::sum_rows(db, C) : db);
                  }
                });
}

Tensor add_rows(const Tensor& x, const Tensor& table, int64_t start) {
  detail::check_compatible("add_rows", {&x, &table});
  TESSERA_CHECK(x.dim() == 3 && table.dim() == 2 && x.size(2) == table.size(1) && start >= 0 &&
                    start + x.size(1) <= table.size(0),
                "add_rows: x ", shape_str(x.shape()), " takes rows [", start, ", ",
                start + (x.dim() == 3 ? x.size(1) : 0), ") of table ", shape_str(table.shape()),
                ": x must be (B, T, C) and the table (P, C) with start + T <= P");
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  // The rows as one (T C) row of a's last dimension, broadcast over B: the bias form of `binary`.
  const Tensor dense = detail::dense(table);
  const Tensor rows = make_view(dense, {T * C}, {1}, dense.offset() + start * C);
  Tensor out = apply(BinaryOp::Add, detail::dense(x).view({B, T * C}), rows).view(x.shape());
  return record("add_rows", out, {x, table}, [B, T, C, start](const Tensor& dy, GradSink& g) {
    g.add(0, dy);
    if (!g.needs(1)) return;
    const Tensor dY = detail::dense(dy);
    g.add_into(1, dy.dtype(), [dY, B, T, C, start](Tensor& acc, bool zero) {
      const Tensor region = acc.narrow(0, start, T);  // whole rows: contiguous
      TESSERA_KERNEL(dY, sum_dim)(region, dY, 1, B, T * C, !zero);
    }, {.region = GradRegion{0, start, T}, .also = detail::f32_buffer_of(dy.dtype())});
  });
}

Tensor scale(const Tensor& x, double s) {
  Tensor out = Tensor::empty(x.shape(), x.options());
  TESSERA_KERNEL(x, axpby)(out, s, detail::dense(x), 0.0, Tensor());
  return record("scale", out, {x}, [s](const Tensor& dy, GradSink& g) {
    Tensor dx = Tensor::empty(dy.shape(), dy.options());
    TESSERA_KERNEL(dy, axpby)(dx, s, dy, 0.0, Tensor());
    g.add(0, dx);
  });
}

}  // namespace tessera::ops
