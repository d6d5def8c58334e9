// The contracts of the kernel table's linear_forward, linear_gelu_forward, linear_dgelu_backward
// and linear_param_backward (backend/kernels.h),
// checked the same way by the CPU kernels and the CUDA ones: y (R, N) = x (R, K) @ w (N, K)^T +
// bias (N) + residual (R, N), one dtype, the bias contiguous, the residual contiguous and apart
// from y.
#pragma once

#include <string>

#include "core/tensor.h"

namespace tessera {

inline void check_linear_forward(const char* kernel, const Tensor& y, const Tensor& x,
                                 const Tensor& w, const Tensor& bias, const Tensor& residual) {
  TESSERA_CHECK(x.dim() == 2 && w.dim() == 2 && y.dim() == 2 && w.size(1) == x.size(1) &&
                    y.size(0) == x.size(0) && y.size(1) == w.size(0) &&
                    (!bias.defined() || (bias.dim() == 1 && bias.size(0) == w.size(0) &&
                                         bias.is_contiguous() && bias.dtype() == y.dtype())),
                kernel, ": expected y (R, N) = x (R, K) @ w (N, K)^T + bias (N), got y ", y.str(),
                ", x ", x.str(), ", w ", w.str(), ", bias ",
                bias.defined() ? bias.str() : std::string("none"));
  if (!residual.defined()) return;
  const auto* r = static_cast<const char*>(residual.data_ptr());
  const auto* yp = static_cast<const char*>(y.data_ptr());
  TESSERA_CHECK(residual.shape() == y.shape() && residual.dtype() == y.dtype() &&
                    residual.is_contiguous() && residual.device() == y.device() &&
                    (r + residual.nbytes() <= yp || yp + y.nbytes() <= r),
                kernel, ": the residual must be a contiguous tensor like y (R, N), apart from it; "
                "got residual ", residual.str(), ", y ", y.str());
}

// linear_dgelu_backward: dpre (R, K) = (dy (R, N) @ w (N, K)) * gelu'(pre (R, K)), one dtype,
// dpre and pre contiguous.
inline void check_linear_dgelu_backward(const char* kernel, const Tensor& dpre, const Tensor& dy,
                                        const Tensor& w, const Tensor& pre) {
  TESSERA_CHECK(dy.dim() == 2 && w.dim() == 2 && dpre.dim() == 2 && w.size(0) == dy.size(1) &&
                    dpre.size(0) == dy.size(0) && dpre.size(1) == w.size(1) &&
                    pre.shape() == dpre.shape() && dpre.is_contiguous() && pre.is_contiguous() &&
                    dy.dtype() == dpre.dtype() && w.dtype() == dpre.dtype() &&
                    pre.dtype() == dpre.dtype(),
                kernel, ": expected dpre (R, K) = (dy (R, N) @ w (N, K)) * gelu'(pre (R, K)), one "
                "dtype, got dpre ", dpre.str(), ", dy ", dy.str(), ", w ", w.str(), ", pre ",
                pre.str());
}

// linear_param_backward: dw (N, K) = dy (R, N)^T @ x (R, K), db (N) = the sum of dy's rows;
// either may be undefined, not both. x of dy's dtype; dw and db each of that dtype or f32 under
// bf16 (the widened gemm's and sum_dim's, which only CUDA takes); dw as the gemm takes c, db
// contiguous, and dy contiguous when db is defined.
inline void check_linear_param_backward(const char* kernel, const Tensor& dw, const Tensor& db,
                                        const Tensor& dy, const Tensor& x) {
  auto dtype_ok = [&dy](const Tensor& t) {
    return t.dtype() == dy.dtype() || (dy.dtype() == DType::BF16 && t.dtype() == DType::F32);
  };
  TESSERA_CHECK(
      (dw.defined() || db.defined()) && dy.dim() == 2 && x.dim() == 2 && x.size(0) == dy.size(0) &&
          x.dtype() == dy.dtype() &&
          (!dw.defined() || (dw.dim() == 2 && dw.size(0) == dy.size(1) && dw.size(1) == x.size(1) &&
                             dtype_ok(dw))) &&
          (!db.defined() || (db.dim() == 1 && db.size(0) == dy.size(1) && db.is_contiguous() &&
                             dtype_ok(db) && dy.is_contiguous())),
      kernel,
      ": expected dw (N, K) = dy (R, N)^T @ x (R, K) and db (N) = dy's row sum, at least "
      "one of them, each of dy's dtype or f32 under bf16 (db and, with it, dy contiguous); got dw ",
      dw.defined() ? dw.str() : std::string("none"), ", db ",
      db.defined() ? db.str() : std::string("none"), ", dy ", dy.str(), ", x ", x.str());
}

// linear_gelu_forward: linear_forward's contract for pre, and y of pre's shape and dtype.
inline void check_linear_gelu_forward(const char* kernel, const Tensor& y, const Tensor& pre,
                                      const Tensor& x, const Tensor& w, const Tensor& bias) {
  TESSERA_CHECK(bias.defined(), kernel, ": the bias is required");
  check_linear_forward(kernel, pre, x, w, bias, Tensor());
  TESSERA_CHECK(y.shape() == pre.shape() && y.dtype() == pre.dtype() && y.is_contiguous() &&
                    pre.is_contiguous(),
                kernel, ": y and pre must be contiguous and alike, got y ", y.str(), ", pre ",
                pre.str());
}

}  // namespace tessera
