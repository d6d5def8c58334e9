// A run directory's checkpoints: naming, listing, pruning, and finding the one to resume from.
//
//   save_checkpoint(dir + "/" + checkpoint_name(500), ck);  write_latest(dir, checkpoint_name(500));
//   prune_checkpoints(dir, {.keep = 3, .milestone_interval = 10000}, checkpoint_name(500));
//   std::optional<Resumable> r = load_resumable(dir, std::cerr, rank == 0);  // --resume auto
//
// Retention: the newest `keep` step_*.h5 stay; files whose step is a multiple of
// milestone_interval are milestones, never pruned and not counted in `keep`; the file `latest`
// names is never pruned.
//
// Resume: `latest` is the commit point, so the checkpoint it names is the one to resume from. When
// it is missing, unreadable, truncated or corrupt (its digest file disagrees: checkpoint.h), the
// newest step_*.h5 that loads completely is taken instead, with a warning for every file passed
// over, and the files passed over are moved aside (load_resumable). Leftover *.tmp files are
// writes a crash interrupted (save_checkpoint renames only complete files); they are never
// resumed from.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"

namespace tessera {

// "step_00000500.h5"
std::string checkpoint_name(int64_t step);

struct CheckpointFile {
  int64_t step = 0;
  std::string path;
};
// The step_<digits>.h5 files of dir, by ascending step (none when dir does not exist).
std::vector<CheckpointFile> list_checkpoints(const std::string& dir);

struct RetentionPolicy {
  int64_t keep = 3;
  int64_t milestone_interval = 0;  // 0 = no milestones
};
// Deletes a checkpoint and then its digest file (a crash in between leaves only a digest file,
// which names no checkpoint and is replaced when that step is saved again). Either may be absent.
void remove_checkpoint(const std::string& path);

// Deletes what the policy does not keep (each with its digest file), never the file named
// `protect` (a file name in dir). Returns the checkpoint paths deleted.
std::vector<std::string> prune_checkpoints(const std::string& dir, const RetentionPolicy& policy,
                                           const std::string& protect);

// A training run's save: checkpoint `name` in dir, then `latest` naming it (the commit point), then
// retention. When `latest` cannot be written (a full disk) a file that is new is removed again, so
// the directory is as before the save and --resume auto continues from the checkpoint `latest`
// still names (instead of passing over a newer one that no `latest` committed); the error says so.
void commit_checkpoint(const std::string& dir, const std::string& name, const CheckpointData& ck,
                       const RetentionPolicy& policy);

// Deletes what interrupted saves left in dir: *.tmp files (digest files' included) and a step's
// digest file without its checkpoint. Returns their paths. A `latest` (or `latest.tmp`) that is a
// directory or other non-file is an Error naming it.
std::vector<std::string> remove_interrupted_writes(const std::string& dir);

// What an earlier run left in dir, for messages that refuse to write there: "" when dir holds no
// step_*.h5 and no `latest`, else e.g. "latest, 3 checkpoints up to step_00000004.h5".
std::string describe_run(const std::string& dir);

struct Resumable {
  std::string path;
  CheckpointData data;
};
// The checkpoint --resume auto continues from (see the file comment), fully loaded; nullopt when
// dir holds no checkpoint and no `latest`. Throws, naming every file tried, when checkpoints exist
// but none loads, and when `latest` names a checkpoint that is gone and no other is there; throws
// too, saying resume stopped, when a checkpoint cannot be read at all (permission denied, an I/O
// error: CheckpointUnreadable), since that says nothing about its bytes. `warn` receives one line
// per file passed over. The step_*.h5 files passed over are moved aside (with their digest
// files) when move_rejected, so that the run, saving those steps again, cannot write over them:
// step_00000020.h5 -> step_00000020.h5.rejected, which nothing here lists, prunes or removes. In
// a multi-rank run every rank calls this on the same dir and reaches the same choice; only rank 0
// passes move_rejected (the others find such a file either as it was or gone, and skip it alike).
std::optional<Resumable> load_resumable(const std::string& dir, std::ostream& warn,
                                        bool move_rejected);

}  // namespace tessera
