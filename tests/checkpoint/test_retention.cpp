// Retention and the choice of the checkpoint to resume from.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint/retention.h"
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
  for (int64_t s : {30, 5, 100000000}) save(s);
  std::ofstream(dir / "step_12.h5.tmp") << "x";
  std::ofstream(dir / "notes.txt") << "x";
  std::ofstream(dir / "step_abc.h5") << "x";
  EXPECT_EQ(steps(), (std::vector<int64_t>{5, 30, 100000000}));
}

TEST_F(Retention, keeps_the_newest_k_milestones_and_the_protected_file) {
  for (int64_t s = 100; s <= 1000; s += 100) save(s);
  prune_checkpoints(dir.string(), {.keep = 3, .milestone_interval = 400}, "");
  // 400 and 800 are milestones; of the others the newest three stay.
  EXPECT_EQ(steps(), (std::vector<int64_t>{400, 700, 800, 900, 1000}));
  prune_checkpoints(dir.string(), {.keep = 2, .milestone_interval = 0},
                    checkpoint_name(400));
  EXPECT_EQ(steps(), (std::vector<int64_t>{400, 900, 1000}));
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

TEST_F(Retention, resume_takes_latest_and_falls_back_past_damaged_files) {
  std::ostringstream warn;
  EXPECT_FALSE(load_resumable(dir.string(), warn).has_value());  // nothing yet: start fresh

  save(10);
  save(20);
  const std::string s30 = save(30);
  std::optional<Resumable> r = load_resumable(dir.string(), warn);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->path, s30);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 30);
  EXPECT_EQ(warn.str(), "");

  fs::resize_file(s30, fs::file_size(s30) / 2);  // a torn write
  r = load_resumable(dir.string(), warn);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data.trainer_ints.at("step"), 20);
  EXPECT_NE(warn.str().find("skipping checkpoint " + s30), std::string::npos) << warn.str();

  // `latest` naming a file that is gone: the newest complete file on disk is used.
  std::ofstream(dir / "latest") << "step_00000099.h5\n";
  std::ostringstream warn2;
  r = load_resumable(dir.string(), warn2);
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
      tessera::testing::error_of([&] { load_resumable(dir.string(), warn); });
  EXPECT_NE(msg.find(a), std::string::npos) << msg;
  EXPECT_NE(msg.find(b), std::string::npos) << msg;
}
