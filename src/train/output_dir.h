// The directory a binary writes a new checkpoint into (merge --output, import --output).
//
//   check_new_checkpoint_dir(dir, "--output");   // before any work; throws when dir holds a run
//
// Such a binary writes step_N.h5 and points `latest` at it. Into a run directory that would change
// what `--resume auto` there continues from, so a directory that already holds a `latest` file or
// any step_*.h5 is refused, as is a path that is not a directory.
#pragma once

#include <string>

namespace tessera::train {

// Throws, naming flag and dir and saying that nothing was written, when dir exists and is not a
// directory or holds `latest` or a step_*.h5 checkpoint. A missing or empty dir passes.
void check_new_checkpoint_dir(const std::string& dir, const std::string& flag);

}  // namespace tessera::train
