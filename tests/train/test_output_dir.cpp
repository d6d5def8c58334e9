// The directory merge and import write a new checkpoint into (train/output_dir.h): new or empty
// directories pass; a run directory (a latest file, step_*.h5 checkpoints) and a file are refused
// by name, with nothing written.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <vector>

#include "core/tensor.h"
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

// merge and import write all or nothing: a failure after some files exist (a full disk, here a
// file size limit in a child process, or a failing extra file) removes what the call made, the
// directory too when it made it, so a second try is not refused as a run directory.
TEST(OutputDir, a_failed_write_leaves_the_directory_as_it_was) {
  TempDir tmp;
  CheckpointData ck;
  ck.model = {{"w", from_vector<float>(std::vector<float>(4096, 1.0f), {64, 64})}};
  ck.trainer_ints = {{"step", 0}};
  ck.config_yaml = "model: {}\n";
  const fs::path fresh = tmp.path / "fresh", kept = tmp.path / "kept";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // the checkpoint itself does not fit
    std::signal(SIGXFSZ, SIG_IGN);
    const struct rlimit small = {4096, RLIM_INFINITY};
    setrlimit(RLIMIT_FSIZE, &small);
    const std::string e = error_of([&] { train::write_checkpoint_dir(fresh.string(), "step_00000000.h5", ck); });
    // HDF5's driver message is cut to its reason: no "bytes actually written = 1844...".
    _exit(has(e, "file write failed: File too large") && !has(e, "bytes actually") &&
                  has(e, "nothing was left in " + fresh.string())
              ? 0
              : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(fs::exists(fresh));

  fs::create_directories(kept);
  tmp.write("kept/notes.txt", "the user's");
  const std::string e = error_of([&] {
    train::write_checkpoint_dir(kept.string(), "step_00000000.h5", ck, [&](auto* made) {
      made->push_back(kept / "tokenizer");
      fs::create_directories(kept / "tokenizer");
      tmp.write("kept/tokenizer/encoder.json", "{}");
      throw Error("cannot copy vocab.bpe");
    });
  });
  EXPECT_TRUE(has(e, "cannot copy vocab.bpe") && has(e, "nothing was left in " + kept.string())) << e;
  EXPECT_TRUE(fs::exists(kept / "notes.txt"));
  EXPECT_FALSE(fs::exists(kept / "tokenizer"));
  EXPECT_NO_THROW(train::check_new_checkpoint_dir(kept.string(), "--output"));
  train::write_checkpoint_dir(kept.string(), "step_00000000.h5", ck);  // and the retry writes
  EXPECT_TRUE(fs::exists(kept / "latest") && fs::exists(kept / "step_00000000.h5"));
}
