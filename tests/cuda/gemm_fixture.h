// What the gemm and Linear GPU tests share (test_blas_cuda.cpp, test_linear_epilogues_cuda.cpp):
// the GemmCuda suite's fixture, one instance a dtype (instantiated in test_blas_cuda.cpp), and the
// exact f64 values their references are computed on.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "test_util.h"

namespace tessera {

class GemmCuda : public ::testing::TestWithParam<DType> {};

namespace testing::gemm {

inline const Device kGpu = Device::cuda(0);

// Random f32 values rounded to dtype, returned as an f64 CPU tensor (the exact values).
inline Tensor random(const Shape& shape, DType dtype, Generator& g) {
  return randn(shape, g).to(dtype).to(DType::F64);
}

inline Tensor abs_of(const Tensor& t) {
  std::vector<double> v = values(t);
  for (double& x : v) x = std::fabs(x);
  return from_vector<double>(v, t.shape());
}

}  // namespace testing::gemm
}  // namespace tessera
