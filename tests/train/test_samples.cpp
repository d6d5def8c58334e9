// Samples during training (log.sample_interval, train/samples.h): printed and written to
// metrics.jsonl at every interval and after the last step; drawn without touching the run (the
// losses are the same bits with and without them) and the same at a step whether the run was
// resumed or not; a tokenizer the samples cannot read stops the run before its first step. Then
// the JSON text they are written as.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/json.h"
#include "config/config.h"
#include "data/shard.h"
#include "data/utf8.h"
#include "test_util.h"
#include "train/report.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::error_of;
using tessera::testing::TempRun;

namespace {

// A run's metrics.jsonl: each step's training loss (as written) and sample.
struct Metrics {
  std::map<int64_t, std::string> loss, sample;
};
Metrics read_metrics(const fs::path& file) {
  return {tessera::testing::metric(file, "loss"), tessera::testing::samples_in(file)};
}

Config sampled(const TempRun& run, int64_t steps, int64_t interval) {
  Config c = run.config(steps);
  c.log.interval = 1;
  c.log.sample_interval = interval;
  c.log.sample_tokens = 24;
  c.log.sample_prompt = "in the ";
  return c;
}

}  // namespace

TEST(TrainSamples, drawn_at_each_interval_without_changing_the_run_and_again_on_resume) {
  TempRun run;
  Config cfg = sampled(run, 7, 3);
  cfg.checkpoint.interval = 3;
  std::ostringstream log;
  const train::TrainResult with = train::run_training(cfg, log);
  const Metrics a = read_metrics(fs::path(cfg.checkpoint.dir) / "run" / "metrics.jsonl");
  // Steps 3 and 6, and the last one; each the prompt and what the model wrote after it.
  ASSERT_EQ(a.sample.size(), 3u) << log.str();
  for (const int64_t step : {3, 6, 7}) {
    const std::string& s = a.sample.at(step);
    EXPECT_EQ(s.rfind("in the ", 0), 0u) << step << ": " << s;
    EXPECT_GT(s.size(), 7u) << step;
    // metrics.jsonl has it as valid UTF-8, the log as printable text too.
    EXPECT_NE(log.str().find("step     " + std::to_string(step) + " | sample:\n" +
                             train::printable(s) + "\n"),
              std::string::npos)
        << log.str();
  }
  EXPECT_NE(a.sample.at(3), a.sample.at(7)) << "the model moved on, and the draw with it";

  // The same run without samples: the same losses, and the same weights bit for bit.
  Config plain = cfg;
  plain.log.sample_interval = 0, plain.train.run_name = "plain";
  std::ostringstream plain_log;
  const train::TrainResult without = train::run_training(plain, plain_log);
  const Metrics b = read_metrics(fs::path(cfg.checkpoint.dir) / "plain" / "metrics.jsonl");
  EXPECT_TRUE(b.sample.empty());
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(with.last_train_loss, without.last_train_loss);
  EXPECT_EQ(with.last_val_loss, without.last_val_loss);
  const CheckpointData wa = load_checkpoint(with.last_checkpoint),
                       wb = load_checkpoint(without.last_checkpoint);
  ASSERT_EQ(wa.model.size(), wb.model.size());
  for (size_t i = 0; i < wa.model.size(); ++i)
    EXPECT_EQ(wa.model[i].second.to_vector<float>(), wb.model[i].second.to_vector<float>())
        << wa.model[i].first;

  // Resumed from step 3 in a run of its own: steps 6 and 7 draw what the first run drew.
  Config resumed = cfg;
  resumed.train.run_name = "resumed";
  resumed.checkpoint.resume = (fs::path(cfg.checkpoint.dir) / "run" / "step_00000003.h5").string();
  std::ostringstream resumed_log;
  train::run_training(resumed, resumed_log);
  const Metrics c = read_metrics(fs::path(cfg.checkpoint.dir) / "resumed" / "metrics.jsonl");
  EXPECT_EQ(c.sample.at(6), a.sample.at(6)) << resumed_log.str();
  EXPECT_EQ(c.sample.at(7), a.sample.at(7));
}

TEST(TrainSamples, a_model_padded_past_the_tokenizer_samples_ids_it_decodes) {
  // model.vocab_size 300 over the byte tokenizer's 257: an untrained model's 40 most likely ids
  // often include padding ids, which the byte tokenizer cannot decode (the run would end there).
  TempRun run;
  Config cfg = sampled(run, 4, 1);
  cfg.model.vocab_size = 300;
  cfg.log.sample_tokens = 64;
  std::ostringstream log;
  train::run_training(cfg, log);
  EXPECT_EQ(read_metrics(fs::path(cfg.checkpoint.dir) / "run" / "metrics.jsonl").sample.size(), 4u)
      << log.str();
}

// log.sample_bos: trained on documents that start with a beginning-of-text id and then "q"
// (bos_documents_config), the sample from that id alone is "q" and one more byte, the id not
// printed (from the end-of-text id, never seen in training, it starts elsewhere). The byte
// tokenizer has no such id: the key is named before the first step.
TEST(TrainSamples, sample_bos_starts_the_sample_at_the_beginning_of_text_id) {
  TempRun run;
  Config cfg = tessera::testing::bos_documents_config(run, 60);
  cfg.log.sample_interval = 20, cfg.log.sample_tokens = 2, cfg.log.sample_bos = true;
  cfg.train.run_name = "bos";
  std::ostringstream log;
  train::run_training(cfg, log);
  const Metrics bos = read_metrics(fs::path(cfg.checkpoint.dir) / "bos" / "metrics.jsonl");
  ASSERT_EQ(bos.sample.size(), 3u) << log.str();
  EXPECT_EQ(bos.sample.at(60).substr(0, 1), "q") << bos.sample.at(60);
  EXPECT_EQ(bos.sample.at(60).size(), 2u) << bos.sample.at(60);

  TempRun plain;
  cfg = sampled(plain, 2, 1);
  cfg.log.sample_bos = true;
  const std::string m = error_of([&] { train::run_training(cfg, log); });
  EXPECT_NE(m.find("log.sample_bos: the byte tokenizer has no beginning-of-text token"),
            std::string::npos)
      << m;
}

TEST(TrainSamples, bad_settings_are_named_before_the_first_step) {
  TempRun run;
  Config cfg = sampled(run, 2, 1);
  cfg.log.sample_tokens = 0;
  EXPECT_NE(error_of([&] { cfg.validate(); }).find("log.sample_tokens"), std::string::npos);
  cfg.log.sample_tokens = (int64_t(1) << 20) + 1;
  EXPECT_NE(error_of([&] { cfg.validate(); }).find("log.sample_tokens (1048577)"),
            std::string::npos);
  cfg.log.sample_tokens = 8, cfg.log.sample_interval = -1;
  EXPECT_NE(error_of([&] { cfg.validate(); }).find("log.sample_interval"), std::string::npos);
  // A GPT-2 tokenizer whose files are not there: the run stops before step 1, naming the key and
  // the file, and leaves no checkpoint behind.
  cfg.log.sample_interval = 1;
  cfg.model.vocab_size = 50257;
  for (const char* split : {"train", "val"}) {  // the byte corpus's ids, as GPT-2 shards
    const data::Shard bytes((run.dir / (std::string(split) + "_000.bin")).string(), 257);
    data::write_shard((run.dir / (std::string(split) + "_gpt2.bin")).string(),
                      bytes.read(0, bytes.size()), 50257);
  }
  cfg.data.train = (run.dir / "train_gpt2.bin").string();
  cfg.data.val = (run.dir / "val_gpt2.bin").string();
  cfg.data.tokenizer = "gpt2", cfg.data.tokenizer_dir = (run.dir / "no-such-dir").string();
  std::ostringstream log;
  const std::string m = error_of([&] { train::run_training(cfg, log); });
  EXPECT_NE(m.find("log.sample_interval 1 decodes samples with data.tokenizer gpt2"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("no-such-dir"), std::string::npos) << m;
  EXPECT_EQ(log.str().find("step     1"), std::string::npos) << log.str();
}

TEST(TrainSamples, a_sample_is_written_as_valid_json_text_and_printed_as_printable_text) {
  // Quotes, backslashes and control characters escaped; a byte that starts no well-formed UTF-8
  // (a byte-level model may write one) becomes U+FFFD; well-formed characters pass through.
  EXPECT_EQ(train::json_string("a\n\"b\\\x01"), "\"a\\n\\\"b\\\\\\u0001\"");
  EXPECT_EQ(data::replace_invalid_utf8("ok \xe2( \xc3\xa9 \xff"),
            "ok \xef\xbf\xbd( \xc3\xa9 \xef\xbf\xbd");
  const std::string text = "line one\nline \xe2\x80\x94 \xe2";
  const Json j =
      parse_json("{\"sample\": " + train::json_string(data::replace_invalid_utf8(text)) + "}",
                 "the test's line");
  EXPECT_EQ(j.at("sample").str(), "line one\nline \xe2\x80\x94 \xef\xbf\xbd");
  // On the console, control characters but newline and tab are written out, never sent.
  EXPECT_EQ(train::printable("a\x1b[2Jb\tc\nd\x7f\xff"), "a\\x1b[2Jb\tc\nd\\x7f\xef\xbf\xbd");
}
