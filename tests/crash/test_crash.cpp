// Crash safety: build/train is killed with SIGKILL at random moments (checkpoint writes included:
// this run writes one after every step, every other restart on the background thread of
// checkpoint.async) and restarted with --resume auto each time. After every
// kill the run directory must hold a checkpoint that loads completely, and the run that finally
// completes must end with exactly the parameters of a run that was never interrupted.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "config/config.h"
#include "train/train_fixture.h"
#include "test_util.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

const std::string kTrain = tessera::testing::bin_dir() + "/train";

// Starts `train --config cfg --resume auto`, output appended to log; returns the pid.
pid_t launch(const fs::path& cfg, const fs::path& log) {
  pid_t pid = fork();
  if (pid == 0) {
    FILE* out = std::fopen(log.c_str(), "a");
    if (out) {
      dup2(fileno(out), 1);
      dup2(fileno(out), 2);
    }
    execl(kTrain.c_str(), kTrain.c_str(), "--config", cfg.c_str(), "--resume", "auto",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Waits for pid; its exit status, or -signal when a signal ended it.
int wait_for(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// The lines of log starting with "step " (train's step lines; log.interval 1: one per step).
int step_lines(const fs::path& log) {
  std::ifstream in(log);
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.rfind("step ", 0) == 0;
  return n;
}

// Waits (up to a minute) until log holds `more` step lines beyond `seen`.
bool wait_for_steps(const fs::path& log, int seen, int more) {
  for (int i = 0; i < 12000 && step_lines(log) < seen + more; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return step_lines(log) >= seen + more;
}

bool has_tmp(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".tmp") return true;
  return false;
}

}  // namespace

TEST(Crash, twenty_sigkills_never_leave_the_run_without_a_resumable_checkpoint) {
  ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
  tessera::testing::TempRun run;
  Config c = run.config(300);
  c.model.dropout = 0.1;                  // the RNG must come back too
  c.checkpoint.interval = 1, c.checkpoint.keep = 2;
  c.eval.interval = 0;
  c.log.interval = 1;
  c.train.run_name = "crashy";
  const fs::path cfg = run.dir / "crashy.yaml";
  std::ofstream(cfg) << to_yaml(c);
  // The same run with its saves written in the background (odd restarts): a kill lands while the
  // next step trains and the last one's file is still being written.
  Config in_background = c;
  in_background.checkpoint.async = true;
  const fs::path async_cfg = run.dir / "crashy-async.yaml";
  std::ofstream(async_cfg) << to_yaml(in_background);
  const fs::path run_dir = run.dir / "ckpt" / "crashy";
  const fs::path log = run.dir / "crashy.log";

  // How long an uninterrupted run takes here, to spread the kills over it.
  Config ref = c;
  ref.train.run_name = "reference";
  const fs::path ref_cfg = run.dir / "reference.yaml";
  std::ofstream(ref_cfg) << to_yaml(ref);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(wait_for(launch(ref_cfg, run.dir / "reference.log")), 0);
  const double full_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  const unsigned seed = ::testing::UnitTest::GetInstance()->random_seed();
  std::mt19937 gen(seed);
  // Each restart lives 1%..8% of a full run (startup included), so 20 kills land at every kind of
  // moment (loading, training, writing a checkpoint) and still leave work for the last run.
  std::uniform_real_distribution<double> delay(0.01 * full_ms, 0.08 * full_ms);
  int kills = 0, during_write = 0, finished_early = 0;
  bool had_checkpoint = false;
  while (kills < 20) {
    pid_t pid = launch(kills % 2 ? async_cfg : cfg, log);
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(delay(gen)));
    kill(pid, SIGKILL);
    const int status = wait_for(pid);
    if (status == 0) {  // finished before the kill: start over so every kill hits a live run
      ++finished_early;
      fs::remove_all(run_dir);
      had_checkpoint = false;
      ASSERT_LT(finished_early, 5) << "the run keeps finishing before the kill";
      continue;
    }
    ASSERT_EQ(status, -SIGKILL) << "train failed on its own; see " << log;
    ++kills;
    if (has_tmp(run_dir)) ++during_write;
    std::ostringstream warn;
    std::optional<Resumable> r;
    ASSERT_NO_THROW(r = load_resumable(run_dir.string(), warn, true)) << "after kill " << kills;
    if (had_checkpoint) {
      ASSERT_TRUE(r.has_value()) << "kill " << kills << " lost every checkpoint";
    }
    had_checkpoint = had_checkpoint || r.has_value();
  }
  std::ostringstream resumed;
  resumed << std::ifstream(log).rdbuf();
  const std::string text = resumed.str();
  int resumes = 0;
  for (size_t i = text.find("\nresume: "); i != std::string::npos;
       i = text.find("\nresume: ", i + 1))
    ++resumes;
  std::printf("[ crash ] %d kills (seed %u, full run %.0f ms): %d while a write was in flight, "
              "%d restarts resumed from a checkpoint\n",
              kills, seed, full_ms, during_write, resumes);

  ASSERT_EQ(wait_for(launch(cfg, log)), 0) << "the final resume failed; see " << log;
  const CheckpointData a = load_checkpoint(resolve_checkpoint(run_dir.string()));
  const CheckpointData b = load_checkpoint(resolve_checkpoint((run.dir / "ckpt" / "reference").string()));
  EXPECT_EQ(a.trainer_ints.at("step"), 300);
  ASSERT_EQ(a.model.size(), b.model.size());
  for (size_t i = 0; i < a.model.size(); ++i) {
    const Tensor &x = a.model[i].second, &y = b.model[i].second;
    ASSERT_EQ(x.nbytes(), y.nbytes());
    EXPECT_EQ(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()), 0)
        << a.model[i].first << " differs from the uninterrupted run";
  }
  // Steps redone after a crash log again; the last line for each step matches the reference.
  EXPECT_EQ(tessera::testing::metric(run_dir / "metrics.jsonl", "loss"),
            tessera::testing::metric(run.dir / "ckpt" / "reference" / "metrics.jsonl", "loss"));
}

// SIGTERM, SIGINT and SIGUSR1 (train/stop_signals.h) each end the step in progress, save it and
// exit with 128 + the signal, with no periodic checkpoint to fall back on (checkpoint.interval 0).
// Resumed after each, the run ends with the parameters and losses of a run that was never stopped.
TEST(Signals, a_stop_signal_saves_the_step_it_lands_on_and_resume_continues_exactly) {
  ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
  tessera::testing::TempRun run;
  Config c = run.config(300);
  c.model.dropout = 0.1;
  c.checkpoint.interval = 0;  // saves at the end only: any earlier file is a stop's
  c.eval.interval = 0;
  c.log.interval = 1;
  for (const char* name : {"reference", "stopped"}) {
    c.train.run_name = name;
    std::ofstream(run.dir / (std::string(name) + ".yaml")) << to_yaml(c);
  }
  ASSERT_EQ(wait_for(launch(run.dir / "reference.yaml", run.dir / "reference.log")), 0);
  const fs::path cfg = run.dir / "stopped.yaml", log = run.dir / "stopped.log";
  const fs::path dir = run.dir / "ckpt" / "stopped";

  int64_t last = 0;
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) {
    SCOPED_TRACE(sig);
    const int seen = step_lines(log);
    const pid_t pid = launch(cfg, log);
    ASSERT_TRUE(wait_for_steps(log, seen, 5)) << "no steps logged; see " << log;
    kill(pid, sig);
    ASSERT_EQ(wait_for(pid), 128 + sig) << "see " << log;
    const std::vector<CheckpointFile> files = list_checkpoints(dir.string());
    ASSERT_FALSE(files.empty());
    EXPECT_GT(files.back().step, last);
    EXPECT_LT(files.back().step, 300);
    last = files.back().step;
    EXPECT_EQ(resolve_checkpoint(dir.string()), files.back().path);
    EXPECT_NO_THROW(load_checkpoint(files.back().path));
  }
  std::ostringstream text;
  text << std::ifstream(log).rdbuf();
  for (const char* name : {"SIGTERM", "SIGINT", "SIGUSR1"})
    EXPECT_NE(text.str().find(std::string(" on ") + name + " (received here): checkpoint "),
              std::string::npos)
        << name << "\n"
        << text.str();

  ASSERT_EQ(wait_for(launch(cfg, log)), 0) << "see " << log;
  const CheckpointData a = load_checkpoint(resolve_checkpoint(dir.string()));
  const CheckpointData b =
      load_checkpoint(resolve_checkpoint((run.dir / "ckpt" / "reference").string()));
  EXPECT_EQ(a.trainer_ints.at("step"), 300);
  ASSERT_EQ(a.model.size(), b.model.size());
  for (size_t i = 0; i < a.model.size(); ++i)
    EXPECT_EQ(std::memcmp(a.model[i].second.data_ptr(), b.model[i].second.data_ptr(),
                          a.model[i].second.nbytes()),
              0)
        << a.model[i].first << " differs from the run that was never stopped";
  EXPECT_EQ(tessera::testing::metric(dir / "metrics.jsonl", "loss"),
            tessera::testing::metric(run.dir / "ckpt" / "reference" / "metrics.jsonl", "loss"));
}

// Whether `sig` is pending for process pid (shared by its threads: what kill(2) sends).
bool pending(pid_t pid, int sig) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("ShdPnd:", 0) == 0)
      return (std::stoull(line.substr(7), nullptr, 16) >> (sig - 1)) & 1;
  return false;
}

// A second SIGINT while the first is still being honoured (the step in progress) ends the process
// at once, by the signal, as Ctrl-C twice does: no save, the last committed checkpoint stays
// `latest`. Steps of about half a second here, so the second lands inside one.
TEST(Signals, a_second_sigint_ends_the_process_at_once_leaving_the_last_checkpoint) {
  ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
  tessera::testing::TempRun run;
  Config c = run.config(1000);
  c.model.n_layer = 4, c.model.n_embd = 384, c.train.batch_size = 64;
  c.checkpoint.interval = 2;
  c.eval.interval = 0;
  c.log.interval = 1;
  const fs::path cfg = run.dir / "slow.yaml", log = run.dir / "slow.log";
  std::ofstream(cfg) << to_yaml(c);
  const fs::path dir = run.dir / "ckpt" / "run";
  const pid_t pid = launch(cfg, log);
  ASSERT_TRUE(wait_for_steps(log, 0, 3)) << "no steps logged; see " << log;
  const std::string before = resolve_checkpoint(dir.string());
  kill(pid, SIGINT);
  for (int i = 0; i < 2000 && pending(pid, SIGINT); ++i)  // taken by a thread: the handler ran
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  kill(pid, SIGINT);
  ASSERT_EQ(wait_for(pid), -SIGINT) << "see " << log;
  std::ostringstream text;
  text << std::ifstream(log).rdbuf();
  EXPECT_EQ(text.str().find("stopped at step"), std::string::npos) << text.str();
  const std::string after = resolve_checkpoint(dir.string());
  const int64_t step = list_checkpoints(dir.string()).back().step;
  std::printf("[ signals ] latest %s before the signals, %s after (step %ld)\n",
              fs::path(before).filename().c_str(), fs::path(after).filename().c_str(), long(step));
  EXPECT_EQ(after, (dir / checkpoint_name(step)).string());
  EXPECT_EQ(step % 2, 0);  // a periodic save's, not a stop's
  EXPECT_NO_THROW(load_checkpoint(after));
}

// A stop signal that lands during an evaluation stops the run at the step it evaluates, once the
// evaluation's line is out, not after one more step (the loop used to look at the signal only
// once a step). Steps here take milliseconds and the evaluation at step 3 about 3 s (8,000
// batches of a long validation split); the signal goes as soon as step 3's line, written just
// before that evaluation starts, is in the log (polled every 5 ms).
TEST(Signals, a_stop_signal_during_an_evaluation_stops_at_the_evaluated_step) {
  ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
  tessera::testing::TempRun run;
  Config c = run.config(1000);
  c.data.val = tessera::testing::long_val(run, 1 << 20);
  c.eval.interval = 3, c.eval.steps = 8000;
  c.log.interval = 1;
  const fs::path cfg = run.dir / "eval.yaml", log = run.dir / "eval.log";
  std::ofstream(cfg) << to_yaml(c);
  const pid_t pid = launch(cfg, log);
  ASSERT_TRUE(wait_for_steps(log, 0, 3)) << "no steps logged; see " << log;
  const auto sent = std::chrono::steady_clock::now();
  kill(pid, SIGTERM);
  ASSERT_EQ(wait_for(pid), 128 + SIGTERM) << "see " << log;
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  std::ostringstream text;
  text << std::ifstream(log).rdbuf();
  const std::string s = text.str();
  std::printf("[ signals ] the run stopped %.2f s after SIGTERM\n", took);
  const size_t val3 = s.find("step     3 | val loss");
  EXPECT_NE(val3, std::string::npos) << s;
  EXPECT_NE(s.find("stopped at step 3 on SIGTERM (received here)", val3), std::string::npos) << s;
  EXPECT_EQ(s.find("step     4"), std::string::npos) << s;
  EXPECT_EQ(list_checkpoints((run.dir / "ckpt" / "run").string()).back().step, 3);
}

// A stop signal that lands while a step trains, on a step that is due an evaluation, still
// evaluates it after saving it: the resumed run goes on from the next step and would never
// evaluate this one. Every step is evaluated here (eval.interval 1; one batch, a fraction of a
// half-second step), so whichever step the signal lands in, the stopped step has its val loss.
TEST(Signals, a_stop_signal_during_a_step_due_an_evaluation_still_evaluates_it) {
  ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
  tessera::testing::TempRun run;
  Config c = run.config(1000);
  c.model.n_layer = 4, c.model.n_embd = 384, c.train.batch_size = 64;
  c.data.val = tessera::testing::long_val(run, 1 << 16);
  c.eval.interval = 1, c.eval.steps = 1;
  c.log.interval = 1;
  const fs::path cfg = run.dir / "due.yaml", log = run.dir / "due.log";
  std::ofstream(cfg) << to_yaml(c);
  const pid_t pid = launch(cfg, log);
  ASSERT_TRUE(wait_for_steps(log, 0, 2)) << "no steps logged; see " << log;
  kill(pid, SIGTERM);
  ASSERT_EQ(wait_for(pid), 128 + SIGTERM) << "see " << log;
  const fs::path dir = run.dir / "ckpt" / "run";
  const int64_t stopped = list_checkpoints(dir.string()).back().step;
  std::ostringstream text;
  text << std::ifstream(log).rdbuf();
  char line[64];
  std::snprintf(line, sizeof line, "step %5ld | val loss", long(stopped));
  EXPECT_NE(text.str().find(line), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("stopped at step " + std::to_string(stopped) + " on SIGTERM"),
            std::string::npos)
      << text.str();
  EXPECT_TRUE(tessera::testing::metric(dir / "metrics.jsonl", "val_loss").count(stopped));
}
