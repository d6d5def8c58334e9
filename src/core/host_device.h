// TESSERA_HD marks a small function that the host and CUDA kernels share: __host__ __device__ when
// nvcc compiles the file, a plain inline function otherwise.
#pragma once

#if defined(__CUDACC__)
#define TESSERA_HD __host__ __device__ __forceinline__
#else
#define TESSERA_HD inline
#endif
