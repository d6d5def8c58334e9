// Global gradient norm and clipping. Each gradient's sum of squares is the kernel table's
// sum_squares (double accumulation in a fixed order on every device: src/backend/cpu/optim.cpp,
// kernels/optim.cu), written into one buffer per device, so a GPU run reads all its per-parameter
// sums back in one transfer; the host adds them in parameter order, in double. Scaling is a plain
// loop on the CPU (arithmetic in double) and axpby elsewhere. Leaf gradients are their parameter's
// own storage (autograd/engine.cpp), so scaling them in place touches nothing else.
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

std::vector<double> sums_of_squares(const std::vector<Tensor>& pieces) {
  NoGradGuard no_grad;
  std::vector<Tensor> items(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Tensor& g = pieces[i];
    if (!g.defined() || g.numel() == 0) continue;
    visit_grad("sum_of_squares", g, [](auto) {});  // f32, f64 or bf16, or an error
    items[i] = g.is_contiguous() ? g.detach() : g.detach().contiguous();
  }
  // One buffer of sums per device, read back once.
  std::vector<double> sums(items.size(), 0.0);
  std::vector<bool> done(items.size(), false);
  for (size_t i = 0; i < items.size(); ++i) {
    if (done[i] || !items[i].defined()) continue;
    const Device dev = items[i].device();
    std::vector<size_t> here;
    for (size_t j = i; j < items.size(); ++j)
      if (!done[j] && items[j].defined() && items[j].device() == dev) here.push_back(j);
    Tensor out = Tensor::empty({int64_t(here.size())}, {DType::F64, dev});
    for (size_t k = 0; k < here.size(); ++k)
      TESSERA_KERNEL(out, sum_squares)(out.narrow(0, int64_t(k), 1), items[here[k]]);
    const std::vector<double> host = out.to_vector<double>();
    for (size_t k = 0; k < here.size(); ++k) {
      sums[here[k]] = host[k];
      done[here[k]] = true;
    }
  }
  return sums;
}

double sum_of_squares(const std::vector<Tensor>& pieces) {
  const std::vector<double> sums = sums_of_squares(pieces);
  double total = 0.0;
  for (double x : sums) total += x;  // in the order given, whatever the devices
  return total;
}

double grad_norm(const std::vector<NamedParam>& params) {
  std::vector<Tensor> grads;
  for (const auto& [name, p] : params) {
    const Tensor& g = p.grad();
    if (!g.defined() || g.numel() == 0) continue;
    visit_grad(name, g, [](auto) {});  // an error naming the parameter for a wrong dtype
    grads.push_back(g);
  }
  return std::sqrt(sum_of_squares(grads));
}

double clip_coefficient(double norm, double max_norm) {
  if (!(max_norm > 0) || !std::isfinite(norm) || norm <= max_norm) return 1.0;
  return max_norm / (norm + 1e-6);
}

double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm) {
  const double norm = grad_norm(params);
  clip_grads(params, norm, max_norm);
  return norm;
}

void clip_grads(const std::vector<NamedParam>& params, double norm, double max_norm) {
  const double coeff = clip_coefficient(norm, max_norm);
  if (coeff == 1.0) return;
  NoGradGuard no_grad;
  for (const auto& np : params) {
    const Tensor& g = np.param.grad();
    if (g.defined()) scale_grad(np.name, g, coeff);
  }
}

}  // namespace tessera
