// A bf16 gemm whose product is rounded before a bias or C is added (docs/gpu-notes.md, GPU
// session 1: cuBLASLt on the H200, for small and odd shapes, gave round(round(product) + addend)
// for every element outside a one-rounding bound, counted by rounded_twice_note).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "test_util.h"

namespace tessera::testing {

// The bound's term for that first rounding: 2^-8 (1 + 2^-8) |product| in bf16, 0 otherwise.
inline double product_rounding(DType dt, double product) {
  const double r = dt == DType::BF16 ? 1.0 / 256 : 0.0;
  return (1 + r) * r * std::fabs(product);
}

// For a failure message: of the elements flagged in `bad`, how many equal round(round(product) +
// addend), the product rounded to dt before the addend (bias, C, the value accumulated onto) is
// added and the sum rounded again.

inline std::string rounded_twice_note(const std::vector<double>& got,
                                      const std::vector<double>& product,
                                      const std::vector<double>& addend,
                                      const std::vector<char>& bad, DType dt) {
  const auto n = int64_t(got.size());
  auto rounded = [&](const std::vector<double>& v) {
    return values(from_vector<double>(v, {n}).to(dt));
  };
  std::vector<double> sum = rounded(product);
  for (size_t i = 0; i < sum.size(); ++i) sum[i] += addend[i];
  sum = rounded(sum);
  int64_t flagged = 0, twice = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!bad[i]) continue;
    ++flagged;
    twice += got[i] == sum[i];
  }
  return "; of the " + std::to_string(flagged) + " out of bounds, " + std::to_string(twice) +
         " equal round(round(product) + addend) in " + dtype_name(dt);
}

}  // namespace tessera::testing
