// Checkpoints written while training goes on (checkpoint.async: true). A save then costs the run
// one copy of its state into host memory instead of the whole write: HDF5, the digests, fsync and
// the renames run on a thread of their own (torchtitan's async checkpointing works the same way,
// with a staging copy taken at the save step).
//
//   CheckpointData staged = stage_on_host(ck);  // host copies; ck's tensors may change from here
//   BackgroundWrite w;
//   w.start("step_00000500.h5", [staged = std::move(staged), path] {
//     save_checkpoint(path, staged);            // the same atomic commit as a synchronous save
//   });
//   ... training steps; w.failed() polls without blocking ...
//   std::string error = w.wait();               // "" when it committed
//
// The write thread touches host memory and files only: no CUDA call, no autograd, and, since the
// HDF5 library serialises at best, the owner makes no HDF5 call of its own until wait() returned
// (train/trainer.cpp waits before every save, rollback and the end of the run).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "checkpoint/checkpoint.h"

namespace tessera {

// A copy of ck that owns its tensors: every tensor (model, optimizer, trainer) copied into fresh
// contiguous host memory, and every optimizer source called once, in order, its tensor copied and
// appended to `optimizer` (where loading returns it; the file's order is the same). The copy holds
// no reference to ck's tensors, so they may change while it is written.
CheckpointData stage_on_host(const CheckpointData& ck);

// At most one job on a thread of its own; the owner collects it with wait() before starting the
// next.
class BackgroundWrite {
 public:
  BackgroundWrite() = default;
  BackgroundWrite(const BackgroundWrite&) = delete;
  BackgroundWrite& operator=(const BackgroundWrite&) = delete;
  // Joins a job still running; its error, if the owner never collected it, is lost: owners call
  // wait() on every path they can (Trainer's destructor does, and logs it).
  ~BackgroundWrite();

  // Runs job on a new thread; `what` names it in errors. A job started and not yet collected is an
  // error (a program bug: the owner waits first).
  void start(std::string what, std::function<void()> job);
  // A job was started and not yet collected by wait().
  bool pending() const { return thread_.joinable(); }
  const std::string& what() const { return what_; }
  // The job ended with an error (does not block; false while it runs).
  bool failed() const { return state_.load(std::memory_order_acquire) == kFailed; }
  // Blocks until the job ends and forgets it; returns its error's text, "" when it succeeded or no
  // job was pending.
  std::string wait();
  // The collected job's wall time, and how long wait() blocked for it.
  double job_seconds() const { return job_seconds_; }
  double waited_seconds() const { return waited_seconds_; }

 private:
  enum : int { kRunning, kDone, kFailed };
  std::thread thread_;
  std::string what_, error_;  // error_ is written by the job's thread before state_ is released
  std::atomic<int> state_{kDone};
  double job_seconds_ = 0, waited_seconds_ = 0;
};

}  // namespace tessera
