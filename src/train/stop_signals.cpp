#include "train/stop_signals.h"

#include <atomic>
#include <cstdio>

#include "core/error.h"

namespace tessera::train {
namespace {

constexpr int kSignals[3] = {SIGTERM, SIGINT, SIGUSR1};

// The handler may run on any of the process's threads (OpenMP's, the background writer's), two of
// them at once for two signals: a lock-free atomic, which signal handlers may use, decides which
// signal came first.
std::atomic<int> g_received{0};
static_assert(std::atomic<int>::is_always_lock_free);

// Async-signal-safe: stores the number, or on a second SIGTERM / SIGINT puts the default action
// back and raises the signal again.
extern "C" void record_stop(int sig) {
  int none = 0;
  if (g_received.compare_exchange_strong(none, sig)) return;
  if (sig == SIGTERM || sig == SIGINT) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

}  // namespace

StopSignals::StopSignals() {
  g_received = 0;
  struct sigaction action {};
  action.sa_handler = record_stop;
  sigemptyset(&action.sa_mask);
  for (int sig : kSignals) sigaddset(&action.sa_mask, sig);  // not nested on one thread
  action.sa_flags = SA_RESTART;  // reads and waits interrupted by the signal carry on
  for (int i = 0; i < 3; ++i)
    TESSERA_CHECK(sigaction(kSignals[i], &action, &previous_[i]) == 0,
                  "cannot install the handler of ", signal_name(kSignals[i]));
}

StopSignals::~StopSignals() {
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &previous_[i], nullptr);
  g_received = 0;
}

int StopSignals::received() const { return g_received.load(); }

const char* signal_name(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGUSR1:
      return "SIGUSR1";
    default: {
      static thread_local char text[24];
      std::snprintf(text, sizeof text, "signal %d", sig);
      return text;
    }
  }
}

}  // namespace tessera::train
