// Rollback target and cleanup: see rollback.h.
#include "train/rollback.h"

namespace tessera::train {

std::optional<RollbackTarget> rollback_target(const std::string& run_dir, int64_t step,
                                              int64_t rollback_steps, std::ostream& warn) {
  const std::vector<CheckpointFile> files = list_checkpoints(run_dir);
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    if (it->step > step - rollback_steps) continue;
    try {
      return RollbackTarget{it->step, Resumable{it->path, load_checkpoint(it->path)}};
    } catch (const Error& e) {
      warn << "warning: cannot roll back to " << it->path << ": " << e.what() << "\n";
    }
  }
  return std::nullopt;
}

void remove_checkpoints_after(const std::string& run_dir, int64_t step, std::ostream& log) {
  for (const CheckpointFile& f : list_checkpoints(run_dir))
    if (f.step > step) {
      remove_checkpoint(f.path);  // with its digest file
      log << "rollback: removed " << f.path << " (after the rollback point)\n";
    }
}

}  // namespace tessera::train
