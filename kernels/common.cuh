// Shared by every kernels/*.cu file: checked CUDA calls with file:line.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "core/error.h"

#define CUDA_CHECK(call)                                                              \
  do {                                                                                \
    cudaError_t err_ = (call);                                                        \
    if (err_ != cudaSuccess)                                                          \
      TESSERA_FAIL("CUDA error: ", cudaGetErrorString(err_), " in ", #call);          \
  } while (0)

// After every launch: a bad configuration shows up here, not at the next unrelated call.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace tessera {
struct Kernels;
namespace cuda {

struct DeviceGuard {  // makes `device` current for a scope
  int prev = 0;
  explicit DeviceGuard(int device) {
    CUDA_CHECK(cudaGetDevice(&prev));
    if (prev != device) CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(prev); }
};

// A launch's dynamic shared memory: past the default 48 KiB the kernel must opt in
// (cudaFuncAttributeMaxDynamicSharedMemorySize) or the launch fails with "invalid argument";
// past a block's 227 KiB on sm_80 / sm_90 no kernel can have it. `what` says what the bytes hold.
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes, const char* name = "", const char* what = "") {
  TESSERA_CHECK(bytes <= 232448, "cuda kernel ", name, ": ", what, " needs ", bytes,
                " bytes of shared memory, more than a block's 232448");
  if (bytes > 49152)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// Calls f(T{}) with the element type of any dtype: float, double, uint16_t (bf16's bits),
// int32_t, uint8_t.
template <typename F>
void visit_any_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); break;
    case DType::F64: f(double{}); break;
    case DType::BF16: f(uint16_t{}); break;
    case DType::I32: f(int32_t{}); break;
    case DType::U8: f(uint8_t{}); break;
  }
}

// Each fills the kernel-table entries of one kernels/*.cu file (called once, from memory.cu).
void add_core_kernels(Kernels& k);       // core.cu: elementwise, norms, activations, softmax...
void add_blas_kernels(Kernels& k);       // blas.cu: gemm through cuBLASLt
void add_optim_kernels(Kernels& k);      // optim.cu: fused AdamW, gradient norms
void add_attention_kernels(Kernels& k);  // attention.cu
void add_nf4_kernels(Kernels& k);        // nf4.cu
}  // namespace cuda
}  // namespace tessera
