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
