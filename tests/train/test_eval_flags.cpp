// eval's own flags (train/eval_flags.h): --contexts lengths, and the RoPE scaling flags, where a
// factor without a scaling type, or a type without a factor, is an error naming the flags rather
// than an unscaled evaluation. Then build/eval itself, on a random model and a 200-token shard:
// --per-position replaces its file only after a successful evaluation, contexts no model position
// reaches are an error, the header counts the batches actually read (a context the data holds not
// one batch of is an error naming the data), and --rope-scaling none evaluates a scaled checkpoint
// as plain RoPE.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/json.h"
#include "checkpoint/retention.h"
#include "data/shard.h"
#include "nn/gpt.h"
#include "test_util.h"
#include "train/eval_flags.h"
#include "train/trainer.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::read_file;
using tessera::testing::run_command;
using tessera::testing::TempDir;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& msg, const std::string& part) {
  return msg.find(part) != std::string::npos;
}

Config rope_config() {
  Config c;
  c.model.position = "rope", c.model.block_size = 64;
  return c;
}

const std::string kBin = tessera::testing::bin_dir();

// A scratch directory with val_000.bin, 200 byte tokens: 12 windows of 16 + 1, so 6 batches of 2
// at the model's length 16 (and as many at context 8, in batches of 4).
struct EvalRun {
  TempDir tmp{"tessera_eval"};
  EvalRun() {
    std::vector<uint32_t> tokens(200);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint32_t(i * 37 % 256);
    data::write_shard(tmp.file("val_000.bin"), tokens, 257);
  }

  // A small model of `position` whose val split is the shard above.
  Config config(const std::string& position = "learned") const {
    Config c;
    c.model.n_layer = 1, c.model.n_head = 2, c.model.n_embd = 16, c.model.block_size = 16;
    c.model.position = position;
    c.train.batch_size = 2;
    c.data.val = tmp.file("val_*.bin");
    return c;
  }

  // A checkpoint of cfg's model with weights of scale 1 (so positions change the loss visibly),
  // the same for every config of the same shapes; returns its path.
  std::string save(const Config& cfg, const std::string& name) const {
    Generator g(3);
    nn::GPT model(train::model_config(cfg.model, cfg.train), g);
    CheckpointData ck;
    for (const auto& [param, t] : model.parameters())
      ck.model.emplace_back(param, randn(t.shape(), g));
    ck.trainer_ints = {{"step", 1}};
    ck.config_yaml = to_yaml(cfg);
    fs::create_directories(tmp.path / name);
    const std::string file = (tmp.path / name / checkpoint_name(1)).string();
    save_checkpoint(file, ck);
    return file;
  }

  int eval(const std::string& args, std::string* out) const {
    return run_command(kBin + "/eval " + args, out);
  }
};

// The number after "loss " in eval's one-line result.
std::string loss_of(const std::string& out) {
  const size_t at = out.find("loss ");
  return at == std::string::npos ? "" : out.substr(at + 5, out.find(' ', at + 5) - at - 5);
}

// The loss column of eval's --contexts row for context T ("" when it printed none).
std::string row_loss(const std::string& out, int64_t T) {
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string context, loss;
    if (fields >> context >> loss && context == std::to_string(T)) return loss;
  }
  return "";
}

}  // namespace

TEST(EvalFlags, contexts_are_lengths_of_at_least_one_named_by_the_flag) {
  EXPECT_EQ(train::parse_contexts("128, 256,512"), (std::vector<int64_t>{128, 256, 512}));
  for (const char* bad : {"0", "128,0", "-4", "", "128,", "12x", "a"}) {
    const std::string m = error_of([&] { train::parse_contexts(bad); });
    EXPECT_TRUE(has(m, "--contexts '" + std::string(bad) + "'") &&
                has(m, "is not a context length >= 1") && !has(m, "step"))
        << m;
  }
}

TEST(EvalFlags, a_factor_without_a_scaling_type_is_an_error_naming_both_flags) {
  Config c = rope_config();
  std::string m = error_of([&] { train::apply_rope_flags(c, {.factor = "4"}, "ck.h5"); });
  EXPECT_TRUE(has(m, "--rope-factor 4 needs --rope-scaling") && has(m, "none in ck.h5") &&
              has(m, "unscaled")) << m;
  c = rope_config();
  m = error_of([&] { train::apply_rope_flags(c, {.factor = "auto"}, "ck.h5"); });
  EXPECT_TRUE(has(m, "--rope-factor auto") && has(m, "--rope-scaling")) << m;
  c = rope_config();
  m = error_of([&] {
    train::apply_rope_flags(c, {.sets = {"model.rope_scaling.factor=4"}}, "ck.h5");
  });
  EXPECT_TRUE(has(m, "--set model.rope_scaling.factor=4") && has(m, "--rope-scaling")) << m;
  c = rope_config();
  m = error_of([&] { train::apply_rope_flags(c, {.type = "none", .factor = "4"}, "ck.h5"); });
  EXPECT_TRUE(has(m, "--rope-factor 4 needs --rope-scaling") && has(m, "not none")) << m;
}

TEST(EvalFlags, a_key_given_by_its_flag_and_by_set_is_an_error_naming_both) {
  Config c = rope_config();
  std::string m = error_of([&] {
    train::apply_rope_flags(c, {.type = "yarn", .sets = {"model.rope_scaling.type=linear"}}, "ck");
  });
  EXPECT_TRUE(has(m, "--rope-scaling yarn and --set model.rope_scaling.type=linear")) << m;
  c = rope_config();
  m = error_of([&] {
    train::apply_rope_flags(
        c, {.type = "yarn", .factor = "4", .sets = {"model.rope_scaling.factor=2"}}, "ck");
  });
  EXPECT_TRUE(has(m, "--rope-factor 4 and --set model.rope_scaling.factor=2")) << m;
}

// The scaled model is checked, naming the checkpoint; the stored training settings are not (a
// checkpoint's config is read for its model section only, config/config.h parse_stored_config).
TEST(EvalFlags, the_scaled_model_is_validated_and_the_stored_training_settings_are_not) {
  Config c = rope_config();
  c.log.interval = 0;  // not a valid training config today
  ASSERT_FALSE(config_problems(c).empty());
  EXPECT_TRUE(train::apply_rope_flags(c, {.type = "linear", .factor = "2"}, "ck.h5"));
  c = rope_config();
  const std::string m =
      error_of([&] { train::apply_rope_flags(c, {.type = "linear", .factor = "0.5"}, "ck.h5"); });
  EXPECT_TRUE(has(m, "ck.h5 with the command line's RoPE scaling: invalid model: ") &&
              has(m, "model.rope_scaling.factor must be >= 1"))
      << m;
}

TEST(EvalFlags, scaling_flags_apply_to_the_rope_scaling_section) {
  Config c = rope_config();
  EXPECT_FALSE(train::apply_rope_flags(c, {}, "ck.h5"));
  EXPECT_EQ(c.model.rope_scaling.type, "none");
  EXPECT_TRUE(train::apply_rope_flags(c, {.type = "yarn", .factor = "4"}, "ck.h5"));
  EXPECT_EQ(c.model.rope_scaling.type, "yarn");
  EXPECT_EQ(c.model.rope_scaling.factor, 4);
  EXPECT_EQ(c.model.rope_scaling.original_max_position, 64);  // the trained length
  // A checkpoint trained with scaling takes a new factor alone.
  Config scaled = rope_config();
  scaled.model.rope_scaling.type = "linear";
  EXPECT_TRUE(train::apply_rope_flags(scaled, {.factor = "8"}, "ck.h5"));
  EXPECT_EQ(scaled.model.rope_scaling.factor, 8);
  Config learned;
  const std::string m =
      error_of([&] { train::apply_rope_flags(learned, {.type = "linear"}, "ck.h5"); });
  EXPECT_TRUE(has(m, "ck.h5 has model.position 'learned'")) << m;
  Config other = rope_config();
  const std::string n =
      error_of([&] { train::apply_rope_flags(other, {.sets = {"model.n_layer=2"}}, "ck.h5"); });
  EXPECT_TRUE(has(n, "--set 'model.n_layer=2'")) << n;
}

TEST(EvalFlags, scaling_type_none_evaluates_plain_rope_also_for_a_scaled_checkpoint) {
  Config c = rope_config();
  EXPECT_TRUE(train::apply_rope_flags(c, {.type = "none"}, "ck.h5"));
  EXPECT_EQ(c.model.rope_scaling, RopeScalingConfig{});  // original_max_position stays 0
  // A checkpoint trained with YaRN: none drops its factor and length with its type.
  Config scaled = rope_config();
  RopeScalingConfig& rs = scaled.model.rope_scaling;
  rs.type = "yarn", rs.factor = 4, rs.original_max_position = 16, rs.beta_fast = 16;
  EXPECT_TRUE(train::apply_rope_flags(scaled, {.type = "none"}, "ck.h5"));
  EXPECT_EQ(scaled.model.rope_scaling, RopeScalingConfig{});
  scaled.model.rope_scaling.type = "linear", scaled.model.rope_scaling.factor = 4;
  EXPECT_TRUE(train::apply_rope_flags(scaled, {.sets = {"model.rope_scaling.type=none"}}, "ck.h5"));
  EXPECT_EQ(scaled.model.rope_scaling, RopeScalingConfig{});
}

TEST(EvalFlags, a_scaling_type_without_a_factor_is_an_error_where_factor_one_changes_nothing) {
  for (const char* type : {"linear", "yarn", "llama3"}) {
    Config c = rope_config();
    const std::string m = error_of([&] { train::apply_rope_flags(c, {.type = type}, "ck.h5"); });
    EXPECT_TRUE(has(m, "--rope-scaling " + std::string(type) + " needs --rope-factor") &&
                has(m, "ck.h5 is 1") && has(m, "unscaled"))
        << m;
  }
  Config c = rope_config();
  std::string m = error_of(
      [&] { train::apply_rope_flags(c, {.sets = {"model.rope_scaling.type=yarn"}}, "ck.h5"); });
  EXPECT_TRUE(has(m, "--set model.rope_scaling.type=yarn needs --rope-factor")) << m;
  // A factor from a flag, --set, auto, or the checkpoint's own scaling is enough.
  c = rope_config();
  EXPECT_TRUE(train::apply_rope_flags(c, {.type = "linear", .factor = "auto"}, "ck.h5"));
  c = rope_config();
  EXPECT_TRUE(train::apply_rope_flags(
      c, {.type = "linear", .sets = {"model.rope_scaling.factor=2"}}, "ck.h5"));
  EXPECT_EQ(c.model.rope_scaling.factor, 2);
  Config scaled = rope_config();
  scaled.model.rope_scaling.type = "linear", scaled.model.rope_scaling.factor = 4;
  EXPECT_TRUE(train::apply_rope_flags(scaled, {.type = "yarn"}, "ck.h5"));
  EXPECT_EQ(scaled.model.rope_scaling.factor, 4);
  // dynamic at factor 1 still raises the base past the trained length: it runs.
  c = rope_config();
  EXPECT_TRUE(train::apply_rope_flags(c, {.type = "dynamic"}, "ck.h5"));
}

TEST(EvalBinary, per_position_replaces_its_file_only_after_a_successful_evaluation) {
  EvalRun run;
  const std::string ck = run.save(run.config(), "ck");
  const std::string pp = run.tmp.write("pp.csv", "old\n");
  std::string out;
  const std::string nomatch = " --data '" + run.tmp.file("nomatch_*.bin") + "'";
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --per-position " + pp + nomatch, &out), 1) << out;
  EXPECT_TRUE(has(out, "no files match")) << out;
  EXPECT_EQ(read_file(pp), "old\n");
  // Paths that could not be written are refused before any work, by name.
  const std::string missing = run.tmp.file("missing") + "/pp.csv";
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --per-position " + missing, &out), 1) << out;
  EXPECT_TRUE(has(out, "--per-position " + missing + ": the folder " + run.tmp.file("missing") +
                           " does not exist"))
      << out;
  fs::create_directories(run.tmp.path / "dir.csv");
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --per-position " + run.tmp.file("dir.csv"), &out), 1)
      << out;
  EXPECT_TRUE(has(out, "dir.csv is a directory")) << out;
  // Success replaces the old file: the header and one line per position of the window.
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --per-position " + pp, &out), 0) << out;
  const std::string csv = read_file(pp);
  EXPECT_EQ(csv.rfind("context,position,loss\n16,0,", 0), 0u) << csv;
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 17) << csv;
  EXPECT_FALSE(tessera::testing::staging_left(pp));
  // The series is the plain evaluation's loss spread over the positions: the same batches, each
  // position weighted alike, so its mean is the loss eval prints without --per-position (to its
  // 4 decimals; each position has 6).
  std::string plain;
  ASSERT_EQ(run.eval("--checkpoint " + ck, &plain), 0) << plain;
  std::istringstream rows(csv.substr(csv.find('\n') + 1));
  double sum = 0;
  int n = 0;
  for (std::string row; std::getline(rows, row); ++n) {
    const double loss = std::stod(row.substr(row.rfind(',') + 1));
    EXPECT_GT(loss, 0.0) << row;
    sum += loss;
  }
  ASSERT_EQ(n, 16);
  EXPECT_NEAR(sum / n, std::stod(loss_of(plain)), 6e-5) << plain << csv;
  // And the loss printed beside it is that mean (to its 4 decimals: up to 1e-4 apart).
  EXPECT_NEAR(std::stod(loss_of(out)), std::stod(loss_of(plain)), 1.5e-4) << out << plain;
}

TEST(EvalBinary, contexts_past_learned_positions_show_a_dash_and_none_at_all_is_an_error) {
  EvalRun run;
  const std::string ck = run.save(run.config(), "ck");
  const std::string json = run.tmp.file("pp.json");
  std::string out;
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --contexts 32,64 --per-position " + json, &out), 1)
      << out;
  EXPECT_TRUE(has(out, "--contexts 32,64: " + ck + " has learned positions") &&
              has(out, "model.block_size 16") && has(out, "none of these contexts"))
      << out;
  EXPECT_FALSE(fs::exists(json));
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --contexts 8,32 --per-position " + json, &out), 0)
      << out;
  EXPECT_TRUE(has(out, "(learned positions end at 16)")) << out;
  // One series per context that ran, a loss per position, in a file any JSON reader takes.
  const Json series = parse_json(read_file(json), json).at("loss_by_position");
  ASSERT_EQ(series.members().size(), 1u) << read_file(json);
  const std::vector<Json>& at8 = series.at("8").items();
  ASSERT_EQ(at8.size(), 8u) << read_file(json);
  for (const Json& v : at8) EXPECT_GT(v.as_double(), 0.0) << read_file(json);
}

TEST(EvalBinary, the_header_counts_the_batches_read_and_says_when_fewer_than_asked) {
  EvalRun run;
  const std::string ck = run.save(run.config(), "ck");
  std::string out;
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --batches 1000", &out), 0) << out;
  EXPECT_TRUE(has(out, "6 batches of 2 x 16, fewer than the 1000 asked: the data holds no more"))
      << out;
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --batches 1000 --contexts 8,16", &out), 0) << out;
  EXPECT_TRUE(has(out, "(6 batches of ~32 tokens, fewer than the 1000 asked")) << out;
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --batches 3 --contexts 8,16", &out), 0) << out;
  EXPECT_TRUE(has(out, "(3 batches of ~32 tokens; trained at 16)")) << out;
}

// --stride: its header note, the plain result at stride T, and its misuses named before any work.
TEST(EvalBinary, stride_says_so_equals_the_plain_evaluation_at_the_context_and_refuses_misuse) {
  EvalRun run;
  const std::string ck = run.save(run.config(), "ck");
  std::string plain, out;
  ASSERT_EQ(run.eval("--checkpoint " + ck, &plain), 0) << plain;
  ASSERT_EQ(run.eval("--checkpoint " + ck + " --stride 16", &out), 0) << out;
  EXPECT_TRUE(has(out, "; windows sliding by 16, each token scored once)")) << out;
  EXPECT_EQ(loss_of(out), loss_of(plain)) << out << plain;
  ASSERT_EQ(run.eval("--checkpoint " + ck + " --stride 4", &out), 0) << out;
  EXPECT_NE(loss_of(out), loss_of(plain)) << out;  // other contexts: another loss
  ASSERT_EQ(run.eval("--checkpoint " + ck + " --stride 4 --contexts 8,16", &out), 0) << out;
  EXPECT_TRUE(has(out, "trained at 16; windows sliding by 4, each token scored once)")) << out;
  EXPECT_NE(run.eval("--checkpoint " + ck + " --stride 17", &out), 0);
  EXPECT_TRUE(has(out, "--stride 17 is longer than the context 16")) << out;
  EXPECT_NE(run.eval("--checkpoint " + ck + " --stride 12 --contexts 8,16", &out), 0);
  EXPECT_TRUE(has(out, "--stride 12 is longer than the context 8 (--contexts)")) << out;
  EXPECT_NE(run.eval("--checkpoint " + ck + " --stride 0", &out), 0);
  EXPECT_TRUE(has(out, "--stride must be at least 1, got 0")) << out;
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --stride 1 --batches 1", &out), 0) << out;
  EXPECT_TRUE(has(out, "windows sliding by 1, each token scored once)")) << out;
  EXPECT_NE(
      run.eval("--checkpoint " + ck + " --stride 4 --per-position " + run.tmp.file("p.csv"), &out),
      0);
  EXPECT_TRUE(has(out, "--per-position and --stride together")) << out;
}

// A batch of no sequences divided by zero (SIGFPE) or averaged nothing: every count is refused by
// name when it is not positive, before the checkpoint loads.
TEST(EvalBinary, batch_size_and_batches_must_be_positive) {
  EvalRun run;
  const std::string ck = run.save(run.config(), "ck");
  std::string out;
  for (const std::string extra : {"", " --stride 16", " --contexts 8 --batches 3"}) {
    for (const char* n : {"0", "-2"}) {
      EXPECT_EQ(run.eval("--checkpoint " + ck + " --batch-size " + n + extra, &out), 1) << out;
      EXPECT_TRUE(has(out, std::string("--batch-size must be positive, got ") + n)) << out;
    }
  }
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --batches 0", &out), 1) << out;
  EXPECT_TRUE(has(out, "--batches must be positive, got 0")) << out;
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --batch-size 1 --batches 2", &out), 0) << out;
  EXPECT_TRUE(has(out, "2 batches of 1 x 16")) << out;
}

TEST(EvalBinary, data_that_matches_no_file_is_an_error_naming_the_flag_or_the_key) {
  EvalRun run;
  const std::string ck = run.save(run.config(), "ck");
  std::string out;
  const std::string none = run.tmp.file("none_*.bin");
  EXPECT_NE(run.eval("--checkpoint " + ck + " --data " + none, &out), 0) << out;
  EXPECT_TRUE(has(out, "eval: --data: no files match '" + none + "'")) << out;
  fs::remove(run.tmp.file("val_000.bin"));  // the checkpoint's data.val now matches nothing
  EXPECT_NE(run.eval("--checkpoint " + ck, &out), 0) << out;
  EXPECT_TRUE(has(out, "eval: data.val of " + ck)) << out;
  EXPECT_TRUE(has(out, ": no files match '" + run.tmp.file("val_*.bin") + "'")) << out;
}

TEST(EvalBinary, a_context_longer_than_the_data_is_an_error_naming_it) {
  EvalRun run;
  const std::string ck = run.save(run.config("rope"), "ck");
  std::string out;
  // 200 tokens: at context 256 not one window of 257 (the batch there is 32 / 256 -> 1 sequence).
  EXPECT_NE(run.eval("--checkpoint " + ck + " --contexts 16,256", &out), 0) << out;
  EXPECT_TRUE(
      has(out, run.tmp.file("val_*.bin") +
                   " holds 0 windows of 257 tokens (context 256 + 1), fewer than one batch of 1"))
      << out;
  // Context 199: the 200 tokens are exactly one window, one batch of one.
  EXPECT_EQ(run.eval("--checkpoint " + ck + " --contexts 16,199", &out), 0) << out;
  EXPECT_TRUE(has(out, "(1-6 batches of ~32 tokens")) << out;
}

// --rope-factor auto scales each context T by max(1, T / L0): at L0 = 16 nothing changes (YaRN of
// factor 1 is plain RoPE), at 32 it is the row of factor 2. Dynamic scaling's base already
// follows the length: its factor stays 1.
TEST(EvalBinary, rope_factor_auto_scales_each_context_by_its_length_over_l0) {
  EvalRun run;
  const std::string ck = run.save(run.config("rope"), "ck");
  std::string plain, unscaled, at2, automatic, dynamic;
  ASSERT_EQ(run.eval("--checkpoint " + ck, &plain), 0) << plain;
  ASSERT_EQ(run.eval("--checkpoint " + ck + " --contexts 32", &unscaled), 0) << unscaled;
  const std::string yarn = " --contexts 16,32 --rope-scaling yarn --rope-factor ";
  ASSERT_EQ(run.eval("--checkpoint " + ck + yarn + "auto", &automatic), 0) << automatic;
  ASSERT_EQ(run.eval("--checkpoint " + ck + yarn + "2", &at2), 0) << at2;
  EXPECT_TRUE(has(automatic, " | rope_scaling yarn, factor auto, L0 16")) << automatic;
  EXPECT_TRUE(has(at2, " | rope_scaling yarn, factor 2, L0 16")) << at2;
  EXPECT_EQ(row_loss(automatic, 16), loss_of(plain)) << automatic << plain;
  EXPECT_NE(row_loss(automatic, 32), "") << automatic;
  EXPECT_EQ(row_loss(automatic, 32), row_loss(at2, 32)) << automatic << at2;
  EXPECT_NE(row_loss(automatic, 32), row_loss(unscaled, 32)) << automatic << unscaled;
  EXPECT_FALSE(has(automatic, "batches of one window")) << automatic;  // 32 = 2 x 16 tokens
  const std::string dyn = " --contexts 32 --rope-scaling dynamic --rope-factor ";
  std::string dynamic_1;
  ASSERT_EQ(run.eval("--checkpoint " + ck + dyn + "auto", &dynamic), 0) << dynamic;
  ASSERT_EQ(run.eval("--checkpoint " + ck + dyn + "1", &dynamic_1), 0) << dynamic_1;
  EXPECT_TRUE(has(dynamic, " | rope_scaling dynamic, factor auto (1), L0 16")) << dynamic;
  EXPECT_EQ(row_loss(dynamic, 32), row_loss(dynamic_1, 32)) << dynamic << dynamic_1;
  EXPECT_NE(row_loss(dynamic, 32), row_loss(unscaled, 32)) << dynamic << unscaled;
}

TEST(EvalBinary, rope_scaling_none_evaluates_a_scaled_checkpoint_as_plain_rope) {
  EvalRun run;
  const Config plain = run.config("rope");
  Config yarn = plain;
  yarn.model.rope_scaling.type = "yarn", yarn.model.rope_scaling.factor = 4;
  yarn.model.rope_scaling.original_max_position = 4;
  const std::string a = run.save(plain, "plain"), b = run.save(yarn, "yarn");  // the same weights
  std::string out;
  ASSERT_EQ(run.eval("--checkpoint " + a, &out), 0) << out;
  const std::string unscaled = loss_of(out);
  ASSERT_EQ(run.eval("--checkpoint " + b, &out), 0) << out;
  EXPECT_NE(loss_of(out), unscaled) << out;
  ASSERT_EQ(run.eval("--checkpoint " + b + " --rope-scaling none", &out), 0) << out;
  EXPECT_EQ(loss_of(out), unscaled) << out;
  EXPECT_TRUE(has(out, "| rope_scaling none)")) << out;
  ASSERT_EQ(run.eval("--checkpoint " + a + " --rope-scaling none", &out), 0) << out;
  EXPECT_EQ(loss_of(out), unscaled) << out;
}
