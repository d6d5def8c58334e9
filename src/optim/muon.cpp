// Muon's orthogonalisation: see muon.h.
#include "optim/muon.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "autograd/autograd.h"
#include "backend/kernels.h"

namespace tessera {

void check(const MuonOptions& o) {
  TESSERA_CHECK(o.momentum >= 0 && o.momentum < 1, "Muon: momentum must be in [0, 1), got ",
                o.momentum);
  TESSERA_CHECK(o.ns_steps >= 0, "Muon: ns_steps must be >= 0, got ", o.ns_steps);
  muon_lr_ratio(o, 1, 1);  // its adjust
}

double muon_lr_ratio(const MuonOptions& o, int64_t rows, int64_t cols) {
  if (o.adjust == "original") return std::sqrt(std::max(1.0, double(rows) / double(cols)));
  TESSERA_CHECK(o.adjust == "match_rms_adamw",
                "Muon: adjust must be match_rms_adamw or original, got '", o.adjust, "'");
  return 0.2 * std::sqrt(double(std::max(rows, cols)));
}

double newton_schulz_flops(int64_t rows, int64_t cols) {
  const double k = double(std::min(rows, cols)), m = double(std::max(rows, cols));
  return 4 * k * k * m + 2 * k * k * k;
}

std::vector<int> muon_owners(const std::vector<double>& flops, int world) {
  TESSERA_CHECK(world >= 1, "muon_owners: world must be >= 1, got ", world);
  std::vector<size_t> order(flops.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t i, size_t j) { return flops[i] > flops[j]; });
  std::vector<double> load(size_t(world), 0.0);
  std::vector<int> owner(flops.size(), 0);
  for (size_t i : order) {
    const size_t r = size_t(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = int(r);
    load[r] += flops[i];
  }
  return owner;
}

Tensor newton_schulz(const Tensor& x, double norm, const MuonOptions& o) {
  TESSERA_CHECK(
      x.dim() == 2 && x.is_contiguous() && (x.dtype() == DType::F32 || x.dtype() == DType::F64),
      "newton_schulz: x must be a contiguous f32 or f64 matrix, got ", x.str());
  TESSERA_CHECK(o.ns_steps >= 0, "newton_schulz: ns_steps must be >= 0, got ", o.ns_steps);
  NoGradGuard no_grad;
  const int64_t R = x.size(0), C = x.size(1);
  const bool wide = R <= C;  // the Gram matrix on the shorter side
  const int64_t k = wide ? R : C;
  Tensor X = Tensor::empty({R, C}, x.options());
  TESSERA_KERNEL(x, axpby)(X, 1.0 / std::max(norm, o.eps), x, 0.0, Tensor());
  if (o.ns_steps == 0 || X.numel() == 0) return X;
  Tensor A = Tensor::empty({k, k}, x.options()), B = Tensor::empty({k, k}, x.options());
  Tensor Y = Tensor::empty({R, C}, x.options());
  for (int64_t i = 0; i < o.ns_steps; ++i) {
    TESSERA_KERNEL(x, gemm)(A, X, X, !wide, wide, 1.0, 0.0);  // X X^T, or X^T X
    TESSERA_KERNEL(x, gemm)(B, A, A, false, false, o.c, 0.0);
    TESSERA_KERNEL(x, axpby)(B, 1.0, B, o.b, A);  // b A + c A^2
    if (wide)
      TESSERA_KERNEL(x, gemm)(Y, B, X, false, false, 1.0, 0.0);
    else
      TESSERA_KERNEL(x, gemm)(Y, X, B, false, false, 1.0, 0.0);
    TESSERA_KERNEL(x, axpby)(X, o.a, X, 1.0, Y);
  }
  return X;
}

}  // namespace tessera
