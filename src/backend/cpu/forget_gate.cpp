// CPU Forgetting Attention gate (Lin et al. 2025, arXiv:2503.02130): the running sum over positions
// of log f, f = sigmoid(g), that the flash kernels turn into the bias c[i] - c[j]
// (backend/attention_mask.h); the kernel table's comment has the contract.
//
// log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)): no overflow for any x, and exact to the last bit
// of a double where exp(-|x|) underflows. d/dx log sigmoid(x) = sigmoid(-x) = 1 - sigmoid(x).
// Sums run in double along t, one (b, h) row at a time, so the bits do not depend on the threads.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu.h"

namespace tessera::cpu {
namespace {

double log_sigmoid(double x) { return std::min(x, 0.0) - std::log1p(std::exp(-std::abs(x))); }
double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
}

DType stat_of(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

void check_gate(const char* kernel, const char* name, const Tensor& t, const Shape& shape,
                DType dtype) {
  TESSERA_CHECK(t.defined() && t.shape() == shape && t.dtype() == dtype && t.is_contiguous(),
                "cpu kernel ", kernel, ": ", name, " must be a contiguous ", dtype_name(dtype), " ",
                shape_str(shape), ", got ", t.defined() ? t.str() : std::string("undefined"));
}

}  // namespace

void forget_gate_forward(const Tensor& c, const Tensor& g, const Tensor& start) {
  TESSERA_CHECK(g.dim() == 3, "cpu kernel forget_gate_forward: g must be (B, T, H), got ", g.str());
  const int64_t B = g.size(0), T = g.size(1), H = g.size(2);
  check_gate("forget_gate_forward", "g", g, g.shape(), g.dtype());
  check_gate("forget_gate_forward", "c", c, {B, H, T}, stat_of(g.dtype()));
  if (start.defined()) check_gate("forget_gate_forward", "start", start, {B, H}, c.dtype());
  dispatch_float("forget_gate_forward", g.dtype(), [&](auto z) {
    using F = decltype(z);
    const F* gp = static_cast<const F*>(g.data_ptr());
    F* cp = static_cast<F*>(c.data_ptr());
    const F* sp = start.defined() ? static_cast<const F*>(start.data_ptr()) : nullptr;
#pragma omp parallel for if (B * H * T > 65536)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      double sum = sp ? double(sp[bh]) : 0.0;
      for (int64_t t = 0; t < T; ++t) {
        sum += log_sigmoid(double(gp[(b * T + t) * H + h]));
        cp[bh * T + t] = F(sum);
      }
    }
  });
}

void forget_gate_backward(const Tensor& dg, const Tensor& dc, const Tensor& g) {
  TESSERA_CHECK(g.dim() == 3, "cpu kernel forget_gate_backward: g must be (B, T, H), got ",
                g.str());
  const int64_t B = g.size(0), T = g.size(1), H = g.size(2);
  check_gate("forget_gate_backward", "g", g, g.shape(), g.dtype());
  check_gate("forget_gate_backward", "dg", dg, g.shape(), g.dtype());
  check_gate("forget_gate_backward", "dc", dc, {B, H, T}, stat_of(g.dtype()));
  dispatch_float("forget_gate_backward", g.dtype(), [&](auto z) {
    using F = decltype(z);
    const F* gp = static_cast<const F*>(g.data_ptr());
    const F* dcp = static_cast<const F*>(dc.data_ptr());
    F* dgp = static_cast<F*>(dg.data_ptr());
#pragma omp parallel for if (B * H * T > 65536)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      double suffix = 0;  // sum_{s >= t} dc[b, h, s]
      for (int64_t t = T - 1; t >= 0; --t) {
        suffix += double(dcp[bh * T + t]);
        const int64_t i = (b * T + t) * H + h;
        dgp[i] = F(sigmoid(-double(gp[i])) * suffix);
      }
    }
  });
}

}  // namespace tessera::cpu
