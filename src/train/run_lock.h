// One training run a run directory: `train` holds an exclusive lock on <run dir>/train.lock while it
// runs, so a second `train` started into the same directory (the same --run-name twice, a job
// requeued while the first still runs) stops at once naming the directory and the holder instead
// of interleaving its checkpoints, `latest` and metrics with the first's. The lock is flock(2)'s:
// the kernel releases it when the process ends, however it ends, so a crashed run leaves nothing to
// clean up. The file keeps the holder's host and pid for the message. On a file system without
// flock support the run goes on with a warning (nothing to check against).
//
//   RunLock lock(run_dir, log);   // throws if another process holds it
//   ... train ...                 // released when `lock` is destroyed or the process exits
#pragma once

#include <ostream>
#include <string>

namespace tessera::train {

class RunLock {
 public:
  RunLock(const std::string& run_dir, std::ostream& warn);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  bool held() const { return fd_ >= 0; }  // false only where the file system refused flock

 private:
  int fd_ = -1;
};

}  // namespace tessera::train
