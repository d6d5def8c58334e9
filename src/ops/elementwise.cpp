// add, sub, mul (b full-shape or a broadcast bias row) and scale.
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
