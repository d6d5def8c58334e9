// Rollback target and cleanup: see rollback.h.
#include "train/rollback.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <utility>

#include "checkpoint/sidecar.h"  // CheckpointUnreadable
#include "train/rank_agreement.h"

namespace tessera::train {

std::optional<RollbackTarget> rollback_target(const std::string& run_dir, int64_t step,
                                              int64_t rollback_steps, const Lineage& lineage,
                                              std::ostream& warn) {
  const std::vector<CheckpointFile> files = list_checkpoints(run_dir);
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    if (it->step > step - rollback_steps) continue;
    try {
      CheckpointData data = load_checkpoint(it->path);
      if (!on_trajectory(get_lineage(data, it->path), it->step, lineage, step)) {
        warn << "warning: rollback: passing over " << it->path << ": it is not on this run's "
             << "trajectory (a step of a branch the run left when it resumed from an older "
             << "checkpoint or rolled back, or another run's file)\n";
        continue;
      }
      return RollbackTarget{it->step, Resumable{it->path, std::move(data)}};
    } catch (const CheckpointUnreadable& e) {
      // Not evidence of damage: an older target would throw away this one's steps for nothing.
      TESSERA_FAIL("cannot roll back to ", it->path, ": ", e.what(), "; the run stopped rather ",
                   "than pass over it (fix its permissions or the disk, then --resume auto)");
    } catch (const Error& e) {
      warn << "warning: cannot roll back to " << it->path << ": " << e.what() << "\n";
    }
  }
  return std::nullopt;
}

std::optional<RollbackTarget> agree_rollback_target(dist::Communicator& comm,
                                                    const std::string& run_dir, int64_t step,
                                                    int64_t rollback_steps, const Lineage& lineage,
                                                    std::ostream& warn) {
  const int rank = comm.rank();
  std::optional<RollbackTarget> target;
  std::string error;
  if (rank == 0) try {
      target = rollback_target(run_dir, step, rollback_steps, lineage, warn);
    } catch (const std::exception& e) {  // a tessera::Error, or std::filesystem's listing
      error = e.what();
    }
  fail_together(comm, error, "rank 0 could not read the checkpoint to roll back to in " + run_dir);
  if (comm.world() == 1) return target;
  // Rank 0's choice, on every rank (-1: none). Steps are exact in a double up to 2^53.
  const double mine = rank == 0 ? (target ? double(target->step) : -1.0) : 0.0;
  const double chosen = comm.all_reduce_host({mine}, dist::ReduceOp::Sum)[0];
  if (chosen < 0) return std::nullopt;
  const int64_t at = int64_t(chosen);
  const std::string path = (std::filesystem::path(run_dir) / checkpoint_name(at)).string();
  if (rank != 0) try {
      target = RollbackTarget{at, Resumable{path, load_checkpoint(path)}};
    } catch (const std::exception& e) {
      error = "rank " + std::to_string(rank) + " cannot roll back to " + path + " (step " +
              std::to_string(at) + ", the checkpoint rank 0 chose): " + e.what() +
              "; every rank must see the same checkpoint.dir";
    }
  fail_together(comm, error,
                "another rank could not load the checkpoint to roll back to, " + path +
                    " (its error names it): training stopped");
  // The same file on every rank: a directory that is not shared may hold another run's file of
  // that name.
  const uint32_t crc = checkpoint_crc(target->file.data);
  const double reference =
      comm.all_reduce_host({rank == 0 ? double(crc) : 0.0}, dist::ReduceOp::Sum)[0];
  if (double(crc) != reference) {
    char text[96];
    std::snprintf(text, sizeof text, " (CRC-32C %08x here, %08x on rank 0)", crc,
                  uint32_t(reference));
    error = "rank " + std::to_string(rank) + "'s " + path +
            " holds another checkpoint than rank 0's" + text +
            ": every rank must see the same checkpoint.dir";
  }
  fail_together(comm, error,
                "another rank holds another checkpoint than rank 0's at " + path +
                    " (its error names it): training stopped");
  return target;
}

int64_t agreed_segment_id(dist::Communicator& comm) {
  uint64_t draw = 0;
  if (comm.rank() == 0) try {
      std::random_device device;
      draw = uint64_t(device()) << 32;
      draw |= device();
    } catch (const std::exception&) {  // no entropy source: the clock, mixed (splitmix64's step)
      draw = uint64_t(std::chrono::system_clock::now().time_since_epoch().count());
      draw = (draw ^ (draw >> 30)) * 0xBF58476D1CE4E5B9ull;
      draw = (draw ^ (draw >> 27)) * 0x94D049BB133111EBull;
    }
  draw &= (uint64_t(1) << 52) - 1;
  const double mine = comm.rank() == 0 ? double(draw | 1) : 0.0;  // exact in a double below 2^53
  return comm.world() == 1 ? int64_t(mine)
                           : int64_t(comm.all_reduce_host({mine}, dist::ReduceOp::Sum)[0]);
}

void remove_checkpoints_after(const std::string& run_dir, int64_t step, std::ostream& log) {
  for (const CheckpointFile& f : list_checkpoints(run_dir))
    if (f.step > step) {
      remove_checkpoint(f.path);  // with its digest file
      log << "rollback: removed " << f.path << " (after the rollback point)\n";
    }
}

}  // namespace tessera::train
