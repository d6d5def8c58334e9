// Kernel-table entries of kernels/blas.cu (see common.cuh).
#include "backend/kernels.h"
#include "common.cuh"

namespace tessera::cuda {

void add_blas_kernels(Kernels&) {}

}  // namespace tessera::cuda
