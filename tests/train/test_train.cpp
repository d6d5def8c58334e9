// The training loop end to end on a tiny model and a fixed small shard: the loss falls, a saved
// checkpoint reproduces the model's logits exactly, and a resumed run continues the same run; the
// generate binary on such a checkpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/sidecar.h"
#include "config/config.h"
#include "data/loader.h"
#include "data/shard.h"
#include "test_util.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::TempRun;

TEST(Training, loss_falls_and_checkpoint_reproduces_logits) {
  TempRun run;
  Config cfg = run.config(60);
  std::ostringstream log;
  train::TrainResult r = train::run_training(cfg, log);
  EXPECT_EQ(r.steps, 60);
  // The untrained loss is ~ln 257 = 5.55; 60 steps on a repetitive corpus get far below half.
  EXPECT_LT(r.last_train_loss, 2.5) << log.str();
  EXPECT_LT(r.last_val_loss, 2.8) << log.str();
  ASSERT_TRUE(fs::exists(r.last_checkpoint));
  EXPECT_EQ(resolve_checkpoint((run.dir / "ckpt" / "run").string()), r.last_checkpoint);

  // Two fresh models loaded from the checkpoint give bit-identical logits, equal to the
  // evaluation the trainer reported.
  Generator g(0);
  nn::GPT a(train::model_config(cfg.model, cfg.train), g), b(train::model_config(cfg.model, cfg.train), g);
  load_model_into(r.last_checkpoint, a.parameters());
  load_model_into(r.last_checkpoint, b.parameters());
  EXPECT_EQ(train::evaluate_windows(a, cfg, cfg.data.val, cfg.eval_windows()).loss,
            r.last_val_loss);
  Tensor x = from_vector<int32_t>(std::vector<int32_t>(16, 'a'), {1, 16});
  EXPECT_EQ(a.forward(x, false).to_vector<float>(), b.forward(x, false).to_vector<float>());
}

// Sliding-window evaluation (eval --stride): at stride T it is evaluate() itself; at stride 1 each
// token is predicted from the T tokens before it (all before it near the start), computed here
// one window per token; at any stride each of evaluate()'s target tokens is scored once.
TEST(Training, strided_evaluation_scores_each_token_once_with_the_context_its_stride_gives) {
  TempRun run;
  Config cfg = run.config(40);
  std::ostringstream log;
  const train::TrainResult r = train::run_training(cfg, log);
  Generator g(0);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  load_model_into(r.last_checkpoint, model.parameters());
  const int64_t T = cfg.sequence_length(), B = cfg.train.batch_size;  // 16, 8
  const double plain = train::evaluate(model, cfg, cfg.data.val, 5);
  const train::StridedLoss whole = train::evaluate_strided(model, cfg, cfg.data.val, 5, T);
  EXPECT_NEAR(whole.loss, plain, 1e-12 * plain);
  // The val shard holds 11 windows of 17 tokens: one batch of 8 (the loader's whole batches).
  EXPECT_EQ(whole.windows, B);
  EXPECT_EQ(whole.tokens, B * T);

  const train::StridedLoss one = train::evaluate_strided(model, cfg, cfg.data.val, 5, 1);
  EXPECT_EQ(one.tokens, B * T);
  EXPECT_EQ(one.windows, 1 + (B - 1) * T);
  const data::Shard val((run.dir / "val_000.bin").string(), cfg.model.vocab_size);
  double sum = 0;
  for (int64_t p = 1; p <= B * T; ++p) {  // target token p, its window [start, start + T)
    const int64_t start = std::max<int64_t>(0, p - T);
    std::vector<int32_t> in(static_cast<size_t>(T)), tg(static_cast<size_t>(T), -100);
    const std::vector<uint32_t> tokens = val.read(start, T + 1);
    for (int64_t t = 0; t < T; ++t) in[size_t(t)] = int32_t(tokens[size_t(t)]);
    tg[size_t(p - start - 1)] = int32_t(tokens[size_t(p - start)]);
    sum += model.loss(from_vector(in, {1, T}), from_vector(tg, {1, T}), false).item();
  }
  EXPECT_NEAR(one.loss, sum / double(B * T), 1e-5) << "plain " << plain;
  std::printf("[ strided ] loss %.5f at stride %ld (evaluate: %.5f), %.5f at stride 1\n",
              whole.loss, long(T), plain, one.loss);

  const train::StridedLoss five = train::evaluate_strided(model, cfg, cfg.data.val, 5, 5);
  EXPECT_EQ(five.tokens, B * T);
  EXPECT_EQ(five.windows, 1 + (B * T - T + 4) / 5);
  const std::string msg = tessera::testing::error_of(
      [&] { train::evaluate_strided(model, cfg, cfg.data.val, 5, T + 1); });
  EXPECT_NE(msg.find("--stride 17 is not in [1, 16]"), std::string::npos) << msg;
}

// A validation run scores the first eval_windows() windows whatever the batch size: batches of 8,
// 5 (a partial last one) and 1 give the mean over the same windows, to f32 rounding of the
// per-batch means (measured: equal in 7 digits); eval.tokens sets the windows directly.
TEST(Training, the_validation_windows_do_not_depend_on_the_batch_size) {
  TempRun run;
  Config cfg = run.config(20);
  std::ostringstream log;
  const train::TrainResult r = train::run_training(cfg, log);
  Generator g(0);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  load_model_into(r.last_checkpoint, model.parameters());
  cfg.eval.tokens = 10 * cfg.sequence_length();
  ASSERT_EQ(cfg.eval_windows(), 10);
  std::vector<double> losses;
  for (int64_t B : {8, 5, 1}) {
    cfg.train.batch_size = B;
    const train::ValidationLoss v =
        train::evaluate_windows(model, cfg, cfg.data.val, cfg.eval_windows());
    EXPECT_EQ(v.windows, 10);
    losses.push_back(v.loss);
  }
  std::printf("[ val ] B 8: %.7f, B 5: %.7f, B 1: %.7f\n", losses[0], losses[1], losses[2]);
  EXPECT_NEAR(losses[1], losses[0], 1e-6 * losses[0]);
  EXPECT_NEAR(losses[2], losses[0], 1e-6 * losses[0]);
  // 9 windows score another set: the mean moves by a tenth of the 10th window's distance from the
  // others' mean (about 1e-4 relative for this model and text), 10x the rounding bound above.
  EXPECT_GT(std::abs(train::evaluate_windows(model, cfg, cfg.data.val, 9).loss - losses[0]),
            1e-5 * losses[0]);
  // Capped at the windows data.val's 192 tokens hold (11 of 17 tokens, one shared with the next);
  // the default is eval.steps x batch_size.
  cfg.eval.tokens = 0, cfg.eval.steps = 3, cfg.train.batch_size = 8;
  EXPECT_EQ(cfg.eval_windows(), 24);
  EXPECT_EQ(train::evaluate_windows(model, cfg, cfg.data.val, cfg.eval_windows()).windows, 11);
}

// A data.val shorter than one batch still validates: evaluations read it a window at a time
// (5 windows here, batches of 8), and metrics.jsonl records the tokens scored.
TEST(Training, a_validation_split_shorter_than_a_batch_is_scored_whole) {
  TempRun run;
  std::vector<uint32_t> val;
  for (int i = 0; i < 5 * 16 + 1; ++i) val.push_back(uint32_t('a' + i % 26));
  data::write_shard((run.dir / "short_val_000.bin").string(), val, 257);
  Config cfg = run.config(4);
  cfg.data.val = (run.dir / "short_val_*.bin").string();
  cfg.eval.tokens = 3 * 16;
  std::ostringstream log;
  const train::TrainResult r = train::run_training(cfg, log);
  EXPECT_GT(r.last_val_loss, 0) << log.str();
  EXPECT_EQ(tessera::testing::metric(run.dir / "ckpt" / "run" / "metrics.jsonl", "val_tokens")
                .at(4),
            "48");
}

TEST(Training, resumed_run_matches_the_uninterrupted_run) {
  TempRun run;
  Config full = run.config(24);
  full.train.run_name = "full";
  full.checkpoint.interval = 12, full.checkpoint.keep = 2;
  std::ostringstream log;
  train::TrainResult whole = train::run_training(full, log);

  // Continue from the uninterrupted run's step-12 checkpoint in another run directory: parameters,
  // optimizer moments, step, RNG and data cursor come back, so the second half repeats exactly.
  Config second = full;
  second.train.run_name = "resumed";
  second.checkpoint.resume = (run.dir / "ckpt" / "full" / "step_00000012.h5").string();
  // The checkpoint is verified (hashed) and read once: its tokens per step and its state come from
  // the same read (saves hash what they write, which checkpoint_hashes does not count).
  int64_t hashes = checkpoint_hashes();
  train::TrainResult resumed = train::run_training(second, log);
  EXPECT_EQ(checkpoint_hashes() - hashes, 1);
  EXPECT_EQ(resumed.steps, 24);
  EXPECT_EQ(resumed.last_train_loss, whole.last_train_loss) << log.str();
  EXPECT_EQ(resumed.last_val_loss, whole.last_val_loss);
  // The count of tokens seen goes on from the checkpoint's.
  const fs::path dir = run.dir / "ckpt";
  EXPECT_EQ(tessera::testing::metric(dir / "resumed" / "metrics.jsonl", "tokens").at(24),
            tessera::testing::metric(dir / "full" / "metrics.jsonl", "tokens").at(24));

  // --resume auto likewise: the run directory's newest checkpoint, read once.
  Config more = full;
  more.checkpoint.resume = "auto";
  more.train.max_steps = 26;
  hashes = checkpoint_hashes();
  EXPECT_EQ(train::run_training(more, log).steps, 26);
  EXPECT_EQ(checkpoint_hashes() - hashes, 1);
  EXPECT_NE(log.str().find("step_00000024.h5 at step 24"), std::string::npos) << log.str();
}

// A run of 2 micro-batches a step (total_batch_size 2 B T), resumed `auto` with total_batch_size
// unset, keeps the checkpoint's tokens per step: also when `latest` is damaged and the older
// checkpoint is resumed instead (its tokens per step are the ones kept, read with it).
TEST(Training, resume_auto_keeps_the_tokens_per_step_of_the_checkpoint_it_falls_back_to) {
  TempRun run;
  Config c = run.config(24);
  c.train.total_batch_size = 2 * 8 * 16;
  c.checkpoint.interval = 12, c.checkpoint.keep = 2;
  std::ostringstream log;
  train::run_training(c, log);
  const fs::path newest = run.dir / "ckpt" / "run" / "step_00000024.h5";
  std::string bytes = tessera::testing::read_file(newest);
  ASSERT_GT(bytes.size(), 1000u);
  bytes[bytes.size() / 2] ^= 0x10;  // its digest no longer matches
  std::ofstream(newest, std::ios::binary | std::ios::trunc) << bytes;

  Config more = c;
  more.train.total_batch_size = 0;
  more.checkpoint.resume = "auto";
  more.train.max_steps = 26;
  EXPECT_EQ(train::run_training(more, log).steps, 26) << log.str();
  EXPECT_NE(log.str().find("step_00000012.h5 at step 12"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("keeping the checkpoint's 256 tokens per step"), std::string::npos)
      << log.str();
}

// Resuming with a higher train.max_steps stretches the decay from the checkpoint's step, so the LR
// jumps back up: the log says so, with the LR of the next step under both schedules, and
// optim.decay_steps at the old horizon keeps the old decay, the run then going on at min_lr.
TEST(Training, a_resume_that_changes_the_lr_schedule_says_so_and_decay_steps_keeps_the_old_one) {
  TempRun run;
  Config c = run.config(12);  // warmup 5, cosine from 3e-3 to 3e-4 at step 12
  c.log.interval = 1;
  std::ostringstream log;
  train::run_training(c, log);
  Config more = c;
  more.checkpoint.resume = "auto";
  more.train.max_steps = 20;
  more.train.run_name = "stretched";
  fs::copy(run.dir / "ckpt" / "run", run.dir / "ckpt" / "stretched");
  std::ostringstream stretched;
  train::run_training(more, stretched);
  // Update 12 (step 13) at progress (12 - 5) / (20 - 5): 3e-4 + 0.5 (1 + cos(0.4667 pi)) 2.7e-3.
  EXPECT_NE(stretched.str().find("step 13 runs at lr 0.001791 where the checkpoint's schedule "
                                 "gives 0.0003 (its decay ended at step 12, now at 20"),
            std::string::npos)
      << stretched.str();
  EXPECT_NE(stretched.str().find("--set optim.decay_steps=12 keeps the old decay"),
            std::string::npos);
  more.optim.decay_steps = 12;
  more.train.run_name = "kept";
  fs::copy(run.dir / "ckpt" / "run", run.dir / "ckpt" / "kept");
  std::ostringstream kept;
  train::run_training(more, kept);
  EXPECT_EQ(kept.str().find("the LR schedule differs"), std::string::npos) << kept.str();
  const auto lr = tessera::testing::metric(run.dir / "ckpt" / "kept" / "metrics.jsonl", "lr");
  for (int64_t step = 13; step <= 20; ++step) EXPECT_EQ(lr.at(step), "0.0003") << step;
}

TEST(Training, missing_data_is_a_clear_error) {
  TempRun run;
  Config cfg = run.config(5);
  cfg.data.train = (run.dir / "nothing_*.bin").string();
  std::ostringstream log;
  std::string msg = tessera::testing::error_of([&] { train::run_training(cfg, log); });
  EXPECT_NE(msg.find("nothing_*.bin"), std::string::npos) << msg;
}

TEST(Training, generate_on_a_byte_model_refuses_a_tokenizer_dir_and_takes_an_empty_prompt) {
  TempRun run;
  Config cfg = run.config(1);
  std::ostringstream log;
  const std::string ck = train::run_training(cfg, log).last_checkpoint;
  const std::string generate = tessera::testing::bin_dir() + "/generate --checkpoint " + ck +
                               " --prompt in --max-new-tokens 2";
  std::string out;
  EXPECT_EQ(tessera::testing::run_command(generate + " --tokenizer-dir /nonexistent", &out), 1);
  EXPECT_NE(out.find("--tokenizer-dir applies to the gpt2 and hf tokenizers only (" + ck +
                     " uses data.tokenizer byte)"),
            std::string::npos)
      << out;
  EXPECT_EQ(tessera::testing::run_command(generate, &out), 0) << out;
  // An empty prompt starts from the end-of-text id (it was an error): at most the 5 sampled bytes
  // and the newline come out (fewer if the model draws the end-of-text, which stops it).
  const std::string empty = tessera::testing::bin_dir() + "/generate --checkpoint " + ck +
                            " --prompt '' --max-new-tokens 5 --temperature 0 2>/dev/null";
  EXPECT_EQ(tessera::testing::run_command(empty, &out), 0) << out;
  EXPECT_LE(out.size(), 6u) << out;
}

// --num-samples draws its continuations as one batch: each under a line naming it, the i-th
// (from 0) the text that --seed <seed + i> draws alone; a count outside [1, 1024] is refused.
TEST(Training, generate_draws_several_samples_each_as_its_seed_alone) {
  TempRun run;
  std::ostringstream log;
  const std::string ck = train::run_training(run.config(1), log).last_checkpoint;
  const std::string generate = tessera::testing::bin_dir() + "/generate --checkpoint " + ck +
                               " --prompt in --max-new-tokens 24 --temperature 1.5 --top-k 0";
  // Standard output alone (run_command hands stderr back too).
  auto stdout_of = [&](const std::string& flags, std::string* out) {
    return tessera::testing::run_command("{ " + generate + flags + " 2>/dev/null; }", out);
  };
  std::string all, alone;
  ASSERT_EQ(stdout_of(" --num-samples 3 --seed 7", &all), 0) << all;
  std::vector<std::string> texts;
  for (int i = 1; i <= 3; ++i) {
    const std::string head =
        "--- sample " + std::to_string(i) + " of 3 (--seed " + std::to_string(6 + i) + ") ---\n";
    const size_t at = all.find(head);
    ASSERT_NE(at, std::string::npos) << head << " in " << all;
    const size_t end =
        i < 3 ? all.find("--- sample " + std::to_string(i + 1) + " of 3", at) : all.size();
    texts.push_back(all.substr(at + head.size(), end - at - head.size()));
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(stdout_of(" --seed " + std::to_string(7 + i), &alone), 0) << alone;
    EXPECT_EQ(texts[size_t(i)], alone) << "sample " << i + 1;
  }
  EXPECT_NE(texts[0], texts[1]);
  EXPECT_EQ(tessera::testing::run_command(generate + " --num-samples 0", &all), 1);
  EXPECT_NE(all.find("--num-samples must be in [1, 1024], got 0"), std::string::npos) << all;
}

// An evaluation reads data.val once at most, and data.val may name training shards: the run goes
// on (neither is an error), and its log says so once, before the first step.
TEST(Training, the_log_says_what_an_evaluation_reads_when_it_is_not_what_was_asked) {
  TempRun run;
  Config cfg = run.config(2);
  cfg.eval.steps = 1000;  // data.val holds 11 windows
  std::ostringstream log;
  EXPECT_EQ(train::run_training(cfg, log).steps, 2);
  EXPECT_NE(log.str().find("eval: data.val holds 11 window(s) of 16 tokens: each evaluation "
                           "scores 11, not the 8000 that eval.steps (1000) x train.batch_size (8) "
                           "ask for"),
            std::string::npos)
      << log.str();
  EXPECT_EQ(log.str().find("warning"), std::string::npos) << log.str();

  cfg.train.run_name = "val-on-train";
  cfg.eval.steps = 1;
  cfg.data.val = (run.dir / "*_000.bin").string();  // matches train_000.bin too
  std::ostringstream shared;
  EXPECT_EQ(train::run_training(cfg, shared).steps, 2);
  EXPECT_NE(
      shared.str().find("warning: data.val '" + cfg.data.val + "' and data.train '" +
                        cfg.data.train + "' both match " + (run.dir / "train_000.bin").string() +
                        ": the validation loss is measured on training data"),
      std::string::npos)
      << shared.str();
  EXPECT_EQ(shared.str().find("eval: data.val holds"), std::string::npos) << shared.str();
}

// Gradient accumulation: 2 micro-batches of 4 windows a step take the step one batch of the same 8
// windows takes (the loss of each micro-batch scaled by 1/2 before its backward). AdamW hides a
// gradient's scale, so the logged gradient norm is compared too (and clipping at 1.0 acts on it).
// Per step, the mean loss and the norm agree to 1e-5 relative: metrics.jsonl prints 6 significant
// digits (5e-6 relative at worst) and summing in two halves moves an f32 mean by ~1e-7.
TEST(Training, accumulated_micro_batches_take_the_step_one_batch_takes) {
  TempRun run;
  Config one = run.config(6);
  one.log.interval = 1;
  one.optim.grad_clip = 1.0;
  Config two = one;
  one.train.run_name = "one";
  two.train.run_name = "two";
  two.train.batch_size = one.train.batch_size / 2;
  two.train.total_batch_size = one.tokens_per_step(1);
  std::ostringstream log;
  train::run_training(one, log);
  train::run_training(two, log);
  EXPECT_NE(log.str().find("2 micro-batch(es) of 4 x 16"), std::string::npos) << log.str();
  for (const char* key : {"loss", "grad_norm"}) {
    const auto a = tessera::testing::metric(run.dir / "ckpt" / "one" / "metrics.jsonl", key);
    const auto b = tessera::testing::metric(run.dir / "ckpt" / "two" / "metrics.jsonl", key);
    ASSERT_EQ(a.size(), 6u) << key;
    ASSERT_EQ(b.size(), 6u) << key;
    for (const auto& [step, value] : a) {
      const double x = std::stod(value), y = std::stod(b.at(step));
      EXPECT_NEAR(y, x, 1e-5 * std::fabs(x)) << key << " at step " << step;
    }
  }
}
