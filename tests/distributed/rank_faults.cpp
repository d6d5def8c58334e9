// Ranks that go wrong on purpose, for tests/multirank/test_rank_startup.cpp (run under mpirun):
//   rank_faults <timeout_s> stall-at-exit <rank>: the ranks all-reduce once over an MPI
//     communicator with that timeout; then <rank> sleeps 60 s before leaving main while the others
//     leave at once (MPI_Finalize waits for every rank: their exit must not wait past the timeout).
//   rank_faults <timeout_s> swap: rank 0 all-reduces where the others broadcast (collectives issued
//     in different orders): each rank prints its timeout error, whose roll call must say so, and
//     ends with _exit(1) (MPI_Finalize would wait for the requests left in flight).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "distributed/communicator.h"

using namespace tessera;

int main(int argc, char** argv) {
  const std::string mode = argc >= 3 ? argv[2] : "";
  if (!(argc == 4 && mode == "stall-at-exit") && !(argc == 3 && mode == "swap")) {
    std::fprintf(stderr, "usage: rank_faults <timeout_s> stall-at-exit <rank> | swap\n");
    return 2;
  }
  dist::CommOptions options;
  options.backend = "mpi";
  options.timeout_s = std::atof(argv[1]);
  auto comm = dist::make_communicator(options, dist::detect_launch());
  const int rank = comm->rank();
  if (mode == "swap") {
    Tensor t = from_vector<float>({1, 2, 3, 4, 5}, {5});
    try {
      if (rank == 0)
        comm->all_reduce(t, dist::ReduceOp::Sum);
      else
        comm->broadcast(t, 0);
      std::printf("rank %d: the swapped collectives completed\n", rank);
    } catch (const std::exception& e) {
      std::printf("rank %d: %s\n", rank, e.what());
    }
    std::fflush(stdout);
    _exit(1);
  }
  std::vector<double> one = comm->all_reduce_host({1.0}, dist::ReduceOp::Sum);
  std::printf("rank %d: all_reduce gave %g\n", rank, one[0]);
  std::fflush(stdout);
  comm.reset();
  if (rank == std::atoi(argv[3])) std::this_thread::sleep_for(std::chrono::seconds(60));
  return 0;
}
