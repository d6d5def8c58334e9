// The communicator test_comm's main made for this run (MPI, single, or NCCL between emulated
// devices; 1, 2 or 4 ranks): for the test files linked into test_comm beside test_comm.cpp.
#pragma once

#include "distributed/communicator.h"

namespace tessera::dist {
Communicator& communicator_under_test();
}
