// build/eval --checkpoint checkpoints/tiny [--data 'data/kjv/byte/val_*.bin'] [--batches 20]
//            [--batch-size B] [--base BASE] [--contexts 128,256,512,1024]
//            [--rope-scaling yarn --rope-factor 8|auto] [--set model.rope_scaling.KEY=V]
//            [--per-position losses.csv|.json] [--stride S] [--windows packed|example]
// Mean cross-entropy (nats per token) and perplexity of a checkpoint on a token set: by default the
// validation split its config names, read in order from the start, as training's validation does.
// A LoRA checkpoint is evaluated on top of its base (the one it recorded, or --base).
// --contexts evaluates windows of each length, also past the length the model trained on (RoPE and
// stick-breaking models can run them; learned positions stop at block_size: such a context shows
// as "-", and an error when no context asked can run): the batch shrinks so every context reads
// about the same number of tokens, the first batches x B x T of the data, down to one window a
// batch (a context past B x T reads batches x T tokens, and its row says so). The header says how
// many batches were read, and when the data held fewer than asked.
// --rope-scaling / --rope-factor / --set model.rope_scaling.* scale a RoPE model's rotary
// frequencies for this evaluation only (nn/rope_scaling.h); the checkpoint is not changed.
// original_max_position 0 means the stored model.block_size, the length the model trained at.
// --rope-factor auto uses, at each context T, factor = max(1, T / original_max_position); for
// dynamic, factor 1: its base already follows the length (s L / L0 - (s - 1) is L / L0 at s = 1,
// NTK-aware scaling by T / L0), and s = T / L0 would count the length twice (the base raised by
// (r^2 - r + 1)^(d / (d - 2)) for r = T / L0, not r^(d / (d - 2))).
// --rope-scaling none evaluates plain RoPE, also a checkpoint trained with scaling.
// --per-position writes the mean loss at each position of the window (one series per context),
// once the evaluation has succeeded: a failed one leaves an existing file as it was.
// --stride S scores the same tokens with a window that slides by S (train::evaluate_strided): each
// token with at least T - S tokens of context instead of those since its window began (at every
// context T of --contexts, each >= S); it costs about T / S times the forward passes.
// --windows: how the data is cut, as data.windows in training (data/loader.h): packed windows,
// the same with attention kept within documents (documents), or one per example of a `tokenize
// --format sft` set (the checkpoint's config says which by default; a fine-tuned model evaluated
// on plain text shards needs --windows packed).
// --choices FILE scores multiple-choice items instead (train/choices.h: HellaSwag's JSON Lines,
// each item's endings ranked by the model's log-likelihood after its context): accuracy, and
// accuracy with the log-likelihood per byte of the ending (acc_norm), against chance.
// --answers FILE continues the prompts of prompt / response examples greedily instead
// (train/answers.h: data/sft.h's forms): the share answered exactly, the share answered with some
// response of the file, and the commonest response's share. Its prompts are sent in the checkpoint
// config's data.chat_template, or --prompt-style's (chatml, qwen3, llama3; plain for none); plain
// ones after the beginning-of-text id with --bos or the config's eval.answers_bos.
// --pairs GLOB scores preference pairs instead (tokenize --format pairs; train/dpo.h): the DPO loss
// of --batches x --batch-size pairs, the share whose chosen response the model prefers relative to
// the reference, and the reward margin, as a DPO run's validation computes them. The loss and beta
// are the checkpoint config's (train.dpo_loss, train.dpo_beta; DPO's defaults for a language
// model's checkpoint). The reference is --reference (a checkpoint or hf:DIR), else a DPO run's own
// (its checkpoint.init; a LoRA checkpoint's base, its adapters off); SimPO and ORPO take none.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cxxopts.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <utility>
#include <vector>

#include "autograd/autograd.h"
#include "config/cli.h"
#include "data/chat.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "ops/ops.h"
#include "train/answers.h"
#include "train/choices.h"
#include "train/device.h"
#include "train/dpo.h"
#include "train/eval_flags.h"
#include "train/load.h"
#include "train/options.h"
#include "train/output_dir.h"
#include "train/trainer.h"

namespace {

using namespace tessera;

// The mean loss at each position t of the window, over the same batches train::evaluate reads
// (the loader in order from the start, unshuffled); their mean is the overall mean loss.
std::vector<double> position_losses(const nn::GPT& model, const Config& cfg,
                                    const std::string& pattern, int64_t batches) {
  NoGradGuard no_grad;
  const data::LoaderOptions o = train::loader_options(cfg, "--data", pattern, false);
  data::DataLoader loader(o);
  // Every position's mean is over the same rows; a loss mask would leave positions unscored.
  TESSERA_CHECK(!loader.loss_masked(), "--per-position: ", pattern,
                " has loss masks (tokenize --format sft); a per-position curve needs every target "
                "scored, so evaluate token shards without .mask files");
  const int64_t n = std::min(batches, loader.batches_per_epoch());
  TESSERA_CHECK(n > 0, pattern, ": too few tokens for one batch of ", o.batch_size, " x ",
                o.seq_len);
  const Device dev = train::model_device(model);
  const int64_t T = o.seq_len;
  std::vector<double> sum(size_t(T), 0.0);
  int64_t rows = 0;
  for (int64_t i = 0; i < n; ++i) {
    data::Batch b = loader.next();
    // Each position's loss on the device, (B, T) values read back rather than (B, T, V).
    const std::vector<float> losses =
        ops::token_losses(model.forward(b.inputs.to(dev), false), b.targets.to(dev),
                          data::kIgnoreTarget, b.targets)
            .to(DType::F32)
            .to_vector<float>();
    const int64_t B = b.targets.size(0);
    for (int64_t r = 0; r < B; ++r)
      for (int64_t t = 0; t < T; ++t) sum[size_t(t)] += double(losses[size_t(r * T + t)]);
    rows += B;
  }
  for (double& s : sum) s /= double(rows);
  return sum;
}

// --per-position FILE, checked before any work: a name that picks the format, in a folder that
// exists and can be written, and not a directory. Nothing is written yet: an existing FILE is only
// replaced once the evaluation has succeeded (write_positions).
void check_positions_file(const std::string& path) {
  namespace fs = std::filesystem;
  const bool json = path.ends_with(".json"), csv = path.ends_with(".csv");
  TESSERA_CHECK(json || csv, "command line: --per-position ", path,
                ": the file name must end in .csv or .json (it picks the format)");
  TESSERA_CHECK(!fs::is_directory(path), "command line: --per-position ", path, " is a directory");
  const fs::path p(path);
  const fs::path folder = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  TESSERA_CHECK(fs::is_directory(folder), "command line: --per-position ", path, ": the folder ",
                folder.string(), fs::exists(folder) ? " is not a directory" : " does not exist");
  // The file write_positions writes first, made and removed again: the one test of writability
  // that permission bits, read-only mounts and special file systems all answer.
  const std::string probe = train::staging_path(path);
  const bool made = bool(std::ofstream(probe));
  const int err = errno;
  std::error_code ignored;
  fs::remove(probe, ignored);
  TESSERA_CHECK(made, "command line: --per-position ", path, ": cannot write in the folder ",
                folder.string(), ": ", std::strerror(err));
}

// Writes the series to path + ".partial-<pid>" and renames it over path, so that a failed write leaves
// the old file, if any, as it was.
void write_positions(const std::string& path,
                     const std::vector<std::pair<int64_t, std::vector<double>>>& series) {
  const std::string tmp = train::staging_path(path);
  std::ofstream out(tmp);
  TESSERA_CHECK(out, "--per-position: cannot write ", tmp);
  char buf[64];
  if (path.ends_with(".csv")) {
    out << "context,position,loss\n";
    for (const auto& [T, losses] : series)
      for (size_t t = 0; t < losses.size(); ++t) {
        std::snprintf(buf, sizeof buf, "%ld,%zu,%.6f\n", long(T), t, losses[t]);
        out << buf;
      }
  } else {
    out << "{\"loss_by_position\": {";
    for (size_t k = 0; k < series.size(); ++k) {
      out << (k ? ", " : "") << "\"" << series[k].first << "\": [";
      for (size_t t = 0; t < series[k].second.size(); ++t) {
        std::snprintf(buf, sizeof buf, "%s%.6f", t ? ", " : "", series[k].second[t]);
        out << buf;
      }
      out << "]";
    }
    out << "}}\n";
  }
  out.close();
  std::error_code ec;
  if (out) std::filesystem::rename(tmp, path, ec);
  if (!out || ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    TESSERA_FAIL("--per-position: error writing ", path, out ? ": " + ec.message() : "",
                 " (an existing file is left as it was)");
  }
}

// What the shards pattern (given by `what`) names hold, each opened (and checked) once for every
// context: their token counts, whether they have loss masks, and the examples those mark.
struct ShardCounts {
  std::vector<int64_t> tokens;
  bool masked = false;
  int64_t examples = 0;
};

// examples: the windows are examples (--windows example), so every shard must mark them.
ShardCounts count_shards(const std::string& pattern, const std::string& what, int64_t vocab_size,
                         bool examples) {
  ShardCounts c;
  for (const std::string& file : data::expand_glob(pattern, what)) {
    const data::Shard shard(file, vocab_size);
    TESSERA_CHECK(!examples || shard.has_example_starts(), "shard ", file, " (", what,
                  ") marks no examples (no version 2 loss mask beside it), but the windows are "
                  "examples (data.windows: example in the checkpoint's config, or --windows): "
                  "pass --windows packed to evaluate it in windows cut from the stream");
    c.tokens.push_back(shard.size());
    c.masked = c.masked || shard.has_loss_mask();
    c.examples += int64_t(shard.example_starts().size());
  }
  return c;
}

// The batches an evaluation of `batches` at `at`'s batch size and length reads from these shards:
// fewer when the data runs out (train::evaluate and position_losses stop there, as their
// unshuffled loader does: whole batches of windows). An error when not one batch.
int64_t batches_read(const Config& at, const ShardCounts& shards, const std::string& pattern,
                     int64_t batches) {
  const int64_t T = at.sequence_length(), B = at.train.batch_size;
  const bool examples = at.data.windows == "example";
  const int64_t windows = examples ? shards.examples : data::count_windows(shards.tokens, T);
  TESSERA_CHECK(windows >= B, pattern, " holds ", windows,
                examples ? " examples (a window each)"
                         : " windows of " + std::to_string(T + 1) + " tokens (context " +
                               std::to_string(T) + " + 1)",
                ", fewer than one batch of ", B);
  return std::min(batches, windows / B);
}

// "20 batches", or "2-3 batches" where the count differs between contexts (each reads about the
// same number of tokens, in batches of a size that depends on the context).
std::string batch_count(int64_t lo, int64_t hi) {
  return std::to_string(lo) + (hi != lo ? "-" + std::to_string(hi) : "") + " batches";
}

// --stride S in the header: the same tokens, scored by windows that move by S; example windows;
// documents.
std::string windows_note(int64_t stride, const Config& cfg) {
  if (cfg.data.windows == "example") return "; a window per example";
  const std::string documents =
      cfg.data.windows == "documents" ? "; attention within documents" : "";
  if (!stride) return documents;
  return "; windows sliding by " + std::to_string(stride) + ", each token scored once" + documents;
}

// What follows the count when the data held fewer batches than --batches asked for.
std::string fewer_note(int64_t read, int64_t asked) {
  if (read >= asked) return "";
  return ", fewer than the " + std::to_string(asked) + " asked: the data holds no more";
}

// The checkpoint of the evaluations that read batches (of windows, of pairs), placed, and its
// config with --batch-size applied. The counts are checked before it loads: a batch of 0
// sequences would divide by zero, or average nothing.
struct Batched {
  train::LoadedModel m;
  Config cfg;
  int64_t batches = 0;
};
Batched load_batched(const cxxopts::ParseResult& args) {
  Batched b;
  b.batches = args["batches"].as<int64_t>();
  TESSERA_CHECK(b.batches > 0, "command line: --batches must be positive, got ", b.batches);
  const int64_t batch_size = args.count("batch-size") ? args["batch-size"].as<int64_t>() : 0;
  TESSERA_CHECK(!args.count("batch-size") || batch_size > 0,
                "command line: --batch-size must be positive, got ", batch_size);
  b.m = train::load_model(args);
  train::place_loaded(b.m, args);
  b.cfg = b.m.config;
  if (batch_size) b.cfg.train.batch_size = batch_size;
  return b;
}

// --pairs: the preference pairs of `pattern` scored as a DPO run's validation scores them.
void eval_pairs(const cxxopts::ParseResult& args, const std::string& pattern) {
  Batched b = load_batched(args);
  train::LoadedModel& m = b.m;
  Config& cfg = b.cfg;
  const int64_t batches = b.batches;
  const bool dpo_run = cfg.train.objective == "dpo";
  cfg.train.objective = "dpo", cfg.data.windows = "pairs";
  const bool reference_free = cfg.train.dpo_loss == "simpo" || cfg.train.dpo_loss == "orpo";
  if (args.count("reference")) {
    TESSERA_CHECK(!reference_free, "command line: --reference: ", m.path, "'s train.dpo_loss is ",
                  cfg.train.dpo_loss, ", which takes no reference");
    TESSERA_CHECK(!m.lora, "command line: --reference: ", m.path,
                  " is a LoRA checkpoint, whose reference is its base with the adapters off");
    cfg.checkpoint.init = args["reference"].as<std::string>();
  } else {
    TESSERA_CHECK(reference_free || m.lora || (dpo_run && !cfg.checkpoint.init.empty()),
                  "command line: --pairs needs the reference model: ", m.path,
                  " is not a DPO run's checkpoint (train.objective ", m.config.train.objective,
                  "), so name one with --reference CHECKPOINT (or hf:DIR)");
  }
  const train::Dpo dpo(cfg, *m.model, m.lora.get());
  const int64_t asked = batches * cfg.train.batch_size;
  const train::PairSums s = train::evaluate_pairs(dpo, cfg, pattern, asked);
  std::printf(
      "%s%s%s: dpo loss %.4f | reward accuracy %.4f | margin %.4f (%ld pairs of %s%s; %s loss, "
      "beta %g; reference: %s)\n",
      m.path.c_str(), m.lora ? " on base " : "", m.base_path.c_str(), s.loss / s.pairs,
      s.correct / s.pairs, (s.chosen - s.rejected) / s.pairs, long(s.pairs), pattern.c_str(),
      fewer_note(int64_t(s.pairs), asked).c_str(), cfg.train.dpo_loss.c_str(), cfg.train.dpo_beta,
      dpo.reference().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tessera;
  return run_main("eval", [&] {
    cxxopts::Options options("eval", "Validation loss of a checkpoint");
    options.add_options()("data", "token shards (glob); default: the checkpoint config's data.val",
                          cxxopts::value<std::string>())(
        "batches", "batches to average (fewer if the data runs out)",
        cxxopts::value<int64_t>()->default_value("20"))(
        "batch-size", "sequences per batch; default: the config's train.batch_size",
        cxxopts::value<int64_t>())("contexts",
                                   "comma-separated context lengths to evaluate, e.g. 128,256,512",
                                   cxxopts::value<std::string>())(
        "rope-scaling", "scale RoPE for this evaluation: none, linear, dynamic, yarn or llama3",
        cxxopts::value<std::string>())(
        "rope-factor",
        "the scaling factor, or auto (context / trained length at each context; 1 for dynamic, "
        "whose base follows the length)",
        cxxopts::value<std::string>())(
        "set", "model.rope_scaling.KEY=VALUE (repeatable): the other scaling keys",
        cxxopts::value<std::vector<std::string>>())(
        "per-position",
        "write the mean loss at each position of the window to FILE (.csv or .json)",
        cxxopts::value<std::string>())("stride",
                                       "slide each window by S tokens and score only the tokens it "
                                       "adds (every token then has >= T - S of context)",
                                       cxxopts::value<int64_t>())(
        "windows",
        "packed (windows cut from the token stream), documents (the same, attention kept "
        "within documents) or example (one per example of a tokenize --format sft set); "
        "default: the checkpoint config's data.windows",
        cxxopts::value<std::string>())(
        "choices",
        "score multiple-choice items instead: HellaSwag's JSON Lines (ctx, endings, label), "
        "each item's endings ranked by log-likelihood",
        cxxopts::value<std::string>(), "FILE")(
        "answers",
        "continue the prompts of prompt / response examples greedily instead (JSON Lines as "
        "tokenize --format sft reads them); the share answered exactly",
        cxxopts::value<std::string>(), "FILE")(
        "pairs",
        "score preference pairs instead (tokenize --format pairs shards, a glob): the DPO loss, "
        "reward accuracy and margin against the reference",
        cxxopts::value<std::string>(), "GLOB")(
        "reference",
        "with --pairs: the reference model (a checkpoint or hf:DIR); default: a DPO run's own",
        cxxopts::value<std::string>())(
        "prompt-style",
        "with --answers: chatml, qwen3, llama3, llama2 or mistral (each prompt a user's message in "
        "that chat template) or plain; default: the checkpoint config's data.chat_template",
        cxxopts::value<std::string>())(
        "bos",
        "with --answers: each prompt after the tokenizer's beginning-of-text id, as tokenize "
        "--format sft --bos starts examples; default: the checkpoint config's eval.answers_bos")(
        "h,help", "show this help");
    train::add_model_options(options);
    train::add_device_option(options);
    cxxopts::ParseResult args;
    if (!parse_flags_or_help(options, argc, argv, args)) return 0;
    for (const char* mode : {"choices", "answers", "pairs"}) {
      if (!args.count(mode)) continue;
      const bool pairs = std::string(mode) == "pairs";  // which takes --batches and --batch-size
      for (const char* flag : {"data", "batches", "batch-size", "contexts", "rope-scaling",
                               "rope-factor", "set", "per-position", "stride", "windows"})
        TESSERA_CHECK(!args.count(flag) || (pairs && std::string(flag).starts_with("batch")),
                      "command line: --", flag,
                      " applies to the loss over token windows, not to --", mode);
    }
    TESSERA_CHECK(args.count("choices") + args.count("answers") + args.count("pairs") <= 1,
                  "command line: --choices, --answers and --pairs are three evaluations; give one");
    TESSERA_CHECK(!args.count("reference") || args.count("pairs"),
                  "command line: --reference goes with --pairs");
    TESSERA_CHECK((!args.count("prompt-style") && !args.count("bos")) || args.count("answers"),
                  "command line: --prompt-style and --bos go with --answers");
    const std::string style =
        args.count("prompt-style") ? args["prompt-style"].as<std::string>() : "";
    TESSERA_CHECK(style.empty() || style == "plain" || data::chat_template_named(style),
                  "command line: --prompt-style must be plain, ", data::kChatTemplateNames,
                  ", got '", style, "'");
    if (args.count("pairs")) {
      eval_pairs(args, args["pairs"].as<std::string>());
      return 0;
    }
    if (args.count("answers")) {
      const std::string file = args["answers"].as<std::string>();
      std::vector<data::SftExample> examples = data::read_sft_examples(file);
      train::LoadedModel m = train::load_model(args);
      train::place_loaded(m, args);
      const auto tok = data::make_tokenizer(m.config.data.tokenizer, m.config.data.tokenizer_dir);
      const auto chat =
          data::chat_template_named(style.empty() ? m.config.data.chat_template : style);
      const bool bos = args.count("bos") > 0 || (!chat && m.config.eval.answers_bos);
      const train::AnswerSet set(std::move(examples), *tok, file, chat, bos);
      const train::AnswerResult r = train::evaluate_answers(*m.model, *tok, set);
      std::printf(
          "%s%s%s: exact %.4f | formed %.4f (%ld items of %s; the commonest response "
          "%.4f)\n",
          m.path.c_str(), m.lora ? " on base " : "", m.base_path.c_str(), r.exact, r.formed,
          long(r.items), file.c_str(), r.majority);
      return 0;
    }
    if (args.count("choices")) {
      const std::string file = args["choices"].as<std::string>();
      const std::vector<train::ChoiceItem> items = train::read_choice_items(file);
      train::LoadedModel m = train::load_model(args);
      train::place_loaded(m, args);
      const auto tok = data::make_tokenizer(m.config.data.tokenizer, m.config.data.tokenizer_dir);
      const train::ChoiceResult r = train::evaluate_choices(*m.model, *tok, items);
      std::printf("%s%s%s: acc %.4f | acc_norm %.4f (%ld items of %s; chance %.4f)\n",
                  m.path.c_str(), m.lora ? " on base " : "", m.base_path.c_str(), r.acc, r.acc_norm,
                  long(r.items), file.c_str(), r.chance);
      return 0;
    }
    const std::vector<int64_t> contexts =
        args.count("contexts") ? train::parse_contexts(args["contexts"].as<std::string>())
                               : std::vector<int64_t>{};
    const std::string per_position =
        args.count("per-position") ? args["per-position"].as<std::string>() : "";
    if (!per_position.empty()) check_positions_file(per_position);
    const int64_t stride = args.count("stride") ? args["stride"].as<int64_t>() : 0;
    TESSERA_CHECK(!args.count("stride") || stride >= 1,
                  "command line: --stride must be at least 1, got ", stride);
    TESSERA_CHECK(!stride || per_position.empty(),
                  "command line: --per-position and --stride "
                  "together: a strided evaluation scores each window from another position on, so "
                  "it has no per-position curve; give one of them");
    Batched b = load_batched(args);
    train::LoadedModel& m = b.m;
    Config& cfg = b.cfg;
    const int64_t batches = b.batches;
    if (args.count("windows")) {
      cfg.data.windows = args["windows"].as<std::string>();
      data::parse_window_mode(cfg.data.windows, "command line: --windows");
      m.model->set_document_separator(train::document_separator(cfg));
    }
    TESSERA_CHECK(cfg.data.windows != "pairs",
                  "eval scores a language model's windows, but the "
                  "windows are preference pairs (data.windows: pairs in ",
                  m.path,
                  "'s config, or --windows), which --pairs scores: pass --pairs GLOB, or "
                  "--windows packed or example with text or sft shards");
    const bool examples = cfg.data.windows == "example";
    TESSERA_CHECK(!examples || !stride,
                  "command line: --stride slides a window along the token "
                  "stream, but the windows are examples (data.windows: example in ",
                  m.path, "'s config, or --windows): pass --windows packed with it");
    const std::string data = args.count("data") ? args["data"].as<std::string>() : cfg.data.val;

    // RoPE scaling: overrides of model.rope_scaling only; the weights stay as trained.
    train::RopeFlags rope;
    if (args.count("set")) rope.sets = args["set"].as<std::vector<std::string>>();
    if (args.count("rope-scaling")) rope.type = args["rope-scaling"].as<std::string>();
    if (args.count("rope-factor")) rope.factor = args["rope-factor"].as<std::string>();
    const bool auto_factor = rope.factor == "auto";
    const bool scaled = train::apply_rope_flags(cfg, rope, m.path);
    RopeScalingConfig& rs = cfg.model.rope_scaling;
    auto apply_scaling = [&](int64_t T) {
      if (!scaled) return;
      if (auto_factor)
        rs.factor = rs.type == "dynamic"
                        ? 1.0
                        : std::max(1.0, double(T) / double(rs.original_max_position));
      m.model->set_rope_scaling(train::model_config(cfg.model, cfg.train).rope_scaling);
    };
    char scaling_note[160] = "", factor[32] = "auto";
    if (auto_factor && rs.type == "dynamic") std::snprintf(factor, sizeof factor, "auto (1)");
    if (!auto_factor) std::snprintf(factor, sizeof factor, "%g", rs.factor);
    if (scaled && rs.type == "none")
      std::snprintf(scaling_note, sizeof scaling_note, " | rope_scaling none");
    else if (scaled)
      std::snprintf(scaling_note, sizeof scaling_note, " | rope_scaling %s, factor %s, L0 %ld",
                    rs.type.c_str(), factor, long(rs.original_max_position));

    std::vector<std::pair<int64_t, std::vector<double>>> series;
    // One evaluation at context T (batch already set in at): the mean, and the per-position curve
    // when asked for (the same batches; its mean is the same loss up to summation order).
    auto loss_at = [&](const Config& at) {
      apply_scaling(at.sequence_length());
      if (stride) return train::evaluate_strided(*m.model, at, data, batches, stride).loss;
      if (per_position.empty()) return train::evaluate(*m.model, at, data, batches);
      std::vector<double> p = position_losses(*m.model, at, data, batches);
      double mean = 0;
      for (double v : p) mean += v;
      mean /= double(p.size());
      series.emplace_back(at.sequence_length(), std::move(p));
      return mean;
    };

    const ShardCounts tokens_in =
        count_shards(data, args.count("data") ? "--data" : "data.val of " + m.path,
                     cfg.model.vocab_size, examples);
    // The loader refuses a set that mixes masked and unmasked shards, naming them.
    if (tokens_in.masked)
      std::printf(
          "note: %s has loss masks (tokenize --format sft): the loss and ppl are over the "
          "targets they keep (the responses), not every token\n",
          data.c_str());
    if (!contexts.empty()) {
      // Learned positions have rows up to block_size only; RoPE, stick-breaking and no positions
      // run any length.
      auto runs = [&](int64_t T) {
        return cfg.model.position != "learned" || T <= cfg.model.block_size;
      };
      TESSERA_CHECK(
          std::any_of(contexts.begin(), contexts.end(), runs), "command line: --contexts ",
          args["contexts"].as<std::string>(), ": ", m.path,
          " has learned positions, which end at model.block_size ", cfg.model.block_size,
          ", so none of these contexts can be evaluated (give one <= ", cfg.model.block_size, ")");
      const int64_t tokens = cfg.train.batch_size * cfg.sequence_length();  // per batch
      auto at_context = [&](int64_t T) {
        Config at = cfg;
        at.model.block_size = std::max(T, cfg.model.block_size);  // the loader's limit only
        at.train.seq_len = T;
        at.train.batch_size = std::max<int64_t>(1, tokens / T);
        return at;
      };
      int64_t lo = batches, hi = 0;
      for (int64_t T : contexts)
        if (runs(T)) {
          const int64_t n = batches_read(at_context(T), tokens_in, data, batches);
          lo = std::min(lo, n), hi = std::max(hi, n);
        }
      for (int64_t T : contexts)
        TESSERA_CHECK(!runs(T) || stride <= T, "command line: --stride ", stride,
                      " is longer than the context ", T,
                      " (--contexts): a window moves by at most "
                      "its length");
      std::printf("%s%s%s on %s (%s of ~%ld tokens%s; trained at %ld%s%s)\n", m.path.c_str(),
                  m.lora ? " on base " : "", m.base_path.c_str(), data.c_str(),
                  batch_count(lo, hi).c_str(), long(tokens), fewer_note(lo, batches).c_str(),
                  long(cfg.sequence_length()), scaling_note, windows_note(stride, cfg).c_str());
      std::printf("%10s %10s %10s\n", "context", "loss", "ppl");
      for (int64_t T : contexts) {
        if (!runs(T)) {
          std::printf("%10ld %10s %10s   (learned positions end at %ld)\n", long(T), "-", "-",
                      long(cfg.model.block_size));
          continue;
        }
        const double loss = loss_at(at_context(T));
        // Past B x T tokens a batch is one window of T: it reads more (and more) text.
        const std::string more = T > tokens ? "   (batches of one window: " + std::to_string(T) +
                                                  " tokens each, not ~" + std::to_string(tokens) + ")"
                                            : "";
        std::printf("%10ld %10.4f %10.2f%s\n", long(T), loss, std::exp(loss), more.c_str());
        std::fflush(stdout);
      }
    } else {
      const int64_t n = batches_read(cfg, tokens_in, data, batches);
      TESSERA_CHECK(stride <= cfg.sequence_length(), "command line: --stride ", stride,
                    " is longer than the context ", cfg.sequence_length(),
                    ": a window moves by at most its length");
      const double loss = loss_at(cfg);
      std::printf("%s%s%s: loss %.4f | ppl %.2f (%s, %s of %ld x %ld%s%s%s)\n", m.path.c_str(),
                  m.lora ? " on base " : "", m.base_path.c_str(), loss, std::exp(loss),
                  data.c_str(), batch_count(n, n).c_str(), long(cfg.train.batch_size),
                  long(cfg.sequence_length()), fewer_note(n, batches).c_str(), scaling_note,
                  windows_note(stride, cfg).c_str());
    }
    if (!per_position.empty()) write_positions(per_position, series);
    return 0;
  });
}
