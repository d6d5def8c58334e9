// Retention and the choice of the checkpoint to resume from.
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>

#include "checkpoint/retention.h"
#include "checkpoint/sidecar.h"
#include "core/tensor.h"
#include "test_util.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

class Retention : public ::testing::Test {
 protected:
  std::string save(int64_t step) {
    CheckpointData ck;
    ck.model = {{"w", from_vector<float>({float(step)}, {1})}};
    ck.trainer_ints["step"] = step;
    ck.rng["default"] = {1, 2};
    ck.data["epoch"] = 0;
    const std::string name = checkpoint_name(step);
    save_checkpoint((dir / name).string(), ck);
    write_latest(dir.string(), name);
    return (dir / name).string();
  }
  std::vector<int64_t> steps() const {
    std::vector<int64_t> s;
    for (const CheckpointFile& f : list_checkpoints(dir.string())) s.push_back(f.step);
    return s;
  }

  tessera::testing::TempDir tmp{"tessera_retention"};
  fs::path dir = tmp.path;
};

}  // namespace

TEST_F(Retention, names_and_listing_order_by_step) {
  EXPECT_EQ(checkpoint_name(500), "step_00000500.h5");
  for (int64_t s : {30, 0, 5, 100000000}) save(s);
  std::ofstream(dir / "step_12.h5.tmp") << "x";
  std::ofstream(dir / "notes.txt") << "x";
  std::ofstream(dir / "step_abc.h5") << "x";
  // An .h5 of the user's with as many characters before its digits as "step_" is not a checkpoint
  // (pruning would delete it), nor is a step_*.h5 directory.
  std::ofstream(dir / "best_40.h5") << "x";
  std::ofstream(dir / "stepX41.h5") << "x";
  fs::create_directory(dir / "step_42.h5");
  EXPECT_EQ(steps(), (std::vector<int64_t>{0, 5, 30, 100000000}));
}

TEST_F(Retention, keeps_the_newest_k_milestones_and_the_protected_file) {
  for (int64_t s = 100; s <= 1000; s += 100) save(s);
  const std::vector<std::string> deleted =
      prune_checkpoints(dir.string(), {.keep = 3, .milestone_interval = 400}, "");
  // 400 and 800 are milestones; of the others the newest three stay.
  std::vector<std::string> deleted_names;
  for (const std::string& path : deleted) deleted_names.push_back(fs::path(path).filename());
  EXPECT_EQ(deleted_names, (std::vector<std::string>{checkpoint_name(100), checkpoint_name(200),
                                                     checkpoint_name(300), checkpoint_name(500),
                                                     checkpoint_name(600)}));
  EXPECT_EQ(steps(), (std::vector<int64_t>{400, 700, 800, 900, 1000}));
  prune_checkpoints(dir.string(), {.keep = 2, .milestone_interval = 0},
                    checkpoint_name(400));
  EXPECT_EQ(steps(), (std::vector<int64_t>{400, 900, 1000}));
}

// `latest` is the commit point: a save whose `latest` cannot be written (a full disk; here a
// directory in the way of latest.tmp) takes its new checkpoint back, so --resume auto finds the
// run as `latest` names it instead of a newer file nothing committed. A step saved again keeps
// its (replaced) file.
TEST_F(Retention, a_save_whose_latest_cannot_be_written_is_taken_back) {
  save(10);
  CheckpointData ck;
  ck.model = {{"w", from_vector<float>({20.0f}, {1})}};
  ck.trainer_ints["step"] = 20;
  ck.rng["default"] = {1, 2};
  ck.data["epoch"] = 0;
  fs::create_directories(dir / "latest.tmp" / "blocker");
  const std::string e = tessera::testing::error_of(
      [&] { commit_checkpoint(dir.string(), checkpoint_name(20), ck, {.keep = 3}); });
  EXPECT_NE(e.find("step_00000020.h5 was removed again: `latest` still names the checkpoint "
                   "before it"),
            std::string::npos)
      << e;
  EXPECT_EQ(steps(), (std::vector<int64_t>{10}));
  EXPECT_FALSE(fs::exists(dir / "step_00000020.h5.sha256"));
  EXPECT_EQ(tessera::testing::read_file(dir / "latest"), checkpoint_name(10) + "\n");
  ck.trainer_ints["step"] = 10;  // the same step again: replaced, not removed
  EXPECT_NE(tessera::testing::error_of(
                [&] { commit_checkpoint(dir.string(), checkpoint_name(10), ck, {.keep = 3}); }),
            "");
  EXPECT_EQ(steps(), (std::vector<int64_t>{10}));
  fs::remove_all(dir / "latest.tmp");
  commit_checkpoint(dir.string(), checkpoint_name(20), ck, {.keep = 3});
  EXPECT_EQ(steps(), (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(tessera::testing::read_file(dir / "latest"), checkpoint_name(20) + "\n");
}

TEST_F(Retention, interrupted_writes_are_removed) {
  save(10);
  std::ofstream(dir / "step_00000020.h5.tmp") << "half a file";
  std::ofstream(dir / "step_00000020.h5.sha256.tmp") << "half a digest";
  std::ofstream(dir / "step_00000030.h5.sha256") << "a digest whose checkpoint was never renamed";
  std::ofstream(dir / "notes.sha256") << "not ours";
  std::vector<std::string> removed = remove_interrupted_writes(dir.string());
  EXPECT_EQ(removed, (std::vector<std::string>{(dir / "step_00000020.h5.sha256.tmp").string(),
                                               (dir / "step_00000020.h5.tmp").string(),
                                               (dir / "step_00000030.h5.sha256").string()}));
  EXPECT_TRUE(fs::exists(dir / "step_00000010.h5"));
  EXPECT_TRUE(fs::exists(dir / "step_00000010.h5.sha256"));  // its checkpoint is there
  EXPECT_TRUE(fs::exists(dir / "notes.sha256"));
}

TEST_F(Retention, a_latest_that_is_a_directory_is_refused_at_start_naming_it) {
  for (const char* name : {"latest", "latest.tmp"}) {
    SCOPED_TRACE(name);
    fs::create_directories(dir / name);
    const std::string e =
        tessera::testing::error_of([&] { remove_interrupted_writes(dir.string()); });
    EXPECT_NE(e.find((dir / name).string() + " is not a regular file"), std::string::npos) << e;
    fs::remove_all(dir / name);
  }
  fs::create_directories(dir / "notes");  // the run's own files only
  EXPECT_TRUE(remove_interrupted_writes(dir.string()).empty());
}

TEST_F(Retention, resume_takes_latest_and_falls_back_past_damaged_files) {
  std::ostringstream warn;
  EXPECT_FALSE(load_resumable(dir.string(), warn, true).has_value());  // nothing yet: start fresh

  save(10);
  save(20);
  const std::string s30 = save(30);
  std::optional<Resumable> r = load_resumable(dir.string(), warn, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->path, s30);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 30);
  EXPECT_EQ(warn.str(), "");

  fs::resize_file(s30, fs::file_size(s30) / 2);  // a torn write
  r = load_resumable(dir.string(), warn, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 20);
  EXPECT_NE(warn.str().find("skipping checkpoint " + s30), std::string::npos) << warn.str();

  // `latest` naming a file that is gone: the newest complete file on disk is used.
  std::ofstream(dir / "latest") << "step_00000099.h5\n";
  std::ostringstream warn2;
  r = load_resumable(dir.string(), warn2, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 20);
  EXPECT_NE(warn2.str().find("step_00000099.h5"), std::string::npos) << warn2.str();
}

TEST_F(Retention, no_loadable_checkpoint_is_an_error_naming_every_file) {
  const std::string a = save(10), b = save(20);
  fs::resize_file(a, 100);
  fs::resize_file(b, 0);
  std::ostringstream warn;
  const std::string msg =
      tessera::testing::error_of([&] { load_resumable(dir.string(), warn, true); });
  EXPECT_NE(msg.find(a), std::string::npos) << msg;
  EXPECT_NE(msg.find(b), std::string::npos) << msg;
}

// The run goes on from an older step and saves the passed-over step again: the file passed over
// must not be in the way. It is moved aside, with its digest file, where nothing lists, prunes or
// cleans up.
TEST_F(Retention, resume_moves_aside_what_it_passes_over_so_no_save_writes_over_it) {
  save(10);
  save(20);
  const std::string s30 = save(30);
  fs::resize_file(s30, fs::file_size(s30) / 2);  // a torn write, or a copy cut short
  const std::string torn = tessera::testing::read_file(s30);
  std::ostringstream warn;
  std::optional<Resumable> r = load_resumable(dir.string(), warn, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 20);
  const std::string aside = s30 + ".rejected";
  EXPECT_NE(warn.str().find("skipping checkpoint " + s30), std::string::npos) << warn.str();
  EXPECT_NE(warn.str().find("moved it aside to " + aside), std::string::npos) << warn.str();
  EXPECT_FALSE(fs::exists(s30));
  EXPECT_FALSE(fs::exists(digest_path(s30)));
  EXPECT_EQ(tessera::testing::read_file(aside), torn);
  EXPECT_TRUE(fs::exists(digest_path(aside)));
  EXPECT_EQ(steps(), (std::vector<int64_t>{10, 20}));

  // The run saves step 30 again, cleans up and prunes: the file moved aside stays as it was.
  save(30);
  remove_interrupted_writes(dir.string());
  prune_checkpoints(dir.string(), {.keep = 1}, checkpoint_name(30));
  EXPECT_EQ(steps(), (std::vector<int64_t>{30}));
  EXPECT_EQ(tessera::testing::read_file(aside), torn);
  EXPECT_TRUE(fs::exists(digest_path(aside)));
  EXPECT_EQ(describe_run(dir.string()), "latest, checkpoint step_00000030.h5");

  // A second file passed over at the same step does not replace the first one.
  save(10);
  fs::resize_file(dir / checkpoint_name(30), 100);
  write_latest(dir.string(), checkpoint_name(30));
  // A name is taken when either of its two files is there: a digest file left alone at .rejected.2
  // moves the checkpoint on to .rejected.3 and is not written over.
  std::ofstream(digest_path(s30 + ".rejected.2")) << "left";
  std::ostringstream warn2;
  r = load_resumable(dir.string(), warn2, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 10);
  EXPECT_NE(warn2.str().find("moved it aside to " + s30 + ".rejected.3"), std::string::npos)
      << warn2.str();
  EXPECT_EQ(tessera::testing::read_file(aside), torn);
  EXPECT_EQ(fs::file_size(s30 + ".rejected.3"), 100u);
  EXPECT_EQ(tessera::testing::read_file(digest_path(s30 + ".rejected.2")), "left");
  EXPECT_FALSE(fs::exists(s30 + ".rejected.2"));
}

// Only the run's own step_*.h5 files are moved aside: a damaged file of another name that
// `latest` was pointed at by hand is passed over and left where it is.
TEST_F(Retention, a_damaged_file_of_another_name_is_passed_over_in_place) {
  save(10);
  std::ofstream(dir / "hand_picked.h5") << "not a checkpoint";
  write_latest(dir.string(), "hand_picked.h5");
  std::ostringstream warn;
  std::optional<Resumable> r = load_resumable(dir.string(), warn, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 10);
  EXPECT_EQ(tessera::testing::read_file((dir / "hand_picked.h5").string()), "not a checkpoint");
  EXPECT_FALSE(fs::exists(dir / "hand_picked.h5.rejected")) << warn.str();
}

// Every rank of a run calls load_resumable on the same directory and must resume from the same
// step; only rank 0 moves files aside, and a rank that comes to a file after it was moved away
// chooses as the others did.
TEST_F(Retention, every_rank_chooses_alike_and_only_one_moves_files) {
  save(10);
  const std::string s20 = save(20);
  fs::resize_file(s20, 100);
  std::ostringstream other, first;
  std::optional<Resumable> r = load_resumable(dir.string(), other, false);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 10);
  EXPECT_TRUE(fs::exists(s20)) << "a rank that does not move files moved one";
  EXPECT_NE(other.str().find("skipping checkpoint " + s20), std::string::npos) << other.str();

  r = load_resumable(dir.string(), first, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 10);
  EXPECT_FALSE(fs::exists(s20));

  std::ostringstream late;  // `latest` still names step 20, which is gone now
  r = load_resumable(dir.string(), late, false);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 10);
}

namespace {

// The message of the Error fn throws ("" when it returns), with file permissions in force: run
// here, or, when this process is root (which reads any file), in a child that becomes nobody.
// nullopt when the child cannot give up root.
std::optional<std::string> error_as_unprivileged(const std::function<void()>& fn) {
  if (geteuid() != 0) {
    try {
      fn();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }
  int fds[2];
  if (pipe(fds) != 0) return std::nullopt;
  const pid_t pid = fork();
  if (pid == 0) {
    ::close(fds[0]);
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
    std::string msg;
    try {
      fn();
    } catch (const Error& e) {
      msg = e.what();
    }
    if (::write(fds[1], msg.data(), msg.size()) < 0) _exit(3);
    _exit(0);
  }
  ::close(fds[1]);
  std::string msg;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) msg.append(buf, size_t(n));
  ::close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 2) return std::nullopt;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child ended with " << status;
  return msg;
}

}  // namespace

// A checkpoint that cannot be read (permission denied, an I/O error) may well be intact: passing
// over it would let the run save that step again, over it. Resume stops instead.
TEST_F(Retention, an_unreadable_checkpoint_stops_resume_instead_of_being_passed_over) {
  save(10);
  const std::string s20 = save(20);
  const std::string bytes = tessera::testing::read_file(s20);
  fs::permissions(dir, fs::perms(0755));
  fs::permissions(s20, fs::perms::none);
  std::ostringstream warn;
  const std::optional<std::string> msg =
      error_as_unprivileged([&] { load_resumable(dir.string(), warn, true); });
  fs::permissions(s20, fs::perms(0644));
  if (!msg) GTEST_SKIP() << "cannot run as an unprivileged user here";
  for (const std::string& part :
       {s20, std::string("Permission denied"), std::string("resume stopped")})
    EXPECT_NE(msg->find(part), std::string::npos) << "'" << part << "' not in: " << *msg;
  EXPECT_EQ(msg->find('\n'), std::string::npos) << *msg;
  EXPECT_EQ(tessera::testing::read_file(s20), bytes);
  EXPECT_FALSE(fs::exists(s20 + ".rejected"));
  EXPECT_EQ(steps(), (std::vector<int64_t>{10, 20}));
}
