// The launch and the roll call's text, process-local (each rank of test_comm's mpirun runs them
// alone): shard_range, detect_launch (the launchers' variables, LaunchInfo::job) and
// roll_call_report on answers a real roll call cannot produce on demand. Linked into test_comm
// (its main is in test_comm.cpp).
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "distributed/backends.h"
#include "distributed/communicator.h"
#include "test_util.h"

namespace tessera::dist {
namespace {

using testing::error_of;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// ---- shard_range ----------------------------------------------------------------------------

TEST(ShardRange, shards_tile_the_buffer_in_rank_order_with_empty_tails) {
  EXPECT_EQ(shard_range(10, 4, 0).end, 3);
  EXPECT_EQ(shard_range(10, 4, 3).begin, 9);
  EXPECT_EQ(shard_range(10, 4, 3).end, 10);
  EXPECT_EQ(shard_range(5, 4, 3).size(), 0);  // c = 2: [0,2) [2,4) [4,5) [5,5)
  EXPECT_EQ(shard_range(1, 4, 2).begin, 1);   // past the end: empty at n
  EXPECT_EQ(shard_range(1, 4, 2).size(), 0);
  EXPECT_EQ(shard_range(0, 4, 0).size(), 0);
  EXPECT_EQ(shard_range(7, 1, 0).size(), 7);
  for (int world = 1; world <= 9; ++world)
    for (int64_t n = 0; n <= 40; ++n) {
      int64_t next = 0;
      const int64_t c = (n + world - 1) / world;
      for (int r = 0; r < world; ++r) {
        const Range s = shard_range(n, world, r);
        ASSERT_EQ(s.begin, std::min(next, n)) << n << " over " << world << ", rank " << r;
        ASSERT_TRUE(s.size() == c || (s.size() < c && s.end == n));
        next = s.end;
      }
      ASSERT_EQ(next, n);
    }
  EXPECT_TRUE(contains(error_of([] { shard_range(5, 2, 2); }), "rank 2 of world 2"));
  EXPECT_TRUE(contains(error_of([] { shard_range(5, 0, 0); }), "world 0"));
  EXPECT_TRUE(contains(error_of([] { shard_range(-1, 2, 0); }), "negative"));
}

// ---- detect_launch --------------------------------------------------------------------------

// Clears every launch variable for a test (mpirun set its own in this process) and restores them.
class LaunchEnv {
 public:
  LaunchEnv() {
    for (const char* v : kVars) {
      if (const char* s = std::getenv(v)) saved_[v] = s;
      ::unsetenv(v);
    }
  }
  ~LaunchEnv() {
    for (const char* v : kVars) ::unsetenv(v);
    for (const auto& [k, v] : saved_) ::setenv(k.c_str(), v.c_str(), 1);
  }
  void set(const char* var, const char* value) { ::setenv(var, value, 1); }

 private:
  static constexpr const char* kVars[] = {"OMPI_COMM_WORLD_RANK",
                                          "OMPI_COMM_WORLD_SIZE",
                                          "OMPI_COMM_WORLD_LOCAL_RANK",
                                          "SLURM_PROCID",
                                          "SLURM_NTASKS",
                                          "SLURM_LOCALID",
                                          "RANK",
                                          "WORLD_SIZE",
                                          "LOCAL_RANK",
                                          "PMI_RANK",
                                          "PMI_SIZE",
                                          "MPI_LOCALRANKID",
                                          "PMIX_RANK",
                                          "PMIX_NAMESPACE",
                                          "OMPI_MCA_ess_base_jobid",
                                          "SLURM_JOB_ID",
                                          "SLURM_STEP_ID",
                                          "TORCHELASTIC_RUN_ID",
                                          "SLURM_RESTART_COUNT",
                                          "TORCHELASTIC_RESTART_COUNT"};
  std::map<std::string, std::string> saved_;
};

void expect_launch(const LaunchInfo& got, int rank, int world, int local, const std::string& who) {
  EXPECT_EQ(got.rank, rank);
  EXPECT_EQ(got.world, world);
  EXPECT_EQ(got.local_rank, local);
  EXPECT_EQ(got.launcher, who);
}

TEST(DetectLaunch, each_launchers_variables_are_read_in_priority_order) {
  LaunchEnv env;
  expect_launch(detect_launch(), 0, 1, 0, "none");
  env.set("RANK", "3");
  env.set("WORLD_SIZE", "8");
  env.set("LOCAL_RANK", "1");
  expect_launch(detect_launch(), 3, 8, 1, "env");
  env.set("SLURM_PROCID", "5");
  env.set("SLURM_NTASKS", "8");
  env.set("SLURM_LOCALID", "2");
  expect_launch(detect_launch(), 5, 8, 2, "srun");  // srun before torchrun-style variables
  env.set("PMI_RANK", "6");
  env.set("PMI_SIZE", "7");
  env.set("MPI_LOCALRANKID", "0");
  // MPICH's or Intel MPI's mpiexec inside a Slurm allocation of another size.
  expect_launch(detect_launch(), 6, 7, 0, "mpiexec");
  env.set("OMPI_COMM_WORLD_RANK", "1");
  env.set("OMPI_COMM_WORLD_SIZE", "7");
  env.set("OMPI_COMM_WORLD_LOCAL_RANK", "0");
  expect_launch(detect_launch(), 1, 7, 0, "mpirun");
}

// An MPI launcher starts this very process: its variables win over an allocation's (mpirun -np 2
// in an sbatch script of 4 tasks). PMIx defines no world-size variable: PMIX_RANK alone is no
// launch.
TEST(DetectLaunch, an_mpi_launchers_variables_win_over_slurms_and_pmix_rank_alone_is_no_launch) {
  LaunchEnv env;
  env.set("SLURM_PROCID", "0");
  env.set("SLURM_NTASKS", "4");
  env.set("OMPI_COMM_WORLD_RANK", "1");
  env.set("OMPI_COMM_WORLD_SIZE", "2");
  expect_launch(detect_launch(), 1, 2, 1, "mpirun");
  LaunchEnv pmix;
  pmix.set("PMIX_RANK", "3");
  expect_launch(detect_launch(), 0, 1, 0, "none");
  pmix.set("PMI_RANK", "1");
  pmix.set("PMI_SIZE", "2");
  expect_launch(detect_launch(), 1, 2, 1, "mpiexec");  // no MPI_LOCALRANKID: the rank
}

// Slurm's variables in a shell that starts the ranks itself (salloc, sbatch: SLURM_NTASKS=1 around
// a RANK/WORLD_SIZE loop or a per-node launcher) describe the allocation, not the process: the
// launch of more than one process wins, else a disagreement is an error naming both.
TEST(DetectLaunch, launchers_that_disagree_on_the_world_take_the_one_of_several_ranks_or_stop) {
  for (int r = 0; r < 2; ++r) {
    LaunchEnv env;
    env.set("SLURM_PROCID", "0");
    env.set("SLURM_NTASKS", "1");
    env.set("SLURM_LOCALID", "0");
    env.set("RANK", std::to_string(r).c_str());
    env.set("WORLD_SIZE", "2");
    expect_launch(detect_launch(), r, 2, r, "env");
  }
  {
    LaunchEnv env;  // srun of 2 tasks, a leftover RANK/WORLD_SIZE of one process
    env.set("SLURM_PROCID", "1");
    env.set("SLURM_NTASKS", "2");
    env.set("RANK", "0");
    env.set("WORLD_SIZE", "1");
    expect_launch(detect_launch(), 1, 2, 1, "srun");
  }
  LaunchEnv env;
  env.set("SLURM_PROCID", "3");
  env.set("SLURM_NTASKS", "4");
  env.set("RANK", "1");
  env.set("WORLD_SIZE", "2");
  const std::string message = error_of([] { detect_launch(); });
  for (const char* part : {"the srun launch (SLURM_PROCID=3, SLURM_NTASKS=4)",
                           "the env launch (RANK=1, WORLD_SIZE=2)", "disagree on the world size"})
    EXPECT_TRUE(contains(message, part)) << "'" << part << "' not in: " << message;
}

// LaunchInfo::job: the launch's name from its own launcher's variables, safe in a file name.
TEST(DetectLaunch, the_job_name_comes_from_the_launcher_that_started_the_ranks) {
  LaunchEnv env;
  env.set("SLURM_JOB_ID", "77");
  env.set("SLURM_STEP_ID", "3");
  env.set("RANK", "0");
  env.set("WORLD_SIZE", "2");
  EXPECT_EQ(detect_launch().job, "");  // RANK/WORLD_SIZE: Slurm's ids are the allocation's
  env.set("TORCHELASTIC_RUN_ID", "none");
  EXPECT_EQ(detect_launch().job, "");  // torchrun's default, the same for every launch
  env.set("TORCHELASTIC_RUN_ID", "run/a b");
  EXPECT_EQ(detect_launch().job, "run_a_b");
  env.set("TORCHELASTIC_RESTART_COUNT", "1");
  EXPECT_EQ(detect_launch().job, "run_a_b.r1");
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
  env.set("SLURM_PROCID", "1");
  env.set("SLURM_NTASKS", "2");
  EXPECT_EQ(detect_launch().job, "77.3");
  env.set("SLURM_RESTART_COUNT", "2");  // a requeued job: the same id and step, another leg
  EXPECT_EQ(detect_launch().job, "77.3.r2");
  env.set("OMPI_COMM_WORLD_RANK", "1");
  env.set("OMPI_COMM_WORLD_SIZE", "2");
  env.set("OMPI_MCA_ess_base_jobid", "123");
  EXPECT_EQ(detect_launch().job, "123");
  env.set("PMIX_NAMESPACE", "prterun-node-99@1");
  EXPECT_EQ(detect_launch().job, "prterun-node-99_1");
}

TEST(DetectLaunch, a_missing_local_rank_defaults_to_the_rank) {
  LaunchEnv env;
  env.set("RANK", "2");
  env.set("WORLD_SIZE", "4");
  expect_launch(detect_launch(), 2, 4, 2, "env");
}

TEST(DetectLaunch, malformed_or_inconsistent_values_are_errors_naming_the_variable) {
  struct Case {
    std::vector<std::pair<const char*, const char*>> vars;
    std::vector<std::string> expect;  // parts of the message
  };
  const std::vector<Case> cases = {
      {{{"OMPI_COMM_WORLD_RANK", "abc"}, {"OMPI_COMM_WORLD_SIZE", "2"}},
       {"OMPI_COMM_WORLD_RANK", "'abc'", "not an integer"}},
      {{{"SLURM_PROCID", "1x"}, {"SLURM_NTASKS", "2"}}, {"SLURM_PROCID", "'1x'"}},
      {{{"RANK", ""}, {"WORLD_SIZE", "2"}}, {"RANK", "not an integer"}},
      {{{"RANK", "0"}, {"WORLD_SIZE", " 2"}}, {"WORLD_SIZE", "' 2'"}},
      {{{"RANK", "2"}, {"WORLD_SIZE", "2"}}, {"RANK=2", "WORLD_SIZE=2"}},
      {{{"RANK", "-1"}, {"WORLD_SIZE", "2"}}, {"RANK=-1"}},
      {{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "0"}}, {"SLURM_NTASKS=0", "at least 1"}},
      {{{"OMPI_COMM_WORLD_RANK", "0"}}, {"OMPI_COMM_WORLD_SIZE", "unset"}},
      {{{"LOCAL_RANK", "0"}}, {"RANK", "unset"}},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}}, {"LOCAL_RANK=2"}},
      {{{"RANK", "0"}, {"WORLD_SIZE", "99999999999"}}, {"WORLD_SIZE", "not an integer"}},
      {{{"PMI_RANK", "0"}, {"PMI_SIZE", "x"}}, {"PMI_SIZE", "'x'", "not an integer"}},
      {{{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}, {"MPI_LOCALRANKID", "5"}}, {"MPI_LOCALRANKID=5"}},
  };
  for (const Case& c : cases) {
    LaunchEnv env;
    for (const auto& [k, v] : c.vars) env.set(k, v);
    const std::string message = error_of([] { detect_launch(); });
    for (const std::string& part : c.expect)
      EXPECT_TRUE(contains(message, part)) << "'" << part << "' not in: " << message;
  }
}


// ---- the roll call's report ------------------------------------------------------------------

// The roll call's report (launch.cpp), on answers a real roll call cannot produce on demand: a
// rank in another collective (issued in a different order) and one answering unreadably.
TEST(RollCall, the_report_names_silent_ranks_and_ranks_in_other_collectives) {
  EXPECT_EQ(rank_list({3}), "rank 3");
  EXPECT_EQ(rank_list({1, 2}), "ranks 1, 2");
  EXPECT_EQ(rank_list({7, 1, 2, 3, 5, 6, 2, 9}), "ranks 1-3, 5-7, 9");
  std::vector<std::optional<std::string>> answers(6);
  answers[1] = roll_call_answer(12, 3.04, "all_reduce (sum) of 7 f32 elements on rank 1 of 6");
  answers[2] = roll_call_answer(11, 2.5, "broadcast of 3 i32 elements on rank 2 of 6");
  answers[4] = "garbage";
  const std::string report =
      roll_call_report(0, 12, "all_reduce (sum) of 7 f32 elements on rank 0 of 6", answers, 1);
  EXPECT_TRUE(contains(report, "ranks 3, 5 did not answer within 1 s")) << report;
  EXPECT_TRUE(contains(report, "rank 1 is waiting in this collective too (#12)")) << report;
  EXPECT_TRUE(contains(report, "rank 2 has waited 2.5 s in collective #11 (broadcast of 3 i32 "
                               "elements on rank 2 of 6)"))
      << report;
  EXPECT_TRUE(contains(report, "rank 4 answered unreadably")) << report;
  EXPECT_TRUE(contains(report, "This rank is in collective #12 (all_reduce (sum) of 7 f32 "
                               "elements): the ranks issue collectives in different orders"))
      << report;
  EXPECT_TRUE(contains(report, "Look at ranks 2-5.")) << report;
  // A rank that has not issued the collective (an NCCL watchdog's answer for its rank).
  std::vector<std::optional<std::string>> idle(2);
  idle[1] = roll_call_answer(6, -1, "");
  const std::string late = roll_call_report(0, 7, "barrier on rank 0 of 2", idle, 1);
  EXPECT_TRUE(contains(late, "rank 1 has issued 6 collectives, not this one") &&
              contains(late, "This rank is in collective #7 (barrier). Look at rank 1.") &&
              !contains(late, "different orders"))
      << late;
  // Every peer in the same collective: no rank to blame.
  std::vector<std::optional<std::string>> all(3);
  all[0] = all[2] = roll_call_answer(4, 9, "barrier on rank x of 3");
  const std::string stuck = roll_call_report(1, 4, "barrier on rank 1 of 3", all, 1);
  EXPECT_TRUE(contains(stuck, "ranks 0, 2 are waiting in this collective too (#4)") &&
              contains(stuck, "the transport between them is stuck"))
      << stuck;
  // Swapped collectives: the same number, another collective (rank 1 broadcasts where this rank
  // all-reduces).
  std::vector<std::optional<std::string>> swapped(2);
  swapped[1] = roll_call_answer(2, 2.0, "broadcast of 5 f32 elements on rank 1 of 2");
  const std::string order =
      roll_call_report(0, 2, "all_reduce (sum) of 5 f32 elements on rank 0 of 2", swapped, 1);
  EXPECT_TRUE(contains(order, "rank 1 has waited 2.0 s in another collective #2 (broadcast of 5 "
                              "f32 elements on rank 1 of 2)") &&
              contains(order, "different orders") && contains(order, "Look at rank 1."))
      << order;
}

}  // namespace
}  // namespace tessera::dist
