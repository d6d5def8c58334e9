#include "core/tensor.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "backend/cuda.h"
#include "backend/kernels.h"

namespace tessera {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ",";
  os << ")";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

Tensor Tensor::empty(const Shape& shape, Options opt) {
  for (int64_t d : shape)
    TESSERA_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage =
      std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(opt.dtype), opt.device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = opt.dtype;
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  TESSERA_CHECK(d >= -n && d < n, "dimension ", d, " out of range for shape ", shape_str(shape()));
  return shape()[size_t(d < 0 ? d + n : d)];
}

bool Tensor::is_contiguous() const {
  const TensorImpl& t = impl();
  int64_t expected = 1;
  for (size_t i = t.shape.size(); i-- > 0;) {
    if (t.shape[i] != 1 && t.strides[i] != expected) return false;
    expected *= t.shape[i];
  }
  return true;
}

void* Tensor::data_ptr() const {
  const TensorImpl& t = impl();
  return static_cast<char*>(t.storage->data()) + t.offset * int64_t(dtype_size(t.dtype));
}

Tensor make_view(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset) {
  TESSERA_CHECK(shape.size() == strides.size(), "view: shape ", shape_str(shape), " and strides ",
                shape_str(strides), " differ in rank");
  // Bounds: the furthest element reachable must lie inside the storage.
  int64_t hi = offset, lo = offset;
  bool empty_view = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) empty_view = true;
    if (shape[i] > 0) (strides[i] >= 0 ? hi : lo) += (shape[i] - 1) * strides[i];
  }
  int64_t capacity = int64_t(t.storage()->nbytes() / dtype_size(t.dtype()));
  TESSERA_CHECK(empty_view || (lo >= 0 && hi < capacity), "view ", shape_str(shape),
                " at offset ", offset, " does not fit in the storage of ", t.str());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage();
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = t.dtype();
  return Tensor(std::move(impl));
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

void Tensor::copy_(const Tensor& src) {
  TESSERA_CHECK(shape() == src.shape(), "copy_: shape mismatch: destination ", shape_str(shape()),
                " vs source ", shape_str(src.shape()));
  if (numel() == 0) return;
  Device dd = device(), sd = src.device();
  if (dd == sd) {
    TESSERA_KERNEL(*this, copy)(*this, src);
    return;
  }
  if (sd.is_cpu()) {  // host -> device: convert on the host, then one transfer
    Tensor host = Tensor::empty(shape(), dtype());
    cpu::kernels().copy(host, src);
    Tensor dev = is_contiguous() ? *this : Tensor::empty(shape(), options());
    cuda::copy_to_device(dev.data_ptr(), host.data_ptr(), host.nbytes(), dd.index);
    count_host_to_device(int64_t(host.nbytes()));
    if (!is_contiguous()) TESSERA_KERNEL(*this, copy)(*this, dev);
    return;
  }
  if (dd.is_cpu()) {  // device -> host: one transfer of a contiguous copy, then convert on the host
    Tensor dev = src;
    if (!src.is_contiguous()) {
      dev = Tensor::empty(src.shape(), src.options());
      TESSERA_KERNEL(src, copy)(dev, src);
    }
    Tensor host = Tensor::empty(shape(), src.dtype());
    cuda::copy_to_host(host.data_ptr(), dev.data_ptr(), dev.nbytes(), sd.index);
    count_device_to_host(int64_t(dev.nbytes()));
    cpu::kernels().copy(*this, host);
    return;
  }
  // device -> other device: through the host (rare; peer copies belong to the CUDA backend)
  Tensor host = Tensor::empty(shape(), src.dtype());
  host.copy_(src);
  copy_(host);
}

void Tensor::fill_(double value) {
  if (numel() == 0) return;
  if (is_contiguous()) {
    TESSERA_KERNEL(*this, fill)(*this, value);
  } else {
    Tensor tmp = Tensor::empty(shape(), options());
    TESSERA_KERNEL(*this, fill)(tmp, value);
    copy_(tmp);
  }
}

double Tensor::item() const {
  TESSERA_CHECK(numel() == 1, "item() needs a one-element tensor, got ", shape_str(shape()));
  Tensor host = Tensor::empty({}, DType::F64);
  host.copy_(make_view(*this, {}, {}, offset()));
  return *host.data<double>();
}

std::string Tensor::str() const {
  std::ostringstream os;
  os << "Tensor(" << dtype_name(dtype()) << ", " << device().str() << ", " << shape_str(shape())
     << ")";
  return os.str();
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  TESSERA_CHECK(dtype() == dtype_of<T>(), "to_vector<", dtype_name(dtype_of<T>()), ">() on a ",
                dtype_name(dtype()), " tensor");
  Tensor host = Tensor::empty(shape(), dtype());
  host.copy_(*this);
  count_host_readout(int64_t(host.nbytes()));
  const T* p = host.data<T>();
  return std::vector<T>(p, p + numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<bf16> Tensor::to_vector<bf16>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

// ---- creation ----

Tensor full(const Shape& shape, double value, Options opt) {
  Tensor t = Tensor::empty(shape, opt);
  t.fill_(value);
  return t;
}
Tensor zeros(const Shape& shape, Options opt) { return full(shape, 0.0, opt); }
Tensor ones(const Shape& shape, Options opt) { return full(shape, 1.0, opt); }

Tensor arange(double start, double end, double step, Options opt) {
  TESSERA_CHECK(step != 0, "arange: step is zero");
  double count = std::ceil((end - start) / step);
  int64_t n = count > 0 ? int64_t(count) : 0;
  Tensor t = Tensor::empty({n}, opt);
  if (n) TESSERA_KERNEL(t, arange)(t, start, step);
  return t;
}

Tensor rand(const Shape& shape, Generator& gen, Options opt) {
  Tensor t = Tensor::empty(shape, opt);
  uint64_t first = gen.reserve(uint64_t(t.numel()));
  if (t.numel()) TESSERA_KERNEL(t, uniform)(t, gen.seed(), first);
  return t;
}

Tensor randn(const Shape& shape, Generator& gen, Options opt) {
  Tensor t = Tensor::empty(shape, opt);
  uint64_t first = gen.reserve(uint64_t(t.numel()));
  if (t.numel()) TESSERA_KERNEL(t, normal)(t, gen.seed(), first);
  return t;
}

Tensor rand(const Shape& shape, Options opt) { return rand(shape, default_generator(), opt); }
Tensor randn(const Shape& shape, Options opt) { return randn(shape, default_generator(), opt); }

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Options opt) {
  TESSERA_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
                " values do not fill shape ", shape_str(shape));
  Tensor host = Tensor::empty(shape, dtype_of<T>());
  std::copy(values.begin(), values.end(), host.data<T>());
  if (opt.dtype == host.dtype() && opt.device.is_cpu()) return host;
  Tensor t = Tensor::empty(shape, opt);
  t.copy_(host);
  return t;
}
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
  return from_vector(values, shape, Options(dtype_of<T>()));
}

template Tensor from_vector<float>(const std::vector<float>&, const Shape&);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&);
template Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&);
template Tensor from_vector<float>(const std::vector<float>&, const Shape&, Options);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, Options);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, Options);
template Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, Options);

}  // namespace tessera
