#include "core/build.h"

// CMakeLists.txt defines these for this file alone.
#if !defined(TESSERA_HAVE_CUDA) || !defined(TESSERA_HAVE_NCCL) || !defined(TESSERA_HAVE_MPI)
#error "build.cpp is compiled without CMakeLists.txt's TESSERA_HAVE_* definitions"
#endif

namespace tessera::built_with {

bool cuda() { return TESSERA_HAVE_CUDA; }
bool nccl() { return TESSERA_HAVE_NCCL; }
bool mpi() { return TESSERA_HAVE_MPI; }

}  // namespace tessera::built_with
