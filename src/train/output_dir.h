// The directory a binary writes a new checkpoint into (merge --output, import --output).
//
//   check_new_checkpoint_dir(dir, "--output");   // before any work; throws when dir holds a run
//   write_checkpoint_dir(dir, checkpoint_name(step), ck);   // step_N.h5 + latest, or nothing
//
// Such a binary writes step_N.h5 and points `latest` at it. Into a run directory that would change
// what `--resume auto` there continues from, so a directory that already holds a `latest` file or
// any step_*.h5 is refused, as is a path that is not a directory.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"

namespace tessera::train {

// Throws, naming flag and dir and saying that nothing was written, when dir exists and is not a
// directory or holds `latest` or a step_*.h5 checkpoint. A missing or empty dir passes.
void check_new_checkpoint_dir(const std::string& dir, const std::string& flag);

// Writes checkpoint `name` (with its digest file) and `latest` naming it into dir (created when
// missing), after `extra`, which writes any other files and records each path it creates in
// *made. All or nothing: on a failure (a full disk) everything this call made is removed, the
// directory too when this call created it, and the error says so, so that a second try finds dir
// as it was instead of a half-written run that check_new_checkpoint_dir refuses.
using ExtraFiles = std::function<void(std::vector<std::filesystem::path>* made)>;
void write_checkpoint_dir(const std::string& dir, const std::string& name, const CheckpointData& ck,
                          const ExtraFiles& extra = {});

// The name a file is written under before it is renamed to `path`: path.partial-<pid>, beside it
// (the rename stays in one file system) and none of the user's (eval --per-position, export
// --reference-logits).
std::string staging_path(const std::string& path);

}  // namespace tessera::train
