// Views and conversions, differentiable. A view's backward maps the gradient back to the input's
// geometry: view -> view back, narrow -> into its slice of the input's gradient, permute -> inverse
// permutation.
#include "ops/shape.h"

#include <algorithm>
#include <numeric>

#include "autograd/autograd.h"
#include "backend/kernels.h"
#include "ops/util.h"

namespace tessera {
namespace {

int64_t norm_dim(int64_t d, int64_t rank, const Shape& shape) {
  TESSERA_CHECK(d >= -rank && d < rank, "dimension ", d, " out of range for shape ",
                shape_str(shape));
  return d < 0 ? d + rank : d;
}

Shape infer_shape(const Shape& want, int64_t numel, const Shape& from) {
  Shape s = want;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      TESSERA_CHECK(infer < 0, "view: more than one -1 in ", shape_str(want));
      infer = int64_t(i);
    } else {
      TESSERA_CHECK(s[i] >= 0, "view: bad dimension in ", shape_str(want));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    TESSERA_CHECK(known > 0 && numel % known == 0, "view: cannot view ", shape_str(from), " as ",
                  shape_str(want));
    s[size_t(infer)] = numel / known;
  }
  TESSERA_CHECK(shape_numel(s) == numel, "view: cannot view ", shape_str(from), " (", numel,
                " elements) as ", shape_str(want));
  return s;
}

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  Shape s = infer_shape(shape, numel(), this->shape());
  TESSERA_CHECK(is_contiguous(), "view: ", str(), " with strides ", shape_str(strides()),
                " is not contiguous; use reshape()");
  Tensor out = make_view(*this, s, contiguous_strides(s), offset());
  Shape in_shape = this->shape();
  return record("view", out, {*this}, [in_shape](const Tensor& dy, GradSink& g) {
    g.add(0, dy.view(in_shape));
  });
}

Tensor Tensor::reshape(const Shape& shape) const {
  return is_contiguous() ? view(shape) : contiguous().view(shape);
}

Tensor Tensor::narrow(int64_t dim, int64_t start, int64_t length) const {
  int64_t d = norm_dim(dim, this->dim(), shape());
  TESSERA_CHECK(start >= 0 && length >= 0 && start + length <= shape()[size_t(d)], "narrow: [",
                start, ", ", start + length, ") is outside dimension ", d, " of shape ",
                shape_str(shape()));
  Shape s = shape();
  s[size_t(d)] = length;
  Tensor out = make_view(*this, s, strides(), offset() + start * strides()[size_t(d)]);
  return record("narrow", out, {*this}, [d, start, length](const Tensor& dy, GradSink& g) {
    // Written into the input's gradient in place (GradSink::add_into): the narrows of one tensor
    // (a fused q, k, v projection's three) fill one zeroed buffer, not one each plus their sums; a
    // bf16 leaf's rows go straight into its f32 gradient buffer.
    g.add_into(0, dy.dtype(), [dy, d, start, length](Tensor& acc, bool zero) {
      Tensor slice = acc.narrow(d, start, length);
      if (zero) {
        slice.copy_(dy);  // converting to acc's dtype in the same pass
        return;
      }
      Tensor sum = slice.is_contiguous() ? slice : slice.contiguous();
      Tensor add = dy.dtype() != acc.dtype() ? dy.detach().to(acc.dtype())
                   : dy.is_contiguous()      ? dy
                                             : dy.contiguous();
      TESSERA_KERNEL(sum, axpby)(sum, 1.0, sum, 1.0, add);
      if (!slice.is_contiguous()) slice.copy_(sum);
    }, {.region = GradRegion{d, start, length}, .also = ops::detail::f32_buffer_of(dy.dtype())});
  });
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  int64_t r = dim();
  TESSERA_CHECK(int64_t(dims.size()) == r, "permute: ", dims.size(), " dims for shape ",
                shape_str(shape()));
  std::vector<int64_t> p(dims.size()), inverse(dims.size());
  std::vector<bool> seen(dims.size(), false);
  Shape s(dims.size()), st(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = norm_dim(dims[i], r, shape());
    TESSERA_CHECK(!seen[size_t(d)], "permute: dimension ", d, " repeated");
    seen[size_t(d)] = true;
    p[i] = d;
    inverse[size_t(d)] = int64_t(i);
    s[i] = shape()[size_t(d)];
    st[i] = strides()[size_t(d)];
  }
  Tensor out = make_view(*this, s, st, offset());
  return record("permute", out, {*this}, [inverse](const Tensor& dy, GradSink& g) {
    g.add(0, dy.permute(inverse));
  });
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(static_cast<size_t>(dim()));
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[size_t(norm_dim(d0, dim(), shape()))], p[size_t(norm_dim(d1, dim(), shape()))]);
  return permute(p);
}

Tensor Tensor::clone() const {
  Tensor out = Tensor::empty(shape(), options());
  out.copy_(*this);
  return record("clone", out, {*this}, [](const Tensor& dy, GradSink& g) { g.add(0, dy); });
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = Tensor::empty(shape(), {t, device()});
  out.copy_(*this);
  DType from = dtype();
  return record("to_dtype", out, {*this}, [from](const Tensor& dy, GradSink& g) {
    g.add(0, dy.to(from));
  });
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor out = Tensor::empty(shape(), {dtype(), d});
  out.copy_(*this);
  Device from = device();
  return record("to_device", out, {*this}, [from](const Tensor& dy, GradSink& g) {
    g.add(0, dy.to(from));
  });
}

namespace ops {

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  int64_t d = norm_dim(dim, x.dim(), x.shape());
  int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t(0));
  TESSERA_CHECK(total == x.size(d), "split: sizes add up to ", total, " but dimension ", d,
                " of ", shape_str(x.shape()), " is ", x.size(d));
  std::vector<Tensor> out;
  int64_t start = 0;
  for (int64_t n : sizes) {
    out.push_back(x.narrow(d, start, n));
    start += n;
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, int64_t chunk, int64_t dim) {
  TESSERA_CHECK(chunk > 0, "split: chunk size must be positive, got ", chunk);
  int64_t n = x.size(dim);
  std::vector<int64_t> sizes;
  for (int64_t s = 0; s < n; s += chunk) sizes.push_back(std::min(chunk, n - s));
  return split(x, sizes, dim);
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  TESSERA_CHECK(!xs.empty(), "concat: no tensors");
  const Tensor& x0 = xs[0];
  int64_t d = norm_dim(dim, x0.dim(), x0.shape());
  Shape s = x0.shape();
  s[size_t(d)] = 0;
  std::vector<int64_t> sizes;
  for (const Tensor& x : xs) {
    bool ok = x.dim() == x0.dim() && x.dtype() == x0.dtype() && x.device() == x0.device();
    for (int64_t i = 0; ok && i < x.dim(); ++i) ok = i == d || x.size(i) == x0.size(i);
    TESSERA_CHECK(ok, "concat along dimension ", d, ": ", x0.str(), " vs ", x.str());
    sizes.push_back(x.size(d));
    s[size_t(d)] += x.size(d);
  }
  Tensor out = Tensor::empty(s, x0.options());
  int64_t start = 0;
  for (const Tensor& x : xs) {
    out.narrow(d, start, x.size(d)).copy_(x);  // out has no history: a plain view
    start += x.size(d);
  }
  return record("concat", out, xs, [sizes, d](const Tensor& dy, GradSink& g) {
    int64_t start = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (g.needs(i)) g.add(i, dy.narrow(d, start, sizes[i]));
      start += sizes[i];
    }
  });
}

}  // namespace ops
}  // namespace tessera
