// The shape contract of every attention kernel in the table (backend/kernels.h): q (B, H, T, D),
// k and v (B, Hkv, T, D) with H a multiple of Hkv, one dtype. The forward kernels that take a
// query offset (flash_attention_forward, stick_breaking_forward) also accept q (B, H, Tq, D) with
// Tq <= Tk, the keys' length: query i then sits at position Tk - Tq + i. Plain C++, shared by the CPU kernels
// and the CUDA ones (which add their own device, dtype and size limits after it).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tessera {

// The CUDA kernels' size limits, here so that ops::attention_support (ops/attention_spec.h) states
// them before a tensor exists and the kernels check the same numbers.
// The warp-per-row kernels (f32, and bf16 with a query offset): up to 4 values per lane.
inline constexpr int64_t kCudaPlainMaxHeadDim = 128;
// The materialised softmax kernel keeps q_i and a row of T scores in dynamic shared memory:
// 48 KiB (the limit without an opt-in) less the kernels' static 32-float reduction scratch.
inline constexpr int64_t kCudaMaterialisedMaxFloats = (48 * 1024 - 256) / 4;  // T + D <= this

struct AttentionDims {
  int64_t B, H, Hkv, T, D;  // T: queries
  int64_t Tk = 0;           // keys and values; == T unless the kernel takes a query offset
  int64_t offset() const { return Tk - T; }  // position of query 0
};

// Throws, naming the kernel and the three shapes (or dtypes), unless q, k and v keep the contract.
// allow_offset: the kernel takes Tq <= Tk.
inline AttentionDims check_attention_qkv(const char* kernel, const Tensor& q, const Tensor& k,
                                         const Tensor& v, bool allow_offset = false) {
  TESSERA_CHECK(
      q.dim() == 4 && k.dim() == 4 && k.shape() == v.shape() && q.size(0) == k.size(0) &&
          k.size(1) > 0 && q.size(1) % k.size(1) == 0 &&
          (allow_offset ? q.size(2) <= k.size(2) : q.size(2) == k.size(2)) &&
          q.size(3) == k.size(3),
      kernel, ": expected q (B, H, ", allow_offset ? "Tq" : "T",
      ", D) and k, v (B, Hkv, T, D) with H a multiple of Hkv", allow_offset ? " and Tq <= T" : "",
      ", got q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ",
      shape_str(v.shape()));
  TESSERA_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(), kernel, ": dtypes differ: q ",
                dtype_name(q.dtype()), ", k ", dtype_name(k.dtype()), ", v ",
                dtype_name(v.dtype()));
  return {q.size(0), q.size(1), k.size(1), q.size(2), q.size(3), k.size(2)};
}

// Throws unless t has this shape and dtype (an output or saved tensor of an attention kernel).
inline void check_attention_like(const char* kernel, const char* name, const Tensor& t,
                                 const Shape& shape, DType dtype) {
  TESSERA_CHECK(t.shape() == shape && t.dtype() == dtype, kernel, ": ", name, " must be ",
                dtype_name(dtype), " ", shape_str(shape), ", got ", t.str());
}

// The gradients of a backward: dq and dout shaped like q, dk like k, dv like v, all in q's dtype.
inline void check_attention_grads(const char* kernel, const Tensor& dq, const Tensor& dk,
                                  const Tensor& dv, const Tensor& dout, const Tensor& q,
                                  const Tensor& k, const Tensor& v) {
  check_attention_like(kernel, "dq", dq, q.shape(), q.dtype());
  check_attention_like(kernel, "dk", dk, k.shape(), q.dtype());
  check_attention_like(kernel, "dv", dv, v.shape(), q.dtype());
  check_attention_like(kernel, "dout", dout, q.shape(), q.dtype());
}

}  // namespace tessera
