// The NCCL communicator as one rank on one GPU: every collective on CUDA tensors, async handles
// and the argument checks. Skips without NCCL in the build or without a GPU; the multi-rank
// arithmetic is tested through the MPI backend (tests/distributed), and world 1 cannot reach the
// padded reduce_scatter / all_gather path (1 divides every size).
//
// Over one rank every reduction is the identity (sum, max, and sum / 1), so results are compared
// bit for bit with the inputs: small integers, exact in every dtype.
#include <gtest/gtest.h>

#include <vector>

#include "backend/cuda.h"
#include "core/build.h"
#include "distributed/communicator.h"
#include "test_util.h"

namespace tessera::dist {
namespace {

using testing::error_of;

const Device kGpu = Device::cuda(0);

std::unique_ptr<Communicator> one_rank_nccl() {
  CommOptions options;
  options.backend = "nccl";
  options.device = kGpu;
  // One rank's init and collectives take seconds at most; an init that cannot finish (no socket
  // interface for NCCL's bootstrap, say) then fails each test in 20 s, under ctest's 60.
  options.timeout_s = 20;
  return make_communicator(options, LaunchInfo{});
}

// n small integers of dtype on the GPU, and the same values as doubles.
Tensor gpu_values(DType dtype, int64_t n, std::vector<double>& host) {
  host.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) host[size_t(i)] = double((i * 7) % 23);
  return from_vector<double>(host, {n}).to(dtype).to(kGpu);
}

std::vector<double> read_back(const Tensor& t) {
  return t.to(Device::cpu()).to(DType::F64).to_vector<double>();
}

#define SKIP_WITHOUT_NCCL_GPU()                                            \
  do {                                                                     \
    if (!built_with::nccl()) GTEST_SKIP() << "tessera built without NCCL"; \
    if (!cuda::available()) GTEST_SKIP() << "no CUDA device";              \
  } while (0)

TEST(Nccl, one_rank_collectives_are_the_identity_on_cuda_tensors) {
  SKIP_WITHOUT_NCCL_GPU();
  auto comm = one_rank_nccl();
  EXPECT_EQ(comm->backend(), "nccl");
  EXPECT_EQ(comm->device(), kGpu);
  for (DType d : {DType::F32, DType::F64, DType::BF16, DType::I32})
    for (int64_t n : {int64_t(0), int64_t(1), int64_t(7), int64_t(1000003)}) {
      std::vector<double> want;
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Average, ReduceOp::Max}) {
        Tensor t = gpu_values(d, n, want);
        comm->all_reduce(t, op);
        EXPECT_EQ(read_back(t), want) << "all_reduce " << dtype_name(d) << " n=" << n;
        t = gpu_values(d, n, want);
        comm->reduce_scatter(t, op);
        EXPECT_EQ(read_back(t), want) << "reduce_scatter " << dtype_name(d) << " n=" << n;
      }
      Tensor t = gpu_values(d, n, want);
      comm->all_gather(t);
      EXPECT_EQ(read_back(t), want) << "all_gather " << dtype_name(d) << " n=" << n;
      comm->broadcast(t, 0);
      EXPECT_EQ(read_back(t), want) << "broadcast " << dtype_name(d) << " n=" << n;
    }
  comm->barrier();
  EXPECT_EQ(comm->all_reduce_host({1.5, -2.0}, ReduceOp::Sum), (std::vector<double>{1.5, -2.0}));
}

TEST(Nccl, overlapped_handles_complete_when_waited_in_reverse_order) {
  SKIP_WITHOUT_NCCL_GPU();
  auto comm = one_rank_nccl();
  std::vector<double> want_a, want_b;
  Tensor a = gpu_values(DType::F32, 1 << 20, want_a);
  Tensor b = gpu_values(DType::BF16, 1003, want_b);
  WorkHandle wa = comm->all_reduce_async(a, ReduceOp::Average);
  WorkHandle wb = comm->all_gather_async(b);
  wb->wait();
  wa->wait();
  while (!wa->test()) {
  }
  EXPECT_EQ(read_back(a), want_a);
  EXPECT_EQ(read_back(b), want_b);
  // A handle dropped unwaited still orders the compute stream before its buffer is reused.
  {
    Tensor t = gpu_values(DType::F32, 4096, want_a);
    WorkHandle dropped = comm->all_reduce_async(t, ReduceOp::Sum);
  }
  cuda::synchronize(0);
}

TEST(Nccl, tensors_on_the_wrong_device_or_root_are_errors) {
  SKIP_WITHOUT_NCCL_GPU();
  auto comm = one_rank_nccl();
  const std::string cpu = error_of([&] { comm->all_reduce(zeros({4}), ReduceOp::Sum); });
  EXPECT_NE(cpu.find("cuda:0"), std::string::npos) << cpu;
  EXPECT_NE(error_of([&] { comm->broadcast(zeros({4}, kGpu), 1); }).find("root 1"),
            std::string::npos);
}

// The one NCCL path a machine without a GPU reaches: construction fails with a clear message.
TEST(Nccl, without_a_gpu_construction_says_so) {
  if (!built_with::nccl()) GTEST_SKIP() << "tessera built without NCCL";
  if (cuda::available()) GTEST_SKIP() << "a CUDA device is present";
  const std::string message = error_of([] { one_rank_nccl(); });
  EXPECT_NE(message.find("sees no CUDA device"), std::string::npos) << message;
}

}  // namespace
}  // namespace tessera::dist
