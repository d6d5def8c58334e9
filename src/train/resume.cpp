#include "train/resume.h"

#include <sstream>
#include <utility>

#include "checkpoint/checkpoint.h"
#include "train/report.h"  // describe_run_and_metrics

namespace tessera::train {
namespace fs = std::filesystem;

std::optional<Resumable> read_resumed(const Config& cfg, int rank, std::ostream& log) {
  const std::string& resume = cfg.checkpoint.resume;
  if (resume.empty()) return std::nullopt;
  if (resume == "auto") {
    std::ostringstream elsewhere;  // ranks other than 0 reach the same choice silently
    return load_resumable((fs::path(cfg.checkpoint.dir) / cfg.train.run_name).string(),
                          rank == 0 ? log : elsewhere, rank == 0);
  }
  std::string path = resolve_checkpoint(resume);
  CheckpointData data = load_checkpoint(path);
  return Resumable{std::move(path), std::move(data)};
}

std::optional<Resumable> read_resumed(const Config& cfg, dist::Communicator& comm,
                                      std::ostream& log, std::string* error,
                                      std::unique_ptr<RunLock>* lock) {
  const int rank = comm.rank();
  try {
    const fs::path dir = fs::path(cfg.checkpoint.dir) / cfg.train.run_name;
    if (cfg.checkpoint.resume == "auto" && rank == 0 && fs::is_directory(dir)) {
      *lock = std::make_unique<RunLock>(dir.string(), log);
      for (const std::string& p : finish_interrupted_saves(dir.string()))
        log << "warning: resume: finished the save of " << p << " that a crash interrupted "
            << "between its two renames (its digest file already named the new bytes)\n";
    }
  } catch (const std::exception& e) {  // a tessera::Error, or std::filesystem's
    *error = e.what();
  }
  // Every rank, whatever its config: the others read the directory once rank 0's renames are done.
  if (comm.world() > 1) comm.all_reduce_host({0.0}, dist::ReduceOp::Sum);
  if (!error->empty()) return std::nullopt;
  try {
    return read_resumed(cfg, rank, log);
  } catch (const std::exception& e) {
    *error = e.what();
    return std::nullopt;
  }
}

Config resolve_tokens_per_step(Config cfg, const std::optional<Resumable>& resumed, int rank,
                               int world, std::ostream& log) {
  if (cfg.train.total_batch_size != 0 || !resumed) return cfg;
  const auto& ints = resumed->data.trainer_ints;
  auto it = ints.find("tokens_per_step");
  if (it == ints.end() || it->second == cfg.tokens_per_step(world)) return cfg;
  // Windows of another length: Trainer::check_resumed_config refuses the resume naming
  // train.seq_len, which is the change to undo; a figure kept or a batch size hinted here first
  // would point elsewhere.
  const Config stored =
      parse_stored_config(resumed->data.config_yaml, resumed->path + " (stored config)");
  if (stored.sequence_length() != cfg.sequence_length()) return cfg;
  // The kept figure must split into this run's micro-batches (LOMO's: exactly one per rank), or
  // the error would name a train.total_batch_size this config never set.
  const int64_t tokens = it->second, T = cfg.sequence_length(), B = cfg.train.batch_size;
  const bool fused = cfg.optim.updates_in_backward();  // no accumulation
  const int64_t pass = cfg.tokens_per_step(world);  // B x T x world: total_batch_size is 0 here
  if (tokens % pass != 0 || (fused && tokens != pass)) {
    std::string hint;
    if (tokens % (T * world) == 0) {
      const int64_t windows = tokens / (T * world);  // per rank per step
      int64_t fit = fused ? windows : 1;
      for (int64_t b = std::min(B, windows); !fused && b >= 1; --b)
        if (windows % b == 0) { fit = b; break; }
      hint = "; set train.batch_size: " + std::to_string(fit) +
             (fused ? "" : " (or another divisor of " + std::to_string(windows) + ")");
    } else {
      hint = "; they do not split into windows of " + std::to_string(T) + " tokens over " +
             std::to_string(world) + " rank(s): resume on a world size that does";
    }
    TESSERA_FAIL("resume: checkpoint ", resumed->path, " was trained with ", tokens,
                 " tokens per step, which this run keeps (its train.total_batch_size is 0) to "
                 "continue the same data order, but ",
                 fused ? "optim.name '" + cfg.optim.name +
                             "' cannot accumulate micro-batches, so a step must be exactly"
                       : std::string("a step must be whole micro-batches of"),
                 " train.batch_size x sequence length x world = ", B, " x ", T, " x ", world,
                 " = ", pass, " tokens", hint);
  }
  cfg.train.total_batch_size = tokens;
  if (rank == 0)
    log << "resume: keeping the checkpoint's " << tokens
        << " tokens per step (train.total_batch_size)\n";
  return cfg;
}

std::string earlier_run(const fs::path& dir) {
  const std::string held = describe_run_and_metrics(dir);
  if (held.empty()) return "";
  return "run directory " + dir.string() + " already holds a run (" + held +
         "): continue it with --resume auto, or give this run another train.run_name "
         "(--run-name) or checkpoint.dir (nothing was written)";
}

}  // namespace tessera::train
