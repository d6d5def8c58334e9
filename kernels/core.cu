// Kernel-table entries of kernels/core.cu (see common.cuh).
#include "backend/kernels.h"
#include "common.cuh"

namespace tessera::cuda {

void add_core_kernels(Kernels&) {}

}  // namespace tessera::cuda
