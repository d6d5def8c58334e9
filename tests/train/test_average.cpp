// Checkpoint averaging (train/average.h, build/average): each weight the mean of the inputs' (as
// computed here from the files), the newest input's step and config; two identical checkpoints
// average to themselves bit for bit; what it refuses, and the binary's output that eval reads.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "config/config.h"
#include "train/average.h"
#include "train/trainer.h"
#include "train_fixture.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using testing::TempRun;

// A 12-step run saving at steps 4, 8 and 12; returns its directory.
fs::path trained(const TempRun& run, const char* name) {
  Config c = run.config(12);
  c.checkpoint.interval = 4, c.checkpoint.keep = 10;
  c.train.run_name = name;
  std::ostringstream log;
  train::run_training(c, log);
  return run.dir / "ckpt" / name;
}

TEST(Average, each_weight_is_the_mean_and_the_newest_input_gives_step_and_config) {
  TempRun run;
  const fs::path dir = trained(run, "run");
  const std::vector<std::string> files = {(dir / checkpoint_name(8)).string(),
                                          (dir / checkpoint_name(4)).string(),
                                          (dir / checkpoint_name(12)).string()};
  const train::Averaged a = train::average_checkpoints(files);
  EXPECT_EQ(a.step, 12);
  EXPECT_EQ(a.steps, (std::vector<int64_t>{8, 4, 12}));
  EXPECT_EQ(a.data.trainer_ints.at("step"), 12);
  std::vector<CheckpointData> in;
  for (const std::string& f : files) in.push_back(load_checkpoint(f));
  EXPECT_EQ(a.data.config_yaml, in[2].config_yaml);
  ASSERT_EQ(a.data.model.size(), in[0].model.size());
  int64_t moved = 0;
  for (size_t i = 0; i < a.data.model.size(); ++i) {
    const auto& [name, t] = a.data.model[i];
    ASSERT_EQ(name, in[0].model[i].first);
    const float* x = t.data<float>();
    for (int64_t j = 0; j < t.numel(); ++j) {
      double sum = 0;
      for (const CheckpointData& ck : in) sum += double(ck.model[i].second.data<float>()[j]);
      ASSERT_EQ(x[j], float(sum / 3.0)) << name << " element " << j;
      moved += x[j] != in[2].model[i].second.data<float>()[j];
    }
  }
  EXPECT_GT(moved, 0);  // the checkpoints differ, so the mean is none of them

  // The run resumed to step 16 under train.max_steps 16: the newest input's config is that one,
  // whichever order the inputs come in.
  Config longer = run.config(16);
  longer.checkpoint.interval = 4, longer.checkpoint.keep = 10, longer.checkpoint.resume = "auto";
  std::ostringstream log;
  train::run_training(longer, log);
  const train::Averaged later =
      train::average_checkpoints({(dir / checkpoint_name(16)).string(), files[0]});
  EXPECT_EQ(later.step, 16);
  EXPECT_EQ(parse_stored_config(later.data.config_yaml, "average").train.max_steps, 16);
  EXPECT_EQ(parse_stored_config(a.data.config_yaml, "average").train.max_steps, 12);

  // A copy of a checkpoint in another directory is another file of the same weights: their mean
  // is the checkpoint itself.
  fs::create_directories(run.dir / "copy");
  testing::copy_checkpoint(dir / checkpoint_name(8), run.dir / "copy");
  const train::Averaged same = train::average_checkpoints(
      {(dir / checkpoint_name(8)).string(), (run.dir / "copy" / checkpoint_name(8)).string()});
  for (size_t i = 0; i < same.data.model.size(); ++i) {
    const Tensor &x = same.data.model[i].second, &y = in[0].model[i].second;
    EXPECT_EQ(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()), 0) << same.data.model[i].first;
  }
}

TEST(Average, refuses_one_checkpoint_a_file_given_twice_another_model_and_adapters) {
  TempRun run;
  const fs::path dir = trained(run, "run");
  const std::string last = (dir / checkpoint_name(12)).string();
  std::string m = error_of([&] { train::average_checkpoints({last}); });
  EXPECT_NE(m.find("needs two checkpoints or more, got 1"), std::string::npos) << m;
  // The run directory resolves to its latest, step 12.
  m = error_of([&] { train::average_checkpoints({last, dir.string()}); });
  EXPECT_NE(m.find(last + " is given twice (" + dir.string() + ")"), std::string::npos) << m;
  const std::string dotted = (dir / "." / checkpoint_name(12)).string();  // another spelling
  m = error_of([&] { train::average_checkpoints({last, dotted}); });
  EXPECT_NE(m.find(dotted + " is " + last + " again (given as " + dotted + ")"), std::string::npos)
      << m;

  Config wider = run.config(4);
  wider.model.n_embd = 48, wider.train.run_name = "wider";
  std::ostringstream log;
  const std::string other = train::run_training(wider, log).last_checkpoint;
  m = error_of([&] { train::average_checkpoints({last, other}); });
  EXPECT_NE(m.find(other + " is another model than " + last + ": model.n_embd: 32 vs 48"),
            std::string::npos)
      << m;

  Config lora = run.config(4);
  lora.train.run_name = "lora", lora.checkpoint.init = last;
  lora.lora.rank = 2;
  const std::string adapters = train::run_training(lora, log).last_checkpoint;
  m = error_of([&] { train::average_checkpoints({last, adapters}); });
  EXPECT_NE(m.find(adapters + " holds LoRA adapters: merge them into their base first"),
            std::string::npos)
      << m;
}

// build/average writes step_<newest>.h5 and latest into --output, which eval reads; an --output
// that holds a run is refused and left as it was.
TEST(Average, the_binary_writes_a_checkpoint_eval_reads_and_refuses_a_run_directory) {
  TempRun run;
  const fs::path dir = trained(run, "run");
  const fs::path out = run.dir / "avg";
  const std::string average = testing::bin_dir() + "/average --output " + out.string() + " " +
                              (dir / checkpoint_name(8)).string() + " " +
                              (dir / checkpoint_name(12)).string() + " 2>&1";
  std::string text;
  ASSERT_EQ(testing::run_command(average, &text), 0) << text;
  EXPECT_EQ(text, "averaged 2 checkpoints (steps 8, 12) -> " +
                      (out / checkpoint_name(12)).string() + "\n");
  EXPECT_TRUE(fs::exists(out / "latest"));
  ASSERT_EQ(
      testing::run_command(
          testing::bin_dir() + "/eval --checkpoint " + out.string() + " --batches 2 2>&1", &text),
      0)
      << text;
  EXPECT_NE(text.find("loss "), std::string::npos) << text;

  const auto before = fs::last_write_time(dir / "latest");
  const std::string into_run = testing::bin_dir() + "/average --output " + dir.string() + " " +
                               (dir / checkpoint_name(4)).string() + " " +
                               (dir / checkpoint_name(8)).string() + " 2>&1";
  EXPECT_NE(testing::run_command(into_run, &text), 0) << text;
  EXPECT_NE(text.find("--output"), std::string::npos) << text;
  EXPECT_EQ(fs::last_write_time(dir / "latest"), before);
}

}  // namespace
}  // namespace tessera
