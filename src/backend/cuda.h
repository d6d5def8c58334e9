// The CUDA backend as seen from src/: plain C++ declarations, no CUDA headers.
//
// Implemented by kernels/*.cu when tessera is built with CUDA, and by src/backend/cuda_stub.cpp
// otherwise (every function then throws "tessera was built without CUDA support").
#pragma once

#include <cstddef>

namespace tessera {
struct Kernels;
}

namespace tessera::cuda {

bool available();          // built with CUDA and at least one device present (never throws)
int device_count();        // 0 when the driver finds no device
void* device_malloc(size_t nbytes, int device);
void device_free(void* ptr, int device);
void copy_to_device(void* dst, const void* src, size_t nbytes, int device);
void copy_to_host(void* dst, const void* src, size_t nbytes, int device);
void copy_device_to_device(void* dst, const void* src, size_t nbytes, int device);
void synchronize(int device);

// The CUDA kernel table (src/backend/kernels.h). Entries the CUDA backend does not provide yet are
// null; calling one raises an error that names the kernel.
const Kernels& kernels();

}  // namespace tessera::cuda
