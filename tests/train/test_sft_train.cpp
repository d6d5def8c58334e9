// Training on loss-masked shards (tokenize --format sft): the loss, its gradient and the
// validation loss count the responses only; generate sets prompts as the examples were set.
//
// The data (train_fixture.h's write_sft_examples): prompts of 8 random letters and a colon, each
// answered "ok". Trained on the responses only, the loss falls near 0; trained on everything, as
// the same tokens without their masks are, it stays near the letters' entropy.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "data/sft.h"
#include "train/trainer.h"
#include "train_fixture.h"

using namespace tessera;
using tessera::testing::TempRun;
namespace fs = std::filesystem;

using tessera::testing::write_sft_examples;

TEST(SftTraining, only_the_responses_are_scored_in_training_and_validation) {
  TempRun run;
  const fs::path data = run.dir / "sft";
  fs::create_directories(data);
  write_sft_examples(data, "train", 200, 1);
  // 22 examples of 12 tokens (prompt 9, "ok", end of text) hold 16 windows of 16 + 1 tokens.
  const int64_t val_scored = write_sft_examples(data, "val", 22, 2);
  Config cfg = run.config(200);
  cfg.data.train = (data / "train_*.bin").string();
  cfg.data.val = (data / "val_*.bin").string();
  cfg.eval.steps = 2;  // 2 x 8 windows: all 16, targets 1 .. 256
  std::ostringstream log;
  const train::TrainResult masked = train::run_training(cfg, log);
  EXPECT_NE(log.str().find("data: loss masks (tokenize --format sft): the loss scores 25.0% of "
                           "data.train's 2400 tokens and 25.0% of data.val's 264 tokens"),
            std::string::npos)
      << log.str();
  // val_tokens: the scored targets among tokens 1 .. 256; the last example's three (261 .. 263)
  // lie past them.
  const std::string tokens =
      tessera::testing::metric(run.dir / "ckpt" / "run" / "metrics.jsonl", "val_tokens").at(200);
  EXPECT_EQ(std::stoll(tokens), val_scored - 3);

  // The same tokens without masks: the letters are scored too.
  fs::remove(data / "train_000.mask"), fs::remove(data / "val_000.mask");
  cfg.train.run_name = "unmasked";
  const train::TrainResult plain = train::run_training(cfg, log);
  std::printf("[ sft ] masked: train %.4f val %.4f; unmasked: train %.4f val %.4f\n",
              masked.last_train_loss, masked.last_val_loss, plain.last_train_loss,
              plain.last_val_loss);
  // Bounds far from both: the responses are certain (0 in the limit), and 8 of every 12 unmasked
  // targets are uniform letters (at least 8/12 x 3.26 = 2.17 on average).
  EXPECT_LT(masked.last_train_loss, 0.3);
  EXPECT_LT(masked.last_val_loss, 0.3);
  EXPECT_GT(plain.last_train_loss, 1.5);
  EXPECT_GT(plain.last_val_loss, 1.5);
}

// generate --prompt-style alpaca sets the prompt in Alpaca's template, as tokenize --format sft
// sets Alpaca examples (data/sft.h): with no token to sample it prints that prompt alone. eval
// says when the data it scores has loss masks.
TEST(SftTraining, generate_sets_an_alpaca_prompt_as_tokenize_does_and_eval_names_masks) {
  TempRun run;
  std::ostringstream log;
  const std::string ck = train::run_training(run.config(1), log).last_checkpoint;
  const std::string generate = tessera::testing::bin_dir() + "/generate --checkpoint " + ck +
                               " --max-new-tokens 0 --prompt-style ";
  std::string out;
  ASSERT_EQ(tessera::testing::run_command(generate + "alpaca --prompt 'Say hi.' 2>/dev/null", &out),
            0)
      << out;
  EXPECT_EQ(out, data::alpaca_prompt("Say hi.", "") + "\n");
  EXPECT_EQ(tessera::testing::run_command(generate + "chat --prompt x", &out), 1);
  EXPECT_NE(out.find("--prompt-style must be plain, alpaca, chatml, qwen3, llama3, llama2 or "
                     "mistral, got 'chat'"),
            std::string::npos)
      << out;
  // A chat template on a byte model: its markers are not the tokenizer's.
  EXPECT_EQ(tessera::testing::run_command(generate + "chatml --prompt x", &out), 1);
  EXPECT_NE(out.find("chat template chatml: the byte tokenizer has no token <|im_start|>"),
            std::string::npos)
      << out;
  EXPECT_EQ(tessera::testing::run_command(generate + "alpaca", &out), 1);
  EXPECT_NE(out.find("--prompt-style alpaca needs --prompt"), std::string::npos) << out;
  EXPECT_EQ(tessera::testing::run_command(generate + "plain --bos", &out), 1);
  EXPECT_NE(out.find("--bos: the byte tokenizer has no beginning-of-text token"), std::string::npos)
      << out;

  // eval says when its loss is over the responses only, and only then.
  const fs::path sft = run.dir / "sft";
  fs::create_directories(sft);
  write_sft_examples(sft, "val", 22, 2);
  const std::string eval = tessera::testing::bin_dir() + "/eval --checkpoint " + ck + " --data ";
  ASSERT_EQ(tessera::testing::run_command(eval + (sft / "val_*.bin").string(), &out), 0) << out;
  EXPECT_NE(out.find("has loss masks (tokenize --format sft): the loss and ppl are over the "
                     "targets they keep"),
            std::string::npos)
      << out;
  ASSERT_EQ(tessera::testing::run_command(eval + (run.dir / "val_*.bin").string(), &out), 0) << out;
  EXPECT_EQ(out.find("loss masks"), std::string::npos) << out;
}

// data.windows: example: each 12-token example is a window of its own (11 targets, 5 padding, at
// T = 16), the validation loss is over the first eval.steps x B examples' responses (3 targets
// each), and a run trained so is not resumed with packed windows, whose positions count other
// windows.
TEST(SftTraining, example_windows_train_each_example_alone_and_resume_only_so) {
  TempRun run;
  const fs::path data = run.dir / "sft";
  fs::create_directories(data);
  write_sft_examples(data, "train", 200, 1);
  write_sft_examples(data, "val", 22, 2);
  Config cfg = run.config(120);
  cfg.data.train = (data / "train_*.bin").string();
  cfg.data.val = (data / "val_*.bin").string();
  cfg.data.windows = "example";
  cfg.checkpoint.interval = 60;
  std::ostringstream log;
  const train::TrainResult r = train::run_training(cfg, log);
  EXPECT_NE(log.str().find("data.windows example: one window each for data.train's 200 examples "
                           "(0 longer than 17 tokens, their first tokens cut; 31.2% of the "
                           "window targets are padding) and data.val's 22 examples"),
            std::string::npos)
      << log.str();
  const fs::path metrics = run.dir / "ckpt" / "run" / "metrics.jsonl";
  EXPECT_EQ(std::stoll(tessera::testing::metric(metrics, "val_tokens").at(120)), 2 * 8 * 3);
  // The responses are certain given the colon: learnt (from ln 257 = 5.5 at the start).
  EXPECT_LT(r.last_val_loss, 0.3);

  Config packed = cfg;
  packed.data.windows = "packed";
  packed.checkpoint.resume = "auto";
  packed.train.max_steps = 180;
  const std::string msg = tessera::testing::error_of([&] { train::run_training(packed, log); });
  EXPECT_NE(msg.find("step_00000120.h5 was trained with data.windows: example but this run sets "
                     "packed"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("set data.windows: example"), std::string::npos) << msg;

  // eval takes the checkpoint's windows: its 22 validation examples, 2 batches of 8; plain text
  // shards need --windows packed, and --stride too.
  const std::string eval =
      tessera::testing::bin_dir() + "/eval --checkpoint " + r.last_checkpoint + " --batches 2";
  std::string out;
  ASSERT_EQ(tessera::testing::run_command(eval, &out), 0) << out;
  EXPECT_NE(out.find(", 2 batches of 8 x 16; a window per example)"), std::string::npos) << out;
  // The examples training's validation scored: its loss, to the 4 decimals eval prints.
  const size_t at = out.find(": loss ");
  ASSERT_NE(at, std::string::npos) << out;
  EXPECT_NEAR(std::stod(out.substr(at + 7)),
              std::stod(tessera::testing::metric(metrics, "val_loss").at(120)), 6e-5);
  const std::string text = " --data " + (run.dir / "val_*.bin").string();
  EXPECT_EQ(tessera::testing::run_command(eval + text, &out), 1);
  EXPECT_NE(out.find("shard " + (run.dir / "val_000.bin").string() + " (--data) marks no examples"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("pass --windows packed"), std::string::npos) << out;
  ASSERT_EQ(tessera::testing::run_command(eval + text + " --windows packed", &out), 0) << out;
  EXPECT_EQ(out.find("a window per example"), std::string::npos) << out;
  EXPECT_EQ(tessera::testing::run_command(eval + " --stride 4", &out), 1);
  EXPECT_NE(out.find("--stride slides a window along the token stream, but the windows are "
                     "examples"),
            std::string::npos)
      << out;
  EXPECT_EQ(tessera::testing::run_command(eval + " --windows docs", &out), 1);
  EXPECT_NE(
      out.find("--windows: unknown window mode 'docs' (packed | documents | example | pairs)"),
      std::string::npos)
      << out;
}

// The step's loss is the mean over every target it scores: a micro-batch weighs by its share of
// them. So 8 windows a step give the same run as one micro-batch of 8, two of 4 or four of 2 (up
// to float rounding), though the rows score 4 to 15 targets each (a mean per micro-batch, each
// weighing alike, would weigh an answer of a sparse micro-batch more: gradient norms 8-10% off
// at some steps, where these agree to every digit metrics.jsonl writes).
TEST(SftTraining, a_step_weighs_every_scored_target_alike_whatever_the_micro_batches) {
  TempRun run;
  const fs::path data = run.dir / "varied";
  fs::create_directories(data);
  tessera::testing::write_varied_sft_examples(data, 160, 5);
  std::vector<std::vector<double>> losses, norms;
  std::vector<double> val;
  for (const int64_t B : {8, 4, 2}) {
    Config cfg = run.config(30);
    cfg.data.train = (data / "train_*.bin").string();
    cfg.data.val = (data / "val_*.bin").string();
    cfg.data.windows = "example";
    cfg.train.batch_size = B;
    cfg.train.total_batch_size = 8 * 16;  // 8 windows a step: 8 / B micro-batches
    cfg.train.run_name = "b" + std::to_string(B);
    cfg.log.interval = 1;
    cfg.eval.tokens = 16 * 16;  // the same 16 validation examples at any B
    std::ostringstream log;
    val.push_back(train::run_training(cfg, log).last_val_loss);
    const fs::path metrics = run.dir / "ckpt" / cfg.train.run_name / "metrics.jsonl";
    losses.push_back(tessera::testing::metric_values(metrics, "loss"));
    norms.push_back(tessera::testing::metric_values(metrics, "grad_norm"));
    ASSERT_EQ(losses.back().size(), 30u);
  }
  for (size_t run_i = 1; run_i < losses.size(); ++run_i) {
    for (size_t s = 0; s < 30; ++s)
      EXPECT_NEAR(norms[run_i][s], norms[0][s], 1e-3 * norms[0][s]) << "step " << s + 1;
    for (size_t s = 0; s < 30; ++s)
      // metrics.jsonl writes 5 decimals; f32 sums over other batch shapes moved 3 of these 60
      // losses by one unit of the last (1e-5). Weighing each micro-batch's mean alike moves
      // them by 1.3e-4 to 6.8e-4 from the first steps on.
      EXPECT_NEAR(losses[run_i][s], losses[0][s], 3e-5) << "step " << s + 1;
    EXPECT_NEAR(val[run_i], val[0], 1e-3);
  }
}

// generate --bos with a tokenizer that has one (a byte-level tokenizer.json: the 256 bytes, then
// <|end_of_text|> 256 and <|begin_of_text|> 257): the prompt goes in after it, and the text printed
// is the prompt's alone, not the id's "<|begin_of_text|>". Trained on documents that all start
// with the id and then "q", greedy decoding from the id alone says "q".
TEST(SftTraining, generate_bos_feeds_the_beginning_of_text_id_and_prints_the_text_alone) {
  TempRun run;
  const Config cfg = tessera::testing::bos_documents_config(run, 60);
  const fs::path dir = cfg.data.tokenizer_dir;
  std::ostringstream log;
  const std::string ck = train::run_training(cfg, log).last_checkpoint;
  const std::string generate = tessera::testing::bin_dir() + "/generate --checkpoint " + ck +
                               " --prompt abc --max-new-tokens 0 2>/dev/null";
  std::string out;
  ASSERT_EQ(tessera::testing::run_command(generate + " --bos", &out), 0) << out;
  EXPECT_EQ(out, "abc\n");
  const std::string from_bos = tessera::testing::bin_dir() + "/generate --checkpoint " + ck +
                               " --bos --prompt '' --temperature 0 --max-new-tokens 1 2>/dev/null";
  ASSERT_EQ(tessera::testing::run_command(from_bos, &out), 0) << out;
  EXPECT_EQ(out, "q\n");
  const auto tok = data::make_tokenizer("hf", dir.string());
  EXPECT_EQ(tok->bos_id(), std::optional<uint32_t>(257));
  EXPECT_EQ(tok->decode({257, 'a'}), "<|begin_of_text|>a");  // what printing the id would show
}
