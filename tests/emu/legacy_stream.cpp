// The emulator's own tests launch kernels that write host variables and read them once the launch
// returns, and the streams tests count on the legacy stream's work being done when its call
// returns: the binary runs with the legacy stream synchronous (kernels/emu/streams.cpp). Tests of
// the asynchronous legacy stream, the default everywhere else, turn it on for their scope.
#include <gtest/gtest.h>

#include "emu/cuda_emu.h"

namespace {

struct SynchronousLegacyStream : testing::Environment {
  void SetUp() override { tessera::emu::set_legacy_async(false); }
};

// Registered before main runs; set up by RUN_ALL_TESTS, after every static is initialised.
[[maybe_unused]] testing::Environment* const environment =
    testing::AddGlobalTestEnvironment(new SynchronousLegacyStream);

}  // namespace
