// train::Report and describe_run_and_metrics: a metrics.jsonl that is not a regular file (a
// directory, a link to /dev/zero, a FIFO) is refused by name, before it is read or appended to
// (reading /dev/zero never ends; a FIFO blocks).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <sstream>

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
  { train::Report(log, metrics, true, true).eval(2, 1.0); }
  EXPECT_EQ(train::describe_run_and_metrics(dir), "metrics.jsonl with 2 lines");
}
