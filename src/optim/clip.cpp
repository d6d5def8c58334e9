// Global gradient norm and clipping. On the CPU the sum of squares and the scaling are plain loops
// over the gradient (f32, f64 or bf16) with the arithmetic in double. On another device both are
// composed from the kernel table: g * g and a sum in f32, the device's compute type, with only the
// per-tensor total coming back to the host (totals are summed in double), and axpby for the
// scaling. Leaf gradients are their parameter's own storage (autograd/engine.cpp), so scaling them
// in place touches nothing else.
#include "optim/clip.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "autograd/autograd.h"
#include "backend/kernels.h"

namespace tessera {
namespace {

// Calls f(T{}) with T the element type of a CPU gradient.
template <typename F>
void visit_grad(const std::string& name, const Tensor& g, F&& f) {
  switch (g.dtype()) {
    case DType::F32: f(float{}); break;
    case DType::F64: f(double{}); break;
    case DType::BF16: f(bf16{}); break;
    default: TESSERA_FAIL("grad_norm: gradient of '", name, "' is ", g.str());
  }
}

double sum_squares(const std::string& name, const Tensor& grad) {
  const int64_t n = grad.numel();
  if (n == 0) return 0.0;
  const Tensor g = grad.is_contiguous() ? grad.detach() : grad.detach().contiguous();
  if (g.device().is_cpu()) {
    // Fixed blocks summed in order: the same bits for any thread count, so a resumed run (maybe
    // with another OMP_NUM_THREADS) clips exactly as the uninterrupted one did.
    constexpr int64_t kBlock = 65536;
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(size_t(blocks), 0.0);
    visit_grad(name, g, [&](auto z) {
      using T = decltype(z);
      const T* p = static_cast<const T*>(g.data_ptr());
#pragma omp parallel for if (blocks > 1)
      for (int64_t b = 0; b < blocks; ++b) {
        double acc = 0.0;
        for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
          acc += convert<double>(p[i]) * convert<double>(p[i]);
        }
        partial[size_t(b)] = acc;
      }
    });
    double acc = 0.0;
    for (double x : partial) acc += x;
    return acc;
  }
  const Tensor g32 = g.dtype() == DType::F32 ? g : g.to(DType::F32);
  Tensor sq = Tensor::empty(g32.shape(), g32.options());
  TESSERA_KERNEL(g32, binary)(BinaryOp::Mul, sq, g32, g32);
  Tensor total = Tensor::empty({1}, g32.options());
  TESSERA_KERNEL(g32, sum_dim)(total, sq, 1, n, 1);
  return total.item();
}

// grad *= s in place.
void scale_grad(const std::string& name, const Tensor& grad, double s) {
  const int64_t n = grad.numel();
  if (n == 0) return;
  Tensor g = grad.is_contiguous() ? grad.detach() : grad.detach().contiguous();
  if (g.device().is_cpu()) {
    visit_grad(name, g, [&](auto z) {
      using T = decltype(z);
      T* p = static_cast<T*>(g.data_ptr());
#pragma omp parallel for if (n > 65536)
      for (int64_t i = 0; i < n; ++i) p[i] = convert<T>(convert<double>(p[i]) * s);
    });
  } else {
    TESSERA_KERNEL(g, axpby)(g, s, g, 0.0, Tensor());
  }
  if (!grad.is_contiguous()) grad.detach().copy_(g);  // a strided gradient was scaled in a copy
}

}  // namespace

double grad_norm(const std::vector<NamedParam>& params) {
  NoGradGuard no_grad;
  double total = 0.0;
  for (const auto& [name, p] : params) {
    const Tensor& g = p.grad();
    if (g.defined()) total += sum_squares(name, g);
  }
  return std::sqrt(total);
}

double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm) {
  const double norm = grad_norm(params);
  clip_grads(params, norm, max_norm);
  return norm;
}

void clip_grads(const std::vector<NamedParam>& params, double norm, double max_norm) {
  if (!(max_norm > 0) || !std::isfinite(norm) || norm <= max_norm) return;
  const double coeff = max_norm / (norm + 1e-6);
  NoGradGuard no_grad;
  for (const auto& np : params) {
    const Tensor& g = np.param.grad();
    if (g.defined()) scale_grad(np.name, g, coeff);
  }
}

}  // namespace tessera
