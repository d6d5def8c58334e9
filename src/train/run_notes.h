// What a run's log says, before the first step, about inputs that are allowed but not what the
// config seems to ask: lines for rank 0 to print, empty when there is nothing to say.
//
//   for (auto& line : validation_notes(cfg, val_loader, train_files)) log << line << "\n";
//   rollback_reach_note(cfg);                                       // spike.rollback_steps too far
//   newer_checkpoints_note(run_dir, resumed_path, resumed_step);   // resuming an older checkpoint
//   data_change_note(stored.data.train, cfg.data.train, train_files, resumed_path);
//   schedule_change_note(stored_config, cfg, resumed_step, resumed_path);
//
// Files are compared as canonical paths, so two globs spelt differently that match the same
// shards are the same data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/loader.h"

namespace tessera::train {

// An evaluation reads at most one pass over data.val: a note when that is fewer batches than
// eval.steps. A warning naming the files data.val shares with data.train (train_files), whose
// validation loss would be measured on training data.
std::vector<std::string> validation_notes(const Config& cfg, const data::DataLoader& val,
                                          const std::vector<std::string>& train_files);

// With loss masks (tokenize --format sft): how many of data.train's tokens are scored targets,
// and of data.val's (val: nullptr when evaluation is off); a warning when one of the two is
// masked and the other not (the validation loss would then score other tokens than training
// does). "" without masks.
std::string loss_mask_note(const data::DataLoader& train, const data::DataLoader* val);

// With data.windows: example: how many examples data.train (and data.val) hold, how many are
// longer than a window (their first tokens cut) and what share of the windows is padding (the
// tokens per step count it). "" with packed windows.
std::string example_windows_note(const data::DataLoader& train, const data::DataLoader* val);

// With data.windows: documents: the id documents start at (separator: GPTConfig's
// document_separator) and what restarts there. "" otherwise.
std::string documents_note(const Config& cfg, int64_t separator);

// A warning when spike.rollback_steps reaches further back than retention keeps checkpoints:
// keep files every `interval` steps span (keep - 1) x interval steps, so once the run is past its
// first keep saves a spike finds no checkpoint that far back and only skips its update. None
// with milestones (they stay), without periodic saves, or with detection off.
std::string rollback_reach_note(const Config& cfg);

// A warning naming the checkpoints of run_dir past `step`, the step of the checkpoint resumed
// (`path`): they belong to the run this one branches off, and its saves replace them.
std::string newer_checkpoints_note(const std::string& run_dir, const std::string& path,
                                   int64_t step);

// A warning when a resumed run reads other shards than its checkpoint (`path`) was trained on:
// the data position continues as a window index into the new files. Not an error: the same shards
// may have moved (the old glob then matches nothing here, or names the same files otherwise).
std::string data_change_note(const std::string& stored_glob, const std::string& glob,
                             const std::vector<std::string>& files, const std::string& path);

// A warning when a resumed run's next step (update `step`) runs at another LR than the schedule
// its checkpoint (`path`, whose stored config is `stored`) was following: another decay
// horizon (a higher --max-steps stretches the decay from here, so the LR jumps back up), warmup,
// peak, floor or shape. It gives the LR under both, and how to keep the old decay.
std::string schedule_change_note(const Config& stored, const Config& cfg, int64_t step,
                                 const std::string& path);

}  // namespace tessera::train
