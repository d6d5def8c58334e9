// data.windows: documents: training and evaluation keep every document of a packed window to
// itself (ops/documents.h), and what a document's start may see is only its own separator.
//
// The data: documents of five copies of one letter, each opened by the end-of-text id (256), the
// letter changing every eight documents at random. Packed windows let a document's first letter be
// copied from the document before (7 times in 8 it is the same); within documents it cannot be, and
// each costs ln 26 = 3.26 nats: at least 3.26 / 6 = 0.54 a target on average.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "data/shard.h"
#include "train/trainer.h"
#include "train_fixture.h"

using namespace tessera;
using tessera::testing::TempRun;
namespace fs = std::filesystem;

namespace {

constexpr uint32_t kEot = 256;  // the byte tokenizer's end of text

void write_runs(const fs::path& path, int documents, uint64_t seed) {
  std::vector<uint32_t> tokens;
  char letter = 'a';
  for (int d = 0; d < documents; ++d) {
    if (d % 8 == 0) letter = char('a' + philox4x32_10(uint64_t(d), seed, 0).v[0] % 26);
    if (d > 0) tokens.push_back(kEot);  // between documents, as tokenize writes them
    tokens.insert(tokens.end(), 5, uint32_t(uint8_t(letter)));
  }
  data::write_shard(path.string(), tokens, 257);
}

}  // namespace

TEST(DocumentWindows, a_document_sees_none_of_the_one_before_in_training_and_evaluation) {
  TempRun run;
  const fs::path data = run.dir / "runs";
  fs::create_directories(data);
  write_runs(data / "train_000.bin", 600, 1);
  write_runs(data / "val_000.bin", 60, 2);
  Config cfg = run.config(500);
  cfg.data.train = (data / "train_*.bin").string();
  cfg.data.val = (data / "val_*.bin").string();
  cfg.eval.steps = 2;  // 2 x 8 windows of 17 tokens: 272 of the 359
  std::ostringstream log;
  const train::TrainResult packed = train::run_training(cfg, log);
  cfg.data.windows = "documents";
  cfg.train.run_name = "documents";
  std::ostringstream documents_log;
  const train::TrainResult documents = train::run_training(cfg, documents_log);
  EXPECT_NE(documents_log.str().find("data.windows documents: a document starts at every "
                                     "end-of-text id (256) of a window; its tokens attend only "
                                     "its own, and learned positions count from its start"),
            std::string::npos)
      << documents_log.str();
  EXPECT_EQ(log.str().find("data.windows documents"), std::string::npos);
  std::printf("[ documents ] packed: train %.4f val %.4f; documents: train %.4f val %.4f\n",
              packed.last_train_loss, packed.last_val_loss, documents.last_train_loss,
              documents.last_val_loss);
  EXPECT_GT(documents.last_val_loss, 0.5);
  EXPECT_GT(documents.last_train_loss, 0.5);
  EXPECT_LT(packed.last_val_loss, 0.4);
  EXPECT_LT(packed.last_train_loss, 0.4);

  // eval reads data.windows from the checkpoint, and --windows packed lets the documents model's
  // later documents see the earlier ones, which it never learned to use.
  const std::string eval = tessera::testing::bin_dir() + "/eval --checkpoint " +
                           documents.last_checkpoint + " --batches 2 --batch-size 8";
  std::string same, crossed;
  ASSERT_EQ(tessera::testing::run_command(eval, &same), 0) << same;
  ASSERT_EQ(tessera::testing::run_command(eval + " --windows packed", &crossed), 0) << crossed;
  char want[32];
  std::snprintf(want, sizeof want, "%.4f", documents.last_val_loss);
  EXPECT_NE(same.find(want), std::string::npos) << same;
  EXPECT_NE(same.find("; attention within documents)"), std::string::npos) << same;
  EXPECT_EQ(crossed.find(want), std::string::npos) << crossed;
}

TEST(DocumentWindows, a_packed_run_resumes_with_documents) {
  // packed and documents cut the same windows, so the data cursor carries over; the log says
  // what changed. (Example windows count examples: SftTraining.example_windows_... is refused.)
  TempRun run;
  Config cfg = run.config(6);
  cfg.checkpoint.interval = 3, cfg.train.stop_after = 3;
  std::ostringstream log;
  train::run_training(cfg, log);
  Config documents = cfg;
  documents.data.windows = "documents";
  documents.checkpoint.resume = "auto", documents.train.stop_after = 0;
  std::ostringstream resumed;
  EXPECT_EQ(train::run_training(documents, resumed).steps, 6);
  EXPECT_NE(resumed.str().find("data.windows: documents from here on, the checkpoint "),
            std::string::npos)
      << resumed.str();
  EXPECT_NE(resumed.str().find("trained with packed (the same windows; attention now stays "
                               "within documents)"),
            std::string::npos)
      << resumed.str();
}
