// mpirun -np N rank_exit <timeout_s> <rank>: the ranks make an MPI communicator with that timeout
// and all-reduce once; then <rank> sleeps 60 s before leaving main while the others leave at once.
// tests/multirank/test_rank_startup.cpp checks that the others' exit (MPI_Finalize waits for every
// rank) does not wait for the sleeper past the timeout.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "distributed/communicator.h"

using namespace tessera;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: rank_exit <timeout_s> <rank that stalls>\n");
    return 2;
  }
  dist::CommOptions options;
  options.backend = "mpi";
  options.timeout_s = std::atof(argv[1]);
  const int stalls = std::atoi(argv[2]);
  int rank = 0;
  {
    auto comm = dist::make_communicator(options, dist::detect_launch());
    rank = comm->rank();
    std::vector<double> one = comm->all_reduce_host({1.0}, dist::ReduceOp::Sum);
    std::printf("rank %d: all_reduce gave %g\n", rank, one[0]);
    std::fflush(stdout);
  }
  if (rank == stalls) std::this_thread::sleep_for(std::chrono::seconds(60));
  return 0;
}
