// Notes for a run's log: see run_notes.h.
#include "train/run_notes.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

#include "checkpoint/retention.h"
#include "train/options.h"

namespace tessera::train {
namespace fs = std::filesystem;
namespace {

std::set<std::string> canonical(const std::vector<std::string>& files) {
  std::set<std::string> out;
  for (const std::string& f : files) {
    std::error_code ec;
    const fs::path p = fs::weakly_canonical(f, ec);
    out.insert(ec ? f : p.string());
  }
  return out;
}

// "a, b, c, d" of at most four names, then how many there are.
std::string file_list(const std::vector<std::string>& files) {
  std::string out;
  for (size_t i = 0; i < files.size() && i < 4; ++i) out += (i ? ", " : "") + files[i];
  if (files.size() > 4) out += ", ... (" + std::to_string(files.size()) + " files)";
  return out;
}

}  // namespace

std::vector<std::string> validation_notes(const Config& cfg, const data::DataLoader& val,
                                          const std::vector<std::string>& train_files) {
  std::vector<std::string> notes;
  const int64_t windows = val.windows_per_epoch(), asked = cfg.eval_windows();
  if (windows < asked)
    notes.push_back("eval: data.val holds " + std::to_string(windows) + " window(s) of " +
                    std::to_string(cfg.sequence_length()) + " tokens: each evaluation scores " +
                    std::to_string(windows) + ", not the " + std::to_string(asked) + " that " +
                    (cfg.eval.tokens > 0
                         ? "eval.tokens (" + std::to_string(cfg.eval.tokens) + ") asks for"
                         : "eval.steps (" + std::to_string(cfg.eval.steps) +
                               ") x train.batch_size (" + std::to_string(cfg.train.batch_size) +
                               ") ask for"));
  const std::set<std::string> train = canonical(train_files);
  std::vector<std::string> shared;  // as data.val's glob gave them
  for (const std::string& f : val.options().files)
    if (train.count(*canonical({f}).begin())) shared.push_back(f);
  if (!shared.empty())
    notes.push_back("warning: data.val '" + cfg.data.val + "' and data.train '" + cfg.data.train +
                    "' both match " + file_list(shared) +
                    ": the validation loss is measured on training data");
  return notes;
}

std::string loss_mask_note(const data::DataLoader& train, const data::DataLoader* val) {
  // "23.4% of data.train's 1200 tokens"
  const auto scored = [](const data::DataLoader& d, const char* key) {
    int64_t ones = 0, tokens = 0;
    for (const data::Shard& s : d.shards()) ones += s.mask_scored(), tokens += s.size();
    char text[128];
    std::snprintf(text, sizeof text, "%.1f%% of %s's %lld tokens",
                  tokens ? 100.0 * double(ones) / double(tokens) : 0.0, key, (long long)tokens);
    return std::string(text);
  };
  const bool t = train.loss_masked(), v = val && val->loss_masked();
  if (!t && !v) return "";
  if (t != v && val)
    return std::string("warning: data.") + (t ? "train" : "val") + " has loss masks and data." +
           (t ? "val" : "train") + " has none: the validation loss scores " +
           (t ? "every token, training only the masked-in ones"
              : "only the masked-in tokens, training every one") +
           " (tokenize both splits with --format sft, as one run of tokenize does)";
  const bool pairs = train.options().windows == data::WindowMode::Pairs;
  return std::string("data: loss masks (tokenize --format ") + (pairs ? "pairs" : "sft") +
         "): the loss scores " + scored(train, "data.train") +
         (v ? " and " + scored(*val, "data.val") : std::string()) + " (the rest are prompts)";
}

std::string example_windows_note(const data::DataLoader& train, const data::DataLoader* val) {
  const data::WindowMode mode = train.options().windows;
  const bool pairs = mode == data::WindowMode::Pairs;
  if (mode != data::WindowMode::Example && !pairs) return "";
  // "data.train's 900 examples (3 longer than 65 tokens, their first tokens cut; 41.2% of the
  // window targets are padding)"; under pairs "data.train's 450 pairs (3 examples longer ...".
  const auto stats = [&](const data::DataLoader& d, const char* key) {
    char text[240];
    std::snprintf(text, sizeof text,
                  "%s's %lld %s (%lld %slonger than %lld tokens, their first tokens cut; "
                  "%.1f%% of the window targets are padding)",
                  key, (long long)d.windows_per_epoch(), pairs ? "pairs" : "examples",
                  (long long)d.examples_cut(), pairs ? "examples " : "",
                  (long long)d.options().seq_len + 1, 100.0 * (1 - d.window_fill()));
    return std::string(text);
  };
  return std::string(pairs ? "data.windows pairs: one window each for the chosen and the rejected "
                             "example of "
                           : "data.windows example: one window each for ") +
         stats(train, "data.train") + (val ? " and " + stats(*val, "data.val") : std::string());
}

std::string documents_note(const Config& cfg, int64_t separator) {
  if (separator < 0) return "";
  const bool learned = cfg.model.position == "learned";
  return "data.windows documents: a document starts at every end-of-text id (" +
         std::to_string(separator) + ") of a window; its tokens attend only its own" +
         (learned ? ", and learned positions count from its start" : "");
}

std::string rollback_reach_note(const Config& cfg) {
  const CheckpointConfig& k = cfg.checkpoint;
  int64_t reach = 0;
  if (__builtin_mul_overflow(k.keep - 1, k.interval, &reach)) return "";  // reaches anything
  if (!cfg.spike.enabled || k.interval <= 0 || k.milestone_interval > 0 ||
      cfg.spike.rollback_steps <= reach)
    return "";
  const int64_t keep = (cfg.spike.rollback_steps + k.interval - 1) / k.interval + 1;
  return "warning: spike.rollback_steps (" + std::to_string(cfg.spike.rollback_steps) +
         ") reaches further back than the checkpoints retention keeps (checkpoint.keep " +
         std::to_string(k.keep) + " x checkpoint.interval " + std::to_string(k.interval) +
         " span " + std::to_string(reach) + " steps): past the first saves a spike finds no "
         "checkpoint to roll back to and only skips its update; set checkpoint.keep: " +
         std::to_string(keep) + " (or a checkpoint.milestone_interval)";
}

std::string newer_checkpoints_note(const std::string& run_dir, const std::string& path,
                                   int64_t step) {
  std::vector<std::string> newer;
  for (const CheckpointFile& f : list_checkpoints(run_dir))
    if (f.step > step) newer.push_back(fs::path(f.path).filename().string());
  if (newer.empty()) return "";
  return "warning: resume: " + run_dir + " holds checkpoints after step " + std::to_string(step) +
         " (" + path + "), from the run this one branches off: " + file_list(newer) +
         "; this run's saves write over them at their steps and a loss spike never rolls back to "
         "them, but until the run passes them they count toward checkpoint.keep, so retention "
         "prunes this run's own older checkpoints first (copy them elsewhere to keep them)";
}

std::string data_change_note(const std::string& stored_glob, const std::string& glob,
                             const std::vector<std::string>& files, const std::string& path) {
  if (stored_glob == glob) return "";
  std::vector<std::string> old_files;
  try {
    old_files = data::expand_glob(stored_glob);
  } catch (const Error&) {
    // Matches nothing here (moved, or another machine's path): the files cannot be compared.
  }
  if (!old_files.empty() && canonical(old_files) == canonical(files)) return "";
  return "warning: resume: data.train is '" + glob + "' but checkpoint " + path +
         " was trained on '" + stored_glob +
         "': the run goes on from the checkpoint's position in the data order, counted in the "
         "new files";
}

std::string schedule_change_note(const Config& stored, const Config& cfg, int64_t step,
                                 const std::string& path) {
  const ScheduleOptions was = schedule_options(stored), now = schedule_options(cfg);
  // What surprises is the LR moving at once (a stretched decay jumps back up); a schedule that
  // differs only later (resumed in warmup) is what raising --max-steps early asks for.
  if (std::fabs(lr_at(now, step) - lr_at(was, step)) <= 1e-9 * lr_at(was, step)) return "";
  char lrs[96];
  std::snprintf(lrs, sizeof lrs, "%.4g where the checkpoint's schedule gives %.4g",
                lr_at(now, step), lr_at(was, step));
  std::string note = "warning: resume: the LR schedule differs from the one checkpoint " + path +
                     " followed: step " + std::to_string(step + 1) + " runs at lr " + lrs;
  ScheduleOptions stretched = was;
  stretched.max_steps = now.max_steps;
  if (was.max_steps != now.max_steps && stretched == now)
    note += " (its decay ended at step " + std::to_string(was.max_steps) + ", now at " +
            std::to_string(now.max_steps) + ": train.max_steps or optim.decay_steps changed; "
            "--set optim.decay_steps=" + std::to_string(was.max_steps) +
            " keeps the old decay and then trains on at min_lr)";
  return note;
}

}  // namespace tessera::train
