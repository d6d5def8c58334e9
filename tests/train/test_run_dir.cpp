// What a run may do with its run directory and the checkpoint it resumes: it never writes over an
// earlier run, never continues a checkpoint as another model, never starts over silently, and finds
// a broken validation split before it trains.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <tuple>

#include "checkpoint/retention.h"
#include "test_util.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::error_of;
using tessera::testing::TempRun;

namespace {

std::string bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// A 4-step run that saved steps 2 and 4 under run dir ckpt/run.
Config saved_run(const TempRun& run, std::ostream& log) {
  Config c = run.config(4);
  c.checkpoint.interval = 2;
  train::run_training(c, log);
  return c;
}

}  // namespace

TEST(RunDirectory, a_fresh_run_refuses_a_directory_with_an_earlier_runs_checkpoints) {
  TempRun run;
  std::ostringstream log;
  Config c = saved_run(run, log);
  const fs::path dir = run.dir / "ckpt" / "run";
  const std::string step2 = bytes_of(dir / "step_00000002.h5"), latest = bytes_of(dir / "latest");

  c.train.seed = 7;  // another run, same directory, no resume
  const std::string msg = error_of([&] { train::run_training(c, log); });
  EXPECT_NE(msg.find(dir.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("step_00000004.h5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--resume auto"), std::string::npos) << msg;
  EXPECT_EQ(bytes_of(dir / "step_00000002.h5"), step2);
  EXPECT_EQ(bytes_of(dir / "latest"), latest);

  // A `latest` alone (its checkpoint gone) is an earlier run's too.
  fs::remove(dir / "step_00000002.h5");
  fs::remove(dir / "step_00000004.h5");
  const std::string latest_only = error_of([&] { train::run_training(c, log); });
  EXPECT_NE(latest_only.find("already holds a run (latest, metrics.jsonl with "), std::string::npos)
      << latest_only;

  // Resuming it, or another run name, is what the message offers; both run.
  c.train.run_name = "other";
  EXPECT_EQ(train::run_training(c, log).steps, 4);
}

// A run that stopped before its first checkpoint leaves only metrics.jsonl; a fresh run appending
// to it would read, in the file, as steps of the old run.
TEST(RunDirectory, a_fresh_run_refuses_a_directory_with_an_earlier_runs_metrics) {
  TempRun run;
  std::ostringstream log;
  Config c = run.config(2);
  const fs::path dir = run.dir / "ckpt" / "run";
  fs::create_directories(dir);
  const std::string stale = "{\"step\": 1, \"loss\": 9.5}\n{\"step\": 2, \"loss\": 9.4}\n{\"st";
  std::ofstream(dir / "metrics.jsonl") << stale;
  const std::string msg = error_of([&] { train::run_training(c, log); });
  EXPECT_NE(msg.find("run directory " + dir.string() +
                     " already holds a run (metrics.jsonl with 3 lines): continue it with "
                     "--resume auto"),
            std::string::npos)
      << msg;
  EXPECT_EQ(bytes_of(dir / "metrics.jsonl"), stale);
  EXPECT_FALSE(fs::exists(dir / "latest"));

  // --resume auto continues the file (no checkpoint: from step 0, the old steps logged again).
  c.checkpoint.resume = "auto";
  EXPECT_EQ(train::run_training(c, log).steps, 2);
  const std::string kept = stale.substr(0, stale.rfind('\n') + 1);  // less the cut-off line
  const std::string resumed = bytes_of(dir / "metrics.jsonl");
  EXPECT_EQ(resumed.substr(0, kept.size() + 9), kept + "{\"step\": ") << resumed;

  // An empty metrics.jsonl (a run that stopped before its first step) holds no run.
  c.checkpoint.resume = "";
  c.train.run_name = "empty";
  fs::create_directories(run.dir / "ckpt" / "empty");
  std::ofstream(run.dir / "ckpt" / "empty" / "metrics.jsonl").close();
  EXPECT_EQ(train::run_training(c, log).steps, 2);
}

TEST(RunDirectory, resume_auto_with_latest_naming_a_deleted_checkpoint_is_an_error) {
  TempRun run;
  std::ostringstream log;
  Config c = saved_run(run, log);
  const fs::path dir = run.dir / "ckpt" / "run";
  fs::remove(dir / "step_00000002.h5");
  fs::remove(dir / "step_00000004.h5");
  c.checkpoint.resume = "auto";
  c.train.max_steps = 6;
  const std::string msg = error_of([&] { train::run_training(c, log); });
  EXPECT_NE(msg.find("nothing to resume from"), std::string::npos) << msg;
  EXPECT_NE(msg.find((dir / "latest").string()), std::string::npos) << msg;
  EXPECT_TRUE(list_checkpoints(dir.string()).empty());  // it did not start over
}

TEST(RunDirectory, a_checkpoint_resumes_only_into_its_own_model) {
  TempRun run;
  std::ostringstream log;
  Config c = saved_run(run, log);
  c.checkpoint.resume = "auto";
  c.train.max_steps = 6;
  // Each keeps every tensor's shape: only the stored config tells them apart.
  for (const auto& [key, change] : std::vector<std::pair<std::string, void (*)(Config&)>>{
           {"model.n_head: 2 vs 4", [](Config& x) { x.model.n_head = 4; }},
           {"model.norm_eps", [](Config& x) { x.model.norm_eps = 0.1; }},
           {"model.sliding_window: 0 vs 8", [](Config& x) { x.model.sliding_window = 8; }},
           {"model.attention: softmax vs stick_breaking",
            [](Config& x) { x.model.attention = "stick_breaking"; }}}) {
    Config changed = c;
    change(changed);
    const std::string msg = error_of([&] { train::run_training(changed, log); });
    EXPECT_NE(msg.find(key), std::string::npos) << msg;
    EXPECT_NE(msg.find("step_00000004.h5"), std::string::npos) << msg;
  }
  Config dropout = c;  // regularisation, not the model: it may change
  dropout.model.dropout = 0.1;
  EXPECT_EQ(train::run_training(dropout, log).steps, 6);
}

// What a resumed run must keep from its checkpoint. The seed: the checkpoint's generators (data
// order, dropout) go on, and another seed would run the old one while the next checkpoint stored
// the new. The sequence length: the data cursor counts windows, and half the length at twice the
// batch keeps the tokens per step but reads another shuffle from a position that meant something
// else. Each is refused naming the value to set, nothing written; the unchanged config resumes.
TEST(RunDirectory, a_resume_keeps_the_checkpoints_seed_and_sequence_length) {
  TempRun run;
  std::ostringstream log;
  Config c = saved_run(run, log);
  c.checkpoint.resume = "auto";
  c.train.max_steps = 6;
  const std::string T = std::to_string(c.sequence_length()), half = std::to_string(c.sequence_length() / 2);
  Config seed = c, shorter = c, halved = c;
  seed.train.seed = 999;
  shorter.train.seq_len = c.sequence_length() / 2;
  shorter.train.batch_size = 2 * c.train.batch_size;
  ASSERT_EQ(shorter.tokens_per_step(1), c.tokens_per_step(1));
  // Half the tokens per step too: the length is still the change named, not the checkpoint's
  // tokens per step (which this run would otherwise keep, total_batch_size being 0).
  halved.train.seq_len = c.sequence_length() / 2;
  ASSERT_EQ(halved.train.total_batch_size, 0);
  const std::string windows =
      "was trained on windows of " + T + " tokens but this run takes " + half + " (train.seq_len)";
  for (const auto& [changed, want, fix] :
       {std::tuple{seed, std::string("was trained with train.seed 1337 but this run sets 999"),
                   std::string("set train.seed: 1337")},
        {shorter, windows, "set train.seq_len: " + T},
        {halved, windows, "set train.seq_len: " + T}}) {
    std::ostringstream refused;
    const std::string msg = error_of([&] { train::run_training(changed, refused); });
    EXPECT_NE(msg.find("step_00000004.h5 " + want), std::string::npos) << msg;
    EXPECT_NE(msg.find(fix), std::string::npos) << msg;
    EXPECT_EQ(refused.str().find("tokens per step"), std::string::npos) << refused.str();
    EXPECT_FALSE(fs::exists(run.dir / "ckpt" / "run" / "step_00000006.h5"));
  }
  EXPECT_EQ(train::run_training(c, log).steps, 6);
}

// A job that requeues with --resume auto keeps its checkpoint.init: once a full checkpoint is there
// to resume, the init file is not read (it may be gone) and the log says where the weights came from.
TEST(RunDirectory, a_full_resume_does_not_read_checkpoint_init) {
  TempRun run;
  std::ostringstream first;
  Config c = saved_run(run, first);
  c.checkpoint.resume = "auto";
  c.checkpoint.init = (run.dir / "gone.h5").string();
  c.train.max_steps = 6;
  std::ostringstream log;
  EXPECT_EQ(train::run_training(c, log).steps, 6);
  EXPECT_NE(log.str().find("init: " + c.checkpoint.init + " not read: the weights come from "),
            std::string::npos)
      << log.str();
  EXPECT_EQ(log.str().find("init: weights from"), std::string::npos) << log.str();
}

// An explicit resume of an older checkpoint branches the run: the newer checkpoints of the
// directory are the abandoned branch's, and this run's saves replace them.
TEST(RunDirectory, resuming_an_older_checkpoint_names_the_newer_ones_it_replaces) {
  TempRun run;
  std::ostringstream log;
  Config c = saved_run(run, log);
  const fs::path dir = run.dir / "ckpt" / "run";
  c.checkpoint.resume = (dir / "step_00000002.h5").string();
  std::ostringstream older;
  EXPECT_EQ(train::run_training(c, older).steps, 4);
  EXPECT_NE(
      older.str().find("warning: resume: " + dir.string() + " holds checkpoints after step 2"),
      std::string::npos)
      << older.str();
  EXPECT_NE(older.str().find("branches off: step_00000004.h5; this run's saves write over them"),
            std::string::npos)
      << older.str();
  // The newest checkpoint resumed: nothing after it, nothing said.
  c.checkpoint.resume = "auto";
  c.train.max_steps = 6;
  std::ostringstream newest;
  EXPECT_EQ(train::run_training(c, newest).steps, 6);
  EXPECT_EQ(newest.str().find("warning"), std::string::npos) << newest.str();
}

// The data position is a window index into the files data.train matches.
TEST(RunDirectory, a_resume_on_other_training_files_says_so) {
  TempRun run;
  std::ostringstream log;
  Config c = saved_run(run, log);
  c.checkpoint.resume = "auto";
  // The same files by another spelling of the glob: nothing to say.
  c.data.train = (run.dir / "." / "train_*.bin").string();
  c.train.max_steps = 5;
  std::ostringstream same;
  EXPECT_EQ(train::run_training(c, same).steps, 5);
  EXPECT_EQ(same.str().find("data.train is"), std::string::npos) << same.str();

  const std::string old_glob = c.data.train;
  fs::copy_file(run.dir / "train_000.bin", run.dir / "other_000.bin");
  c.data.train = (run.dir / "other_*.bin").string();
  c.train.max_steps = 6;
  std::ostringstream other;
  EXPECT_EQ(train::run_training(c, other).steps, 6);
  EXPECT_NE(
      other.str().find("warning: resume: data.train is '" + c.data.train + "' but checkpoint " +
                       (run.dir / "ckpt" / "run" / "step_00000005.h5").string() +
                       " was trained on '" + old_glob + "'"),
      std::string::npos)
      << other.str();
}

// --init takes weights only, but they must be the config's model: tensors of the same shapes
// fit n_head 2 and 4 alike. A fine-tune may extend the context (rope_scaling, block_size).
TEST(RunDirectory, an_init_checkpoint_must_hold_the_configs_model) {
  TempRun run;
  std::ostringstream log;
  Config base = run.config(2);
  base.model.position = "rope";
  base.train.run_name = "base";
  const std::string weights = train::run_training(base, log).last_checkpoint;
  Config c = base;
  c.train.run_name = "tuned";
  c.checkpoint.init = weights;
  Config heads = c;
  heads.model.n_head = 4;
  const std::string msg = error_of([&] { train::run_training(heads, log); });
  EXPECT_NE(msg.find("checkpoint.init: " + weights +
                     " holds another model than the config's "
                     "(model.n_head: 2 vs 4"),
            std::string::npos)
      << msg;
  EXPECT_TRUE(list_checkpoints((run.dir / "ckpt" / "tuned").string()).empty());
  Config longer = c;  // twice the context, positions interpolated
  longer.model.block_size = 32;
  longer.model.rope_scaling.type = "linear";
  longer.model.rope_scaling.factor = 2;
  longer.model.rope_scaling.original_max_position = 16;
  longer.model.dropout = 0.1;
  longer.eval.interval = 0;  // data.val holds no batch of 32-token windows
  EXPECT_EQ(train::run_training(longer, log).steps, 2);
}

TEST(RunDirectory, resuming_at_or_past_max_steps_trains_nothing_and_says_so) {
  TempRun run;
  std::ostringstream log;
  Config c = saved_run(run, log);
  c.checkpoint.resume = "auto";
  std::ostringstream at;
  train::TrainResult r = train::run_training(c, at);
  EXPECT_EQ(r.steps, 4);
  EXPECT_EQ(r.last_train_loss, -1);  // no step ran: no loss to report
  EXPECT_NE(at.str().find("nothing to train: the run is at step 4"), std::string::npos) << at.str();

  c.train.max_steps = 3;
  const std::string msg = error_of([&] { train::run_training(c, log); });
  EXPECT_NE(msg.find("is at step 4, past train.max_steps (3)"), std::string::npos) << msg;
}

TEST(RunDirectory, a_broken_validation_split_stops_the_run_before_it_trains) {
  TempRun run;
  std::ostringstream log;
  Config c = run.config(4);
  c.data.val = (run.dir / "valid_*.bin").string();
  std::string msg = error_of([&] { train::run_training(c, log); });
  EXPECT_NE(msg.find("data.val"), std::string::npos) << msg;
  EXPECT_EQ(log.str().find("| loss"), std::string::npos) << log.str();  // no step ran

  // An id past the vocabulary, likewise named before the first step.
  data::write_shard((run.dir / "bad_000.bin").string(), {1, 2, 300, 4}, 301);
  c.data.val = (run.dir / "bad_*.bin").string();
  msg = error_of([&] { train::run_training(c, log); });
  EXPECT_NE(msg.find("bad_000.bin"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(run.dir / "ckpt" / "run" / "step_00000004.h5"));
}
