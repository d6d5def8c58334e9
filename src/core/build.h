// What this build of tessera holds: CMake's TESSERA_CUDA, TESSERA_NCCL and TESSERA_MPI options as
// they resolved. Asked at run time, not through macros, so that the binaries and tests compile to
// the same objects in every build (CI builds with and without nvcc and shares them through
// ccache); only src/core/build.cpp sees the definitions.
#pragma once

namespace tessera::built_with {

bool cuda();  // the CUDA backend (kernels/*.cu, or the CUDA emulator); false: cuda_stub.cpp
bool nccl();  // the NCCL communicator
bool mpi();   // the MPI communicator

}  // namespace tessera::built_with
