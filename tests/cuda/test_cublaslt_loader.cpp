// cuBLASLt is opened at the first gemm (kernels/cublaslt_loader.cpp), not linked, so that a process
// that runs no gemm on a GPU does not pay for its static constructors. Needs no GPU: CI's CUDA
// build runs it.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "backend/cuda.h"
#include "core/build.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::read_file;
using tessera::testing::run_command;

TEST(CublasLtLoader, no_binary_links_cublaslt_and_the_first_gemm_opens_it) {
#if TESSERA_CUDA_EMU
  EXPECT_NE(cuda::cublaslt_library().find("emulator"), std::string::npos);
#else
  if (!built_with::cuda()) {
    const std::string message = error_of([] { cuda::cublaslt_library(); });
    EXPECT_NE(message.find("built without CUDA"), std::string::npos) << message;
    return;
  }
  // Every binary links tessera as this one does: its libraries are theirs.
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  std::string linked;
  ASSERT_EQ(run_command("ldd '" + exe + "'", &linked), 0) << linked;
  ASSERT_NE(linked.find("libcudart"), std::string::npos) << "ldd " << exe << ":\n" << linked;
  EXPECT_EQ(linked.find("libcublas"), std::string::npos) << "ldd " << exe << ":\n" << linked;

  const std::string where = cuda::cublaslt_library();
  std::printf("[ cuBLASLt ] %s\n", where.c_str());
  EXPECT_NE(where.find("libcublasLt.so."), std::string::npos) << where;
  EXPECT_EQ(where.find("could not be loaded"), std::string::npos) << where;
  EXPECT_NE(read_file("/proc/self/maps").find("libcublasLt"), std::string::npos)
      << "cublaslt_library() returned " << where << " but no libcublasLt is mapped";
  EXPECT_EQ(cuda::cublaslt_library(), where);  // opened once
#endif
}
