// forget_gate: the running sums of log sigmoid of Forgetting Attention's gate logits
// (ops/forget_gate.h; the kernels' formulas in src/backend/cpu/forget_gate.cpp).
#include "ops/forget_gate.h"

#include "ops/util.h"

namespace tessera::ops {

Tensor forget_gate(const Tensor& g, const Tensor& start) {
  TESSERA_CHECK(g.dim() == 3, "forget_gate: expected gate logits (B, T, H), got ", g.str());
  const int64_t B = g.size(0), T = g.size(1), H = g.size(2);
  const DType stat = g.dtype() == DType::F64 ? DType::F64 : DType::F32;
  const Shape start_shape = {B, H};
  TESSERA_CHECK(!start.defined() || (start.shape() == start_shape && start.dtype() == stat &&
                                     start.device() == g.device()),
                "forget_gate: start must be a ", dtype_name(stat), " (", B, ", ", H, ") on ",
                g.device().str(), " for g ", g.str(), ", got ", start.str());
  TESSERA_CHECK(!start.defined() || !start.requires_grad() || !grad_enabled(),
                "forget_gate: start has no gradient (it continues a cache's sums); detach it");
  const Tensor G = detail::dense(g);
  Tensor c = Tensor::empty({B, H, T}, {stat, g.device()});
  TESSERA_KERNEL(g, forget_gate_forward)(c, G, start.defined() ? detail::dense(start) : Tensor());
  return record("forget_gate", c, {g}, [G](const Tensor& dc, GradSink& s) {
    Tensor dg = Tensor::empty(G.shape(), G.options());
    TESSERA_KERNEL(dc, forget_gate_backward)(dg, detail::dense(dc), G);
    s.add(0, dg);
  });
}

}  // namespace tessera::ops
