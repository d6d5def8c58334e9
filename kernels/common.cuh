// Shared by every kernels/*.cu file: checked CUDA calls with file:line.
#pragma once

#include <cuda_runtime.h>

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

// Each fills the kernel-table entries of one kernels/*.cu file (called once, from memory.cu).
void add_core_kernels(Kernels& k);       // core.cu: elementwise, norms, activations, softmax...
void add_blas_kernels(Kernels& k);       // blas.cu: gemm through cuBLASLt
void add_optim_kernels(Kernels& k);      // optim.cu: fused AdamW, gradient norms
void add_attention_kernels(Kernels& k);  // attention.cu
void add_nf4_kernels(Kernels& k);        // nf4.cu
}  // namespace cuda
}  // namespace tessera
