// Helpers shared by the op files (not part of the public API).
#pragma once

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

// k and v as the attention kernels are handed them: the filled prefixes of two cache buffers are
// read in place by the query-offset forwards (offset: fewer queries than keys; see
// backend/attention_shapes.h), anything else as dense() gives it.
inline std::pair<Tensor, Tensor> dense_kv(const Tensor& k, const Tensor& v, bool offset) {
  const int64_t rows = kv_row_stride(k);
  if (offset && rows > 0 && rows != k.size(2) && kv_row_stride(v) == rows)
    return {k.detach(), v.detach()};
  return {dense(k), dense(v)};
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

// (rows, C) -> (C): sum over every leading dimension.
inline Tensor sum_rows(const Tensor& g, int64_t C) {
  Tensor out = Tensor::empty({C}, g.options());
  TESSERA_KERNEL(g, sum_dim)(out, dense(g), 1, g.numel() / C, C);
  return out;
}

}  // namespace tessera::ops::detail
