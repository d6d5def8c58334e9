// The shape contract of every attention kernel in the table (backend/kernels.h): q (B, H, T, D),
// k and v (B, Hkv, T, D) with H a multiple of Hkv, one dtype, k and v contiguous. The forward
// kernels that take a query offset (flash_attention_forward, stick_breaking_forward) also accept
// q (B, H, Tq, D) with Tq <= Tk, the keys' length: query i then sits at position Tk - Tq + i; with
// Tq < Tk, k and v may also be the filled prefix of longer (B, Hkv, S, D) buffers (a KV cache
// narrowed to its length), read in place. Plain C++, shared by the CPU kernels and the CUDA ones
// (which add their own device, dtype and size limits after it).
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
  int64_t kv_rows = 0;      // positions from one (b, kv head) row of k and v to the next: Tk, or
                            // a cache buffer's capacity when k and v are its filled prefix
  int64_t offset() const { return Tk - T; }  // position of query 0
};

// How far apart, in positions, the (b, h) rows of a (B, Hkv, T, D) tensor lie when each row holds
// its T positions of D values contiguously: T for a contiguous tensor, S for the first T positions
// of a contiguous (B, Hkv, S, D) buffer; 0 when t is not laid out that way.
inline int64_t kv_row_stride(const Tensor& t) {
  if (t.dim() != 4) return 0;
  if (t.is_contiguous()) return t.size(2);
  const int64_t B = t.size(0), Hkv = t.size(1), T = t.size(2), D = t.size(3);
  const Shape& s = t.strides();
  const int64_t R = Hkv > 1 ? s[1] : s[0];  // elements from one row to the next
  const bool rows = (D == 1 || s[3] == 1) && (T == 1 || s[2] == D) && (Hkv == 1 || s[1] == R) &&
                    (B == 1 || s[0] == Hkv * R);
  return rows && D > 0 && R % D == 0 && R >= T * D ? R / D : 0;
}

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
  const bool prefix_ok = allow_offset && q.size(2) < k.size(2);
  const int64_t rows = kv_row_stride(k);
  TESSERA_CHECK(rows > 0 && kv_row_stride(v) == rows && (prefix_ok || rows == k.size(2)), kernel,
                ": k and v must be contiguous",
                prefix_ok ? " or the filled prefixes of two (B, Hkv, S, D) buffers of one S" : "",
                ", got k ", k.str(), ", v ", v.str());
  return {q.size(0), q.size(1), k.size(1), q.size(2), q.size(3), k.size(2), rows};
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
