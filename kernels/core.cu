// The CUDA twins of the CPU's memory-like kernels (src/backend/cpu/memory.cpp): arange and the
// Philox random draws; and add_core_kernels, which registers every core kernel file (core.cuh).
//
// dst: any shape, contiguous, any dtype (stored as the CPU stores it: a double value converted,
// bf16 rounding to nearest even through f32). Element i of a draw is a pure function of
// (seed, offset + i) -- core/rng.h's functions are __host__ __device__, so these kernels call the
// very code the CPU runs and f32 draws match it bit for bit. (normal goes through double log, sqrt
// and cos; CUDA's and glibc's differ by an ulp of a double at most, which changes the f32 result
// only when a value lies within 2^-29 of a rounding boundary.)
#include <cstdint>
#include <type_traits>

#include "backend/kernels.h"
#include "common.cuh"
#include "core.cuh"
#include "core/rng.h"

namespace tessera::cuda {
namespace {

using core::global_index;
using core::grid_for;
using core::grid_stride;
using core::kThreads;

// Stores a double as dtype T exactly as the CPU's store() does.
template <typename T>
__device__ __forceinline__ void store_double(T* p, double v) { *p = static_cast<T>(v); }
template <>
__device__ __forceinline__ void store_double<uint16_t>(uint16_t* p, double v) {
  *p = core::f32_to_bf16(float(v));
}

void check_dst(const char* kernel, const Tensor& dst) {
  TESSERA_CHECK(dst.defined() && dst.device().is_cuda() && dst.is_contiguous(), "cuda kernel ",
                kernel, ": dst must be a contiguous CUDA tensor, got ",
                dst.defined() ? dst.str() : std::string("an undefined tensor"));
}

// start + i * step with explicit round-to-nearest operations: nvcc would otherwise fuse them into
// one fma, rounding once where the CPU rounds twice.
template <typename T>
__global__ void arange_kernel(T* dst, int64_t n, double start, double step) {
  for (int64_t i = global_index(); i < n; i += grid_stride())
    store_double(dst + i, __dadd_rn(start, __dmul_rn(double(i), step)));
}

template <typename T>
__global__ void uniform_kernel(T* dst, int64_t n, uint64_t seed, uint64_t offset) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) {
    if constexpr (std::is_same_v<T, double>) {
      dst[i] = philox_uniform_f64(offset + uint64_t(i), seed);  // 53 random bits, as the CPU
    } else {
      store_double(dst + i, double(philox_uniform(offset + uint64_t(i), seed)));
    }
  }
}

template <typename T>
__global__ void normal_kernel(T* dst, int64_t n, uint64_t seed, uint64_t offset) {
  for (int64_t i = global_index(); i < n; i += grid_stride())
    store_double(dst + i, philox_normal(offset + uint64_t(i), seed));
}

void arange(const Tensor& dst, double start, double step) {
  check_dst("arange", dst);
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard guard(dst.device().index);
  visit_any_dtype(dst.dtype(), [&](auto z) {
    using T = decltype(z);
    arange_kernel<T><<<grid_for(n), kThreads>>>(static_cast<T*>(dst.data_ptr()), n, start, step);
    CUDA_CHECK_LAUNCH();
  });
}

void uniform(const Tensor& dst, uint64_t seed, uint64_t offset) {
  check_dst("uniform", dst);
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard guard(dst.device().index);
  visit_any_dtype(dst.dtype(), [&](auto z) {
    using T = decltype(z);
    uniform_kernel<T><<<grid_for(n), kThreads>>>(static_cast<T*>(dst.data_ptr()), n, seed, offset);
    CUDA_CHECK_LAUNCH();
  });
}

void normal(const Tensor& dst, uint64_t seed, uint64_t offset) {
  check_dst("normal", dst);
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard guard(dst.device().index);
  visit_any_dtype(dst.dtype(), [&](auto z) {
    using T = decltype(z);
    normal_kernel<T><<<grid_for(n), kThreads>>>(static_cast<T*>(dst.data_ptr()), n, seed, offset);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void add_core_kernels(Kernels& k) {
  k.arange = arange;
  k.uniform = uniform;
  k.normal = normal;
  add_elementwise_kernels(k);
  add_embedding_kernels(k);
  add_norm_kernels(k);
  add_softmax_kernels(k);
  add_rope_kernels(k);
  add_forget_gate_kernels(k);
  add_materialised_attention_kernels(k);
}

}  // namespace tessera::cuda
