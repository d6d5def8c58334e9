// train.objective dpo end to end: preference pairs written by tokenize --format pairs, a base
// model trained on text as the reference, and DPO runs that learn to prefer the chosen responses,
// starting from ln 2 (policy = reference), in full and under LoRA, resumed bit for bit; what goes
// with it and what does not is refused by name.
//
// The pairs: a prompt of 8 random letters and a colon, answered "ok" (chosen) or "no" (rejected).
// The base never saw either answer, so the reference holds no preference; DPO must learn one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "train/hf_dir.h"
#include "train/load.h"
#include "train/trainer.h"
#include "train_fixture.h"

using namespace tessera;
using tessera::testing::TempRun;
namespace fs = std::filesystem;

namespace {

// A base trained on TempRun's text for 30 steps, and n pairs (write_preference_pairs).
struct DpoRun : TempRun {
  std::string base;
  DpoRun(int pairs = 160) {
    Config c = config(30);
    c.train.run_name = "base";
    std::ostringstream log;
    base = train::run_training(c, log).last_checkpoint;
    tessera::testing::write_preference_pairs(dir, pairs);
  }
  Config dpo(const std::string& name, int64_t steps) const {
    Config c = config(steps);
    c.train.run_name = name;
    c.data.train = (dir / "pairs" / "train_*.bin").string();
    c.data.val = (dir / "pairs" / "val_*.bin").string();
    c.data.windows = "pairs";
    c.train.objective = "dpo";
    c.train.dpo_beta = 0.5;
    c.checkpoint.init = base;
    c.log.interval = 1;
    return c;
  }
};

double metric_at(const Config& c, const std::string& key, int64_t step) {
  const fs::path m = fs::path(c.checkpoint.dir) / c.train.run_name / "metrics.jsonl";
  return std::stod(tessera::testing::metric(m, key).at(step));
}

}  // namespace

TEST(DpoTraining, the_policy_learns_to_prefer_the_chosen_responses_from_ln2_on) {
  DpoRun run;
  for (const bool lora : {false, true}) {
    SCOPED_TRACE(lora ? "lora" : "full");
    Config c = run.dpo(lora ? "lora" : "full", 40);
    if (lora) c.lora.rank = 4, c.lora.alpha = 8, c.lora.dropout = 0, c.lora.targets = "all";
    if (lora) c.optim.lr = 1e-2;
    std::ostringstream log;
    const train::TrainResult r = train::run_training(c, log);
    const std::string reference =
        lora ? "reference: the policy with its adapters off (the frozen base)"
             : "reference: " + run.base;
    EXPECT_NE(log.str().find("dpo: sigmoid loss, beta 0.5, label smoothing 0, nll weight 0; " +
                             reference),
              std::string::npos)
        << log.str();
    // Step 1: the policy is the reference (B = 0 adapters under LoRA, no dropout), z = 0 in
    // every pair: ln 2, to the f32 log-probabilities' rounding (sums of ~3 terms of a few nats,
    // scaled by beta 0.5).
    EXPECT_NEAR(metric_at(c, "loss", 1), std::log(2.0), 1e-5);
    // Learnt: every validation pair (16 of them: eval.steps 2 x 8) prefers its chosen response.
    EXPECT_EQ(metric_at(c, "val_reward_accuracy", 40), 1.0);
    EXPECT_EQ(metric_at(c, "val_pairs", 40), 16);
    EXPECT_GT(metric_at(c, "val_reward_margin", 40), 2.0);
    EXPECT_LT(r.last_val_loss, 0.2);
    EXPECT_GT(metric_at(c, "reward_chosen", 40), metric_at(c, "reward_rejected", 40));
    std::printf("[ dpo %s ] step 1 loss %.6f; step 40 loss %.4f, val loss %.4f, margin %.3f\n",
                lora ? "lora" : "full", metric_at(c, "loss", 1), r.last_train_loss, r.last_val_loss,
                metric_at(c, "val_reward_margin", 40));
  }
}

// IPO (train.dpo_loss ipo) regresses h, the per-token log-ratio difference, onto 1 / (2 beta) = 1:
// the loss starts at (0 - 1)^2 = 1 and the margin (beta h) settles near beta x 1 = 0.5 instead of
// growing without bound as DPO's does (above: 7.3 in full).
TEST(DpoTraining, ipo_pulls_the_margin_to_its_target) {
  DpoRun run;
  Config c = run.dpo("ipo", 40);
  c.train.dpo_loss = "ipo";
  std::ostringstream log;
  const train::TrainResult r = train::run_training(c, log);
  EXPECT_NE(log.str().find("dpo: ipo loss, beta 0.5"), std::string::npos) << log.str();
  const double margin = metric_at(c, "val_reward_margin", 40);
  std::printf("[ ipo ] step 1 loss %.6f; step 40 loss %.4f, val loss %.4f, margin %.4f\n",
              metric_at(c, "loss", 1), r.last_train_loss, r.last_val_loss, margin);
  EXPECT_NEAR(metric_at(c, "loss", 1), 1.0, 1e-5);
  EXPECT_EQ(metric_at(c, "val_reward_accuracy", 40), 1.0);
  EXPECT_NEAR(margin, 0.5, 0.05);  // measured 0.5032
  EXPECT_LT(r.last_val_loss, 0.1);
}

// SimPO (train.dpo_loss simpo) has no reference: no second model, the log says so, and the rewards
// are beta times each response's mean log-probability a token. With gamma 1 the held-out reward
// margin must pass 1 for the loss to fall; the base's starts at -1.68 (it finds "no" likelier a
// token than "ok"). checkpoint.init is not required: from random weights (a margin of 0.04 at
// step 1) the policy learns the preference too.
TEST(DpoTraining, simpo_learns_without_a_reference) {
  DpoRun run;
  for (const bool init : {true, false}) {
    SCOPED_TRACE(init ? "from the base" : "from random weights");
    Config c = run.dpo(init ? "simpo" : "simpo-scratch", 40);
    c.train.dpo_loss = "simpo", c.train.dpo_beta = 2, c.train.simpo_gamma = 1;
    if (!init) c.checkpoint.init.clear();
    std::ostringstream log;
    const train::TrainResult r = train::run_training(c, log);
    EXPECT_NE(log.str().find("dpo: simpo loss, beta 2, gamma 1, label smoothing 0, nll weight 0; "
                             "reference: none (SimPO is reference-free)"),
              std::string::npos)
        << log.str();
    const double margin = metric_at(c, "val_reward_margin", 40);
    std::printf(
        "[ simpo %s ] step 1 loss %.6f margin %.4f; step 40 loss %.4f, val loss %.4f, "
        "margin %.4f\n",
        init ? "init" : "scratch", metric_at(c, "loss", 1),
        metric_at(c, "reward_chosen", 1) - metric_at(c, "reward_rejected", 1), r.last_train_loss,
        r.last_val_loss, margin);
    EXPECT_EQ(metric_at(c, "val_reward_accuracy", 40), 1.0);
    EXPECT_GT(margin, 1.0);
    EXPECT_LT(r.last_val_loss, 0.3);
  }
}

// ORPO (train.dpo_loss orpo) tunes and aligns in one stage, without a reference: from random
// weights the chosen answers' NLL falls and every held-out pair comes to prefer the chosen one.
TEST(DpoTraining, orpo_learns_the_answers_and_the_preference_from_random_weights) {
  DpoRun run;
  Config c = run.dpo("orpo", 40);
  c.train.dpo_loss = "orpo", c.train.dpo_beta = 0.5;
  c.checkpoint.init.clear();
  std::ostringstream log;
  const train::TrainResult r = train::run_training(c, log);
  EXPECT_NE(log.str().find("dpo: orpo loss, beta 0.5, label smoothing 0, nll weight 1; "
                           "reference: none (ORPO is reference-free)"),
            std::string::npos)
      << log.str();
  const double first = metric_at(c, "loss", 1);
  std::printf("[ orpo ] step 1 loss %.4f; step 40 loss %.4f, val loss %.4f, margin %.4f\n", first,
              r.last_train_loss, r.last_val_loss, metric_at(c, "val_reward_margin", 40));
  // Random weights: ~ln 257 nats a token of NLL and the odds term (measured 5.8595); after 40 steps
  // the loss, mostly the NLL now, is below a third of that (1.5877 held out).
  EXPECT_GT(first, 4.0);
  EXPECT_LT(r.last_val_loss, first / 3);
  EXPECT_EQ(metric_at(c, "val_reward_accuracy", 40), 1.0);
}

// eval --pairs scores a checkpoint's pairs as its run's validation did: at the last step the same
// loss, accuracy and margin over the same 16 pairs (--batches 2 of 8), against the run's own
// reference (its checkpoint.init; a LoRA run's base, the adapters off). The base against itself
// is ln 2 with no pair preferred; what it cannot know is refused by name.
TEST(DpoTraining, eval_pairs_scores_a_checkpoint_as_its_validation_did) {
  DpoRun run(80);
  const std::string eval = tessera::testing::bin_dir() + "/eval --pairs '" +
                           (run.dir / "pairs" / "val_*.bin").string() + "' --batches 2 ";
  // "dpo loss L | reward accuracy A | margin M (N pairs": the four numbers.
  auto scored = [](const std::string& out) {
    const size_t at = out.find("dpo loss ");
    EXPECT_NE(at, std::string::npos) << out;
    double v[4] = {};
    if (at != std::string::npos)
      std::sscanf(out.c_str() + at, "dpo loss %lf | reward accuracy %lf | margin %lf (%lf pairs",
                  &v[0], &v[1], &v[2], &v[3]);
    return std::vector<double>(v, v + 4);
  };
  std::string out;
  for (const bool lora : {false, true}) {
    SCOPED_TRACE(lora ? "lora" : "full");
    Config c = run.dpo(lora ? "eval-lora" : "eval-full", 12);
    if (lora) c.lora.rank = 4, c.lora.alpha = 8, c.lora.dropout = 0, c.lora.targets = "all";
    std::ostringstream log;
    train::run_training(c, log);
    const fs::path dir = fs::path(c.checkpoint.dir) / c.train.run_name;
    ASSERT_EQ(tessera::testing::run_command(eval + "--checkpoint " + dir.string(), &out), 0) << out;
    const std::vector<double> v = scored(out);
    // eval prints 4 decimals, metrics.jsonl 6 significant digits.
    EXPECT_NEAR(v[0], metric_at(c, "val_loss", 12), 1e-4) << out;
    EXPECT_NEAR(v[1], metric_at(c, "val_reward_accuracy", 12), 1e-4) << out;
    EXPECT_NEAR(v[2], metric_at(c, "val_reward_margin", 12), 1e-4) << out;
    EXPECT_EQ(v[3], 16) << out;
    EXPECT_NE(
        out.find(lora ? "reference: the policy with its adapters off" : "reference: " + run.base),
        std::string::npos)
        << out;
    if (lora) {
      EXPECT_EQ(tessera::testing::run_command(
                    eval + "--checkpoint " + dir.string() + " --reference " + run.base, &out),
                1);
      EXPECT_NE(out.find("is a LoRA checkpoint, whose reference is its base"), std::string::npos)
          << out;
    }
  }
  ASSERT_EQ(tessera::testing::run_command(
                eval + "--checkpoint " + run.base + " --reference " + run.base, &out),
            0)
      << out;
  const std::vector<double> self = scored(out);
  EXPECT_NEAR(self[0], std::log(2.0), 1e-4) << out;
  EXPECT_EQ(self[1], 0) << out;
  EXPECT_EQ(self[2], 0) << out;
  EXPECT_EQ(tessera::testing::run_command(eval + "--checkpoint " + run.base, &out), 1);
  EXPECT_NE(out.find("--pairs needs the reference model"), std::string::npos) << out;
  EXPECT_EQ(
      tessera::testing::run_command(
          tessera::testing::bin_dir() + "/eval --checkpoint " + run.base + " --reference x", &out),
      1);
  EXPECT_NE(out.find("--reference goes with --pairs"), std::string::npos) << out;
  EXPECT_EQ(tessera::testing::run_command(eval + "--checkpoint " + run.base + " --data x", &out),
            1);
  EXPECT_NE(out.find("--data applies to the loss over token windows, not to --pairs"),
            std::string::npos)
      << out;
}

// The reference is read from checkpoint.init again on resume (the policy's weights then come from
// the checkpoint), so a run stopped and resumed is the run in one piece.
TEST(DpoTraining, a_resumed_run_is_the_uninterrupted_one_bit_for_bit) {
  DpoRun run;
  std::ostringstream log;
  Config c = run.dpo("whole", 16);
  c.checkpoint.interval = 4;
  const train::TrainResult a = train::run_training(c, log);
  const train::TrainResult b = tessera::testing::run_split(c, 8, log);
  EXPECT_EQ(a.last_train_loss, b.last_train_loss);
  EXPECT_EQ(a.last_val_loss, b.last_val_loss);
  EXPECT_EQ(metric_at(c, "reward_chosen", 16),
            std::stod(tessera::testing::metric(
                          fs::path(c.checkpoint.dir) / "split" / "metrics.jsonl", "reward_chosen")
                          .at(16)));
}

// checkpoint.init as a Hugging Face directory (hf:DIR, train/load.h): the reference is read from
// it as the policy is, so step 1 is ln 2 again and the run learns as from the checkpoint.
TEST(DpoTraining, a_hugging_face_directory_is_the_reference_too) {
  DpoRun run(80);
  const train::LoadedModel base = train::load_model(run.base);
  const fs::path hf = run.dir / "hf-base";
  train::export_hf(base.config, base.model->parameters(), hf.string());
  Config c = run.dpo("from-hf", 12);
  c.checkpoint.init = "hf:" + hf.string();
  std::ostringstream log;
  const train::TrainResult r = train::run_training(c, log);
  EXPECT_NE(log.str().find("reference: hf:" + hf.string()), std::string::npos) << log.str();
  EXPECT_NEAR(metric_at(c, "loss", 1), std::log(2.0), 1e-5);
  EXPECT_LT(r.last_train_loss, 0.5);
}

TEST(DpoTraining, what_does_not_go_with_it_is_refused_by_name) {
  DpoRun run(40);
  const Config good = run.dpo("refused", 4);
  auto refusal = [&](auto edit) {
    Config c = good;
    edit(c);
    std::ostringstream log;
    return tessera::testing::error_of([&] { train::run_training(c, log); });
  };
  EXPECT_NE(refusal([](Config& c) { c.data.windows = "example"; })
                .find("train.objective 'dpo' and data.windows 'example' go together only as dpo "
                      "and pairs"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.train.objective = "lm";
            }).find("train.objective 'lm' and data.windows 'pairs'"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.checkpoint.init.clear();
            }).find("train.objective dpo needs checkpoint.init: the trained model to tune"),
            std::string::npos);
  EXPECT_NE(
      refusal([](Config& c) { c.train.dpo_beta = 0; }).find("train.dpo_beta must be positive"),
      std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.train.dpo_label_smoothing = 0.5;
            }).find("train.dpo_label_smoothing must be in [0, 0.5), got 0.5"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.train.dpo_nll_weight = -1;
            }).find("train.dpo_nll_weight must be >= 0, got -1"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.train.s2_attn = true;
            }).find("train.objective dpo with train.s2_attn is not built"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) { c.train.dpo_loss = "ipo", c.train.dpo_label_smoothing = 0.1; })
                .find("train.dpo_label_smoothing (0.1) is the sigmoid loss's and SimPO's; "
                      "train.dpo_loss ipo has none"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.train.dpo_loss = "hinge";
            }).find("train.dpo_loss must be one of sigmoid, ipo, simpo, orpo; got 'hinge'"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.train.simpo_gamma = 1;
            }).find("train.simpo_gamma (1) is SimPO's; train.dpo_loss sigmoid has none"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) { c.train.dpo_loss = "orpo", c.train.dpo_nll_weight = 0.5; })
                .find("train.dpo_nll_weight (0.5) is set apart from the loss; train.dpo_loss orpo "
                      "holds the chosen responses' NLL already"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.train.dpo_loss = "orpo", c.train.dpo_label_smoothing = 0.1;
            }).find("train.dpo_loss orpo has none"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.train.dpo_loss = "simpo", c.train.simpo_gamma = -0.5;
            }).find("train.simpo_gamma must be >= 0 (SimPO's target reward margin), got -0.5"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.optim.name = "lomo";
            }).find("train.objective dpo with optim.name lomo is not built"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.train.ema_decay = 0.9;
            }).find("train.objective dpo with train.ema_decay is not built"),
            std::string::npos);
  EXPECT_NE(refusal([](Config& c) {
              c.lora.rank = 2, c.lora.trainable = "norm";
            }).find("train.objective dpo with lora.trainable is not built"),
            std::string::npos);
  // A reference that is not there: named, nothing written.
  const std::string missing =
      refusal([&](Config& c) { c.checkpoint.init = (run.dir / "nowhere.h5").string(); });
  EXPECT_NE(missing.find("nowhere.h5"), std::string::npos) << missing;
  // Pairs are not a language model's windows: the text evaluation refuses them.
  const std::string eval =
      refusal([&](Config& c) { c.data.windows = "packed", c.train.objective = "lm"; });
  EXPECT_NE(eval.find("preference pairs"), std::string::npos) << eval;
}
