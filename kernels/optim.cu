// Kernel-table entries of kernels/optim.cu (see common.cuh).
#include "backend/kernels.h"
#include "common.cuh"

namespace tessera::cuda {

void add_optim_kernels(Kernels&) {}

}  // namespace tessera::cuda
