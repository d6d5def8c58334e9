// The shape contract of every attention kernel in the table (backend/kernels.h): q (B, H, T, D),
// k and v (B, Hkv, T, D) with H a multiple of Hkv, one dtype. The forward kernels that take a query
// offset (flash_attention_forward, stick_breaking_forward) also accept q (B, H, Tq, D) with
// Tq <= Tk, the keys' length: query i then sits at position Tk - Tq + i.
//
// Layouts, two contracts:
//  - strided (the flash and stick-breaking kernels on every device, the materialised kernels on
//    the CPU): q, k, v, out and the gradients are any (B, H, T, D) views whose D values per row
//    are contiguous (HeadStrides). Attention then reads q, k and v where a fused
//    (B, T, (H + 2 Hkv) D) projection left them and writes out and dq, dk, dv in the (B, T, H, D)
//    order the projections use, with no head split or merge copies (ops/packed_attention.h). A KV
//    cache's filled prefix is such a view too.
//  - dense (the CUDA materialised kernels): q, out and the gradients contiguous; k and v
//    contiguous, or with Tq < Tk the filled prefixes of two (B, Hkv, S, D) buffers (kv_rows).
// Plain C++, shared by the CPU kernels and the CUDA ones (which add their own device, dtype and
// size limits after it).
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/host_device.h"
#include "core/tensor.h"

namespace tessera {

// The CUDA kernels' size limits, here so that ops::attention_support (ops/attention_spec.h) states
// them before a tensor exists and the kernels check the same numbers.
// The warp-per-row kernels (f32, and bf16 with a query offset): up to 4 values per lane.
inline constexpr int64_t kCudaPlainMaxHeadDim = 128;
// The materialised softmax kernel keeps q_i and a row of T scores in dynamic shared memory:
// 48 KiB (the limit without an opt-in) less the kernels' static 32-float reduction scratch.
inline constexpr int64_t kCudaMaterialisedMaxFloats = (48 * 1024 - 256) / 4;  // T + D <= this

// Where the rows of a (B, H, T, D) view lie: element (b, h, t, e) sits b * b + h * h + t * t + e
// elements past its data pointer, its D values contiguous. A contiguous tensor has
// {H T D, T D, D}; the query heads of a contiguous fused (B, T, W) projection {T W, D, W}.
struct HeadStrides {
  int64_t b = 0, h = 0, t = 0;
  TESSERA_HD int64_t row(int64_t bi, int64_t hi, int64_t ti) const {
    return bi * b + hi * h + ti * t;
  }
};

inline HeadStrides head_strides(const Tensor& t) {
  const Shape& s = t.strides();
  return {s[0], s[1], s[2]};
}

// Whether t is a (B, H, T, D) view whose rows each hold their D values contiguously.
inline bool has_unit_rows(const Tensor& t) {
  return t.dim() == 4 && (t.size(3) <= 1 || t.strides()[3] == 1);
}

// Whether no two rows of a (B, H, T, D) view with unit rows share an element, so a kernel may
// write them in parallel: ordered by stride, every dimension of size > 1 steps past the extent of
// the ones inside it. A view with no rows (a dimension of size 0) has none to share.
inline bool rows_disjoint(const Tensor& t) {
  if (t.numel() == 0) return true;  // its strides may be 0 (contiguous_strides past a 0 size)
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size)
  for (int i = 0; i < 3; ++i)
    if (t.size(i) > 1) dims.emplace_back(t.strides()[size_t(i)], t.size(i));
  std::sort(dims.begin(), dims.end());
  int64_t extent = t.size(3);  // elements one row spans
  for (const auto& [stride, size] : dims) {
    if (stride < extent) return false;
    extent = stride * (size - 1) + extent;
  }
  return true;
}

struct AttentionDims {
  int64_t B, H, Hkv, T, D;  // T: queries
  int64_t Tk = 0;           // keys and values; == T unless the kernel takes a query offset
  HeadStrides q, k, v;      // where the inputs' rows lie (under the dense contract too: k and v
                            // may be a cache buffer's filled prefix, rows kv_row_stride apart)
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
// allow_offset: the kernel takes Tq <= Tk. strided: the kernel keeps the strided contract.
inline AttentionDims check_attention_qkv(const char* kernel, const Tensor& q, const Tensor& k,
                                         const Tensor& v, bool allow_offset = false,
                                         bool strided = false) {
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
  AttentionDims d{q.size(0), q.size(1), k.size(1), q.size(2), q.size(3), k.size(2),
                  head_strides(q), head_strides(k), head_strides(v)};
  if (strided) {
    for (const Tensor* t : {&q, &k, &v})
      TESSERA_CHECK(has_unit_rows(*t), kernel, ": q, k and v must hold each row's ", d.D,
                    " values contiguously, got ", t == &q ? "q " : t == &k ? "k " : "v ", t->str(),
                    " with strides ", shape_str(t->strides()));
    return d;
  }
  const bool prefix_ok = allow_offset && q.size(2) < k.size(2);
  const int64_t rows = kv_row_stride(k);
  TESSERA_CHECK(rows > 0 && kv_row_stride(v) == rows && (prefix_ok || rows == k.size(2)), kernel,
                ": k and v must be contiguous",
                prefix_ok ? " or the filled prefixes of two (B, Hkv, S, D) buffers of one S" : "",
                ", got k ", k.str(), ", v ", v.str());
  return d;
}

// Throws unless t is a contiguous tensor of this shape and dtype (a saved statistic, or an output
// or gradient under the dense contract).
inline void check_attention_like(const char* kernel, const char* name, const Tensor& t,
                                 const Shape& shape, DType dtype) {
  TESSERA_CHECK(t.defined() && t.shape() == shape && t.dtype() == dtype && t.is_contiguous(),
                kernel, ": ", name, " must be a contiguous ", dtype_name(dtype), " ",
                shape_str(shape), ", got ", t.defined() ? t.str() : std::string("undefined"));
}

// Under the strided contract: t has this shape and dtype and unit rows; an output's rows are
// disjoint as well (written in parallel).
inline void check_attention_view(const char* kernel, const char* name, const Tensor& t,
                                 const Shape& shape, DType dtype, bool output) {
  TESSERA_CHECK(t.defined() && t.shape() == shape && t.dtype() == dtype && has_unit_rows(t) &&
                    (!output || rows_disjoint(t)),
                kernel, ": ", name, " must be a ", dtype_name(dtype), " ", shape_str(shape),
                " view holding each row contiguously", output ? ", no two rows overlapping" : "",
                ", got ", t.defined() ? t.str() + " with strides " + shape_str(t.strides())
                                      : std::string("undefined"));
}

// The rope kernel's views (backend/kernels.h): x and y (B, H, T, D) of one shape and dtype, D even,
// each row contiguous, y's rows disjoint unless y is x itself (rotated in place, each pair read
// before it is written).
inline void check_rope_views(const char* kernel, const Tensor& y, const Tensor& x) {
  TESSERA_CHECK(x.dim() == 4 && y.shape() == x.shape() && x.size(3) % 2 == 0 &&
                    y.dtype() == x.dtype() && has_unit_rows(x) && has_unit_rows(y) &&
                    (rows_disjoint(y) || (y.data_ptr() == x.data_ptr() &&
                                          y.strides() == x.strides())),
                kernel, ": x and y must be (B, H, T, D) views of one dtype with D even, each row "
                "contiguous and no two rows of y overlapping; got x ", x.str(), " with strides ",
                shape_str(x.strides()), ", y ", y.str(), " with strides ", shape_str(y.strides()));
}

// An output or gradient of an attention kernel under either contract.
inline void check_attention_out(const char* kernel, const char* name, const Tensor& t,
                                const Shape& shape, DType dtype, bool strided, bool output) {
  if (strided)
    check_attention_view(kernel, name, t, shape, dtype, output);
  else
    check_attention_like(kernel, name, t, shape, dtype);
}

// The gradients of a backward: dq and dout shaped like q, dk like k, dv like v, all in q's dtype.
inline void check_attention_grads(const char* kernel, const Tensor& dq, const Tensor& dk,
                                  const Tensor& dv, const Tensor& dout, const Tensor& q,
                                  const Tensor& k, const Tensor& v, bool strided = false) {
  check_attention_out(kernel, "dq", dq, q.shape(), q.dtype(), strided, true);
  check_attention_out(kernel, "dk", dk, k.shape(), q.dtype(), strided, true);
  check_attention_out(kernel, "dv", dv, v.shape(), q.dtype(), strided, true);
  check_attention_out(kernel, "dout", dout, q.shape(), q.dtype(), strided, false);
}

// A document packed in a batch row: rows [start, start + length) of batch row b attend within it
// as a sequence of their own (ops/documents.h; the attention kernels' documents entries,
// backend/kernels.h).
struct DocumentSpan {
  int64_t b = 0, start = 0, length = 0;
};

// Throws, naming the kernel and the first span out of place, unless spans cover every row of a
// (B, T) batch exactly: row after row, each row's documents in order, none empty.
inline void check_document_spans(const char* kernel, const std::vector<DocumentSpan>& spans,
                                 int64_t B, int64_t T) {
  int64_t b = -1, next = T;  // the row and position the next span must start at, once a row ends
  for (size_t i = 0; i < spans.size(); ++i) {
    const DocumentSpan& s = spans[i];
    if (next == T) ++b, next = 0;  // the row is covered: the next span opens the next one
    TESSERA_CHECK(s.b == b && s.start == next && s.length > 0 && s.length <= T - s.start, kernel,
                  ": document ", i, " (row ", s.b, ", start ", s.start, ", length ", s.length,
                  ") does not follow on from the one before in a (", B, ", ", T,
                  ") batch: expected row ", b, ", start ", next, ", a length of 1 to ", T - next);
    next += s.length;
  }
  TESSERA_CHECK(B == 0 || T == 0 || (b == B - 1 && next == T), kernel, ": ", spans.size(),
                " documents cover ", b * T + next, " of the ", B * T, " positions of a (", B, ", ",
                T, ") batch");
}

}  // namespace tessera
