// Linked instead of mpi.cpp when tessera is built without MPI: asking for the MPI backend (or for
// NCCL's MPI bootstrap) fails with one message that says how to get it.
#include "distributed/backends.h"

namespace tessera::dist {

std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions&, const LaunchInfo&) {
  TESSERA_FAIL("tessera was built without MPI (TESSERA_MPI=OFF or MPI not found); install "
               "libopenmpi-dev and rebuild");
}

std::unique_ptr<RollCallChannel> make_mpi_roll_call(Communicator&) { return nullptr; }

}  // namespace tessera::dist
