// Where a run starts: the checkpoint it resumes from (read once, before the model is built), the
// tokens per step that checkpoint fixes, and whether a fresh run may use its run directory.
//
//   std::optional<Resumable> r = read_resumed(cfg, rank, log);   // nullopt: a fresh start
//   const Config resolved = resolve_tokens_per_step(cfg, r, rank, world, log);
//   if (std::string why = earlier_run(run_dir); !why.empty()) ...  // a fresh run may not start
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

#include "checkpoint/retention.h"  // Resumable
#include "config/config.h"
#include "distributed/communicator.h"
#include "train/run_lock.h"

namespace tessera::train {

// The checkpoint a run resumes from, read once, before anything is built from the config: nullopt
// when the run does not resume, or resumes `auto` from a run directory that holds no checkpoint.
// `auto` takes the newest checkpoint that loads (load_resumable: passed-over files warned about on
// rank 0 and moved aside by it). Every rank reads it from its own checkpoint.dir; the ranks then
// compare what they read (RankData::resumed, rank_agreement.h), so a directory that is not shared
// stops the run instead of resuming some ranks and starting others fresh.
std::optional<Resumable> read_resumed(const Config& cfg, int rank, std::ostream& log);
// The same, with a failure returned in *error (nullopt then) instead of thrown: each rank reads on
// its own, and a rank that threw alone would leave the others waiting in their first collective, so
// the trainer stops every rank together with it (fail_together, rank_agreement.h). For `auto`,
// rank 0 first takes the run directory's lock into *lock (run_lock.h) when the directory exists
// (the files it moves aside are then no other train's, which may be saving those steps again) and
// finishes the saves a crash interrupted between their renames (finish_interrupted_saves), while
// the other ranks wait (a collective every rank makes, whatever its config).
std::optional<Resumable> read_resumed(const Config& cfg, dist::Communicator& comm,
                                      std::ostream& log, std::string* error,
                                      std::unique_ptr<RunLock>* lock);

// A run that leaves train.total_batch_size at 0 (B x T x world) and resumes keeps the
// checkpoint's tokens per step, so it continues the same data order on any world size: trained on
// 2 ranks, resumed on 1 with 2 micro-batches per step. An explicit total_batch_size is kept as
// given (and checked against the checkpoint's when it loads).
Config resolve_tokens_per_step(Config cfg, const std::optional<Resumable>& resumed, int rank,
                               int world, std::ostream& log);

// Why a fresh run may not use `dir` ("" when it may): an earlier run's checkpoints or metrics.jsonl
// are there.
std::string earlier_run(const std::filesystem::path& dir);

}  // namespace tessera::train
