// Helpers shared by the op files (not part of the public API).
#pragma once

#include "autograd/autograd.h"
#include "backend/kernels.h"
#include "core/tensor.h"

namespace tessera::ops::detail {

// A contiguous alias or copy of t without autograd history: what a kernel is handed.
inline Tensor dense(const Tensor& t) {
  Tensor d = t.detach();
  return d.is_contiguous() ? d : d.contiguous();
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
