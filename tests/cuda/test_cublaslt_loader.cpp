// cuBLASLt is opened at the first gemm (kernels/cublaslt_loader.cpp), not linked, so that a process
// that runs no gemm on a GPU does not pay for its static constructors. Needs no GPU: CI's CUDA
// build runs it.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "backend/cuda.h"
#include "core/build.h"

using namespace tessera;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string output_of(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  pclose(p);
  return out;
}

}  // namespace

TEST(CublasLtLoader, no_binary_links_cublaslt_and_the_first_gemm_opens_it) {
#if TESSERA_CUDA_EMU
  EXPECT_NE(cuda::cublaslt_library().find("emulator"), std::string::npos);
#else
  if (!built_with::cuda()) {
    try {
      cuda::cublaslt_library();
      ADD_FAILURE() << "a build without CUDA returned a cuBLASLt";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("built without CUDA"), std::string::npos) << e.what();
    }
    return;
  }
  // Every binary links tessera as this one does: its libraries are theirs.
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string linked = output_of("ldd '" + exe + "' 2>&1");
  ASSERT_NE(linked.find("libcudart"), std::string::npos) << "ldd " << exe << ":\n" << linked;
  EXPECT_EQ(linked.find("libcublas"), std::string::npos) << "ldd " << exe << ":\n" << linked;

  const std::string where = cuda::cublaslt_library();
  std::printf("[ cuBLASLt ] %s\n", where.c_str());
  EXPECT_NE(where.find("libcublasLt.so."), std::string::npos) << where;
  EXPECT_EQ(where.find("could not be loaded"), std::string::npos) << where;
  EXPECT_NE(read_text("/proc/self/maps").find("libcublasLt"), std::string::npos)
      << "cublaslt_library() returned " << where << " but no libcublasLt is mapped";
  EXPECT_EQ(cuda::cublaslt_library(), where);  // opened once
#endif
}
