// The shape contract of every attention kernel in the table (backend/kernels.h): q (B, H, T, D),
// k and v (B, Hkv, T, D) with H a multiple of Hkv, one dtype. Plain C++, shared by the CPU kernels
// and the CUDA ones (which add their own device, dtype and size limits after it).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tessera {

struct AttentionDims {
  int64_t B, H, Hkv, T, D;
};

// Throws, naming the kernel and the three shapes (or dtypes), unless q, k and v keep the contract.
inline AttentionDims check_attention_qkv(const char* kernel, const Tensor& q, const Tensor& k,
                                         const Tensor& v) {
  TESSERA_CHECK(
      q.dim() == 4 && k.dim() == 4 && k.shape() == v.shape() && q.size(0) == k.size(0) &&
          k.size(1) > 0 && q.size(1) % k.size(1) == 0 && q.size(2) == k.size(2) &&
          q.size(3) == k.size(3),
      kernel, ": expected q (B, H, T, D) and k, v (B, Hkv, T, D) with H a multiple of Hkv, got q ",
      shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
  TESSERA_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(), kernel, ": dtypes differ: q ",
                dtype_name(q.dtype()), ", k ", dtype_name(k.dtype()), ", v ",
                dtype_name(v.dtype()));
  return {q.size(0), q.size(1), k.size(1), q.size(2), q.size(3)};
}

}  // namespace tessera
