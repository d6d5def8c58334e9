// Checkpoint integrity: the digest file written with every checkpoint, its check before HDF5 reads
// the file (every loader), files written before digests existed, per-tensor checksums, and what
// resume and retention do with digest files.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "checkpoint/digest.h"
#include "checkpoint/probe.h"
#include "checkpoint/retention.h"
#include "checkpoint/sidecar.h"
#include "core/tensor.h"
#include "test_util.h"
#include "train/rollback.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::read_file;
namespace fs = std::filesystem;

namespace {

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

void expect_mentions(const std::string& msg, const std::vector<std::string>& parts) {
  for (const std::string& part : parts)
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
}

CheckpointData small_checkpoint(int64_t step = 500) {
  Generator g(11);
  CheckpointData ck;
  ck.model.emplace_back("transformer.wte.weight", randn({13, 8}, g));
  ck.model.emplace_back("transformer.ln_f.weight", randn({8}, g));
  ck.optimizer.emplace_back("transformer.wte.weight/m", randn({13, 8}, g));
  ck.trainer_ints["step"] = step;
  ck.trainer_tensors.emplace_back("scale", full({}, 0.5));  // a 0-d dataset is guarded too
  ck.rng["default"] = {1, 2};
  ck.data["epoch"] = 0;
  ck.config_yaml = "model:\n  n_layer: 1\n";
  return ck;
}

// Parameters shaped like small_checkpoint's model, zeroed.
std::vector<std::pair<std::string, Tensor>> model_like(const CheckpointData& ck) {
  std::vector<std::pair<std::string, Tensor>> params;
  for (const auto& [name, t] : ck.model) params.emplace_back(name, zeros(t.shape(), t.dtype()));
  return params;
}

void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(std::streamoff(offset));
  char c = 0;
  f.get(c);
  f.seekp(std::streamoff(offset));
  f.put(char(c ^ 0x10));
}

// Rewrites the digest file for the file's current bytes, as if the damage had happened before the
// digest was taken: only the per-tensor checksums can then see it.
void refresh_digest(const std::string& path) {
  write_text(digest_path(path), digest_file_text(path, fs::path(path).filename().string()));
}

class Integrity : public ::testing::Test {
 protected:
  tessera::testing::TempDir tmp{"tessera_integrity"};
  std::string path(const std::string& name) const { return tmp.file(name); }
  // The checkpoint a rollback saves again at `step` (other bytes: it counts the rollback), written
  // in a directory of its own; returns its path.
  std::string save_replacement_elsewhere(int64_t step) const {
    fs::create_directories(path("elsewhere"));
    const std::string other = path("elsewhere/" + checkpoint_name(step));
    CheckpointData replacement = small_checkpoint(step);
    replacement.trainer_ints["rollbacks"] = 1;
    save_checkpoint(other, replacement);
    return other;
  }
};

}  // namespace

TEST_F(Integrity, save_writes_a_digest_file_in_sha256sum_format) {
  const std::string file = path("step_00000500.h5");
  save_checkpoint(file, small_checkpoint());
  ASSERT_TRUE(fs::exists(digest_path(file)));
  EXPECT_EQ(digest_path(file), file + ".sha256");
  EXPECT_EQ(read_file(digest_path(file)), sha256_file(file) + "  step_00000500.h5\n# bytes " +
                                              std::to_string(fs::file_size(file)) + "\n");
  EXPECT_EQ(verify_checkpoint_file(file), FileCheck::Verified);
  for (const auto& e : fs::directory_iterator(tmp.path))
    EXPECT_NE(e.path().extension(), ".tmp") << e.path();
  // The round trip still holds every bit.
  const CheckpointData back = load_checkpoint(file);
  ASSERT_EQ(back.model.size(), 2u);
  EXPECT_EQ(tessera::testing::bytes(back.model[0].second),
            tessera::testing::bytes(small_checkpoint().model[0].second));

  // Users can check a checkpoint by hand: sha256sum -c reads the file as it is.
  if (std::system("command -v sha256sum > /dev/null 2>&1") != 0) return;
  const std::string cmd = "cd '" + tmp.path.string() +
                          "' && sha256sum --quiet -c step_00000500.h5.sha256 > /dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST_F(Integrity, a_file_without_digest_loads_with_one_warning) {
  const std::string file = path("old.h5");
  const CheckpointData ck = small_checkpoint();
  save_checkpoint(file, ck);
  fs::remove(digest_path(file));  // as written before digest files existed
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(verify_checkpoint_file(file), FileCheck::NoDigest);
  load_checkpoint_attributes(file);
  auto params = model_like(ck);
  load_model_into(file, params);
  const CheckpointData back = load_checkpoint(file);
  const std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(std::count(printed.begin(), printed.end(), '\n'), 1) << printed;
  expect_mentions(printed, {"warning", file, "cannot be verified"});
  EXPECT_EQ(back.trainer_ints.at("step"), 500);
  EXPECT_EQ(tessera::testing::bytes(params[0].second),
            tessera::testing::bytes(ck.model[0].second));
}

// Without a digest file nothing guards HDF5 from damaged metadata, and some damage crashes the
// library itself (a segfault in its group iteration, a double free). Single bytes flipped one at a
// time: every load must load or be one error naming the file, never end the process. Every 8th
// byte from byte 2 meets the 8-byte addresses in the object headers (with HDF5 1.10.8, flipping
// any byte of the one at 418 crashes it); a child process reads the file first (probe.h).
TEST_F(Integrity, a_damaged_file_without_digest_is_an_error_not_a_crash) {
  const std::string file = path("old.h5");
  save_checkpoint(file, small_checkpoint());
  fs::remove(digest_path(file));
  const std::string good = read_file(file);
  ::testing::internal::CaptureStderr();
  int probed = 0, crashed = 0;
  for (size_t at = 2; at < std::min<size_t>(good.size(), 1100); at += 8) {
    std::string bad = good;
    bad[at] = char(bad[at] ^ 0xFF);
    write_text(file, bad);
    std::string msg;
    try {
      load_checkpoint(file);
    } catch (const Error& e) {
      msg = e.what();
    }
    if (msg.empty()) continue;  // a change HDF5 cannot see: such a file is unverified, as warned
    SCOPED_TRACE("byte " + std::to_string(at));
    expect_mentions(msg, {file});
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    // The child reads all the loaders read: HDF5's own failures are its to report, and none
    // reaches the loaders' calls (an error raised in h5.cpp names it in its location).
    EXPECT_EQ(msg.find("src/checkpoint/h5.cpp"), std::string::npos) << msg;
    const std::string damaged = "has no digest file and its HDF5 structure is damaged: ";
    if (const size_t d = msg.find(damaged); d != std::string::npos) {
      ++probed;
      // What the child reported follows, its line ends made spaces: a word, not blanks.
      EXPECT_TRUE(std::isalpha(static_cast<unsigned char>(msg[d + damaged.size()]))) << msg;
    }
    if (msg.find("reading it ended with signal") != std::string::npos) ++crashed;
  }
  ::testing::internal::GetCapturedStderr();
  EXPECT_GT(probed, 0) << "no damage was refused by the child process";
  std::printf("refused by the child process: %d (ended by a signal: %d)\n", probed, crashed);
}

// --resume auto passes over such a file (moving it aside) to the older checkpoint.
TEST_F(Integrity, resume_passes_over_a_damaged_file_without_digest) {
  const std::string dir = tmp.path.string();
  const std::string s10 = path(checkpoint_name(10)), s20 = path(checkpoint_name(20));
  save_checkpoint(s10, small_checkpoint(10));
  save_checkpoint(s20, small_checkpoint(20));
  write_latest(dir, checkpoint_name(20));
  fs::remove(digest_path(s10));
  fs::remove(digest_path(s20));
  // The address at byte 418 (see above): with HDF5 1.10.8, reading the file crashes the library.
  std::string bytes = read_file(s20);
  bytes[418] = char(bytes[418] ^ 0xFF);
  write_text(s20, bytes);
  ::testing::internal::CaptureStderr();
  std::ostringstream warn;
  std::optional<Resumable> r = load_resumable(dir, warn, true);
  ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 10);
  expect_mentions(warn.str(),
                  {"skipping checkpoint " + s20, "moved it aside to " + s20 + ".rejected"});
  EXPECT_FALSE(fs::exists(s20));
}

// A digest file rewritten after the damage (sha256sum, as after renaming a checkpoint) matches
// the damaged bytes: the child process still reads the HDF5 structure first, so damage that
// crashes the library is an error naming the file, not a crash of the loader.
TEST_F(Integrity, a_damaged_file_with_a_rewritten_digest_is_an_error_not_a_crash) {
  const std::string file = path("redigested.h5");
  save_checkpoint(file, small_checkpoint());
  const std::string good = read_file(file);
  int probed = 0;
  for (size_t at = 2; at < std::min<size_t>(good.size(), 1100); at += 8) {
    std::string bad = good;
    bad[at] = char(bad[at] ^ 0xFF);
    write_text(file, bad);
    refresh_digest(file);
    std::string msg;
    try {
      load_checkpoint(file);
    } catch (const Error& e) {
      msg = e.what();
    }
    if (msg.empty()) continue;  // a change no check can see (the digest was rewritten)
    SCOPED_TRACE("byte " + std::to_string(at));
    expect_mentions(msg, {file});
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    if (msg.find("matches its digest file (rewritten after the damage?), but its HDF5 structure "
                 "is damaged") != std::string::npos)
      ++probed;
  }
  EXPECT_GT(probed, 0) << "no damage was refused by the child process";
}

// --resume auto passes over such a file too, to the older checkpoint.
TEST_F(Integrity, resume_passes_over_a_damaged_file_with_a_rewritten_digest) {
  const std::string dir = tmp.path.string();
  const std::string s10 = path(checkpoint_name(10)), s20 = path(checkpoint_name(20));
  save_checkpoint(s10, small_checkpoint(10));
  save_checkpoint(s20, small_checkpoint(20));
  write_latest(dir, checkpoint_name(20));
  std::string bytes = read_file(s20);
  bytes[418] = char(bytes[418] ^ 0xFF);  // crashes HDF5 1.10.8 (see above)
  write_text(s20, bytes);
  refresh_digest(s20);
  std::ostringstream warn;
  std::optional<Resumable> r = load_resumable(dir, warn, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 10);
  expect_mentions(warn.str(), {"skipping checkpoint " + s20, "HDF5 structure is damaged"});
  EXPECT_FALSE(fs::exists(s20));
}

// Damaged metadata can also send HDF5 round a loop that never ends (a global heap read, with
// HDF5 1.10.8 for the byte at 2072): the child is killed at its deadline and the file refused.
// While the file is unchanged, a second probe (train reads a checkpoint's attributes, then loads
// it) refuses it at once instead of waiting out the deadline again; once rewritten, it is probed.
TEST_F(Integrity, a_file_whose_reading_never_ends_is_refused_at_the_deadline) {
  const std::string file = path("old.h5");
  save_checkpoint(file, small_checkpoint());
  fs::remove(digest_path(file));
  const std::string good = read_file(file);
  std::string bytes = good;
  bytes[2072] = char(bytes[2072] ^ 0xFF);
  write_text(file, bytes);
  const std::string msg = error_of([&] { probe_hdf5_file(file, 1.0); });
  if (msg.find("did not finish") == std::string::npos)
    GTEST_SKIP() << "this HDF5 does not loop on this damage: " << msg;
  // No way around the check to offer: a digest file no longer skips it.
  expect_mentions(msg, {file, "did not finish in 1 s", "its metadata is damaged"});
  EXPECT_EQ(msg.find("sha256sum"), std::string::npos) << msg;

  const auto start = std::chrono::steady_clock::now();
  const std::string again = error_of([&] { probe_hdf5_file(file, 1.0); });
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  expect_mentions(again, {file, "did not finish in 1 s"});
  // Probed again, the looping file would take the whole 1 s deadline.
  EXPECT_LT(took, 0.9) << "the unchanged file was probed again";
  write_text(file, good);
  EXPECT_NO_THROW(probe_hdf5_file(file, 1.0));
}

// The probe's child dies with the process that waits for it: a loader killed while its child
// loops in HDF5 (a launcher's time limit, mpirun ending the job) leaves nothing spinning. This
// test adopts orphans (a child subreaper), starts a loader that probes the looping file with a
// long deadline, kills the loader once its child exists, and must then reap that child, killed.
TEST_F(Integrity, the_probe_child_dies_with_the_process_that_waits_for_it) {
  const std::string file = path("old.h5");
  save_checkpoint(file, small_checkpoint());
  fs::remove(digest_path(file));
  std::string bytes = read_file(file);
  bytes[2072] = char(bytes[2072] ^ 0xFF);
  write_text(file, bytes);
  // A copy tells whether this HDF5 loops on it (a refusal for a deadline is remembered by path).
  const std::string copy = path("copy.h5");
  write_text(copy, bytes);
  const std::string msg = error_of([&] { probe_hdf5_file(copy, 0.5); });
  if (msg.find("did not finish") == std::string::npos)
    GTEST_SKIP() << "this HDF5 does not loop on this damage: " << msg;

  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0) << std::strerror(errno);
  const pid_t loader = fork();
  if (loader == 0) {
    try {
      probe_hdf5_file(file, 600.0);
    } catch (...) {
    }
    _exit(0);
  }
  ASSERT_GT(loader, 0);
  // The loader's child, once forked, is listed in /proc/LOADER/task/LOADER/children.
  const std::string children =
      "/proc/" + std::to_string(loader) + "/task/" + std::to_string(loader) + "/children";
  pid_t probe = 0;
  const auto start = std::chrono::steady_clock::now();
  while (probe == 0 && std::chrono::steady_clock::now() - start < std::chrono::seconds(30)) {
    std::ifstream(children) >> probe;
    if (probe == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // Killed the moment it is listed, the child may not yet have asked to die with its parent; it
  // then finds the parent gone and exits 1 (probe.cpp). So first let it spin: two ticks of CPU
  // time (/proc/PID/stat's utime and stime, fields 14 and 15) come well after that request.
  const auto cpu_ticks = [](pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    std::istringstream rest(line.substr(std::min(line.size(), line.rfind(')') + 2)));
    std::string field;
    long ticks = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i)  // fields 3.. follow the name
      if (i >= 14) ticks += std::atol(field.c_str());
    return ticks;
  };
  while (probe > 0 && cpu_ticks(probe) < 2 &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(30))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const bool spun = probe > 0 && cpu_ticks(probe) >= 2;
  kill(loader, SIGKILL);
  int status = 0;
  waitpid(loader, &status, 0);
  ASSERT_GT(probe, 0) << "the loader never forked its probe";
  // Now this process's child: it must end (killed) rather than loop on.
  pid_t reaped = 0;
  while (reaped == 0 && std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
    reaped = waitpid(probe, &status, WNOHANG);
    if (reaped == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (reaped == 0) {
    kill(probe, SIGKILL);
    waitpid(probe, &status, 0);
  }
  prctl(PR_SET_CHILD_SUBREAPER, 0);
  EXPECT_EQ(reaped, probe) << "the probe's child outlived its loader";
  if (spun)
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  else  // never ran long enough to be sure it had asked: either way of ending is its contract
    EXPECT_TRUE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ||
                (WIFEXITED(status) && WEXITSTATUS(status) == 1));
}

// What ends the probe's child from outside says nothing about the file, and a rollback or resume
// that took it for damage would pass over (and delete) a good checkpoint. On the looping file, from
// a thread whose child is found by its task's children list: a SIGTERM (a Ctrl-C, a scheduler's
// stop) is ignored, so the child runs into its CPU limit and the file is called damaged; a SIGKILL
// (the OOM killer) and a SIGSTOP past the wall-clock deadline (a suspended job) are
// CheckpointUnreadable, the error a resume and a rollback stop on.
TEST_F(Integrity, a_probe_ended_from_outside_is_unreadable_not_damaged) {
  const std::string file = path("old.h5");
  save_checkpoint(file, small_checkpoint());
  fs::remove(digest_path(file));
  std::string bytes = read_file(file);
  bytes[2072] = char(bytes[2072] ^ 0xFF);
  int n = 0;
  auto probe_while = [&](int sig, double timeout_s, bool* unreadable) {
    const std::string copy = path("copy" + std::to_string(n++) + ".h5");  // not remembered
    write_text(copy, bytes);
    std::atomic<pid_t> tid{0};
    std::string msg;
    std::thread t([&] {
      tid = pid_t(syscall(SYS_gettid));
      try {
        probe_hdf5_file(copy, timeout_s);
      } catch (const CheckpointUnreadable& e) {
        *unreadable = true, msg = e.what();
      } catch (const Error& e) {
        msg = e.what();
      }
    });
    while (tid == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const std::string children =
        "/proc/self/task/" + std::to_string(tid.load()) + "/children";
    pid_t child = 0;
    for (int i = 0; i < 3000 && child == 0; ++i) {
      std::ifstream(children) >> child;
      if (child == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the child is in HDF5 now
    if (child > 0) kill(child, sig);
    t.join();
    return msg;
  };
  const std::string plain = path("plain.h5");
  write_text(plain, bytes);
  const std::string msg = error_of([&] { probe_hdf5_file(plain, 0.5); });
  if (msg.find("did not finish") == std::string::npos)
    GTEST_SKIP() << "this HDF5 does not loop on this damage: " << msg;
  bool unreadable = false;
  const std::string looped = probe_while(SIGTERM, 1.0, &unreadable);
  EXPECT_FALSE(unreadable) << looped;
  expect_mentions(looped, {"did not finish in 1 s of CPU time", "its metadata is damaged"});
  const std::string killed = probe_while(SIGKILL, 10.0, &unreadable);
  EXPECT_TRUE(unreadable) << killed;
  expect_mentions(killed, {"stopped by signal 9", "not by the file"});
  unreadable = false;
  const std::string stopped = probe_while(SIGSTOP, 0.5, &unreadable);
  EXPECT_TRUE(unreadable) << stopped;
  expect_mentions(stopped, {"did not return in 2 s", "the process was stopped"});
}

// A step saved again (a rollback's) commits its new digest file before the checkpoint's rename: a
// rename that then fails (here the old file is immutable) must put the old digest file back, or
// the old checkpoint would load unverified.
TEST_F(Integrity, a_failed_save_over_a_checkpoint_puts_its_digest_file_back) {
  const std::string file = path("step_00000010.h5");
  save_checkpoint(file, small_checkpoint(10));
  const std::string digest = read_file(digest_path(file));
  std::string out;
  if (tessera::testing::run_command("chattr +i " + file, &out) != 0)
    GTEST_SKIP() << "no immutable files here: " << out;
  const std::string e = error_of([&] { save_checkpoint(file, small_checkpoint(11)); });
  tessera::testing::run_command("chattr -i " + file, &out);
  EXPECT_NE(e.find(file), std::string::npos) << e;
  EXPECT_EQ(read_file(digest_path(file)), digest);
  EXPECT_EQ(verify_checkpoint_file(file), FileCheck::Verified);
  EXPECT_EQ(load_checkpoint(file).trainer_ints.at("step"), 10);
}

TEST_F(Integrity, every_loader_refuses_a_changed_byte_naming_the_file) {
  const std::string file = path("step_00000500.h5");
  const CheckpointData ck = small_checkpoint();
  save_checkpoint(file, ck);
  const uint64_t size = fs::file_size(file);
  const std::string good = read_file(file);
  // The superblock, the object headers, the data, the last byte.
  for (uint64_t at : {uint64_t(9), uint64_t(600), size / 2, size - 1}) {
    flip_byte(file, at);
    ::testing::internal::CaptureStderr();
    auto params = model_like(ck);
    const std::string a = error_of([&] { load_checkpoint(file); });
    const std::string b = error_of([&] { load_checkpoint_attributes(file); });
    const std::string c = error_of([&] { load_model_into(file, params); });
    const std::string printed = ::testing::internal::GetCapturedStderr();
    for (const std::string& msg : {a, b, c}) {
      expect_mentions(msg, {file, digest_path(file), "does not match"});
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
    EXPECT_EQ(printed, "") << "HDF5 reached the file: " << printed;
    EXPECT_EQ(params[0].second.to_vector<float>(), std::vector<float>(13 * 8, 0.0f));
    write_text(file, good);
  }
  // Truncated or grown: refused by the recorded size before any hashing.
  fs::resize_file(file, size - 1);
  expect_mentions(error_of([&] { load_checkpoint(file); }), {file, "truncated or appended"});
  write_text(file, good + "trailing garbage");
  expect_mentions(error_of([&] { load_checkpoint(file); }), {file, "truncated or appended"});
  write_text(file, good);
  EXPECT_NO_THROW(load_checkpoint(file));
}

// Every load probes the file in a forked child, whose copy of the HDF5 library still has open what
// this process has open: a file loaded while a reader holds it (a LoRA checkpoint given as its own
// base; a rollback target read twice) must open there as here, not fail the probe.
TEST_F(Integrity, a_file_loads_while_a_reader_of_it_is_still_open) {
  const std::string file = path("step_00000500.h5");
  save_checkpoint(file, small_checkpoint());
  CheckpointReader held(file);
  const CheckpointData again = load_checkpoint(file);
  EXPECT_EQ(again.model.size(), small_checkpoint().model.size());
  EXPECT_EQ(held.attributes().trainer_ints, again.trainer_ints);
}

TEST_F(Integrity, a_bad_digest_file_is_an_error_naming_both_files) {
  const std::string file = path("step_00000500.h5"), sidecar = digest_path(file);
  save_checkpoint(file, small_checkpoint());
  const std::string good = read_file(sidecar);
  const std::string hex = good.substr(0, 64);
  auto refused = [&](const std::string& text, const std::string& why) {
    write_text(sidecar, text);
    const std::string msg = error_of([&] { load_checkpoint(file); });
    expect_mentions(msg, {file, sidecar, why});
  };
  refused("", "malformed");
  refused("not a digest\n", "malformed");
  refused(std::string((1 << 20) + 1, 'a'), "larger than 1048576 bytes");
  refused(good + good, "more than one digest line");
  refused(hex + "  step_00000500.h5\n# bytes 12x\n", "bad size line");
  // Two sizes: one of them is wrong, and the file must not pick which.
  const std::string size_line = good.substr(good.find("# bytes"));
  refused(good + "# bytes 12\n", "bad size line '# bytes 12'");
  refused(hex + "  step_00000500.h5\n# bytes 12\n" + size_line, "bad size line");
  refused(hex + "  step_00000400.h5\n", "is for 'step_00000400.h5'");
  // Garbage is quoted with its control characters escaped: no carriage return or terminal escape
  // reaches the message.
  refused("\x1b[2J\rjunk\n", "found '\\x1b[2J\\x0djunk'");
  refused(hex + "  step_\r00000400.h5\n", "is for 'step_\\x0d00000400.h5'");
  std::string wrong = good;
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  refused(wrong, "does not match");

  // What sha256sum itself writes is accepted: no size line, '*' for binary mode, upper case.
  write_text(sidecar, hex + "  step_00000500.h5\n");
  EXPECT_EQ(verify_checkpoint_file(file), FileCheck::Verified);
  std::string upper = hex;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  write_text(sidecar, "# made by hand\n" + upper + " *step_00000500.h5\r\n");
  EXPECT_EQ(verify_checkpoint_file(file), FileCheck::Verified);
}

// A digest file that cannot be read says nothing about the checkpoint's bytes: CheckpointUnreadable
// (a resume stops on it rather than passing over the checkpoint), naming the digest file and why.
TEST_F(Integrity, a_digest_file_that_cannot_be_read_is_unreadable_not_damage) {
  const std::string file = path("step_00000500.h5"), sidecar = digest_path(file);
  save_checkpoint(file, small_checkpoint());
  auto unreadable = [&](const std::string& reason) {
    std::string msg;
    try {
      verify_checkpoint_file(file);
      ADD_FAILURE() << "verified through an unreadable digest file (" << reason << ")";
    } catch (const CheckpointUnreadable& e) {
      msg = e.what();
    }
    expect_mentions(msg, {file, "cannot read its digest file " + sidecar, reason});
  };
  fs::remove(sidecar);
  fs::create_directory(sidecar);  // open succeeds, read fails
  unreadable("Is a directory");
  fs::remove(sidecar);
  fs::create_symlink(fs::path(sidecar).filename(), sidecar);  // open fails, not for want of a file
  unreadable("Too many levels of symbolic links");
}

// A file of more than one chunk gets a SHA-256 per chunk in its digest file (here 1000-byte chunks
// stand in for 64 MiB ones), which loaders check in parallel: damage is named by its bytes, the
// first line stays sha256sum's, and chunk lines that do not cover the file are refused.
TEST_F(Integrity, a_large_file_is_checked_chunk_by_chunk_naming_the_damaged_bytes) {
  const std::string file = path("step_00000500.h5"), sidecar = digest_path(file);
  save_checkpoint(file, small_checkpoint());
  const uint64_t size = fs::file_size(file);
  ASSERT_GT(size, 3000u);
  const std::string text = digest_file_text(file, "step_00000500.h5", 1000);
  write_text(sidecar, text);
  const uint64_t n = (size + 999) / 1000;
  EXPECT_EQ(text.rfind(sha256_file(file) + "  step_00000500.h5\n# bytes " + std::to_string(size) +
                           "\n# chunk-bytes 1000\n# chunk 0 ",
                       0),
            0u)
      << text;
  EXPECT_NE(text.find("\n# chunk " + std::to_string(n - 1) + " "), std::string::npos) << text;
  EXPECT_EQ(text.find("\n# chunk " + std::to_string(n) + " "), std::string::npos) << text;
  EXPECT_EQ(verify_checkpoint_file(file), FileCheck::Verified);
  EXPECT_NO_THROW(load_checkpoint(file));
  if (std::system("command -v sha256sum > /dev/null 2>&1") == 0) {
    const std::string cmd = "cd '" + tmp.path.string() +
                            "' && sha256sum --quiet -c step_00000500.h5.sha256 > /dev/null 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }

  // A changed byte in the third chunk, and one in the last (short) chunk.
  for (uint64_t at : {uint64_t(2500), size - 1}) {
    flip_byte(file, at);
    const uint64_t begin = at / 1000 * 1000, end = std::min(begin + 1000, size);
    expect_mentions(error_of([&] { load_checkpoint(file); }),
                    {file, sidecar, "does not match",
                     "bytes " + std::to_string(begin) + " to " + std::to_string(end) + ":"});
    flip_byte(file, at);
  }
  EXPECT_EQ(verify_checkpoint_file(file), FileCheck::Verified);

  // Chunk lines that do not describe the file.
  auto refused = [&](const std::string& bad, const std::string& why) {
    write_text(sidecar, bad);
    expect_mentions(error_of([&] { load_checkpoint(file); }), {file, sidecar, "malformed", why});
  };
  const size_t last = text.rfind("# chunk ");
  refused(text.substr(0, last), std::to_string(n - 1) + " chunk lines for " + std::to_string(size) +
                                    " bytes in chunks of 1000");
  refused(text + text.substr(last),
          "chunk line " + std::to_string(n - 1) + " where chunk " + std::to_string(n) + " was due");
  const size_t size_line = text.find("# bytes");
  refused(text.substr(0, size_line) + text.substr(text.find('\n', size_line) + 1),
          "chunk lines without a size line");
  std::string no_chunks;  // the chunk size line left without its chunk lines
  for (size_t at = 0; at < text.size();) {
    const size_t nl = text.find('\n', at), end = nl == std::string::npos ? text.size() : nl + 1;
    if (text.compare(at, 8, "# chunk ") != 0) no_chunks += text.substr(at, end - at);
    at = end;
  }
  refused(no_chunks, "0 chunk lines for " + std::to_string(size) + " bytes in chunks of 1000");
  std::string short_hex = text;
  short_hex.erase(last + 12, 1);  // "# chunk N " then 63 hex digits
  refused(short_hex, "bad chunk line");
  std::string zero = text;
  zero.replace(zero.find("chunk-bytes 1000"), 16, "chunk-bytes 0");
  refused(zero, "bad chunk size line");

  // A file of one chunk or less: the first line alone, as sha256sum writes it.
  EXPECT_EQ(digest_file_text(file, "step_00000500.h5", size).find("# chunk"), std::string::npos);
  EXPECT_EQ(digest_file_text(file, "step_00000500.h5").find("# chunk"), std::string::npos);
}

TEST_F(Integrity, a_link_is_checked_against_the_digest_beside_the_real_file) {
  const std::string file = path("step_00000500.h5"), link = path("best.h5");
  save_checkpoint(file, small_checkpoint());
  fs::create_symlink(file, link);
  EXPECT_EQ(verify_checkpoint_file(link), FileCheck::Verified);
  flip_byte(file, fs::file_size(file) / 2);
  expect_mentions(error_of([&] { load_checkpoint(link); }), {link, "does not match"});
}

TEST_F(Integrity, tensor_checksum_names_the_tensor) {
  const std::string file = path("step_00000500.h5");
  const CheckpointData ck = small_checkpoint();
  save_checkpoint(file, ck);
  {
    H5File f = H5File::open(file);
    for (const char* obj : {"/model/transformer.wte.weight", "/trainer/scale"})
      EXPECT_TRUE(f.has_attr(obj, "crc32c")) << obj;
  }
  // Find the tensor's stored bytes in the file and change one in the middle.
  const std::string text = read_file(file);
  const std::vector<unsigned char> bits = tessera::testing::bytes(ck.model[0].second);
  const std::string raw(bits.begin(), bits.end());  // chars, to compare with the file's
  const auto at = std::search(text.begin(), text.end(), raw.begin(), raw.end());
  ASSERT_NE(at, text.end()) << "tensor bytes not found in the file";
  flip_byte(file, uint64_t(at - text.begin()) + raw.size() / 2);
  refresh_digest(file);
  EXPECT_EQ(verify_checkpoint_file(file), FileCheck::Verified);  // the file check cannot see it

  const std::string tensor = "/model/transformer.wte.weight";
  expect_mentions(error_of([&] { load_checkpoint(file); }), {file, tensor, "checksum"});
  auto params = model_like(ck);
  expect_mentions(error_of([&] { load_model_into(file, params); }), {file, tensor, "checksum"});
  H5File f = H5File::open(file);
  expect_mentions(error_of([&] { read_tensor(f, tensor); }), {file, tensor, "checksum"});
  Tensor dst = zeros({13, 8});
  expect_mentions(error_of([&] { read_tensor_into(f, tensor, dst); }), {file, tensor});
  Tensor strided = zeros({8, 13}).transpose(0, 1);  // through the copy path
  expect_mentions(error_of([&] { read_tensor_into(f, tensor, strided); }), {file, tensor});
  EXPECT_NO_THROW(read_tensor(f, "/model/transformer.ln_f.weight"));  // the others are fine
}

// The attributes a run is rebuilt from (config, trainer numbers, RNG and data states) carry one
// checksum: an edited value is refused even when the digest file was taken after the edit.
TEST_F(Integrity, metadata_checksum_covers_the_config_and_the_run_state) {
  const std::string file = path("step_00000500.h5");
  const CheckpointData ck = small_checkpoint();
  const std::vector<std::pair<const char*, void (*)(H5File&)>> edits = {
      {"config", [](H5File& f) { f.set_attr_string("/", "config", "model:\n  n_layer: 2\n"); }},
      {"trainer", [](H5File& f) { f.set_attr_int("/trainer", "step", 499); }},
      {"rng", [](H5File& f) { f.set_attr_uint("/rng/default", "offset", 3); }},
      {"data", [](H5File& f) { f.set_attr_int("/data", "epoch", 1); }},
  };
  for (const auto& [what, edit] : edits) {
    SCOPED_TRACE(what);
    save_checkpoint(file, ck);
    EXPECT_EQ(load_checkpoint(file).trainer_ints.at("step"), 500);
    {
      H5File f = H5File::open(file, H5File::Mode::ReadWrite);
      edit(f);
    }
    refresh_digest(file);
    expect_mentions(error_of([&] { load_checkpoint(file); }), {file, "metadata_crc32c"});
    expect_mentions(error_of([&] { load_checkpoint_attributes(file); }), {file, "metadata_crc32c"});
  }
}

// A crash between committing the digest file and renaming the checkpoint over an older file of the
// same name leaves the old bytes beside the new digest: refused, and --resume auto moves past it.
TEST_F(Integrity, an_interrupted_replacement_is_detected_and_resume_passes_over_it) {
  const std::string dir = tmp.path.string();
  save_checkpoint(path(checkpoint_name(10)), small_checkpoint(10));
  save_checkpoint(path(checkpoint_name(20)), small_checkpoint(20));
  write_latest(dir, checkpoint_name(20));
  const std::string other = save_replacement_elsewhere(20);
  fs::copy_file(digest_path(other), digest_path(path(checkpoint_name(20))),
                fs::copy_options::overwrite_existing);

  const std::string s20 = path(checkpoint_name(20));
  expect_mentions(error_of([&] { load_checkpoint(s20); }), {s20, "does not match"});
  const std::string bytes = read_file(s20), digest = read_file(digest_path(s20));
  std::ostringstream warn;
  std::optional<Resumable> r = load_resumable(dir, warn, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 10);
  expect_mentions(warn.str(), {"skipping checkpoint " + s20, "digest"});
  // The file may be intact (only its digest file is wrong): the run, going on from step 10, saves
  // step 20 again, so the file and its digest file are moved aside first, unchanged.
  expect_mentions(warn.str(), {"moved it aside to " + s20 + ".rejected"});
  EXPECT_EQ(read_file(s20 + ".rejected"), bytes);
  EXPECT_EQ(read_file(digest_path(s20 + ".rejected")), digest);
  save_checkpoint(s20, small_checkpoint(20));
  EXPECT_EQ(read_file(s20 + ".rejected"), bytes);
}

// A crash between save_checkpoint's two renames leaves <name>.tmp whole beside the digest file
// committed for it. finish_interrupted_saves completes exactly those renames: a .tmp its digest
// file does not describe (the crash came before the digest file was committed), a .tmp without a
// digest file, and whatever is not a checkpoint's .tmp are left as they are.
TEST_F(Integrity, finishing_interrupted_saves_renames_only_a_tmp_its_digest_file_describes) {
  const std::string dir = tmp.path.string();
  const std::string s20 = path(checkpoint_name(20)), s30 = path(checkpoint_name(30));
  save_checkpoint(s20, small_checkpoint(20));
  // A step saved again by a rollback, stopped after the digest file's rename.
  const std::string other = save_replacement_elsewhere(20);
  fs::copy_file(other, s20 + ".tmp");
  fs::copy_file(digest_path(other), digest_path(s20), fs::copy_options::overwrite_existing);
  // A step whose save stopped before its digest file: a whole .tmp, no digest file.
  save_checkpoint(path("elsewhere/" + checkpoint_name(30)), small_checkpoint(30));
  fs::copy_file(path("elsewhere/" + checkpoint_name(30)), s30 + ".tmp");
  // A step 40 whose .tmp is cut short of the bytes its (first) digest file describes.
  const std::string s40 = path(checkpoint_name(40));
  save_checkpoint(s40, small_checkpoint(40));
  const std::string whole40 = read_file(s40);
  write_text(s40 + ".tmp", whole40.substr(0, whole40.size() / 2));
  fs::remove(s40);
  // Not a checkpoint's .tmp: a `latest` being written, a digest-described file of another kind,
  // and a directory with a checkpoint's .tmp name.
  write_text(path("latest.tmp"), checkpoint_name(20) + "\n");
  write_text(path("notes.txt.tmp"), "notes");
  write_text(path("notes.txt.sha256"), digest_file_text(path("notes.txt.tmp"), "notes.txt"));
  fs::create_directories(path(checkpoint_name(50) + ".tmp"));
  write_text(digest_path(path(checkpoint_name(50))), read_file(digest_path(s20)));
  // A user's copy of a checkpoint, beside it under another extension.
  const std::string s10 = path(checkpoint_name(10));
  save_checkpoint(s10, small_checkpoint(10));
  fs::copy_file(s10, s10 + ".orig");

  EXPECT_EQ(finish_interrupted_saves(dir), std::vector<std::string>{s20});
  EXPECT_FALSE(fs::exists(s20 + ".tmp"));
  EXPECT_EQ(load_checkpoint(s20).trainer_ints.at("rollbacks"), 1);  // the new bytes, verified
  EXPECT_TRUE(fs::exists(s30 + ".tmp"));
  EXPECT_FALSE(fs::exists(s30));
  EXPECT_EQ(read_file(s40 + ".tmp"), whole40.substr(0, whole40.size() / 2));
  EXPECT_FALSE(fs::exists(s40));
  EXPECT_TRUE(fs::exists(path("latest.tmp")));
  EXPECT_FALSE(fs::exists(path("notes.txt")));
  EXPECT_TRUE(fs::is_directory(path(checkpoint_name(50) + ".tmp")));
  EXPECT_TRUE(fs::exists(s10 + ".orig"));
  // Nothing is left to finish, and a directory that is not there has nothing.
  EXPECT_TRUE(finish_interrupted_saves(dir).empty());
  EXPECT_TRUE(finish_interrupted_saves(path("no_such_dir")).empty());
}

TEST_F(Integrity, retention_and_rollback_remove_digest_files_with_their_checkpoints) {
  const std::string dir = tmp.path.string();
  for (int64_t s = 1; s <= 5; ++s) save_checkpoint(path(checkpoint_name(s)), small_checkpoint(s));
  write_latest(dir, checkpoint_name(5));
  prune_checkpoints(dir, {.keep = 3}, checkpoint_name(5));
  std::ostringstream log;
  train::remove_checkpoints_after(dir, 3, log);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(tmp.path)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step_00000003.h5",
                                             "step_00000003.h5.sha256"}));
}
