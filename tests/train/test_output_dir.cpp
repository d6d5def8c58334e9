// The directory merge and import write a new checkpoint into (train/output_dir.h): new or empty
// directories pass; a run directory (a latest file, step_*.h5 checkpoints) and a file are refused
// by name, with nothing written.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"
#include "train/output_dir.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::TempDir;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& msg, const std::string& part) {
  return msg.find(part) != std::string::npos;
}

}  // namespace

TEST(OutputDir, a_missing_or_empty_directory_passes) {
  TempDir tmp;
  EXPECT_NO_THROW(train::check_new_checkpoint_dir((tmp.path / "new").string(), "--output"));
  EXPECT_FALSE(fs::exists(tmp.path / "new"));  // the check creates nothing
  fs::create_directories(tmp.path / "empty");
  EXPECT_NO_THROW(train::check_new_checkpoint_dir((tmp.path / "empty").string(), "--output"));
  tmp.write("empty/notes.txt", "not a checkpoint");
  EXPECT_NO_THROW(train::check_new_checkpoint_dir((tmp.path / "empty").string(), "--output"));
}

TEST(OutputDir, a_run_directory_is_refused_by_name) {
  TempDir tmp;
  const std::string dir = tmp.path.string();
  tmp.write("latest", "step_00000003.h5\n");  // a latest alone: its target was pruned or moved
  std::string m = error_of([&] { train::check_new_checkpoint_dir(dir, "--output"); });
  EXPECT_TRUE(has(m, "--output " + dir) && has(m, "latest") && has(m, "nothing was written")) << m;
  fs::remove(tmp.path / "latest");
  tmp.write("step_00000002.h5", "");
  tmp.write("step_00000003.h5", "");
  m = error_of([&] { train::check_new_checkpoint_dir(dir, "--output"); });
  EXPECT_TRUE(has(m, "2 checkpoints up to step_00000003.h5") && has(m, "nothing was written"))
      << m;
  EXPECT_FALSE(fs::exists(tmp.path / "latest"));
}

TEST(OutputDir, a_file_is_refused_as_a_file) {
  TempDir tmp;
  const std::string file = tmp.write("run", "x");
  const std::string m = error_of([&] { train::check_new_checkpoint_dir(file, "--output"); });
  EXPECT_TRUE(has(m, "--output " + file + " is a file") && has(m, "nothing was written")) << m;
}
