// gelu (tanh form), silu and swiglu; their derivatives are in src/backend/cpu/activation.cpp.
// Backward needs only the inputs, so that is what the closures keep (not the outputs).
#include "ops/activation.h"

#include "ops/shape.h"
#include "ops/softmax.h"
#include "ops/util.h"

namespace tessera::ops {

Tensor detail::record_gelu(const Tensor& x, const Tensor& X, const Tensor& y) {
  return record("gelu", y, {x}, [X](const Tensor& dy, GradSink& g) {
    Tensor dx = Tensor::empty(X.shape(), X.options());
    TESSERA_KERNEL(dy, gelu_backward)(dx, dy, X);
    g.add(0, dx);
  });
}

Tensor gelu(const Tensor& x) {
  Tensor X = detail::dense(x);
  Tensor y = Tensor::empty(x.shape(), x.options());
  TESSERA_KERNEL(x, gelu_forward)(y, X);
  return detail::record_gelu(x, X, y);
}

Tensor silu(const Tensor& x) {
  Tensor X = detail::dense(x);
  Tensor y = Tensor::empty(x.shape(), x.options());
  TESSERA_KERNEL(x, silu_forward)(y, X);
  return record("silu", y, {x}, [X](const Tensor& dy, GradSink& g) {
    Tensor dx = Tensor::empty(X.shape(), X.options());
    TESSERA_KERNEL(dy, silu_backward)(dx, dy, X);
    g.add(0, dx);
  });
}

Tensor sigmoid(const Tensor& x) {
  const Tensor col = x.reshape({x.numel(), 1});
  const Tensor pair = concat({col, zeros({x.numel(), 1}, x.options())}, 1);  // (n, 2): x, 0
  return softmax(pair).narrow(1, 0, 1).reshape(x.shape());
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  detail::check_compatible("swiglu", {&gate, &up});
  TESSERA_CHECK(gate.shape() == up.shape(), "swiglu: gate ", shape_str(gate.shape()), " and up ",
                shape_str(up.shape()), " must have the same shape");
  Tensor G = detail::dense(gate), U = detail::dense(up);
  Tensor y = Tensor::empty(gate.shape(), gate.options());
  TESSERA_KERNEL(gate, swiglu_forward)(y, G, U);
  return record("swiglu", y, {gate, up}, [G, U](const Tensor& dy, GradSink& g) {
    Tensor dgate = Tensor::empty(G.shape(), G.options());
    Tensor dup = Tensor::empty(U.shape(), U.options());
    TESSERA_KERNEL(dy, swiglu_backward)(dgate, dup, dy, G, U);
    g.add(0, dgate);
    g.add(1, dup);
  });
}

}  // namespace tessera::ops
