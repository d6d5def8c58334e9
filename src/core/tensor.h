// Tensor: a shape, a dtype and a strided view into shared, ref-counted storage on one device.
//
//   Tensor w = randn({3, 4}, g).requires_grad_();      // a leaf parameter, f32 on the CPU
//   Tensor x = arange(0, 8).view({2, 4});              // views share storage: no copy
//   Tensor y = ops::matmul(x, w, false, true);         // (2, 4) @ (4, 3)^T ... see ops/
//   ops::sum(y).backward();                            // w.grad() now holds dL/dw
//   Tensor row = x.narrow(0, 1, 1);                    // (1, 4) view at offset 4
//
// Copying a Tensor copies the handle, not the data. Shape-changing methods (view, reshape, narrow,
// permute, transpose, contiguous, to, clone) are differentiable: they are recorded on the autograd
// tape like any op (their definitions live in src/ops/shape.cpp). detach() gives an alias that is
// not. Errors about shapes name the shapes involved.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/storage.h"

namespace tessera {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "(2, 3)"; "()" for a scalar
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

struct AutogradMeta;  // src/autograd/autograd.h

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;       // in elements
  int64_t offset = 0;  // in elements, from the start of storage
  DType dtype = DType::F32;
  std::shared_ptr<AutogradMeta> autograd;  // null until the tensor takes part in autograd
};

// Where a new tensor lives and what it holds: zeros({2, 3}), zeros({2, 3}, DType::F64),
// zeros({2, 3}, Device::cuda()), zeros({2, 3}, {DType::BF16, Device::cuda()}).
struct Options {
  DType dtype = DType::F32;
  Device device = Device::cpu();
  Options() = default;
  Options(DType t) : dtype(t) {}                 // NOLINT: implicit on purpose
  Options(Device d) : device(d) {}               // NOLINT
  Options(DType t, Device d) : dtype(t), device(d) {}
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Uninitialised contiguous tensor.
  static Tensor empty(const Shape& shape, Options opt = {});

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return int64_t(impl().shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  Options options() const { return {dtype(), device()}; }
  bool is_contiguous() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }

  // Pointer to the first element (device memory for CUDA tensors). data<T>() checks that T matches.
  void* data_ptr() const;
  template <typename T>
  T* data() const;

  // ---- differentiable views and conversions (src/ops/shape.cpp) ----
  Tensor view(const Shape& shape) const;     // contiguous only; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // view when possible, else a contiguous copy
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;

  // ---- not recorded ----
  Tensor detach() const;            // alias of the same storage, no autograd history
  void copy_(const Tensor& src);    // in place, any dtype/device/strides; shapes must match
  void fill_(double value);
  double item() const;              // the value of a one-element tensor, as double
  template <typename T>
  std::vector<T> to_vector() const;  // contiguous host copy; T must match dtype
  std::string str() const;           // "Tensor(f32, cpu, (2, 3))"

  // ---- autograd (src/autograd/engine.cpp) ----
  bool requires_grad() const;
  Tensor& requires_grad_(bool on = true);  // leaves only
  bool is_leaf() const;
  const Tensor& grad() const;  // accumulated gradient of a leaf; undefined before any backward
  void zero_grad();            // drops the gradient (it is re-created on the next backward)
  void backward() const;       // from a one-element tensor; see autograd/autograd.h
  void set_name(const std::string& name);
  std::string name() const;

  TensorImpl& impl() const {
    TESSERA_CHECK(impl_, "use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// An alias sharing t's storage with the given geometry and no autograd history (bounds checked).
Tensor make_view(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset);

// ---- creation ----
Tensor zeros(const Shape& shape, Options opt = {});
Tensor ones(const Shape& shape, Options opt = {});
Tensor full(const Shape& shape, double value, Options opt = {});
Tensor arange(double start, double end, double step = 1.0, Options opt = {});  // [start, end)
Tensor rand(const Shape& shape, Generator& gen, Options opt = {});   // U[0, 1)
Tensor randn(const Shape& shape, Generator& gen, Options opt = {});  // N(0, 1)
Tensor rand(const Shape& shape, Options opt = {});                    // default_generator()
Tensor randn(const Shape& shape, Options opt = {});
// A host tensor of T's dtype holding values; with opt, converted to opt's dtype and device.
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape);
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Options opt);

template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<bf16>() { return DType::BF16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }

template <typename T>
T* Tensor::data() const {
  TESSERA_CHECK(dtype() == dtype_of<T>(), "data<", dtype_name(dtype_of<T>()), ">() on a ",
                dtype_name(dtype()), " tensor ", shape_str(shape()));
  return static_cast<T*>(data_ptr());
}

}  // namespace tessera
