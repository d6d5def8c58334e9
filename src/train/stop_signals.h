// A clean stop on request: while a StopSignals lives, SIGTERM (what `kill`, `scancel`, Slurm at a
// job's time limit and Kubernetes send before they kill), SIGINT (Ctrl-C) and SIGUSR1 (the early
// warning Slurm sends with `--signal=USR1@120`) are recorded instead of ending the process. The
// training loop reads the record once a step and after each evaluation, finishes the step (or the
// evaluation), saves a checkpoint of the step and returns; `train` then exits with 128 + the
// signal's number, the status a shell gives a process the signal ended, so job scripts see the
// stop while --resume auto continues the run exactly. A second SIGINT or SIGTERM, before the loop
// has stopped, ends the process at once as the signal would have (an impatient user: nothing is
// saved, the last committed checkpoint stays).
//
//   StopSignals signals;                     // handlers installed
//   ... if (signals.received()) { save(); return; } ...
//                                            // destroyed: the previous handlers are back
#pragma once

#include <csignal>

namespace tessera::train {

class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first of the signals received since construction (SIGTERM, SIGINT or SIGUSR1), 0 if none.
  int received() const;

 private:
  struct sigaction previous_[3];
};

// "SIGTERM", "SIGINT", "SIGUSR1"; "signal N" for others.
const char* signal_name(int sig);

}  // namespace tessera::train
