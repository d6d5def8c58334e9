// Data-parallel training end to end: build/train under OpenMPI's mpirun with 1, 2 and 4 ranks on
// the CPU (oversubscribed: CI has 2 cores), compared with one process reaching the same global
// batch through gradient accumulation. Every run here reads the same windows in the same steps
// (data/loader.h), so the runs differ only in the order f32 sums are taken.
//
// Tolerances: a rank sums its micro-batches and the all-reduce sums the ranks, so a gradient
// element differs from the one-process value by a few f32 ulps; AdamW's normalised update turns a
// relative gradient error e into a parameter change of about lr * e per step. Over these 16 steps
// the measured differences are ~1e-7 (parameters) and ~1e-6 relative (losses); the bounds below
// are 100x that, far below what a wrong average (a factor 2 or 4), a missed bucket or a
// misplaced shard produces (those change losses in the second digit).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "backend/cuda.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "core/build.h"
#include "multirank/mpirun.h"
#include "test_util.h"
#include "train/train_fixture.h"

using namespace tessera;
using namespace tessera::testing;
namespace fs = std::filesystem;

namespace {

constexpr double kParamTol = 1e-5;
constexpr double kLossRelTol = 1e-4;

struct RunDir {
  fs::path dir, metrics;
  std::map<int64_t, double> series(const std::string& key) const {
    std::map<int64_t, double> out;
    for (const auto& [step, v] : metric(metrics, key)) out[step] = std::stod(v);
    return out;
  }
  std::map<int64_t, double> losses() const { return series("loss"); }
  CheckpointData last() const { return load_checkpoint(resolve_checkpoint(dir.string())); }
};

class DataParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!built_with::mpi()) GTEST_SKIP() << "tessera was built without MPI";
    ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
  }

  // The tiny model with a global batch of 8 sequences of 16 tokens: 1 rank x 4 micro-batches of
  // 2, 2 x 2 of 2 or 4 x 1 of 2.
  Config config(int64_t steps) const {
    Config c = run_.config(steps);
    c.train.batch_size = 2;
    c.train.total_batch_size = 8 * 16;
    c.eval.interval = 0;
    c.log.interval = 1;
    return c;
  }

  // Trains under mpirun; fails the test (showing the log) when it does not exit 0.
  RunDir train(int np, Config c, const std::string& name, std::vector<std::string> args = {}) {
    c.train.run_name = name;
    const fs::path cfg = run_.dir / (name + ".yaml");
    std::ofstream(cfg) << to_yaml(c);
    const fs::path log = run_.dir / (name + ".log");
    const int rc = mpirun(np, cfg, args, log);
    EXPECT_EQ(rc, 0) << read(log);
    const fs::path dir = run_.dir / "ckpt" / name;
    return {dir, dir / "metrics.jsonl"};
  }
  // train() for the helpers outside the fixture.
  auto train_fn() {
    return [this](int np, const Config& c, const std::string& name, std::vector<std::string> args) {
      return train(np, c, name, std::move(args));
    };
  }

 public:
  // A job started by start(): `np` ranks of a config under mpirun in a child process, for a test
  // that stops or kills one of them; the test waits for (or kills) the launcher.
  struct Background {
    pid_t launcher;
    fs::path cfg, log, dir;  // the config written, the job's log, its run directory
  };

 protected:
  Background start(int np, Config c, const std::string& name) {
    c.train.run_name = name;
    Background b{-1, run_.dir / (name + ".yaml"), run_.dir / (name + ".log"),
                 run_.dir / "ckpt" / name};
    std::ofstream(b.cfg) << to_yaml(c);
    ompi_tmpdir();  // made (and later removed) by this process, not the child that _exits
    b.launcher = fork();
    if (b.launcher == 0) _exit(mpirun(np, b.cfg, {}, b.log));
    return b;
  }

  TempRun run_;
};

// The same runs on "cuda" over the NCCL backend: ranks that are processes, each with its own
// device. Runs where tessera has NCCL and a device, and mpirun exists to start the processes (the
// CUDA emulator's build: its NCCL is kernels/emu/nccl.cpp, the unique id goes through a file).
class DataParallelCuda : public DataParallel {
 protected:
  void SetUp() override {
    if (!built_with::nccl() || !cuda::available() || std::string(TESSERA_MPIEXEC).empty())
      GTEST_SKIP() << "needs NCCL, a CUDA device and mpirun";
    ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
  }
  Config config(int64_t steps) const {
    Config c = DataParallel::config(steps);
    c.train.device = "cuda";
    c.dist.backend = "nccl";
    c.dist.init = "file://" + (run_.dir / "nccl-init").string();
    fs::create_directories(run_.dir / "nccl-init");
    return c;
  }
};

// Waits (up to a minute) for the run of `cfg` to commit a checkpoint in `dir`, then returns the pid
// of its rank `rank` (found by the launcher's environment), or -1.
pid_t rank_after_a_checkpoint(int rank, const fs::path& cfg, const fs::path& dir) {
  const std::string var = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank) + '\0';
  for (int i = 0; i < 600; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (list_checkpoints(dir.string()).empty()) continue;
    for (const auto& e : fs::directory_iterator("/proc")) {
      const std::string env = read(e.path() / "environ"), cmd = read(e.path() / "cmdline");
      if (cmd.find(kTrain) == 0 && cmd.find(cfg.string()) != std::string::npos &&
          env.find(var) != std::string::npos)
        return std::stoi(e.path().filename().string());
    }
  }
  return -1;
}

double max_param_diff(const CheckpointData& a, const CheckpointData& b) {
  EXPECT_EQ(a.model.size(), b.model.size());
  double d = 0;
  for (size_t i = 0; i < a.model.size() && i < b.model.size(); ++i) {
    EXPECT_EQ(a.model[i].first, b.model[i].first);
    d = std::max(d, max_abs_diff(a.model[i].second, b.model[i].second));
  }
  return d;
}

// Losses and gradient norms step by step. The norms matter: AdamW is blind to a constant factor
// on every gradient (m / sqrt(v)), so ranks that summed instead of averaging would train alike;
// the global norm shows the factor.
void expect_same_losses(const RunDir& want, const RunDir& got, int64_t from, int64_t to,
                        double rel_tol = kLossRelTol) {
  for (const char* key : {"loss", "grad_norm"}) {
    const auto a = want.series(key), b = got.series(key);
    for (int64_t s = from; s <= to; ++s) {
      ASSERT_TRUE(a.count(s) && b.count(s)) << "no " << key << " logged for step " << s;
      EXPECT_NEAR(b.at(s), a.at(s), rel_tol * a.at(s)) << key << " at step " << s;
    }
  }
}

// Trains `c` on 4 ranks as run `name` with a checkpoint at step 8, resumes that checkpoint on 2
// ranks and on 1 (runs name_resumed_on_2 and _1), and expects the 4-rank run's losses for steps 9
// to 16 and its last parameters. Returns the checkpoint's path.
template <typename Train>
std::string resumes_on_two_and_one(Train&& train, Config c, const std::string& name) {
  c.checkpoint.interval = 8;
  c.checkpoint.keep = 4;
  const RunDir four = train(4, c, name, std::vector<std::string>{});
  const std::string at8 = (four.dir / checkpoint_name(8)).string();
  if (!fs::exists(at8)) {
    ADD_FAILURE() << "run " << name << " left no checkpoint at step 8";
    return at8;
  }
  for (int np : {2, 1}) {
    SCOPED_TRACE(np);
    const RunDir r = train(np, c, name + "_resumed_on_" + std::to_string(np),
                           std::vector<std::string>{"--resume", at8});
    expect_same_losses(four, r, 9, 16);
    EXPECT_LT(max_param_diff(four.last(), r.last()), kParamTol);
  }
  return at8;
}

}  // namespace

TEST_F(DataParallel, two_and_four_ranks_train_like_one_rank_with_the_same_global_batch) {
  const Config c = config(16);
  const RunDir one = train(1, c, "np1"), two = train(2, c, "np2"), four = train(4, c, "np4");
  expect_same_losses(one, two, 1, 16);
  expect_same_losses(one, four, 1, 16);
  const CheckpointData ref = one.last();
  const double d2 = max_param_diff(ref, two.last()), d4 = max_param_diff(ref, four.last());
  std::printf("max parameter difference vs 1 rank: 2 ranks %.3g, 4 ranks %.3g\n", d2, d4);
  EXPECT_LT(d2, kParamTol);
  EXPECT_LT(d4, kParamTol);
  // The losses did move: the comparison is not between untrained models.
  EXPECT_LT(one.losses().at(16), one.losses().at(1) - 0.5);
}

// Loss-masked examples of different lengths, a window each: the ranks' micro-batches score
// different numbers of targets, and each weighs by its share of the step's (one sum of the counts
// over ranks per step), so 2 ranks of 4 windows train as 1 rank of 8 does (a mean of the ranks'
// means would not).
TEST_F(DataParallel, masked_examples_weigh_alike_on_any_number_of_ranks) {
  const fs::path data = run_.dir / "varied";
  fs::create_directories(data);
  write_varied_sft_examples(data, 120, 9);
  Config c = config(12);
  c.data.train = (data / "train_*.bin").string();
  c.data.windows = "example";
  Config eight = c, four = c;
  eight.train.batch_size = 8;  // 1 rank x 1 micro-batch of 8
  four.train.batch_size = 4;   // 2 ranks x 1 of 4
  const RunDir one = train(1, eight, "sft_np1"), two = train(2, four, "sft_np2");
  expect_same_losses(one, two, 1, 12);
  EXPECT_LT(max_param_diff(one.last(), two.last()), kParamTol);
}

TEST_F(DataParallel, zero1_equals_plain_data_parallelism_and_holds_a_shard_of_the_state) {
  Config c = config(16);
  c.dist.bucket_mb = 0.01;  // several buckets, so shards cut through parameters
  const RunDir plain = train(2, c, "plain");
  Config z = c;
  z.dist.zero = 1;
  const RunDir zero2 = train(2, z, "zero2"), zero4 = train(4, z, "zero4");
  expect_same_losses(plain, zero2, 1, 16);
  expect_same_losses(plain, zero4, 1, 16);
  const CheckpointData a = plain.last(), b = zero2.last(), d = zero4.last();
  EXPECT_LT(max_param_diff(a, b), kParamTol);
  EXPECT_LT(max_param_diff(a, d), kParamTol);
  // The gathered optimizer state is the whole state, parameter by parameter.
  ASSERT_EQ(a.optimizer.size(), d.optimizer.size());
  for (size_t i = 0; i < a.optimizer.size(); ++i) {
    EXPECT_EQ(a.optimizer[i].first, d.optimizer[i].first);
    EXPECT_LT(max_abs_diff(a.optimizer[i].second, d.optimizer[i].second), kParamTol)
        << a.optimizer[i].first;
  }
  // The memory report: 4 ranks hold about a quarter of the moments each.
  const std::string log = read(run_.dir / "zero4.log");
  EXPECT_NE(log.find("per rank (ZeRO-1 over 4 ranks)"), std::string::npos) << log;
}

TEST_F(DataParallel, a_four_rank_run_resumes_on_two_ranks_and_on_one) {
  Config c = config(16);
  const std::string at8 = resumes_on_two_and_one(train_fn(), c, "four");
  for (int np : {2, 1}) {
    const std::string log = read(run_.dir / ("four_resumed_on_" + std::to_string(np) + ".log"));
    EXPECT_NE(log.find("(written by 4 rank(s), now " + std::to_string(np) + ")"),
              std::string::npos) << log;
  }
  // Other tokens per step cannot continue the data order: an error at start naming both figures.
  Config other = c;
  other.train.total_batch_size = 4 * 16;
  other.train.run_name = "other";
  const fs::path cfg = run_.dir / "other.yaml";
  std::ofstream(cfg) << to_yaml(other);
  const fs::path log = run_.dir / "other.log";
  EXPECT_NE(mpirun(2, cfg, {"--resume", at8}, log), 0);
  EXPECT_NE(read(log).find("trained with 128 tokens per step (on 4 rank(s)) but this run takes 64"),
            std::string::npos) << read(log);
}

// ZeRO-1 checkpoints hold the whole optimizer state, parameter by parameter (gathered from the
// shards), so a sharded run resumes on another world size: each rank loads the pieces of its own
// shards, which cut through parameters at other places than the ones of the run that saved.
// Tolerances as above.
TEST_F(DataParallel, a_zero1_run_on_four_ranks_resumes_sharded_on_two_ranks_and_on_one) {
  Config c = config(16);
  c.dist.bucket_mb = 0.01;  // several buckets, so shards cut through parameters
  c.dist.zero = 1;
  resumes_on_two_and_one(train_fn(), c, "zero_four");
}

TEST_F(DataParallel, a_spike_on_one_rank_rolls_every_rank_back_as_one_rank_does) {
  Config c = config(16);
  c.checkpoint.interval = 4;
  c.checkpoint.keep = 4;
  c.spike.window = 6;
  c.spike.inject_steps = "10";
  c.spike.inject_kind = "scale";
  c.spike.inject_rank = 1;  // rank 1's micro-batch; micro-batch 1 of the step on one process
  c.train.batch_size = 4;   // 2 ranks x 1 micro-batch, or 1 rank x 2
  const RunDir one = train(1, c, "spike1"), two = train(2, c, "spike2");
  // checkpoint.async with ZeRO-1: rank 0 copies the state (the others' shards gathered) and writes
  // it on its own thread; the rollback waits for it on every rank.
  Config za = c;
  za.dist.zero = 1;
  za.checkpoint.async = true;
  const RunDir async = train(2, za, "spike2async");
  for (const RunDir* r : {&one, &two, &async}) {
    const std::vector<std::string> events = metric_lines(r->metrics, "\"rollback\"");
    ASSERT_EQ(events.size(), 1u) << read(r->metrics);
    // Step 10 reads windows [72, 80); its skip covers the step, back to the step-8 checkpoint.
    EXPECT_NE(events[0].find("\"step\": 10, \"event\": \"rollback\""), std::string::npos)
        << events[0];
    EXPECT_NE(events[0].find("\"to_step\": 8, \"skip_begin\": 72, \"skip_end\": 80"),
              std::string::npos) << events[0];
  }
  expect_same_losses(one, two, 1, 16);
  expect_same_losses(one, async, 1, 16);
  EXPECT_LT(max_param_diff(one.last(), two.last()), kParamTol);
  EXPECT_LT(max_param_diff(one.last(), async.last()), kParamTol);
  EXPECT_EQ(fs::exists(two.dir / checkpoint_name(12)), true);
  EXPECT_NE(read(run_.dir / "spike2async.log").find("written in the background"),
            std::string::npos);
}

TEST_F(DataParallel, a_killed_rank_stops_the_job_naming_it_and_resume_continues) {
  Config c = config(100000);
  c.checkpoint.interval = 5;
  c.dist.timeout = 20;
  const auto [launcher, cfg, log, dir] = start(2, c, "killed");
  const pid_t victim = rank_after_a_checkpoint(1, cfg, dir);
  if (victim <= 0) kill(launcher, SIGKILL);
  ASSERT_GT(victim, 0) << read(log);
  kill(victim, SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  int status = 0;
  waitpid(launcher, &status, 0);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << read(log);
  EXPECT_LT(took, c.dist.timeout) << "the surviving rank did not stop within dist.timeout";
  const std::string text = read(log);
  EXPECT_NE(text.find("rank 1"), std::string::npos) << text;
  std::printf("killed rank 1; the job ended %.1f s later\n", took);

  // Every rank resumes from what rank 0 committed last.
  const int64_t at = list_checkpoints(dir.string()).back().step;
  EXPECT_EQ(mpirun(2, cfg, {"--resume", "auto", "--set", "train.stop_after=" + std::to_string(at + 2)},
                   log),
            0) << read(log);
  EXPECT_NE(read(log).find("resume: " + (dir / checkpoint_name(at)).string() + " at step " +
                           std::to_string(at)),
            std::string::npos) << read(log);
  EXPECT_TRUE(fs::exists(dir / checkpoint_name(at + 2)));
}

// A save a crash stopped between its renames (the old bytes under the name, the new digest file,
// the new bytes complete in the .tmp): on 2 ranks, rank 0 finishes the rename while rank 1 waits,
// and both resume from the new bytes (a rank reading the old ones would refuse them and fall back
// to another checkpoint than rank 0's, which stops the job).
TEST_F(DataParallel, both_ranks_resume_from_a_save_rank_0_finishes_after_a_crash) {
  Config c = config(8);
  c.checkpoint.interval = 4;
  const RunDir r = train(2, c, "renamed");
  const fs::path name = "step_00000008.h5";
  CheckpointData resaved = load_checkpoint((r.dir / name).string());
  resaved.trainer_ints["rollbacks"] = 1;  // the new bytes: the step saved again, a rollback noted
  leave_interrupted_resave(r.dir, name.string(), resaved);
  c.train.max_steps = 10;
  train(2, c, "renamed", {"--resume", "auto"});
  const std::string text = read(run_.dir / "renamed.log");
  EXPECT_NE(text.find("warning: resume: finished the save of " + (r.dir / name).string()),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("resume: " + (r.dir / name).string() + " at step 8"), std::string::npos)
      << text;
  EXPECT_EQ(r.last().trainer_ints.at("step"), 10);
  EXPECT_EQ(r.last().trainer_ints.at("rollbacks"), 1);
}

// A stop signal that reaches one rank only (here rank 1: SIGUSR1, Slurm's early warning) stops
// every rank after the same step, rank 0 saving it; the job resumed with --resume auto ends where
// the job that was never stopped ends, bit for bit.
TEST_F(DataParallel, a_stop_signal_on_one_rank_saves_on_every_rank_and_resume_continues) {
  Config c = config(400);
  c.checkpoint.interval = 5;
  c.checkpoint.keep = 4;
  c.log.interval = 1;
  const RunDir whole = train(2, c, "unstopped");
  const auto [launcher, cfg, log, dir] = start(2, c, "signalled");
  const pid_t victim = rank_after_a_checkpoint(1, cfg, dir);
  if (victim <= 0) kill(launcher, SIGKILL);
  ASSERT_GT(victim, 0) << read(log);
  kill(victim, SIGUSR1);
  int status = 0;
  waitpid(launcher, &status, 0);
  const std::string text = read(log);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << text;  // mpirun: ranks exited 138
  const size_t at = text.find("stopped at step ");
  ASSERT_NE(at, std::string::npos) << text;
  const int64_t step = std::stoll(text.substr(at + 16));
  std::printf("stopped at step %ld of 400\n", long(step));
  EXPECT_LT(step, 400);
  EXPECT_NE(text.find("on SIGUSR1 (received by another rank)"), std::string::npos) << text;
  EXPECT_EQ(resolve_checkpoint(dir.string()), (dir / checkpoint_name(step)).string());

  EXPECT_EQ(mpirun(2, cfg, {"--resume", "auto"}, log), 0) << read(log);
  expect_same_losses(whole, RunDir{dir, dir / "metrics.jsonl"}, step + 1, 400);
  EXPECT_EQ(max_param_diff(whole.last(), load_checkpoint(resolve_checkpoint(dir.string()))), 0.0);
}

// Ranks given another config (a --set on one rank) or other shards (a relative data.train read in
// another working directory, as on a node whose local data differs) stop before the first step,
// each naming what differs, instead of averaging the gradients of different runs.
TEST_F(DataParallel, ranks_started_with_another_config_or_data_stop_naming_what_differs) {
  Config c = config(4);
  c.train.run_name = "differ";
  c.data.train = "shards/train_*.bin";
  const fs::path cfg = run_.dir / "differ.yaml", log = run_.dir / "differ.log";
  std::ofstream(cfg) << to_yaml(c);
  const fs::path node0 = run_.dir / "node0", node1 = run_.dir / "node1";
  for (const fs::path& node : {node0, node1}) {
    fs::create_directories(node / "shards");
    fs::copy_file(run_.dir / "train_000.bin", node / "shards/train_000.bin");
  }
  const std::vector<std::string> args = {"--config", cfg.string()};
  std::vector<std::string> lr = args;
  lr.insert(lr.end(), {"--set", "optim.lr=0.002"});
  EXPECT_NE(mpirun_each({{node0, args}, {node0, lr}}, log), 0) << read(log);
  std::string text = read(log);
  EXPECT_NE(
      text.find(
          "rank 1 was started with another config, data or checkpoint than rank 0: optim.lr is "
          "'0.002' here; every rank must be started with the same config file"),
      std::string::npos)
      << text;
  EXPECT_NE(
      text.find("rank 1 was started with another config, data or checkpoint than rank 0 (its error "
                "names what differs)"),
      std::string::npos)
      << text;

  fs::copy_file(run_.dir / "train_000.bin", node1 / "shards/train_001.bin");
  EXPECT_NE(mpirun_each({{node0, args}, {node1, args}}, log), 0) << read(log);
  text = read(log);
  EXPECT_NE(
      text.find(
          "rank 1 was started with another config, data or checkpoint than rank 0: data.train "
          "files is 'shards/train_000.bin shards/train_001.bin' here, data.train "
          "windows is"),
      std::string::npos)
      << text;
  EXPECT_TRUE(list_checkpoints((run_.dir / "ckpt" / "differ").string()).empty());

  fs::remove(node1 / "shards/train_001.bin");
  // A shard of the same name and size holding other tokens (one byte changed: 'i' for 'a').
  std::string bytes = read(node1 / "shards/train_000.bin");
  const size_t at = bytes.find('a', 1024);
  ASSERT_NE(at, std::string::npos);
  bytes[at] = 'i';
  std::ofstream(node1 / "shards/train_000.bin", std::ios::binary | std::ios::trunc) << bytes;
  EXPECT_NE(mpirun_each({{node0, args}, {node1, args}}, log), 0) << read(log);
  text = read(log);
  EXPECT_NE(
      text.find(
          "rank 1 was started with another config, data or checkpoint than rank 0: data.train "
          "tokens is 'CRC-32C "),
      std::string::npos)
      << text;
  EXPECT_TRUE(list_checkpoints((run_.dir / "ckpt" / "differ").string()).empty());

  fs::copy_file(run_.dir / "train_000.bin", node1 / "shards/train_000.bin",
                fs::copy_options::overwrite_existing);  // the same shards in both places: it trains
  EXPECT_EQ(mpirun_each({{node0, args}, {node1, args}}, log), 0) << read(log);
  EXPECT_FALSE(list_checkpoints((run_.dir / "ckpt" / "differ").string()).empty());
}

// Each rank draws its own dropout masks (its rank folded into the seed); a checkpoint restores
// them, so an interrupted 2-rank run ends with the bytes of the uninterrupted one.
TEST_F(DataParallel, dropout_streams_resume_exactly_on_two_ranks) {
  Config c = config(12);
  c.model.dropout = 0.1;
  const RunDir whole = train(2, c, "whole");
  const RunDir split = train(2, c, "split", {"--set", "train.stop_after=6"});
  train(2, c, "split", {"--resume", "auto"});
  const CheckpointData a = whole.last(), b = split.last();
  ASSERT_EQ(a.model.size(), b.model.size());
  for (size_t i = 0; i < a.model.size(); ++i)
    EXPECT_EQ(tessera::testing::bytes(a.model[i].second), tessera::testing::bytes(b.model[i].second))
        << a.model[i].first;
  EXPECT_EQ(whole.series("loss"), split.series("loss"));
}

// A config that leaves train.total_batch_size at 0 means B x T x world tokens per step; resumed
// on another world size it keeps the checkpoint's figure (here: 1 process, 2 micro-batches).
TEST_F(DataParallel, a_run_without_a_fixed_total_batch_resumes_with_one_process) {
  Config c = config(12);
  c.train.total_batch_size = 0;
  c.train.batch_size = 4;  // 2 ranks x 4 x 16 = 128 tokens per step
  c.checkpoint.interval = 6;
  const RunDir two = train(2, c, "two");
  const RunDir one = train(1, c, "one_from_two",
                           {"--resume", (two.dir / checkpoint_name(6)).string()});
  const std::string log = read(run_.dir / "one_from_two.log");
  EXPECT_NE(log.find("keeping the checkpoint's 128 tokens per step"), std::string::npos) << log;
  EXPECT_NE(log.find("2 micro-batch(es) of 4 x 16 per step on each of 1 rank(s)"),
            std::string::npos) << log;
  expect_same_losses(two, one, 7, 12);
  EXPECT_LT(max_param_diff(two.last(), one.last()), kParamTol);
}

// LOMO and AdaLomo cannot accumulate, so the global batch is split across ranks only: 2 ranks of
// 2 sequences against one process of 4. Each gradient is averaged inside its hook before the
// fused update (and, with norm clipping, in the first pass too). LOMO is plain SGD, so its
// parameters are compared to the AdamW tolerance; AdaLomo divides by a factored second moment
// with a 1e-30 floor, which turns f32 noise on near-zero gradients into full-size steps
// (measured: 9e-4 on a few elements), so for it the losses and norms are compared, to 3e-4: that
// noise moves its gradient norm by up to 1.1e-4 relative by step 20 (measured; 7.5e-5 when the CPU
// attention accumulated in double), while ranks that summed instead of averaging would be 2x off.
TEST_F(DataParallel, lomo_and_adalomo_on_two_ranks_train_like_one_process) {
  for (const char* name : {"lomo", "adalomo"}) {
    SCOPED_TRACE(name);
    Config c = config(20);
    c.optim.name = name;
    c.optim.lr = std::string(name) == "lomo" ? 0.3 : 0.1;  // as tests/train/test_fused.cpp
    c.optim.min_lr = c.optim.lr / 10;
    c.optim.weight_decay = 0;
    // 4 windows per step: one micro-batch of 4, or of 2 on each of 2 ranks (no accumulation).
    c.train.total_batch_size = 4 * c.sequence_length();
    c.train.batch_size = 4;
    const RunDir one = train(1, c, std::string(name) + "1");
    c.train.batch_size = 2;
    const RunDir two = train(2, c, std::string(name) + "2");
    expect_same_losses(one, two, 1, 20, std::string(name) == "lomo" ? kLossRelTol : 3e-4);
    const double d = max_param_diff(one.last(), two.last());
    std::printf("%s: max parameter difference 2 ranks vs 1: %.3g\n", name, d);
    if (std::string(name) == "lomo") {
      EXPECT_LT(d, kParamTol);
    }
    EXPECT_LT(one.losses().at(20), one.losses().at(1) - 0.3);
  }
}

// Muon beside AdamW: each block matrix is orthogonalised by one rank (its owner, which holds its
// momentum) from the mean gradient and the result broadcast, so 2 and 4 ranks, with ZeRO-1 or
// without, train as 1 process with the same global batch (4 micro-batches of 2 windows, 2 on each
// of 2 ranks, 1 on each of 4). The 4-rank ZeRO-1 run (shards cutting through the matrices)
// resumes on 2 ranks and on 1, where the matrices have other owners and the shards other cuts.
TEST_F(DataParallel, muon_on_two_and_four_ranks_with_and_without_zero_trains_like_one_process) {
  Config c = config(16);
  c.optim.name = "muon";
  c.dist.bucket_mb = 0.01;  // several buckets, so shards cut through parameters
  Config z = c;
  z.dist.zero = 1;
  const RunDir one = train(1, c, "muon1"), two = train(2, c, "muon2"),
               zero4 = train(4, z, "muon4zero");
  for (const RunDir* r : {&two, &zero4}) {
    expect_same_losses(one, *r, 1, 16);
    const double d = max_param_diff(one.last(), r->last());
    std::printf("muon: max parameter difference vs 1 process: %.3g (%s)\n", d,
                r->dir.filename().c_str());
    EXPECT_LT(d, kParamTol);
  }
  EXPECT_LT(one.losses().at(16), one.losses().at(1) - 0.5);
  const std::string log = read(run_.dir / "muon2.log");
  EXPECT_NE(log.find("each matrix orthogonalised by one of the 2 ranks, which holds its momentum"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("per rank (Muon's momenta split over 2 ranks)"), std::string::npos) << log;
  resumes_on_two_and_one(train_fn(), z, "muon_zero_four");
}

// A mixture of experts, 8 of them and each token to 1: an expert that takes no token of a rank's
// micro-batch (tiny's 4 layers on 12 micro-batches of 32 tokens, this model, left 44 experts of a
// layer without a token) has no gradient there (its bucket starts when backward ends, its
// zeros averaged in),
// and the ranks still train as one process, with ZeRO-1 too; the balancing loss each step is the
// one process's (each micro-batch's is over the same windows, averaged over the ranks).
TEST_F(DataParallel, a_mixture_of_experts_on_two_ranks_trains_like_one_process) {
  Config c = config(12);
  c.model.n_expert = 8, c.model.expert_top_k = 1, c.model.router_aux_loss = 0.1;
  c.dist.bucket_mb = 0.01;  // a bucket for a few experts: some wait until backward ends
  Config z = c;
  z.dist.zero = 1;
  const RunDir one = train(1, c, "moe1"), two = train(2, c, "moe2"), zero = train(2, z, "moe2zero");
  for (const RunDir* r : {&two, &zero}) {
    SCOPED_TRACE(r->dir.filename().string());
    expect_same_losses(one, *r, 1, 12);
    const std::map<int64_t, double> a = one.series("router_balance"),
                                    b = r->series("router_balance");
    ASSERT_EQ(a.size(), 12u);
    for (const auto& [step, v] : a) EXPECT_NEAR(b.at(step), v, kLossRelTol * v) << step;
    EXPECT_LT(max_param_diff(one.last(), r->last()), kParamTol);
  }
  EXPECT_LT(one.losses().at(12), one.losses().at(1) - 0.3);
}

// train.objective dpo: each rank's micro-batches hold whole pairs (their chosen and rejected
// rows), the loss is the mean over the step's pairs on any split into ranks and micro-batches,
// and the rewards logged are the ranks' mean; ZeRO-1 shards the AdamW state as for a language
// model. The reference (checkpoint.init, read by every rank) is the base trained first.
// Parameters: 3e-8 apart after step 1 (the f32 gradient sums in another order), then apart by more
// each step as AdamW normalises gradients that differ in their last bits (measured 2.4e-6 after 4
// steps, 1.2e-5 after 12, the same with ZeRO-1): hence 5e-5, where a gradient of the wrong pairs or
// an update skipped is O(lr) = 3e-3 off. The losses and gradient norms (kLossRelTol) hold the rest.
TEST_F(DataParallel, dpo_on_two_ranks_trains_like_one_process) {
  Config base = config(20);
  base.train.batch_size = 8, base.train.total_batch_size = 0;
  const RunDir trained = train(1, base, "dpo_base");
  write_preference_pairs(run_.dir, 160);
  Config c = config(12);  // 8 pairs a step: 1 rank x 4 micro-batches of 2, 2 ranks x 2 of 2
  c.data.train = (run_.dir / "pairs" / "train_*.bin").string();
  c.data.val = (run_.dir / "pairs" / "val_*.bin").string();
  c.data.windows = "pairs", c.train.objective = "dpo", c.train.dpo_beta = 0.5;
  c.checkpoint.init = resolve_checkpoint(trained.dir.string());
  Config z = c;
  z.dist.zero = 1;
  const RunDir one = train(1, c, "dpo1"), two = train(2, c, "dpo2"), zero = train(2, z, "dpo2zero");
  for (const RunDir* r : {&two, &zero}) {
    SCOPED_TRACE(r->dir.filename().string());
    expect_same_losses(one, *r, 1, 12);
    for (const char* key : {"reward_chosen", "reward_rejected", "reward_accuracy"}) {
      const std::map<int64_t, double> a = one.series(key), b = r->series(key);
      ASSERT_EQ(a.size(), 12u) << key;
      for (const auto& [step, v] : a) EXPECT_NEAR(b.at(step), v, 1e-4 * (1 + std::abs(v))) << key;
    }
    EXPECT_LT(max_param_diff(one.last(), r->last()), 5e-5);
  }
  EXPECT_NEAR(one.losses().at(1), std::log(2.0), 1e-5);  // the policy starts as the reference
  EXPECT_LT(one.losses().at(12), 0.5);
}

// bf16 mixed precision on the device: each micro-batch's forward and backward are the same on
// every rank count (the same windows in the same steps); the runs differ in the order of the f32
// gradient sums (one rank's weight-gradient gemms add each micro-batch onto the ones before with
// beta 1, the ranks' sums meet in NCCL's all-reduce). Step 1 runs on the same weights everywhere,
// so its loss and gradient norm agree to f32 rounding (kLossRelTol): a rank that summed instead of
// averaging, or did not sync, shows there. After an update the f32 masters may differ in their
// last bits, a bf16 working copy may round the other way, and the runs part like two bf16 runs:
// measured under the CUDA emulator, 4 ranks against 1 after 8 steps, 4e-5 (loss) and 3e-4
// (gradient norm) relative and 1.3e-3 in a parameter (AdamW turns a sign flip of a near-zero
// gradient's moment into a step of ~lr); 0 when every f32 sum happens to be exact. Hence
// kBf16RelTol for the later steps and kBf16ParamTol, each several times those figures. ZeRO-1 adds
// NCCL's reduce_scatter and all_gather to the all_reduce.
constexpr double kBf16RelTol = 2e-3;
constexpr double kBf16ParamTol = 1e-2;

TEST_F(DataParallelCuda, nccl_ranks_on_cuda_train_like_one_rank_with_the_same_global_batch) {
  Config c = config(8);
  const RunDir one = train(1, c, "cuda1"), two = train(2, c, "cuda2"), four = train(4, c, "cuda4");
  c.dist.zero = 1;
  const RunDir zero = train(2, c, "cuda2zero");
  for (const RunDir* r : {&two, &four, &zero}) {
    SCOPED_TRACE(r->dir.filename().string());
    expect_same_losses(one, *r, 1, 1);
    expect_same_losses(one, *r, 2, 8, kBf16RelTol);
    const double d = max_param_diff(one.last(), r->last());
    std::printf("cuda over nccl, %s: max parameter difference vs 1 rank %.3g\n",
                r->dir.filename().c_str(), d);
    EXPECT_LT(d, kBf16ParamTol);
  }
  EXPECT_LT(one.losses().at(8), one.losses().at(1) - 0.3);
}

// A rank that stops answering (SIGSTOP: alive, so the launcher does not notice) leaves the other
// rank's collective in flight; after dist.timeout (5 s here) the surviving rank stops with an
// error that names the collective and the timeout (and, on MPI, the stopped rank, after a roll
// call of at most 1 s), and the launcher ends the job. Waits for the job's first checkpoint,
// stops rank 1, and returns the job's log once rank 0 has reported. The report must come within
// 9 s: the timeout, the roll call, at most a step before rank 0's collective starts, and margin
// for a loaded machine; a second wait while the error unwinds (10 s before the fix) fails it.
std::string stall_rank_1(DataParallel::Background job) {
  const auto [launcher, cfg, log, dir] = job;
  const pid_t victim = rank_after_a_checkpoint(1, cfg, dir);
  if (victim <= 0) kill(launcher, SIGKILL);
  EXPECT_GT(victim, 0) << read(log);
  if (victim <= 0) return read(log);
  kill(victim, SIGSTOP);
  const auto stopped = std::chrono::steady_clock::now();
  auto since = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  };
  int status = 0;
  bool ended = false, reported = false;
  while (!ended && since() < 120) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ended = waitpid(launcher, &status, WNOHANG) == launcher;
    if (!reported && read(log).find("did not complete within") != std::string::npos) {
      reported = true;
      const double after = since();
      std::printf("rank 0 reported the stalled rank %.1f s after it stopped\n", after);
      EXPECT_LT(after, 9.0) << "dist.timeout is 5 s";
      kill(victim, SIGKILL);  // the launcher then ends the job
    }
  }
  kill(victim, SIGKILL);
  if (!ended) {
    kill(launcher, SIGKILL);
    waitpid(launcher, &status, 0);
  }
  const std::string text = read(log);
  EXPECT_TRUE(reported) << "no report within 120 s of stopping rank 1:\n" << text;
  EXPECT_TRUE(ended && WIFEXITED(status) && WEXITSTATUS(status) != 0) << text;
  EXPECT_NE(text.find("timeout_s = 5"), std::string::npos) << text;
  return text;
}

// MPI: rank 0's wait gives up (src/distributed/mpi.cpp).
TEST_F(DataParallel, a_stalled_rank_is_reported_after_dist_timeout) {
  Config c = config(100000);
  c.checkpoint.interval = 2;
  c.dist.timeout = 5;
  const std::string text = stall_rank_1(start(2, c, "stalled"));
  EXPECT_NE(text.find("train (rank 0 of 2): MPI "), std::string::npos) << text;
  // The roll call names the stopped rank.
  EXPECT_NE(text.find("rank 1 did not answer within 1 s"), std::string::npos) << text;
  EXPECT_NE(text.find("Look at rank 1."), std::string::npos) << text;
}

// NCCL: nccl_comm.cu's watchdog aborts the communicator dist.timeout after the collective was
// issued, and the rank's next call reports why. On the CUDA emulator the collective waits on its
// stream's thread, as it would on a GPU, so the watchdog is what ends it.
TEST_F(DataParallelCuda, a_stalled_rank_is_reported_by_the_nccl_watchdog_after_dist_timeout) {
  Config c = config(100000);
  c.checkpoint.interval = 2;
  c.dist.timeout = 5;
  const std::string text = stall_rank_1(start(2, c, "stalled"));
  EXPECT_NE(text.find("train (rank 0 of 2): the NCCL communicator (rank 0 of 2) was aborted"),
            std::string::npos) << text;
}

// The same where mpirun's MPI carried NCCL's id (init ""): that communicator stays as the roll
// call's side channel (kernels/nccl_comm.cu), and the stopped rank's watchdog, stopped with it,
// does not answer: rank 0's error names it.
TEST_F(DataParallelCuda, a_stalled_rank_is_named_by_the_roll_call_over_mpi) {
  if (!built_with::mpi()) GTEST_SKIP() << "the roll call's side channel is MPI";
  Config c = config(100000);
  c.dist.init = "";
  c.checkpoint.interval = 2;
  c.dist.timeout = 5;
  const std::string text = stall_rank_1(start(2, c, "stalled-mpi"));
  EXPECT_NE(text.find("rank 1 did not answer within 1 s"), std::string::npos) << text;
  EXPECT_NE(text.find("Look at rank 1."), std::string::npos) << text;
}
