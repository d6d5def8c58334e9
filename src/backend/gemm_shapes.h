// The operands of the kernel table's gemm (backend/kernels.h), read the same way by the CPU kernel
// and the CUDA one: 2-D or 3-D; a 3-D operand contiguous; a 2-D operand's rows may lie further
// apart than its columns (unit column stride, row stride ld >= cols), as the first columns of a
// wider matrix do (GPT's head writes the vocabulary's logits into rows padded to 64 columns, and
// its backward reads them back so). BLAS calls that row stride the leading dimension.
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/tensor.h"

namespace tessera {

struct GemmOperand {
  int64_t batch, rows, cols;
  int64_t ld;  // elements from one row to the next
  bool dense() const { return ld == cols; }
};

inline GemmOperand gemm_operand(const char* kernel, const Tensor& t, const char* name) {
  TESSERA_CHECK(t.dim() == 2 || t.dim() == 3, kernel, ": ", name, " must be 2-D or 3-D, got ",
                shape_str(t.shape()));
  if (t.dim() == 3) {
    TESSERA_CHECK(t.is_contiguous(), kernel, ": ", name, " ", shape_str(t.shape()),
                  " is not contiguous (a 3-D operand must be)");
    return {t.size(0), t.size(1), t.size(2), t.size(2)};
  }
  const int64_t rows = t.size(0), cols = t.size(1);
  if (t.is_contiguous()) return {1, rows, cols, std::max<int64_t>(cols, 1)};
  const int64_t ld = rows > 1 ? t.strides()[0] : std::max<int64_t>(cols, 1);
  TESSERA_CHECK((cols <= 1 || t.strides()[1] == 1) && ld >= std::max<int64_t>(cols, 1), kernel,
                ": ", name, " ", shape_str(t.shape()), " with strides (", t.strides()[0], ", ",
                t.strides()[1], ") is not a matrix of contiguous rows");
  return {1, rows, cols, ld};
}

}  // namespace tessera
