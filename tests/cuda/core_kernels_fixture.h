// What the core kernels' GPU parity tests share (test_kernels_cuda.cpp, test_norm_cuda.cpp): the
// tolerances, inputs drawn on the CPU and rounded to the dtype under test, the norm-wise error and
// the fixture parameterised by dtype, which each file instantiates for its own suite. How the
// tests compare: test_kernels_cuda.cpp's header.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/cuda.h"
#include "backend/kernels.h"
#include "core/rng.h"
#include "test_util.h"

namespace tessera::kernel_tests {

using testing::bytes;
using testing::values;

// f32: the CUDA kernels accumulate in f32 (the CPU mostly in double; its gemm and materialised
// attention in f32 through BLAS) over at most ~10^3 terms, in another order, and use CUDA's expf /
// tanhf / logf (within 2 ulp of glibc's, as the CPU's fast_exp is of exp). That is ~1e-6 of a
// tensor's scale; 2e-5 leaves a margin for unlucky cancellations, while a wrong index, mask or
// formula is off by O(1).
constexpr double kF32 = 2e-5;
// bf16: the same f32 arithmetic, then one rounding of each output to 8 significant bits (at most
// 2^-9 of the element, so of the tensor's scale): 2^-8 is twice that bound.
constexpr double kBf16 = 1.0 / 256;

inline const Device kGpu = Device::cuda(0);

// Random values as an f32 CPU tensor, rounded to dtype: both backends compute on exactly these.
inline Tensor random(const Shape& shape, DType dtype, Generator& g, double mul = 1.0,
                     double add = 0.0) {
  Tensor t = randn(shape, g);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(double(p[i]) * mul + add);
  return t.to(dtype).to(DType::F32);
}

inline Tensor to_gpu(const Tensor& t, DType dtype) { return t.to(dtype).to(kGpu); }
inline Tensor gpu_empty(const Shape& s, DType dtype) { return Tensor::empty(s, {dtype, kGpu}); }
inline Tensor cpu_empty(const Shape& s) { return Tensor::empty(s, DType::F32); }

inline double rel_err(const Tensor& gpu, const Tensor& ref) {
  const std::vector<double> g = values(gpu.to(Device::cpu())), r = values(ref);
  EXPECT_EQ(g.size(), r.size());
  double err = 0, scale = 0;
  for (size_t i = 0; i < g.size() && i < r.size(); ++i) {
    if (std::isfinite(r[i]) && !std::isfinite(g[i])) return INFINITY;
    err = std::max(err, std::abs(g[i] - r[i]));
    scale = std::max(scale, std::abs(r[i]));
  }
  return err / std::max(scale, 1e-30);
}

class CoreKernelsCuda : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  }
  DType dt() const { return GetParam(); }

  void expect_close(const Tensor& gpu, const Tensor& cpu, const std::string& what) const {
    EXPECT_LE(rel_err(gpu, cpu), dt() == DType::F32 ? kF32 : kBf16)
        << what << " (" << dtype_name(dt()) << ")";
  }
  void expect_bits(const Tensor& gpu, const Tensor& cpu, const std::string& what) const {
    EXPECT_EQ(gpu.dtype(), dt()) << what;
    EXPECT_TRUE(bytes(gpu.to(Device::cpu())) == bytes(cpu.to(dt())))
        << what << " (" << dtype_name(dt()) << ") differs from the CPU; max |diff| "
        << testing::max_abs_diff(gpu.to(Device::cpu()).to(DType::F32), cpu.to(dt()).to(DType::F32));
  }
};

inline std::string param_name(const ::testing::TestParamInfo<DType>& info) {
  return dtype_name(info.param);
}

inline const Kernels& cpu_k() { return cpu::kernels(); }

}  // namespace tessera::kernel_tests
