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

// How many lines of the text of file start with `prefix`.
int lines_starting(const fs::path& file, const std::string& prefix) {
  std::ifstream in(file);
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.rfind(prefix, 0) == 0;
  return n;
}

// train's step lines in log (log.interval 1: one per step).
int step_lines(const fs::path& log) { return lines_starting(log, "step "); }

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

// Writes c to dir/<name>.yaml and returns that path.
fs::path write_config(const fs::path& dir, const std::string& name, const Config& c) {
  const fs::path cfg = dir / (name + ".yaml");
  std::ofstream(cfg) << to_yaml(c);
  return cfg;
}

// Runs train on cfg to the end; how long it took, in ms.
double timed_run(const fs::path& cfg, const fs::path& log) {
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(wait_for(launch(cfg, log)), 0) << "see " << log;
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// A run to kill over and over, c under `name`: its config, and the same with checkpoint.async for
// the odd restarts (a kill lands while the next step trains and the last one's file is still
// being written); and its uninterrupted reference, run to the end first and timed, to spread the
// kills over a run's length.
struct KilledRun {
  fs::path cfg, async_cfg, dir, log, ref_dir, ref_log;
  double full_ms = 0;
};
KilledRun prepare_run(const fs::path& root, Config c, const std::string& name) {
  KilledRun r;
  c.train.run_name = name;
  r.cfg = write_config(root, name, c);
  Config in_background = c;
  in_background.checkpoint.async = true;
  r.async_cfg = write_config(root, name + "-async", in_background);
  r.dir = root / "ckpt" / name, r.log = root / (name + ".log");
  c.train.run_name = "reference";
  r.ref_dir = root / "ckpt" / "reference", r.ref_log = root / "reference.log";
  r.full_ms = timed_run(write_config(root, "reference", c), r.ref_log);
  return r;
}

struct Kills {
  int kills = 0, during_write = 0;
};

// Starts `train --resume auto` (on cfgs[i % cfgs.size()] for the i-th restart) and SIGKILLs it
// after 1%..8% of full_ms (startup included), so the kills land at every kind of moment (loading,
// training, writing a checkpoint) and still leave work for the last run; `count` times. After
// every kill run_dir must hold a checkpoint that loads completely once it has held one. A run that
// finishes before its kill is started over from an empty directory.
Kills kill_repeatedly(const std::vector<fs::path>& cfgs, const fs::path& log,
                      const fs::path& run_dir, double full_ms, int count) {
  std::mt19937 gen(::testing::UnitTest::GetInstance()->random_seed());
  std::uniform_real_distribution<double> delay(0.01 * full_ms, 0.08 * full_ms);
  Kills k;
  int finished_early = 0;
  bool had_checkpoint = false;
  while (k.kills < count) {
    pid_t pid = launch(cfgs[k.kills % cfgs.size()], log);
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(delay(gen)));
    kill(pid, SIGKILL);
    const int status = wait_for(pid);
    if (status == 0) {  // finished before the kill: start over so every kill hits a live run
      ++finished_early;
      fs::remove_all(run_dir);
      had_checkpoint = false;
      if (finished_early >= 5) ADD_FAILURE() << "the run keeps finishing before the kill";
      if (finished_early >= 5) return k;
      continue;
    }
    if (status != -SIGKILL) ADD_FAILURE() << "train failed on its own; see " << log;
    if (status != -SIGKILL) return k;
    ++k.kills;
    if (has_tmp(run_dir)) ++k.during_write;
    std::ostringstream warn;
    std::optional<Resumable> r;
    try {
      r = load_resumable(run_dir.string(), warn, true);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "after kill " << k.kills << ": " << e.what();
      return k;
    }
    if (had_checkpoint && !r) ADD_FAILURE() << "kill " << k.kills << " lost every checkpoint";
    had_checkpoint = had_checkpoint || r.has_value();
  }
  return k;
}

// The checkpoints `latest` names in the two run directories hold the same step and the same
// parameters bit for bit, and the last loss logged for each step is the same.
void expect_same_run(const fs::path& run_dir, const fs::path& ref_dir, int64_t step) {
  const CheckpointData a = load_checkpoint(resolve_checkpoint(run_dir.string()));
  const CheckpointData b = load_checkpoint(resolve_checkpoint(ref_dir.string()));
  EXPECT_EQ(a.trainer_ints.at("step"), step);
  ASSERT_EQ(a.model.size(), b.model.size());
  for (size_t i = 0; i < a.model.size(); ++i) {
    const Tensor &x = a.model[i].second, &y = b.model[i].second;
    ASSERT_EQ(x.nbytes(), y.nbytes());
    EXPECT_EQ(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()), 0)
        << a.model[i].first << " differs from the uninterrupted run";
  }
  // Steps redone after a crash log again; the last line for each step matches the reference.
  EXPECT_EQ(tessera::testing::metric(run_dir / "metrics.jsonl", "loss"),
            tessera::testing::metric(ref_dir / "metrics.jsonl", "loss"));
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
  const KilledRun r = prepare_run(run.dir, c, "crashy");
  const Kills k = kill_repeatedly({r.cfg, r.async_cfg}, r.log, r.dir, r.full_ms, 20);
  ASSERT_EQ(k.kills, 20);
  std::printf("[ crash ] %d kills (seed %d, full run %.0f ms): %d while a write was in flight, "
              "%d restarts resumed from a checkpoint\n",
              k.kills, ::testing::UnitTest::GetInstance()->random_seed(), r.full_ms,
              k.during_write, lines_starting(r.log, "resume: "));

  ASSERT_EQ(wait_for(launch(r.cfg, r.log)), 0) << "the final resume failed; see " << r.log;
  expect_same_run(r.dir, r.ref_dir, 300);
}

// The same through loss-spike rollbacks (train/rollback.cpp): a kill can land after a rollback
// has pointed `latest` at its target and before the later checkpoints are deleted or the next
// save records the skipped windows. The restart then resumes the target, meets the poisoned
// windows again and rolls back again, so the run ends where the uninterrupted one does, bit for
// bit, with every checkpoint loadable on the way.
TEST(Crash, sigkills_during_rollbacks_end_the_run_as_the_uninterrupted_one) {
  ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
  tessera::testing::TempRun run;
  Config c = run.config(160);
  c.model.dropout = 0.1;
  c.checkpoint.interval = 2, c.checkpoint.keep = 2;
  c.eval.interval = 0;
  c.log.interval = 1;
  c.spike.window = 8;
  // Scaled windows must be caught against a detector window that came back from a checkpoint;
  // 61 and 62 spike one after the other, 130 lands near the end. (A rollback's skipped windows
  // bring later poisoned windows to earlier steps, and each spike can take more than one
  // rollback: max_rollbacks leaves room.)
  c.spike.inject_steps = "25,61,62,100,130";
  c.spike.inject_kind = "scale";
  c.spike.max_rollbacks = 20;
  const KilledRun r = prepare_run(run.dir, c, "spiky");
  const int rollbacks = lines_starting(r.ref_log, "rollback ");
  ASSERT_GE(rollbacks, 4) << "the injected spikes were not all rolled back; see " << r.ref_log;
  const Kills k = kill_repeatedly({r.cfg, r.async_cfg}, r.log, r.dir, r.full_ms, 12);
  ASSERT_EQ(k.kills, 12);
  // Then kills aimed at the moment just after a rollback (its log line comes once the later
  // checkpoints are deleted), before the next save records the skipped windows.
  int aimed = 0;
  for (int i = 0; i < 3; ++i) {
    const int seen = lines_starting(r.log, "rollback ");
    const pid_t pid = launch(r.cfg, r.log);
    for (int t = 0; t < 60000 && lines_starting(r.log, "rollback ") == seen; ++t)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    kill(pid, SIGKILL);
    const int status = wait_for(pid);
    if (status == 0) break;  // no rollback left before the end
    ASSERT_EQ(status, -SIGKILL) << "train failed on its own; see " << r.log;
    ++aimed;
    std::ostringstream warn;
    ASSERT_NO_THROW(ASSERT_TRUE(load_resumable(r.dir.string(), warn, true).has_value()));
  }
  std::printf("[ crash ] %d kills (seed %d, full run %.0f ms, %d rollbacks): %d while a write was "
              "in flight, %d rollbacks logged by the killed runs; then %d kills just after a "
              "rollback\n",
              k.kills, ::testing::UnitTest::GetInstance()->random_seed(), r.full_ms, rollbacks,
              k.during_write, lines_starting(r.log, "rollback "), aimed);
  EXPECT_GE(aimed, 1);

  ASSERT_EQ(wait_for(launch(r.cfg, r.log)), 0) << "the final resume failed; see " << r.log;
  expect_same_run(r.dir, r.ref_dir, 160);
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
  expect_same_run(dir, run.dir / "ckpt" / "reference", 300);
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
  c.eval.interval = 3, c.eval.steps = 4000;
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
