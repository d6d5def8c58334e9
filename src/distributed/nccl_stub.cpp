// Linked instead of kernels/nccl_comm.cu when tessera is built without NCCL: asking for the NCCL
// backend fails with one message that says how to get it.
#include "distributed/backends.h"

namespace tessera::dist {

std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions&, const LaunchInfo&,
                                                     Communicator*) {
  TESSERA_FAIL("tessera was built without NCCL (TESSERA_NCCL=OFF, or CUDA or NCCL not found); "
               "install NCCL and rebuild with nvcc on the PATH and -DTESSERA_NCCL=ON");
}

}  // namespace tessera::dist
