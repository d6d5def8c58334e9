// A launch whose ranks do not all start, or do not all end: MPI_Init_thread and MPI_Finalize wait
// for every rank and nothing cancels them, so a rank that never starts (or is stopped before MPI
// starts), or stalls after its last collective, left the others waiting for good, past
// dist.timeout. The backend ends such a wait after dist.timeout with a message naming the rank
// that gave up, and the launcher then ends the rest. And ranks that issue collectives in
// different orders: the roll call of a timed-out collective names them.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/build.h"
#include "multirank/mpirun.h"
#include "test_util.h"
#include "train/train_fixture.h"

using namespace tessera;
using namespace tessera::testing;
namespace fs = std::filesystem;

namespace {

// Rank 1 of the launch is `sleep 60`, a process that never calls MPI_Init: rank 0 must give up
// after its 3 s (the 40 s bound leaves room for a loaded machine; waiting for sleep takes 60).
TEST(RankStartup, a_rank_that_never_starts_ends_the_launch_after_dist_timeout) {
  if (!built_with::mpi()) GTEST_SKIP() << "tessera was built without MPI";
  TempRun run;
  Config c = run.config(2);
  c.dist.timeout = 3;
  const fs::path cfg = run.dir / "startup.yaml", log = run.dir / "startup.log";
  std::ofstream(cfg) << to_yaml(c);
  const auto start = std::chrono::steady_clock::now();
  const int rc = run_logged(mpirun_command() + " -np 1 " + kTrain + " --config " + cfg.string() +
                                " : -np 1 sleep 60",
                            log);
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string out = read(log);
  EXPECT_NE(rc, 0) << out;
  EXPECT_LT(took, 40) << out;
  EXPECT_NE(out.find("rank 0 of 2: MPI did not start within dist.timeout = 3 s"),
            std::string::npos)
      << out;
  EXPECT_FALSE(fs::exists(fs::path(c.checkpoint.dir) / c.train.run_name)) << out;
}

// tests/distributed/rank_faults.cpp, run under mpirun with the given arguments: its output.
std::string rank_faults(int np, const std::string& args, int* rc, double* took) {
  const std::string helper = bin_dir() + "/tests/rank_faults";
  EXPECT_TRUE(fs::exists(helper)) << helper << " is not built";
  TempDir dir("tessera_rank_faults");
  const fs::path log = dir.path / "faults.log";
  const auto start = std::chrono::steady_clock::now();
  *rc = run_logged(mpirun_command() + " -np " + std::to_string(np) + " " + helper + " " + args,
                   log);
  *took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return read(log);
}

// 2 ranks all-reduce once, then rank 1 sleeps 60 s before it leaves main. Rank 0's exit gives up
// on it after the 2 s timeout (MPI_Finalize alone waited the 60 s) and the launcher ends the job
// as failed, within 30 s on a loaded machine.
TEST(RankExit, a_rank_stalled_after_its_last_collective_does_not_hold_the_others_exit) {
  if (!built_with::mpi()) GTEST_SKIP() << "tessera was built without MPI";
  int rc = 0;
  double took = 0;
  const std::string out = rank_faults(2, "2 stall-at-exit 1", &rc, &took);
  EXPECT_NE(rc, 0) << out;
  EXPECT_LT(took, 30) << out;
  EXPECT_NE(out.find("rank 1: all_reduce gave 2"), std::string::npos) << out;
  EXPECT_NE(out.find("rank 0 of 2: another rank has not reached the end of the job within "
                     "dist.timeout = 2 s"),
            std::string::npos)
      << out;
}

// Collectives issued in different orders (rank 0 all-reduces, rank 1 broadcasts): both wait in
// their first collective, so the numbers agree; the roll call compares what the collectives are
// and each rank names the other.
TEST(RollCall, swapped_collectives_are_named_by_each_rank) {
  if (!built_with::mpi()) GTEST_SKIP() << "tessera was built without MPI";
  int rc = 0;
  double took = 0;
  const std::string out = rank_faults(2, "2 swap", &rc, &took);
  EXPECT_NE(out.find("rank 0: MPI all_reduce (sum) of 5 f32 elements on rank 0 of 2 (collective "
                     "#1) did not complete"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("rank 1 has waited"), std::string::npos) << out;
  EXPECT_NE(out.find("s in another collective #1 (broadcast of 5 f32 elements on rank 1 of 2)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("the ranks issue collectives in different orders. Look at rank 1."),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("Look at rank 0."), std::string::npos) << out;  // rank 1's own report
}

}  // namespace
