// sum and mean, over everything or over one dimension. Backward broadcasts the gradient back.
#include "ops/reduce.h"

#include "ops/elementwise.h"
#include "ops/util.h"

namespace tessera::ops {
namespace {

// Sums x viewed as (outer, n, inner) over n; out_shape is the result's shape.
Tensor sum_middle(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Shape& out_shape) {
  Tensor out = Tensor::empty(out_shape, x.options());
  TESSERA_KERNEL(x, sum_dim)(out, detail::dense(x), outer, n, inner, false);
  Shape in_shape = x.shape();
  return record("sum", out, {x}, [=](const Tensor& dy, GradSink& g) {
    Tensor dx = Tensor::empty(in_shape, dy.options());
    TESSERA_KERNEL(dy, expand_dim)(dx, dy, outer, n, inner);
    g.add(0, dx);
  });
}

}  // namespace

Tensor sum(const Tensor& x) { return sum_middle(x, 1, x.numel(), 1, {}); }

Tensor mean(const Tensor& x) {
  TESSERA_CHECK(x.numel() > 0, "mean of an empty tensor ", shape_str(x.shape()));
  return scale(sum(x), 1.0 / double(x.numel()));
}

Tensor sum(const Tensor& x, int64_t dim, bool keepdim) {
  const int64_t r = x.dim();
  TESSERA_CHECK(dim >= -r && dim < r, "sum: dimension ", dim, " out of range for shape ",
                shape_str(x.shape()));
  const size_t d = size_t(dim < 0 ? dim + r : dim);
  int64_t outer = 1, inner = 1;
  for (size_t i = 0; i < d; ++i) outer *= x.shape()[i];
  for (size_t i = d + 1; i < size_t(r); ++i) inner *= x.shape()[i];
  Shape out_shape = x.shape();
  if (keepdim) {
    out_shape[d] = 1;
  } else {
    out_shape.erase(out_shape.begin() + int64_t(d));
  }
  return sum_middle(x, outer, x.shape()[d], inner, out_shape);
}

Tensor expand(const Tensor& x, int64_t dim, int64_t n) {
  const int64_t r = x.dim();
  TESSERA_CHECK(dim >= -r && dim < r && x.size(dim) == 1 && n >= 0, "expand: dimension ", dim,
                " of shape ", shape_str(x.shape()), " must exist and have size 1 (to ", n, ")");
  const size_t d = size_t(dim < 0 ? dim + r : dim);
  int64_t outer = 1, inner = 1;
  for (size_t i = 0; i < d; ++i) outer *= x.shape()[i];
  for (size_t i = d + 1; i < size_t(r); ++i) inner *= x.shape()[i];
  Shape out_shape = x.shape();
  out_shape[d] = n;
  Tensor out = Tensor::empty(out_shape, x.options());
  TESSERA_KERNEL(x, expand_dim)(out, detail::dense(x), outer, n, inner);
  const Shape in_shape = x.shape();
  return record("expand", out, {x}, [=](const Tensor& dy, GradSink& g) {
    Tensor dx = Tensor::empty(in_shape, dy.options());
    TESSERA_KERNEL(dy, sum_dim)(dx, detail::dense(dy), outer, n, inner, false);
    g.add(0, dx);
  });
}

Tensor mean(const Tensor& x, int64_t dim, bool keepdim) {
  const int64_t n = x.size(dim);
  TESSERA_CHECK(n > 0, "mean over an empty dimension of ", shape_str(x.shape()));
  return scale(sum(x, dim, keepdim), 1.0 / double(n));
}

}  // namespace tessera::ops
