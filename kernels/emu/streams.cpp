// The CUDA emulator's streams and events (model: cuda_emu.h). Every stream runs its operations
// later, in order, on a thread of its own, as a GPU runs them after the call that queued them
// returns; so what a GPU would show of a missing dependency shows here too.
//  - The legacy default stream, every kernel's and copy's, runs at once on its thread, with no
//    delay: the host runs ahead of it until a call that synchronizes (a copy to the host,
//    cudaStreamSynchronize, cudaDeviceSynchronize, cudaEventSynchronize, cudaFree). A
//    collective that does not wait for the kernels that produce its buffer reads it half made.
//    TESSERA_EMU_LEGACY_STREAM=sync (or set_legacy_async(false)) runs its operations in the
//    calling thread instead, done when the call returns: the emulator's own tests, whose kernels
//    write host variables, run so.
//  - A stream made by cudaStreamCreate* (nccl_comm.cu's collective stream) runs each operation
//    after a random delay of up to TESSERA_EMU_STREAM_DELAY_US microseconds (default 1000):
//    legacy-stream work that reads a collective's result without waiting on its event reads the
//    stale buffer, and a buffer reused before the collective has read it hands the collective the
//    new contents.
// A kernel that fails on a stream's thread (an emulator error: a deadlock, a bad access) is the
// program's sticky error, as a GPU's launch failure is: every later synchronizing call and
// cudaGetLastError returns cudaErrorLaunchFailure, whose string names the kernel, and later
// kernels, matmuls and sorts are not run.
//
// Events follow CUDA's semantics: cudaEventRecord captures the work queued so far on its stream;
// cudaEventQuery says whether that work is done; an event destroyed while pending is freed once
// it completes. cudaStreamWaitEvent makes later work on a stream wait for the event, without
// blocking the host; on a synchronous legacy stream, its next operation (a kernel, a copy or
// memset, a cuBLASLt or CUB call: legacy_turn) waits, and an event recorded behind such a wait
// completes on a shadow stream once the wait is over.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "core/error.h"
#include "cuda_emu.h"

struct CUstream_st {
  std::deque<std::function<void()>> ops;  // guarded by g_mu
  bool busy = false, stop = false;        // an operation is running; the thread is to end
  bool delayed = true;                    // each operation after a random delay (not legacy's)
  std::thread worker;
};

struct CUevent_st {
  std::chrono::steady_clock::time_point at{};  // when its work completed (cudaEventElapsedTime)
  // Recorded when recorded_gen > 0; complete when done_gen >= recorded_gen.
  uint64_t recorded_gen = 0, done_gen = 0;
  int completions = 0;                      // queued operations that hold it (completions, waits)
  bool destroyed = false;                   // freed by the last of them
};

namespace {

// One lock for every stream and event: the emulator's streams carry a few operations a step.
// Never destroyed, so a stream or event released during static destruction still finds them.
std::mutex& g_mu = *new std::mutex;
std::condition_variable& g_cv = *new std::condition_variable;  // an operation finished, an event
                                                               // completed, or the hold changed
std::set<CUstream_st*>& g_streams = *new std::set<CUstream_st*>;
bool g_hold = false;
// What the legacy stream must wait for before its next operation: events and the generation each
// had when cudaStreamWaitEvent was called.
std::vector<std::pair<cudaEvent_t, uint64_t>>& g_legacy_waits =
    *new std::vector<std::pair<cudaEvent_t, uint64_t>>;

// The first failure of an operation on a stream's thread, as cudaGetErrorString gives it; set
// once (under g_mu), cleared only by clear_fault (tests).
std::string& g_fault = *new std::string;
std::atomic<bool> g_faulted{false};  // !g_fault.empty(), read without the lock by every operation

bool async_legacy_at_start() {
  const char* v = std::getenv("TESSERA_EMU_LEGACY_STREAM");
  const std::string mode = v ? v : "";
  TESSERA_CHECK(mode.empty() || mode == "async" || mode == "sync",
                "TESSERA_EMU_LEGACY_STREAM must be async or sync, got '", mode, "'");
  return mode != "sync";
}
std::atomic<bool> g_async_legacy{async_legacy_at_start()};

int max_delay_us() {
  static const int us = [] {
    const char* v = std::getenv("TESSERA_EMU_STREAM_DELAY_US");
    return v && *v ? std::max(0, std::atoi(v)) : 1000;
  }();
  return us;
}

bool legacy(cudaStream_t s) {
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread;
}

void work(CUstream_st* s) {
  std::mt19937 rng(std::random_device{}());
  std::unique_lock lock(g_mu);
  for (;;) {
    g_cv.wait(lock, [&] { return s->stop || (!s->ops.empty() && !g_hold); });
    if (s->ops.empty()) return;  // stopped with nothing left
    std::function<void()> op = std::move(s->ops.front());
    s->ops.pop_front();
    s->busy = true;
    lock.unlock();
    if (const int d = max_delay_us(); d > 0 && s->delayed)
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % unsigned(d + 1)));
    std::string failure;
    try {
      op();
    } catch (const std::exception& e) {
      failure = e.what();
    } catch (...) {
      failure = "an exception that is not a std::exception";
    }
    lock.lock();
    if (!failure.empty() && g_fault.empty()) {
      g_fault = "unspecified launch failure (cuda emulator: " + failure + ")";
      g_faulted = true;
    }
    s->busy = false;
    g_cv.notify_all();
  }
}

// Waits (g_mu held) until every operation queued on s has run.
void drain_locked(std::unique_lock<std::mutex>& lock, CUstream_st* s) {
  g_cv.wait(lock, [&] { return s->ops.empty() && !s->busy; });
}

void wait_for_locked(std::unique_lock<std::mutex>& lock, cudaEvent_t e, uint64_t gen) {
  g_cv.wait(lock, [&] { return e->done_gen >= gen; });
}

// One queued operation fewer holds e (g_mu held): the last frees an event destroyed meanwhile.
void release_locked(cudaEvent_t e) {
  if (--e->completions == 0 && e->destroyed) delete e;
}

// e's work up to generation gen is done (g_mu held).
void complete_locked(cudaEvent_t e, uint64_t gen) {
  e->done_gen = std::max(e->done_gen, gen);
  e->at = std::chrono::steady_clock::now();
  g_cv.notify_all();
}

void push_locked(CUstream_st* s, std::function<void()> op) {
  s->ops.push_back(std::move(op));
  g_cv.notify_all();
}

CUstream_st* new_stream(bool delayed = true) {
  auto* stream = new CUstream_st;
  stream->delayed = delayed;
  {
    std::lock_guard lock(g_mu);
    g_streams.insert(stream);
  }
  stream->worker = std::thread(work, stream);
  return stream;
}

// The asynchronous legacy stream: made once, never destroyed; at exit the host waits for it, so
// its thread does not run a kernel while the program's statics are destroyed.
CUstream_st* legacy_queue() {
  static CUstream_st* const q = [] {
    CUstream_st* made = new_stream(false);
    std::atexit([] { cudaStreamSynchronize(cudaStreamLegacy); });
    return made;
  }();
  return q;
}

// Where an operation on s runs: the stream's own queue, or nullptr for the calling thread (the
// synchronous legacy stream).
CUstream_st* queue_of(cudaStream_t s) {
  if (!legacy(s)) return s;
  return g_async_legacy ? legacy_queue() : nullptr;
}

// Completes a legacy-stream event recorded while the legacy stream still waits (the event covers
// those waits): a stream of the emulator's own, made once, never destroyed. Not with g_mu held.
CUstream_st* legacy_shadow() {
  static CUstream_st* const shadow = new_stream();
  return shadow;
}

// Queues on s (g_mu held) an operation that waits for e's generation gen.
void queue_wait_locked(CUstream_st* s, cudaEvent_t e, uint64_t gen) {
  ++e->completions;  // keeps e alive until the wait has run
  push_locked(s, [e, gen] {
    std::unique_lock inner(g_mu);
    wait_for_locked(inner, e, gen);
    release_locked(e);
  });
}

// Queues on s (g_mu held) the completion of e's generation gen.
void queue_completion_locked(CUstream_st* s, cudaEvent_t e, uint64_t gen) {
  ++e->completions;
  push_locked(s, [e, gen] {
    std::lock_guard inner(g_mu);
    complete_locked(e, gen);
    release_locked(e);
  });
}

}  // namespace

namespace tessera::emu {

bool asynchronous(cudaStream_t s) { return queue_of(s) != nullptr; }

void set_legacy_async(bool async) {
  if (async == g_async_legacy) return;
  legacy_turn();
  if (g_async_legacy) cudaStreamSynchronize(cudaStreamLegacy);
  g_async_legacy = async;
}

cudaError_t fault() { return g_faulted ? cudaErrorLaunchFailure : cudaSuccess; }

void clear_fault() {
  std::lock_guard lock(g_mu);
  g_fault.clear();
  g_faulted = false;
}

const char* fault_string() {
  std::lock_guard lock(g_mu);
  return g_fault.empty() ? "unspecified launch failure (cuda emulator)" : g_fault.c_str();
}

void legacy_turn() {
  std::unique_lock lock(g_mu);
  for (const auto& [e, gen] : g_legacy_waits) {
    wait_for_locked(lock, e, gen);
    release_locked(e);
  }
  g_legacy_waits.clear();
}

void enqueue(cudaStream_t s, std::function<void()> op) {
  CUstream_st* q = queue_of(s);
  if (!q) {
    legacy_turn();
    op();
    return;
  }
  std::lock_guard lock(g_mu);
  push_locked(q, std::move(op));
}

void enqueue_compute(cudaStream_t s, std::function<void()> op) {
  enqueue(s, [op = std::move(op)] {
    if (!g_faulted) op();
  });
}

void drain(cudaStream_t s) {
  CUstream_st* q = queue_of(s);
  if (!q) return legacy_turn();
  std::unique_lock lock(g_mu);
  drain_locked(lock, q);
}

void hold_streams(bool hold) {
  std::lock_guard lock(g_mu);
  g_hold = hold;
  g_cv.notify_all();
}

}  // namespace tessera::emu

extern "C" {

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new_stream();
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  tessera::emu::drain(s);
  return tessera::emu::fault();
}

// The work already queued still runs, as in CUDA; here the call returns once it has.
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (legacy(s)) return cudaErrorInvalidResourceHandle;
  {
    std::lock_guard lock(g_mu);
    s->stop = true;
    g_streams.erase(s);
    g_cv.notify_all();
  }
  s->worker.join();
  delete s;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  tessera::emu::legacy_turn();
  std::unique_lock lock(g_mu);
  for (;;) {
    CUstream_st* pending = nullptr;
    for (CUstream_st* s : g_streams)
      if (!s->ops.empty() || s->busy) pending = s;
    if (!pending) return tessera::emu::fault();
    drain_locked(lock, pending);
  }
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!e) return cudaErrorInvalidResourceHandle;
  CUstream_st* on = queue_of(s);
  CUstream_st* shadow = on ? nullptr : legacy_shadow();
  std::unique_lock lock(g_mu);
  const uint64_t gen = ++e->recorded_gen;
  if (!on && g_legacy_waits.empty()) {  // everything before it on the legacy stream is done
    complete_locked(e, gen);
    return cudaSuccess;
  }
  if (!on) {  // done once the legacy stream's waits are
    on = shadow;
    for (const auto& [w, wgen] : g_legacy_waits) queue_wait_locked(on, w, wgen);
  }
  queue_completion_locked(on, e, gen);
  return cudaSuccess;
}

// Complete, as CUDA says of an event never recorded, or once its recorded work has run.
cudaError_t cudaEventQuery(cudaEvent_t e) {
  if (!e) return cudaErrorInvalidResourceHandle;
  std::lock_guard lock(g_mu);
  return e->done_gen >= e->recorded_gen ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return cudaErrorInvalidResourceHandle;
  std::unique_lock lock(g_mu);
  wait_for_locked(lock, e, e->recorded_gen);
  return tessera::emu::fault();
}

// Later work on s waits for the work e captured when this call was made; the host does not.
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
  if (!e) return cudaErrorInvalidResourceHandle;
  CUstream_st* q = queue_of(s);
  std::lock_guard lock(g_mu);
  const uint64_t gen = e->recorded_gen;
  if (e->done_gen >= gen) return cudaSuccess;
  if (!q) {
    ++e->completions;  // released by legacy_turn
    g_legacy_waits.emplace_back(e, gen);
  } else {
    queue_wait_locked(q, e, gen);
  }
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (!e) return cudaErrorInvalidResourceHandle;
  std::lock_guard lock(g_mu);
  if (e->completions > 0)
    e->destroyed = true;
  else
    delete e;
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  std::lock_guard lock(g_mu);
  if (a->recorded_gen == 0 || b->recorded_gen == 0 || a->done_gen < a->recorded_gen ||
      b->done_gen < b->recorded_gen)
    return cudaErrorInvalidResourceHandle;
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}

}  // extern "C"
