// The run directory's lock (src/train/run_lock.h): one train at a time in a run directory.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <string>

#include "core/error.h"
#include "test_util.h"
#include "train/run_lock.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

namespace tessera::train {
namespace {

namespace fs = std::filesystem;
using testing::error_of;

std::string fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("tessera_run_lock_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

TEST(RunLock, a_second_lock_on_the_directory_is_refused_naming_it_and_the_holder) {
  const std::string dir = fresh_dir("second");
  std::ostringstream warn;
  {
    RunLock first(dir, warn);
    ASSERT_TRUE(first.held());
    // flock's locks belong to the open file: a second open in this process is refused as another
    // process's would be.
    const std::string e = error_of([&] { RunLock second(dir, warn); });
    EXPECT_NE(e.find("run directory " + dir + " is in use"), std::string::npos) << e;
    EXPECT_NE(e.find(" " + std::to_string(getpid())), std::string::npos) << e;
    EXPECT_NE(e.find("--run-name"), std::string::npos) << e;
  }
  RunLock again(dir, warn);  // released with the first
  EXPECT_TRUE(again.held());
  EXPECT_EQ(warn.str(), "");
}

TEST(RunLock, a_holder_that_dies_without_cleaning_up_releases_it) {
  const std::string dir = fresh_dir("died");
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::ostringstream warn;
    new RunLock(dir, warn);  // never destroyed: the process ends holding it
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::ostringstream warn;
  RunLock lock(dir, warn);
  EXPECT_TRUE(lock.held());
}

TEST(RunLock, a_directory_that_cannot_hold_the_file_is_an_error_naming_it) {
  const std::string dir = fresh_dir("missing") + "/not_there";
  std::ostringstream warn;
  const std::string e = error_of([&] { RunLock lock(dir, warn); });
  EXPECT_NE(e.find(dir + "/train.lock"), std::string::npos) << e;
}

TEST(RunLock, train_refuses_a_run_directory_another_train_holds_and_writes_nothing_there) {
  testing::TempRun run;
  Config cfg = run.config(2);
  const fs::path run_dir = fs::path(cfg.checkpoint.dir) / cfg.train.run_name;
  fs::create_directories(run_dir);
  std::ostringstream log;
  {
    RunLock other(run_dir.string(), log);  // as a train running there holds it
    const std::string e = error_of([&] { run_training(cfg, log); });
    EXPECT_NE(e.find("run directory " + run_dir.string() + " is in use"), std::string::npos) << e;
    EXPECT_FALSE(fs::exists(run_dir / "metrics.jsonl"));
  }
  const TrainResult r = run_training(cfg, log);  // free again
  EXPECT_EQ(r.steps, 2);
  RunLock after(run_dir.string(), log);  // and released when the run ended
  EXPECT_TRUE(after.held());
}

// --resume auto moves aside the checkpoints it passes over; a train running in the directory may be
// saving those very steps again (after a rollback). So the lock comes first: a held directory is
// refused before any file in it is renamed.
TEST(RunLock, resume_auto_moves_nothing_aside_in_a_directory_another_train_holds) {
  testing::TempRun run;
  Config cfg = run.config(2);
  cfg.checkpoint.interval = 1;  // steps 1 and 2: the second damaged, the first to resume from
  std::ostringstream log;
  ASSERT_EQ(run_training(cfg, log).steps, 2);
  const fs::path run_dir = fs::path(cfg.checkpoint.dir) / cfg.train.run_name;
  const fs::path newest = run_dir / "step_00000002.h5";
  ASSERT_TRUE(fs::exists(newest));
  fs::resize_file(newest, fs::file_size(newest) / 2);  // as a save in progress might look
  cfg.checkpoint.resume = "auto";
  cfg.train.max_steps = 4;
  {
    RunLock other(run_dir.string(), log);
    const std::string e = error_of([&] { run_training(cfg, log); });
    EXPECT_NE(e.find("run directory " + run_dir.string() + " is in use"), std::string::npos) << e;
    EXPECT_TRUE(fs::exists(newest));
    EXPECT_FALSE(fs::exists(run_dir / "step_00000002.h5.rejected"));
  }
  EXPECT_EQ(run_training(cfg, log).steps, 4);  // free: the damaged file is passed over
  EXPECT_TRUE(fs::exists(run_dir / "step_00000002.h5.rejected")) << log.str();
}

}  // namespace
}  // namespace tessera::train
