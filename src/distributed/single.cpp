// World of one: every collective is the identity (a sum, mean or max over one rank is the value
// itself) and completes at once. The arguments are still checked, so a single-GPU run finds a
// strided or wrongly typed gradient bucket before the job is scaled out.
#include "distributed/backends.h"

namespace tessera::dist {

namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

class SingleCommunicator final : public Communicator {
 public:
  SingleCommunicator(const CommOptions& options, const LaunchInfo& launch)
      : local_rank_(launch.local_rank), device_(options.device) {}

  int rank() const override { return 0; }
  int world() const override { return 1; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "single"; }
  Device device() const override { return device_; }

  WorkHandle all_reduce_async(const Tensor& t, ReduceOp) override {
    check_collective_tensor(t, "all_reduce", true);
    return std::make_unique<DoneWork>();
  }
  WorkHandle reduce_scatter_async(const Tensor& t, ReduceOp) override {
    check_collective_tensor(t, "reduce_scatter", true);
    return std::make_unique<DoneWork>();
  }
  WorkHandle all_gather_async(const Tensor& t) override {
    check_collective_tensor(t, "all_gather", false);
    return std::make_unique<DoneWork>();
  }
  WorkHandle broadcast_async(const Tensor& t, int root) override {
    check_collective_tensor(t, "broadcast", false);
    TESSERA_CHECK(root == 0, "broadcast: root ", root, " is not a rank of world 1");
    return std::make_unique<DoneWork>();
  }
  void barrier() override {}

 private:
  int local_rank_;
  Device device_;
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator(const CommOptions& options,
                                                       const LaunchInfo& launch) {
  return std::make_unique<SingleCommunicator>(options, launch);
}

}  // namespace tessera::dist
