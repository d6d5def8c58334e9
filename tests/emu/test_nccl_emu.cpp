// The CUDA emulator's NCCL (kernels/emu/nccl.cpp) on its own, in one process: what it refuses and
// how a rank that never joins is reported. Between processes it is tested through the NCCL
// communicator (comm.nccl.np2/np4) and data-parallel training (multirank.cuda_nccl_emu).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#if TESSERA_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include "emu/cuda_emu.h"
#include "test_util.h"
#endif

namespace tessera {
namespace {

#if TESSERA_HAVE_NCCL

TEST(NcclEmu, a_rank_that_never_joins_fails_init_naming_it) {
  testing::ScopedEnv timeout{{"TESSERA_EMU_NCCL_TIMEOUT_S", "0.2"}};
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t comm = nullptr;
  EXPECT_EQ(ncclCommInitRank(&comm, 2, id, 0), ncclRemoteError);
  const std::string why = ncclGetLastError(comm);
  EXPECT_NE(why.find("rank 1 of 2 did not join"), std::string::npos) << why;
  ncclResult_t state = ncclSuccess;
  EXPECT_EQ(ncclCommGetAsyncError(comm, &state), ncclSuccess);
  EXPECT_EQ(state, ncclRemoteError);  // the communicator stays broken, as NCCL's does
  ncclCommAbort(comm);
}

TEST(NcclEmu, refuses_host_buffers_bad_ranks_roots_and_ids) {
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t comm = nullptr;
  EXPECT_EQ(ncclCommInitRank(&comm, 2, id, 2), ncclInvalidArgument);  // rank outside [0, 2)
  ncclUniqueId foreign{};
  EXPECT_EQ(ncclCommInitRank(&comm, 1, foreign, 0), ncclInvalidArgument);
  ASSERT_EQ(ncclCommInitRank(&comm, 1, id, 0), ncclSuccess);
  std::vector<float> host(4, 1.0f);
  EXPECT_EQ(ncclAllReduce(host.data(), host.data(), 4, ncclFloat32, ncclSum, comm, nullptr),
            ncclInvalidArgument);
  EXPECT_NE(std::string(ncclGetLastError(comm)).find("not device memory"), std::string::npos);
  float* dev = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dev), 4 * sizeof(float)), cudaSuccess);
  EXPECT_EQ(ncclBroadcast(dev, dev, 4, ncclFloat32, 1, comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(dev, dev, 4, ncclFloat32, ncclAvg, comm, nullptr), ncclSuccess);
  EXPECT_EQ(ncclCommFinalize(comm), ncclSuccess);
  EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
  cudaFree(dev);
}

TEST(NcclEmu, a_collective_on_a_programs_stream_runs_there_after_the_call_returns) {
  // One rank's all_gather copies send into recv: visible only once the stream has run it.
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitRank(&comm, 1, id, 0), ncclSuccess);
  float *send = nullptr, *recv = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&send), 16), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&recv), 16), cudaSuccess);
  const std::vector<float> values{1, 2, 3, 4};
  ASSERT_EQ(cudaMemcpy(send, values.data(), 16, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(recv, 0, 16, nullptr), cudaSuccess);
  cudaStream_t s;
  cudaEvent_t done;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&done), cudaSuccess);
  std::vector<float> got(4);
  emu::hold_streams(true);
  EXPECT_EQ(ncclAllGather(send, recv, 4, ncclFloat32, comm, s), ncclSuccess);
  EXPECT_EQ(ncclAllGather(send, nullptr, 4, ncclFloat32, comm, s), ncclInvalidArgument);  // checked now
  ASSERT_EQ(cudaEventRecord(done, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got.data(), recv, 16, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got, std::vector<float>(4, 0.0f));  // not run yet
  emu::hold_streams(false);
  ASSERT_EQ(cudaEventSynchronize(done), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got.data(), recv, 16, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got, values);
  ncclResult_t state = ncclInProgress;
  EXPECT_EQ(ncclCommGetAsyncError(comm, &state), ncclSuccess);
  EXPECT_EQ(state, ncclSuccess);
  EXPECT_EQ(ncclCommFinalize(comm), ncclSuccess);
  EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
  cudaEventDestroy(done);
  cudaStreamDestroy(s);
  cudaFree(send);
  cudaFree(recv);
}
#else
TEST(NcclEmu, needs_nccl_h) { GTEST_SKIP() << "built without nccl.h: no emulated NCCL"; }
#endif

}  // namespace
}  // namespace tessera
