// The `latest` pointer: written atomically, resolved from a run directory, read through what a
// hand edit leaves, and refused with the reason when it names nothing usable; and the descriptors
// a save, a load and an update leave open (none).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint_fixture.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::testing;
namespace fs = std::filesystem;

TEST_F(Checkpoint, latest_is_written_and_resolved) {
  save_checkpoint(path("step_00000500.h5"), sample_checkpoint());
  write_latest(dir_.string(), "step_00000500.h5");
  EXPECT_EQ(file_bytes(path("latest")),
            (std::vector<uint8_t>{'s', 't', 'e', 'p', '_', '0', '0', '0', '0', '0', '5', '0', '0',
                                  '.', 'h', '5', '\n'}));
  EXPECT_FALSE(fs::exists(path("latest.tmp")));
  EXPECT_EQ(resolve_checkpoint(dir_.string()), path("step_00000500.h5"));
  EXPECT_EQ(resolve_checkpoint(path("latest")), path("step_00000500.h5"));
  EXPECT_EQ(resolve_checkpoint(path("step_00000500.h5")), path("step_00000500.h5"));

  save_checkpoint(path("step_00001000.h5"), sample_checkpoint());
  write_latest(dir_.string(), "step_00001000.h5");
  EXPECT_EQ(resolve_checkpoint(dir_.string()), path("step_00001000.h5"));
  expect_same_checkpoint(load_checkpoint(resolve_checkpoint(dir_.string())), sample_checkpoint());
}

TEST_F(Checkpoint, a_latest_that_cannot_be_written_keeps_the_old_one) {
  write_latest(dir_.string(), "step_00000500.h5");
  // The temporary file's name is taken by a directory that is not empty: the new pointer cannot
  // be created, the error says so and why, and neither the old pointer nor the directory's
  // contents are touched.
  fs::create_directories(path("latest.tmp"));
  std::ofstream(path("latest.tmp/keep")) << "x";
  std::string msg = error_of([&] { write_latest(dir_.string(), "step_00001000.h5"); });
  EXPECT_NE(msg.find("cannot create " + path("latest.tmp") + ": Is a directory"), std::string::npos)
      << msg;
  const std::vector<uint8_t> bytes = file_bytes(path("latest"));
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), "step_00000500.h5\n");
  EXPECT_TRUE(fs::exists(path("latest.tmp/keep")));
  // A write that fails (a full disk: /dev/full answers every write with ENOSPC) is an error, and
  // the half-written pointer is never renamed over the old one.
  ASSERT_TRUE(fs::is_character_file("/dev/full"));  // else the link would create a file there
  fs::remove_all(path("latest.tmp"));
  fs::create_symlink("/dev/full", path("latest.tmp"));
  msg = error_of([&] { write_latest(dir_.string(), "step_00001000.h5"); });
  EXPECT_NE(msg.find("cannot write " + path("latest.tmp") + ": No space left on device"),
            std::string::npos)
      << msg;
  const std::vector<uint8_t> after = file_bytes(path("latest"));
  EXPECT_EQ(std::string(after.begin(), after.end()), "step_00000500.h5\n");
  EXPECT_FALSE(fs::is_symlink(path("latest.tmp")));
}

// Every descriptor a save, a load and a `latest` update open is closed again: a trainer saves
// thousands of times in one process.
TEST_F(Checkpoint, saving_and_loading_leave_no_file_descriptor_open) {
  save_checkpoint(path("step_00000001.h5"), sample_checkpoint());  // HDF5's one-time setup
  const auto before = open_descriptors();
  for (int i = 0; i < 3; ++i) {
    save_checkpoint(path("step_00000002.h5"), sample_checkpoint());
    write_latest(dir_.string(), "step_00000002.h5");
    load_checkpoint(resolve_checkpoint(dir_.string()));
  }
  EXPECT_EQ(open_descriptors(), before);
}

// A `latest` edited by hand: a Windows line end, trailing blanks and no line end at all still
// name the file; one with no name in it says so.
TEST_F(Checkpoint, a_latest_written_by_hand_is_read_without_its_line_end_and_blanks) {
  save_checkpoint(path("step_00000500.h5"), sample_checkpoint());
  for (std::string text : {"step_00000500.h5\r\n", "step_00000500.h5 \t \n", "step_00000500.h5",
                           "step_00000500.h5\nstep_00000600.h5\n"}) {
    std::ofstream(path("latest"), std::ios::binary | std::ios::trunc) << text;
    EXPECT_EQ(resolve_checkpoint(dir_.string()), path("step_00000500.h5")) << text;
  }
  for (std::string text : {"", "\n", "\r\n", " \t\r\n", "\nstep_00000500.h5\n"}) {
    std::ofstream(path("latest"), std::ios::binary | std::ios::trunc) << text;
    const std::string msg = error_of([&] { resolve_checkpoint(dir_.string()); });
    EXPECT_NE(msg.find(path("latest") + " is empty (it should name a checkpoint file)"),
              std::string::npos)
        << msg;
  }
}

TEST_F(Checkpoint, resolve_errors_name_what_is_missing) {
  std::string msg = error_of([&] { resolve_checkpoint(dir_.string()); });
  EXPECT_NE(msg.find(path("latest")), std::string::npos) << msg;
  // Checkpoints without a `latest`: the message names one to pass.
  save_checkpoint(path("step_00000300.h5"), sample_checkpoint());
  msg = error_of([&] { resolve_checkpoint(dir_.string()); });
  EXPECT_NE(msg.find(path("latest") + " does not exist (the directory holds 1 checkpoint file(s); "
                     "pass one, e.g. " + path("step_00000300.h5")),
            std::string::npos)
      << msg;
  // A `latest` that is a directory, or that names one.
  fs::create_directories(path("latest"));
  msg = error_of([&] { resolve_checkpoint(dir_.string()); });
  EXPECT_NE(msg.find(path("latest") + " is not a regular file"), std::string::npos) << msg;
  fs::remove(path("latest"));
  fs::create_directories(path("sub"));
  write_latest(dir_.string(), "sub");
  msg = error_of([&] { resolve_checkpoint(dir_.string()); });
  EXPECT_NE(msg.find("names " + path("sub") + ", which is not a regular file"), std::string::npos)
      << msg;
  fs::remove(path("latest"));

  write_latest(dir_.string(), "step_00000500.h5");  // names a file that is not there
  msg = error_of([&] { resolve_checkpoint(dir_.string()); });
  EXPECT_NE(msg.find("names " + path("step_00000500.h5") + ", which does not exist"),
            std::string::npos)
      << msg;

  msg = error_of([&] { resolve_checkpoint(path("nothing.h5")); });
  EXPECT_NE(msg.find(path("nothing.h5")), std::string::npos) << msg;

  msg = error_of([&] { write_latest(dir_.string(), "two\nlines"); });
  EXPECT_NE(msg.find("two"), std::string::npos) << msg;

  // A `latest` of binary garbage is quoted readably: bytes escaped, the length cut.
  std::string garbage = "step_\x01\x89\\";
  for (int i = 0; i < 5000; ++i) garbage += char(0x80 + i % 128);
  std::ofstream(path("latest"), std::ios::binary | std::ios::trunc) << garbage << "\n";
  msg = error_of([&] { resolve_checkpoint(dir_.string()); });
  EXPECT_NE(msg.find(path("step_\\x01\\x89\\x5c\\x80\\x81")), std::string::npos) << msg;
  EXPECT_NE(msg.find("bytes), which cannot be read: File name too long"), std::string::npos) << msg;
  EXPECT_LT(msg.size(), 400u) << msg;
  EXPECT_TRUE(std::all_of(msg.begin(), msg.end(), [](char c) { return c >= 0x20 && c < 0x7f; }))
      << msg;
  // A NUL would cut the name short for the file system: a name of an existing file, then junk.
  save_checkpoint(path("step_00000500.h5"), sample_checkpoint());
  std::ofstream(path("latest"), std::ios::binary | std::ios::trunc)
      << std::string("step_00000500.h5\0junk\n", 22);
  msg = error_of([&] { resolve_checkpoint(dir_.string()); });
  EXPECT_NE(msg.find("'step_00000500.h5\\x00junk', which is not a file name"), std::string::npos)
      << msg;
}
