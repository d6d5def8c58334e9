// Helpers shared by the op files (not part of the public API).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "autograd/autograd.h"
#include "backend/attention_shapes.h"
#include "backend/kernels.h"
#include "core/tensor.h"

namespace tessera::ops::detail {

// A contiguous alias or copy of t without autograd history: what a kernel is handed.
inline Tensor dense(const Tensor& t) {
  Tensor d = t.detach();
  return d.is_contiguous() ? d : d.contiguous();
}

// An input of a kernel that keeps the strided contract of backend/attention_shapes.h (the flash
// kernels): t itself, without autograd history, when its rows are contiguous (a view read where it
// lies: a KV cache's filled prefix, heads of a fused projection); else a dense() copy.
inline Tensor unit_rows(const Tensor& t) {
  Tensor d = t.detach();
  return has_unit_rows(d) ? d : d.contiguous();
}

// k and v as the dense-contract attention kernels (stick-breaking) are handed them: the filled prefixes of two cache buffers are
// read in place by the query-offset forwards (offset: fewer queries than keys; see
// backend/attention_shapes.h), anything else as dense() gives it.
inline std::pair<Tensor, Tensor> dense_kv(const Tensor& k, const Tensor& v, bool offset) {
  const int64_t rows = kv_row_stride(k);
  if (offset && rows > 0 && rows != k.size(2) && kv_row_stride(v) == rows)
    return {k.detach(), v.detach()};
  return {dense(k), dense(v)};
}

// The values of index tensor ids (i32) as the host sees them, for an op to check: from host_ids
// when the caller passes them (the same values on the CPU: nothing is read back), else read out of
// ids (on a device, a copy the host waits for).
inline std::vector<int32_t> host_indices(const char* op, const char* what, const Tensor& ids,
                                         const Tensor& host_ids) {
  if (!host_ids.defined()) return ids.to_vector<int32_t>();
  TESSERA_CHECK(host_ids.device().is_cpu() && host_ids.dtype() == DType::I32 &&
                    host_ids.shape() == ids.shape(),
                op, ": the host copy of the ", what, " must be i32 on the CPU with their shape ",
                shape_str(ids.shape()), ", got ", host_ids.str());
  const Tensor h = host_ids.is_contiguous() ? host_ids : host_ids.contiguous();
  const int32_t* p = h.data<int32_t>();
  return std::vector<int32_t>(p, p + h.numel());
}

// Throws unless every defined tensor shares the first one's dtype and device (names op and both).
inline void check_compatible(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    TESSERA_CHECK(t->dtype() == first->dtype() && t->device() == first->device(), op,
                  ": inputs differ in dtype or device: ", first->str(), " vs ", t->str());
  }
}

// The second dtype a contribution to a t-typed gradient can add into (IntoOptions::also): a bf16
// tensor's gradient may live in an f32 buffer (a bf16 model's flat gradients).
inline std::optional<DType> f32_buffer_of(DType t) {
  return t == DType::BF16 ? std::optional<DType>(DType::F32) : std::nullopt;
}

// (rows, C) -> (C): sum over every leading dimension. C may be 0 (an empty bias row: no rows to
// count, nothing to sum).
inline Tensor sum_rows(const Tensor& g, int64_t C) {
  Tensor out = Tensor::empty({C}, g.options());
  TESSERA_KERNEL(g, sum_dim)(out, dense(g), 1, C > 0 ? g.numel() / C : 0, C, false);
  return out;
}

}  // namespace tessera::ops::detail
