// train::Report and describe_run_and_metrics: a metrics.jsonl that is not a regular file (a
// directory, a link to /dev/zero, a FIFO) is refused by name, before it is read or appended to
// (reading /dev/zero never ends; a FIFO blocks).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "test_util.h"
#include "train/report.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::TempDir;
namespace fs = std::filesystem;

TEST(Report, a_metrics_file_that_is_not_a_regular_file_is_refused_by_name) {
  TempDir tmp;
  const fs::path dir = tmp.path;
  const fs::path metrics = dir / "metrics.jsonl";
  std::ostringstream log;
  for (const char* kind : {"directory", "link to /dev/zero", "fifo"}) {
    SCOPED_TRACE(kind);
    fs::remove_all(metrics);
    if (kind[0] == 'd') fs::create_directories(metrics);
    if (kind[0] == 'l') fs::create_symlink("/dev/zero", metrics);
    if (kind[0] == 'f') {
      ASSERT_EQ(::mkfifo(metrics.c_str(), 0600), 0);
    }
    const std::string e = error_of([&] { (void)train::describe_run_and_metrics(dir); });
    EXPECT_NE(e.find(metrics.string() + " is not a regular file"), std::string::npos) << e;
    const std::string r = error_of([&] { train::Report(log, metrics, true, true); });
    EXPECT_NE(r.find(metrics.string() + " is not a regular file"), std::string::npos) << r;
  }
  // A regular file, also through a link, is read and appended to as before.
  fs::remove_all(metrics);
  tmp.write("real.jsonl", "{\"step\": 1}\n");
  fs::create_symlink(dir / "real.jsonl", metrics);
  EXPECT_EQ(train::describe_run_and_metrics(dir), "metrics.jsonl with 1 line");
  { train::Report(log, metrics, true, true).eval(2, 1.0, 64); }
  EXPECT_EQ(train::describe_run_and_metrics(dir), "metrics.jsonl with 2 lines");
}

// A full disk (here: a file size limit, SIGXFSZ ignored as run_main does) must not leave a torn
// line in metrics.jsonl, nor end training: the line that does not fit is taken back whole, the log
// warns once, and the first line written again says how many are missing. In a child process, so
// that the limit binds nothing else.
TEST(Report, a_line_that_cannot_be_written_is_taken_back_whole_and_counted) {
  TempDir tmp;
  const fs::path metrics = tmp.path / "metrics.jsonl", log_file = tmp.path / "log.txt";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    std::ostringstream log;
    struct rlimit was {};
    getrlimit(RLIMIT_FSIZE, &was);
    {
      train::Report out(log, metrics, true, true);
      auto line = [&](int step) {  // 40 bytes a line
        char text[64];
        std::snprintf(text, sizeof text, "{\"step\": %2d, \"loss\": 1.0000000000000}", step);
        out.emit(text);
      };
      const struct rlimit small = {100, was.rlim_max};  // two lines and a half
      setrlimit(RLIMIT_FSIZE, &small);
      for (int step = 1; step <= 4; ++step) line(step);
      setrlimit(RLIMIT_FSIZE, &was);  // space again
      line(5);
      line(6);
    }
    std::ofstream(log_file) << log.str();
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::ifstream in(metrics);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0].substr(0, 11), "{\"step\":  1");
  EXPECT_EQ(lines[1].substr(0, 11), "{\"step\":  2");
  EXPECT_EQ(lines[2].substr(0, 11), "{\"step\":  5");
  EXPECT_EQ(lines[3].substr(0, 11), "{\"step\":  6");
  const std::string log = tessera::testing::read_file(log_file);
  EXPECT_NE(log.find("warning: cannot write " + metrics.string() + " (File too large)"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("cannot write", log.find("cannot write") + 1), std::string::npos) << log;
  EXPECT_NE(log.find("the 2 line(s) before this one are missing"), std::string::npos) << log;
}

// A metrics.jsonl removed while the run writes it would swallow every later line unseen: the next
// line goes to a new file at the path, with a warning.
TEST(Report, a_metrics_file_removed_while_written_is_opened_anew) {
  TempDir tmp;
  const fs::path metrics = tmp.path / "metrics.jsonl";
  std::ostringstream log;
  train::Report out(log, metrics, true, true);
  out.emit("{\"step\": 1}");
  fs::remove(metrics);
  out.emit("{\"step\": 2}");
  EXPECT_EQ(tessera::testing::read_file(metrics), "{\"step\": 2}\n");
  EXPECT_NE(log.str().find("was removed or replaced while this run wrote it"), std::string::npos)
      << log.str();
}

// The ETA: the time this process's updates took, per update, times the steps left. A run resumed
// at step 100 of 1000 that made 50 updates in 10 s has 850 steps left: 170 s (per step done, 150
// of them, it would say 57 s). A rollback that went below the first step made more updates than
// steps: 60 updates in 12 s, at step 95, leave 905 steps, 181 s.
TEST(Report, the_eta_is_the_steps_left_at_the_pace_of_this_processs_updates) {
  EXPECT_DOUBLE_EQ(train::eta_seconds(10.0, 50, 150, 1000), 170.0);
  EXPECT_DOUBLE_EQ(train::eta_seconds(12.0, 60, 95, 1000), 181.0);
  EXPECT_EQ(train::eta_seconds(12.0, 60, 1000, 1000), 0.0);  // done
  EXPECT_EQ(train::eta_seconds(0.0, 0, 100, 1000), 0.0);     // no update yet: nothing to go by
}
