// Checkpoints of older versions: files written before the trainer attributes, the CRC-32Cs and
// the digest files existed resume through run_state.cpp's fallbacks, and attributes edited under a
// metadata checksum are refused.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "test_util.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

using namespace tessera;
using tessera::testing::bytes;
using tessera::testing::error_of;
namespace fs = std::filesystem;

namespace {

// Deletes attribute `name` of object `obj` in an HDF5 file, as a file written before the attribute
// existed would lack it.
void delete_attr(const std::string& file, const std::string& obj, const std::string& name) {
  hdf5_init();
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0) << file;
  EXPECT_GE(H5Adelete_by_name(f, obj.c_str(), name.c_str(), H5P_DEFAULT), 0) << obj << " " << name;
  H5Fclose(f);
}

// The trainer attributes a checkpoint written before them lacks; each has a fallback in
// train/run_state.cpp (world 1, tokens_per_step from tokens_seen / step, micro_step 0, positions
// in batches, no rollbacks, no LR window, no skipped ranges).
const char* const kNewerTrainerAttrs[] = {
    "world",     "tokens_per_step", "micro_step", "window_positions",
    "rollbacks", "lr_factor_until", "skip_ranges"};

// Turns a checkpoint of this version into one of before the checksums and the newer trainer
// attributes: positions back in batches of B windows, no CRC-32C on any dataset, no digest file;
// the metadata checksum is removed only when `strip_metadata_crc`.
void make_old(const std::string& file, int64_t batch_size, bool strip_metadata_crc) {
  std::vector<std::string> datasets;
  int64_t position = 0;
  {
    H5File f = H5File::open(file);
    for (const H5Entry& e : f.walk("/"))
      if (!e.is_group && f.has_attr("/" + e.path, "crc32c")) datasets.push_back("/" + e.path);
    position = f.attr_int("/data", "position");
  }
  ASSERT_FALSE(datasets.empty());
  ASSERT_EQ(position % batch_size, 0);
  for (const char* name : kNewerTrainerAttrs) delete_attr(file, "/trainer", name);
  for (const std::string& d : datasets) delete_attr(file, d, "crc32c");
  if (strip_metadata_crc) delete_attr(file, "/", "metadata_crc32c");
  {
    H5File f = H5File::open(file, H5File::Mode::ReadWrite);
    f.set_attr_int("/data", "position", position / batch_size);
    f.close();
  }
  fs::remove(file + ".sha256");  // digest files came later still
}

}  // namespace

// A checkpoint of an older version (no world, tokens_per_step, micro_step, window_positions,
// rollbacks, LR window or skipped ranges in /trainer; no CRC-32C on its datasets nor of its
// metadata; no digest file; the loader position counted in batches) resumes into the run that
// never stopped: the same losses, text for text, and the same weights and loader state at the end.
// A wrong fallback shows: positions read as windows would replay the data from window 8, not 64.
TEST(CheckpointVersions, a_checkpoint_without_the_newer_fields_resumes_like_the_uninterrupted_run) {
  tessera::testing::TempRun run;
  Config c = run.config(12);
  c.checkpoint.interval = 6, c.checkpoint.keep = 5;
  c.log.interval = 1;
  c.model.dropout = 0.1;  // the RNG state comes back too
  std::ostringstream log;
  c.train.run_name = "full";
  const train::TrainResult full = train::run_training(c, log);
  c.train.run_name = "old";
  c.train.stop_after = 8;
  train::run_training(c, log);
  const fs::path dir = run.dir / "ckpt" / "old";
  const std::string ck8 = (dir / "step_00000008.h5").string();
  make_old(ck8, c.train.batch_size, /*strip_metadata_crc=*/true);
  const CheckpointData old = load_checkpoint(ck8);
  for (const char* name : kNewerTrainerAttrs) EXPECT_EQ(old.trainer_ints.count(name), 0u) << name;
  EXPECT_EQ(old.data.at("position"), 8);  // 8 steps of one batch

  c.train.stop_after = 0;
  c.checkpoint.resume = "auto";
  std::ostringstream rlog;
  const train::TrainResult resumed = train::run_training(c, rlog);
  EXPECT_NE(rlog.str().find("resume: " + ck8 + " at step 8"), std::string::npos) << rlog.str();
  EXPECT_EQ(resumed.steps, 12);
  const auto want = tessera::testing::metric(run.dir / "ckpt" / "full" / "metrics.jsonl", "loss");
  const auto got = tessera::testing::metric(dir / "metrics.jsonl", "loss");
  for (int64_t s = 9; s <= 12; ++s) {
    ASSERT_TRUE(got.count(s)) << "no loss logged for step " << s << "\n" << rlog.str();
    EXPECT_EQ(got.at(s), want.at(s)) << "step " << s;
  }
  EXPECT_EQ(resumed.last_val_loss, full.last_val_loss);
  const CheckpointData a = load_checkpoint(full.last_checkpoint);
  const CheckpointData b = load_checkpoint(resumed.last_checkpoint);
  EXPECT_EQ(b.data, a.data);  // the loader's seed, epoch and position (in windows)
  EXPECT_EQ(b.trainer_ints.at("window_positions"), 1);  // written in this version's units again
  ASSERT_EQ(a.model.size(), b.model.size());
  for (size_t i = 0; i < a.model.size(); ++i)
    EXPECT_EQ(bytes(a.model[i].second), bytes(b.model[i].second)) << a.model[i].first;
}

// The metadata checksum covers the /trainer, /data, /rng and /adapter attributes and the config
// (checkpoint.cpp: skipped only where the file has none, as files of before it). A file that
// still carries it but whose attributes were edited (here: the newer trainer attributes deleted,
// the position rewritten) is refused as edited, naming the file and the attribute, rather than
// resumed from numbers nobody wrote. Dataset checksums removed alone are no such edit: the file
// loads with its metadata checksum intact.
TEST(CheckpointVersions, edited_attributes_under_a_metadata_checksum_are_refused) {
  tessera::testing::TempRun run;
  Config c = run.config(4);
  c.checkpoint.interval = 4;
  std::ostringstream log;
  const std::string file = train::run_training(c, log).last_checkpoint;
  const CheckpointData before = load_checkpoint(file);

  const std::string edited = (run.dir / "edited.h5").string();
  fs::copy_file(file, edited);
  make_old(edited, c.train.batch_size, /*strip_metadata_crc=*/false);
  const std::string msg = error_of([&] { load_checkpoint(edited); });
  EXPECT_NE(msg.find(edited), std::string::npos) << msg;
  EXPECT_NE(msg.find("do not match their checksum (metadata_crc32c)"), std::string::npos) << msg;

  const std::string unguarded = (run.dir / "unguarded.h5").string();
  fs::copy_file(file, unguarded);
  {
    H5File f = H5File::open(unguarded);
    std::vector<std::string> datasets;
    for (const H5Entry& e : f.walk("/"))
      if (!e.is_group && f.has_attr("/" + e.path, "crc32c")) datasets.push_back("/" + e.path);
    f.close();
    ASSERT_FALSE(datasets.empty());
    for (const std::string& d : datasets) delete_attr(unguarded, d, "crc32c");
  }
  const CheckpointData after = load_checkpoint(unguarded);  // no digest file: one warning
  EXPECT_EQ(after.trainer_ints, before.trainer_ints);
  ASSERT_EQ(after.model.size(), before.model.size());
  for (size_t i = 0; i < after.model.size(); ++i)
    EXPECT_EQ(bytes(after.model[i].second), bytes(before.model[i].second));
}
