// What the ranks of a data-parallel run read from and write to disk, where the disk is not what
// they share: each rank is started in a working directory of its own (`mpirun -np 1 -wdir nodeA
// ... : -np 1 -wdir nodeB ...`) with a relative checkpoint.dir, as on nodes with local disks. Ranks
// that resume, start from or roll back to different checkpoints stop together, each naming what
// it read, instead of training different models side by side; a filesystem failure on rank 0
// stops every rank with one line naming the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "core/build.h"
#include "multirank/mpirun.h"
#include "test_util.h"
#include "train/train_fixture.h"

using namespace tessera;
using namespace tessera::testing;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class PrivateDisks : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!built_with::mpi()) GTEST_SKIP() << "tessera was built without MPI";
    ASSERT_TRUE(fs::exists(kTrain)) << kTrain << " is not built";
    for (const fs::path& node : {node_a_, node_b_}) fs::create_directories(node);
  }

  // The tiny model, 2 ranks x 1 micro-batch of 4, checkpoints every 4 steps under the rank's own
  // working directory. A rank left waiting by a mistake gives up after 20 s.
  Config config(int64_t steps, const std::string& name) const {
    Config c = run_.config(steps);
    c.train.batch_size = 4;
    c.train.total_batch_size = 8 * 16;
    c.eval.interval = 0;
    c.checkpoint.dir = "ckpt";
    c.checkpoint.interval = 4;
    c.checkpoint.keep = 4;
    c.dist.timeout = 20;
    c.train.run_name = name;
    return c;
  }
  fs::path write(const Config& c) const {
    const fs::path cfg = run_.dir / (c.train.run_name + ".yaml");
    std::ofstream(cfg) << to_yaml(c);
    return cfg;
  }
  // Rank 0 in nodeA, rank 1 in nodeB, each with `args` after --config; the job's output.
  std::string run_apart(const fs::path& cfg, std::vector<std::string> args, int* rc) const {
    args.insert(args.begin(), {"--config", cfg.string()});
    const fs::path log = run_.dir / (cfg.stem().string() + ".log");
    fs::remove(log);  // this job's output alone
    *rc = mpirun_each({{node_a_, args}, {node_b_, args}}, log);
    return read(log);
  }

  TempRun run_;
  const fs::path node_a_ = run_.dir / "nodeA", node_b_ = run_.dir / "nodeB";
};

// A copy of a checkpoint with one weight changed, saved (with its digest file) at `to`.
void save_changed_copy(const fs::path& from, const fs::path& to) {
  CheckpointData ck = load_checkpoint(from.string());
  ck.model.front().second.data<float>()[0] += 1.0f;
  fs::create_directories(to.parent_path());
  save_checkpoint(to.string(), ck);
}

}  // namespace

// Rank 0's node holds the run at step 4, rank 1's holds nothing: with --resume auto rank 0 would
// resume and rank 1 start fresh. Then both nodes hold a checkpoint.init of the same path but other
// weights. Either way every rank stops before the first step, rank 1 naming what it read.
TEST_F(PrivateDisks, ranks_that_resume_or_init_from_different_checkpoints_stop_before_training) {
  const Config c = config(8, "private");
  const fs::path cfg = write(c);
  const fs::path log = run_.dir / "first.log";
  ASSERT_EQ(mpirun_each({{node_a_, {"--config", cfg.string(), "--set", "train.stop_after=4"}},
                         {node_a_, {"--config", cfg.string(), "--set", "train.stop_after=4"}}},
                        log),
            0)
      << read(log);
  const fs::path dir = node_a_ / "ckpt/private";
  ASSERT_EQ(resolve_checkpoint(dir.string()), (dir / checkpoint_name(4)).string());

  int rc = 0;
  std::string text = run_apart(cfg, {"--resume", "auto"}, &rc);
  EXPECT_NE(rc, 0) << text;
  EXPECT_TRUE(has(text,
                  "rank 1 was started with another config, data or checkpoint than rank 0: "
                  "checkpoint.resumed from is 'none' here"))
      << text;
  EXPECT_TRUE(has(text, "see the same checkpoints (checkpoint.dir")) << text;
  // Rank 0 wrote nothing: no checkpoint of mixed weights, `latest` where it was.
  EXPECT_EQ(list_checkpoints(dir.string()).size(), 1u);
  EXPECT_EQ(resolve_checkpoint(dir.string()), (dir / checkpoint_name(4)).string());

  // The same relative checkpoint.init, other weights on rank 1's node.
  const std::string init = "init/" + checkpoint_name(4);
  fs::create_directories(node_a_ / "init");
  fs::copy_file(dir / checkpoint_name(4), node_a_ / init);
  fs::copy_file(dir / (checkpoint_name(4) + ".sha256"), node_a_ / (init + ".sha256"));
  save_changed_copy(dir / checkpoint_name(4), node_b_ / init);
  const fs::path tuned = write(config(8, "tuned"));
  text = run_apart(tuned, {"--set", "checkpoint.init=" + init}, &rc);
  EXPECT_NE(rc, 0) << text;
  EXPECT_TRUE(has(text,
                  "rank 1 was started with another config, data or checkpoint than rank 0: "
                  "checkpoint.init weights is 'CRC-32C "))
      << text;
  EXPECT_TRUE(list_checkpoints((node_a_ / "ckpt/tuned").string()).empty());

  // The same file on both nodes: it trains.
  fs::remove(node_b_ / init);
  fs::remove(node_b_ / (init + ".sha256"));
  fs::copy_file(node_a_ / init, node_b_ / init);
  fs::copy_file(node_a_ / (init + ".sha256"), node_b_ / (init + ".sha256"));
  text = run_apart(tuned, {"--set", "checkpoint.init=" + init}, &rc);
  EXPECT_EQ(rc, 0) << text;
  EXPECT_TRUE(has(text, "init: weights from " + init)) << text;
}

// A spike at step 10 rolls back to step 8, which rank 0 chose from its node. Rank 1's node holds
// (a) nothing, (b) a damaged step 8 beside an intact step 4, (c) another step 8: each rank would
// have gone back to a step of its own, or rank 0 alone. Every rank stops instead, naming rank 1
// and the file, and rank 0 deleted nothing.
TEST_F(PrivateDisks, ranks_that_cannot_roll_back_to_rank_0s_checkpoint_stop_together) {
  auto spiky = [&](const std::string& name) {
    Config c = config(12, name);
    c.spike.window = 6;
    c.spike.inject_steps = "10";
    c.spike.inject_kind = "scale";
    c.spike.inject_rank = 1;
    return write(c);
  };
  auto rank0_kept_everything = [&](const std::string& name) {
    const fs::path dir = node_a_ / "ckpt" / name;
    EXPECT_TRUE(fs::exists(dir / checkpoint_name(8)));
    EXPECT_EQ(resolve_checkpoint(dir.string()), (dir / checkpoint_name(8)).string());
  };
  const std::string stopped =
      "another rank could not load the checkpoint to roll back to, "
      "ckpt/";
  int rc = 0;
  std::string text = run_apart(spiky("rb_a"), {}, &rc);
  EXPECT_NE(rc, 0) << text;
  EXPECT_TRUE(has(text, "spike at step 10")) << text;
  EXPECT_TRUE(has(text, "rank 1 cannot roll back to ckpt/rb_a/" + checkpoint_name(8) +
                            " (step 8, the checkpoint rank 0 chose)"))
      << text;
  EXPECT_TRUE(has(text, stopped + "rb_a/" + checkpoint_name(8))) << text;
  rank0_kept_everything("rb_a");

  const fs::path a = node_a_ / "ckpt/rb_a", b = node_b_ / "ckpt/rb_b";
  fs::create_directories(b);
  for (int64_t s : {4, 8})
    for (const std::string& f : {checkpoint_name(s), checkpoint_name(s) + ".sha256"})
      fs::copy_file(a / f, b / f);
  std::string bytes = read(b / checkpoint_name(8));
  bytes[bytes.size() / 2] ^= 0x10;
  std::ofstream(b / checkpoint_name(8), std::ios::binary | std::ios::trunc) << bytes;
  text = run_apart(spiky("rb_b"), {}, &rc);
  EXPECT_NE(rc, 0) << text;
  EXPECT_TRUE(has(text, "rank 1 cannot roll back to ckpt/rb_b/" + checkpoint_name(8))) << text;
  EXPECT_TRUE(has(text, stopped + "rb_b/" + checkpoint_name(8))) << text;
  rank0_kept_everything("rb_b");

  save_changed_copy(a / checkpoint_name(8), node_b_ / "ckpt/rb_c" / checkpoint_name(8));
  text = run_apart(spiky("rb_c"), {}, &rc);
  EXPECT_NE(rc, 0) << text;
  EXPECT_TRUE(has(text, "rank 1's ckpt/rb_c/" + checkpoint_name(8) +
                            " holds another checkpoint than rank 0's (CRC-32C "))
      << text;
  EXPECT_TRUE(has(text, "another rank holds another checkpoint than rank 0's at ckpt/rb_c/"))
      << text;
  rank0_kept_everything("rb_c");
}

// Rank 0 alone touches the run directory; when the filesystem refuses (here: a checkpoint.dir
// that is a file, and a digest file that retention cannot delete because it is a directory), every
// rank stops at once with a line naming the file, not only rank 0.
TEST_F(PrivateDisks, a_filesystem_error_on_rank_0_stops_every_rank_naming_the_file) {
  Config c = config(4, "fs");
  c.checkpoint.dir = (run_.dir / "a_file").string();
  std::ofstream(run_.dir / "a_file") << "not a directory\n";
  int rc = 0;
  std::string text = run_apart(write(c), {}, &rc);
  EXPECT_NE(rc, 0) << text;
  EXPECT_TRUE(has(text, "cannot prepare the run directory " + c.checkpoint.dir + "/fs")) << text;
  EXPECT_TRUE(has(text, "rank 0 could not prepare the run directory " + c.checkpoint.dir + "/fs"))
      << text;

  c.checkpoint.dir = (run_.dir / "shared").string();
  c.checkpoint.interval = 1;
  const fs::path cfg = write(c);
  text = run_apart(cfg, {"--set", "train.stop_after=2"}, &rc);
  ASSERT_EQ(rc, 0) << text;
  const fs::path dir = run_.dir / "shared/fs";
  const fs::path digest = dir / (checkpoint_name(1) + ".sha256");
  fs::remove(digest);
  fs::create_directories(digest / "held");
  text = run_apart(cfg, {"--resume", "auto", "--set", "checkpoint.keep=2"}, &rc);
  EXPECT_NE(rc, 0) << text;
  EXPECT_TRUE(has(text, "cannot remove digest file " + digest.string())) << text;
  EXPECT_TRUE(has(text, "rank 0 could not save checkpoint " + checkpoint_name(3))) << text;
}
