// MPI backend: CPU tensors, non-blocking MPI-3 collectives that Work::wait() polls with MPI_Test
// until done or timeout_s. Compiled only when CMake found MPI (else mpi_stub.cpp).
//
// Choices:
//  - Our own communicator (MPI_Comm_idup of MPI_COMM_WORLD; both with MPI_ERRORS_RETURN): the
//    application's MPI traffic cannot match ours, and errors come back as codes that MPI_CHECK
//    turns into tessera::Error with file:line instead of killing the job. idup, not dup, so that a
//    rank that never starts cannot hang construction past timeout_s; MPI_Init_thread itself, which
//    waits for every rank of the launch and cannot be cancelled, is watched by a thread that ends
//    the process with a message naming the rank once timeout_s has passed.
//  - reduce_scatter is MPI_Ireduce_scatter with per-rank recvcounts from shard_range: each rank
//    receives only its shard (about half the traffic of an all_reduce), and the counts form takes
//    the uneven and empty last shards that MPI_Ireduce_scatter_block cannot. With MPI_IN_PLACE the
//    result lands at the start of the buffer, so completion moves it to the shard's offset.
//  - Average: MPI has no mean; the sum is divided by world once, when the request completes.
//  - bf16: MPI has no bf16; it travels as MPI_UINT16_T and is combined by user-defined ops that add
//    (or compare) in f32 and round to bf16 at every step of MPI's reduction tree.
//  - Non-blocking collectives keep their count/displacement arrays until completion (the standard
//    forbids freeing them earlier), so the arrays live in the MpiWork.
//  - MPI_THREAD_SERIALIZED, and one mutex around this backend's MPI calls: handles may be waited
//    from any thread.
//  - A wait() that times out first takes a roll call (roll_call_report in backends.h): it asks
//    every peer, with point-to-point messages on our communicator under tags of their own (MPI
//    keeps them apart from the collectives' traffic), which collective it is waiting in. Every
//    wait() answers such questions once it has waited kAnswerAfter_s; a rank stopped, dead or
//    busy elsewhere stays silent. The error then names the ranks to look at, not only "another".
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "distributed/backends.h"

namespace tessera::dist {

namespace {

[[noreturn]] void mpi_fail(int rc, const char* call, const char* file, int line,
                           const std::string& context) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = std::snprintf(text, 32, "code %d", rc);
  detail::fail(file, line, "MPI error in ", context, ": ", std::string(text, size_t(len)), " (",
               call, ")");
}

#define MPI_CHECK(call, context)                                             \
  do {                                                                       \
    const int rc_ = (call);                                                  \
    if (rc_ != MPI_SUCCESS) mpi_fail(rc_, #call, __FILE__, __LINE__, context); \
  } while (0)

// ---- process-wide MPI state ---------------------------------------------------------------

// Set when a collective never completed: MPI_Finalize would wait for it (and for the dead rank)
// forever, so exit skips it and mpirun reports the job as failed, which it is.
std::atomic<bool> g_unfinished{false};
// The first communicator's timeout and rank, for finalize_at_exit.
std::atomic<double> g_exit_timeout_s{300};
std::atomic<int> g_rank{0}, g_world{1};

void finalize_at_exit() {
  int finalized = 1;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (g_unfinished) {
    std::fprintf(stderr, "tessera: an MPI collective never completed; exiting without "
                         "MPI_Finalize, which would wait for it\n");
    return;
  }
  // MPI_Finalize returns when every rank has called it: a rank stopped or stalled after its last
  // collective would hold this one (and the launch) for good. A barrier bounded by the timeout
  // first; past it, leave without MPI_Finalize (the launcher then reports the job as failed and
  // ends the stalled rank). Ranks that end on an error never come here (they _exit).
  MPI_Request request = MPI_REQUEST_NULL;
  const auto start = std::chrono::steady_clock::now();
  const char* failed = nullptr;
  if (MPI_Ibarrier(MPI_COMM_WORLD, &request) != MPI_SUCCESS) failed = "could not start";
  for (int done = 0; !done && !failed;) {
    if (MPI_Test(&request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) failed = "failed";
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!done && !failed && waited >= g_exit_timeout_s) {
      std::fprintf(stderr,
                   "tessera: rank %d of %d: another rank has not reached the end of the job "
                   "within dist.timeout = %g s (stopped or stalled after its last collective); "
                   "exiting without MPI_Finalize, which would wait for it\n",
                   g_rank.load(), g_world.load(), g_exit_timeout_s.load());
      std::fflush(stderr);
      return;
    }
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(waited < 1 ? 0 : 1));
  }
  if (failed) {  // a peer is gone: MPI_Finalize would wait for it
    std::fprintf(stderr,
                 "tessera: rank %d of %d: the barrier before MPI_Finalize %s (a rank has ended "
                 "or failed); exiting without MPI_Finalize, which would wait for it\n",
                 g_rank.load(), g_world.load(), failed);
    std::fflush(stderr);
    return;
  }
  MPI_Finalize();
}

// MPI_Init_thread once, unless the application initialised MPI itself (then it finalises too).
// MPI_Init_thread returns when every rank of the launch has called it: a rank that never starts,
// or is stopped before, would leave the others waiting for good, and nothing cancels the call. A
// watchdog ends this process after timeout_s with a message naming the rank (the launcher then
// ends the others); exit status 1, nothing written yet.
void ensure_mpi_initialized(double timeout_s, const LaunchInfo& launch) {
  static std::mutex mu;
  std::lock_guard lock(mu);
  int initialized = 0, finalized = 0;
  MPI_CHECK(MPI_Initialized(&initialized), "initialisation");
  if (initialized) return;
  MPI_CHECK(MPI_Finalized(&finalized), "initialisation");
  TESSERA_CHECK(!finalized, "MPI was already finalised: no communicator can be made after exit");
  std::mutex wait_mu;
  std::condition_variable started_cv;
  bool started = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> wait(wait_mu);
    if (started_cv.wait_for(wait, std::chrono::duration<double>(timeout_s), [&] { return started; }))
      return;
    std::fprintf(stderr,
                 "tessera: rank %d of %d: MPI did not start within dist.timeout = %g s: a rank of "
                 "this launch has not started or is stalled (MPI_Init_thread waits for all %d); "
                 "nothing was written\n",
                 launch.rank, launch.world, timeout_s, launch.world);
    std::fflush(stderr);
    std::_Exit(1);
  });
  int provided = 0;
  const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  {
    std::lock_guard<std::mutex> done(wait_mu);
    started = true;
  }
  started_cv.notify_one();
  watchdog.join();
  MPI_CHECK(rc, "MPI_Init_thread");
  g_exit_timeout_s = timeout_s;
  g_rank = launch.rank;
  g_world = launch.world;
  std::atexit(finalize_at_exit);
  // Errors MPI raises outside our communicator come back as codes too: Open MPI 4.1 raised a
  // failed MPI_Test of a request on MPI_COMM_WORLD, whose default handler ends the job before
  // tessera can say which collective and rank failed. tessera uses MPI_COMM_WORLD only to
  // duplicate it; an application that initialised MPI itself keeps its own handler.
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Init_thread");
}

bool mpi_finalized() {
  int finalized = 1;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

// ---- bf16 reductions ---------------------------------------------------------------------------

void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = bf16(float(a[i]) + float(b[i]));
}

void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = float(a[i]), y = float(b[i]);
    if (x > y || std::isnan(x)) b[i] = a[i];  // a NaN anywhere stays NaN
  }
}

MPI_Datatype mpi_type(DType d) {
  switch (d) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::BF16: return MPI_UINT16_T;
    case DType::I32: return MPI_INT32_T;
    case DType::U8: return MPI_UINT8_T;
  }
  TESSERA_FAIL("no MPI type for ", dtype_name(d));
}

// x /= world over n elements: the Average after MPI's sum (i32 truncates towards zero).
void divide(void* data, int64_t n, DType d, int world) {
  switch (d) {
    case DType::F32: {
      float* x = static_cast<float*>(data);
      for (int64_t i = 0; i < n; ++i) x[i] /= float(world);
      return;
    }
    case DType::F64: {
      double* x = static_cast<double*>(data);
      for (int64_t i = 0; i < n; ++i) x[i] /= double(world);
      return;
    }
    case DType::BF16: {
      bf16* x = static_cast<bf16*>(data);
      for (int64_t i = 0; i < n; ++i) x[i] = bf16(float(x[i]) / float(world));
      return;
    }
    case DType::I32: {
      int32_t* x = static_cast<int32_t*>(data);
      for (int64_t i = 0; i < n; ++i) x[i] /= world;
      return;
    }
    case DType::U8: break;
  }
  TESSERA_FAIL("average of ", dtype_name(d));
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// ---- the communicator's state, shared with its handles ---------------------------------------

// MPI_THREAD_SERIALIZED: one thread at a time in MPI, whichever communicator it uses (the
// handles' waits, NCCL watchdogs answering roll calls over their bootstrap communicators).
std::mutex& mpi_mutex() {
  static std::mutex mu;
  return mu;
}

// A handle may outlive its communicator, and a handle dropped before completion leaves a request
// that must still be driven to completion: both live here.
struct MpiState {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Op bf16_sum = MPI_OP_NULL, bf16_max = MPI_OP_NULL;
  int rank = 0, world = 1;
  double timeout_s = 300;
  std::mutex& mu = mpi_mutex();  // serialises MPI calls and guards `orphans`
  std::atomic<bool> gave_up{false};  // a wait() ran out of timeout_s: the peers are not coming
  std::atomic<uint64_t> issued{0};  // collectives this rank has issued on comm, numbering them

  struct Orphan {
    MPI_Request request;
    Tensor buffer;  // MPI may still write into it
    std::string what;
  };
  std::vector<Orphan> orphans;

  // Drives dropped requests; called with mu held. A failed orphan cannot be reported to anyone
  // waiting, so it goes to stderr.
  void reap_locked() {
    for (size_t i = 0; i < orphans.size();) {
      int flag = 0;
      const int rc = MPI_Test(&orphans[i].request, &flag, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS)
        std::fprintf(stderr, "tessera: MPI %s failed (code %d)\n", orphans[i].what.c_str(), rc);
      if (flag || rc != MPI_SUCCESS) {
        orphans.erase(orphans.begin() + std::ptrdiff_t(i));
      } else {
        ++i;
      }
    }
  }

  // ---- the roll call (see the file's header) ----
  static constexpr int kAskTag = 7001, kAnswerTag = 7002;
  static constexpr int kAnswerBytes = 1024;  // an answer's text is cut to fit
  static constexpr double kAnswerAfter_s = 0.05;

  // Sends `text` to rank `to`; the request is driven, and the text kept, as an orphan's.
  void send_locked(int to, int tag, const std::string& text, std::string what) {
    std::vector<uint8_t> bytes(text.begin(), text.end());
    Tensor buffer = from_vector<uint8_t>(bytes, {int64_t(bytes.size())});
    MPI_Request request = MPI_REQUEST_NULL;
    if (MPI_Isend(buffer.data_ptr(), int(bytes.size()), MPI_CHAR, to, tag, comm, &request) ==
        MPI_SUCCESS)
      orphans.push_back({request, std::move(buffer), std::move(what)});
  }

  // Answers every question asked of this rank so far: the collective it waits in (number, what)
  // and for how long. Called with mu held, from wait() and from a roll call of this rank's own.
  void answer_roll_calls_locked(uint64_t number, double waited_s, const std::string& what) {
    for (;;) {
      int flag = 0;
      MPI_Status status;
      if (MPI_Iprobe(MPI_ANY_SOURCE, kAskTag, comm, &flag, &status) != MPI_SUCCESS || !flag) break;
      char question[64];
      if (MPI_Recv(question, sizeof question, MPI_CHAR, status.MPI_SOURCE, kAskTag, comm,
                   MPI_STATUS_IGNORE) != MPI_SUCCESS)
        break;
      const std::string answer = roll_call_answer(number, waited_s, what);
      send_locked(status.MPI_SOURCE, kAnswerTag, answer.substr(0, kAnswerBytes),
                  "roll-call answer to rank " + std::to_string(status.MPI_SOURCE));
    }
    reap_locked();
  }

  // Asks every peer which collective it waits in and collects the answers for up to grace_s; the
  // report of roll_call_report. This rank waits in collective `number` (what) for waited_s().
  template <typename Waited>
  std::string roll_call(uint64_t number, const std::string& what, Waited waited_s) {
    const double grace_s = std::min(1.0, timeout_s);
    std::vector<std::optional<std::string>> answers(static_cast<size_t>(world));
    std::vector<MPI_Request> pending(static_cast<size_t>(world), MPI_REQUEST_NULL);
    std::vector<bool> broken(static_cast<size_t>(world), false);  // a failed test: not retested
    std::vector<std::vector<char>> text(static_cast<size_t>(world), std::vector<char>(kAnswerBytes));
    {
      std::lock_guard lock(mu);
      // Answers to an earlier roll call that came too late would pass for this one's.
      for (int flag = 1; flag;) {
        MPI_Status status;
        if (MPI_Iprobe(MPI_ANY_SOURCE, kAnswerTag, comm, &flag, &status) != MPI_SUCCESS) break;
        if (flag && MPI_Recv(text[0].data(), kAnswerBytes, MPI_CHAR, status.MPI_SOURCE,
                             kAnswerTag, comm, MPI_STATUS_IGNORE) != MPI_SUCCESS)
          break;
      }
      for (int r = 0; r < world; ++r) {
        if (r == rank) continue;
        if (MPI_Irecv(text[size_t(r)].data(), kAnswerBytes, MPI_CHAR, r, kAnswerTag, comm,
                      &pending[size_t(r)]) != MPI_SUCCESS)
          pending[size_t(r)] = MPI_REQUEST_NULL;  // counts as silent
        send_locked(r, kAskTag, std::to_string(number), "roll call of rank " + std::to_string(r));
      }
    }
    const auto start = std::chrono::steady_clock::now();
    // For the whole grace period, even once every answer is in: a peer that timed out a moment
    // after this rank asks now, and this rank (about to report and, often, to exit) answers it
    // only from here; leaving early made that peer's report call this rank silent.
    while (true) {
      {
        std::lock_guard lock(mu);
        for (int r = 0; r < world; ++r) {
          MPI_Request& request = pending[size_t(r)];
          if (request == MPI_REQUEST_NULL || broken[size_t(r)]) continue;
          int flag = 0;
          MPI_Status status;
          if (MPI_Test(&request, &flag, &status) != MPI_SUCCESS)
            broken[size_t(r)] = true;  // cancelled below, so that MPI lets go of its buffer
          else if (flag)
            answers[size_t(r)] = received(status, text[size_t(r)]);
        }
        answer_roll_calls_locked(number, waited_s(), what);  // peers that time out too
      }
      if (seconds_since(start) >= grace_s) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    {
      std::lock_guard lock(mu);
      for (int r = 0; r < world; ++r) {  // a cancelled receive completes at once
        MPI_Request& request = pending[size_t(r)];
        if (request == MPI_REQUEST_NULL) continue;
        MPI_Cancel(&request);
        MPI_Status status;
        int cancelled = 1;
        // The answer may have arrived after the last test: then the receive completed instead.
        if (MPI_Wait(&request, &status) == MPI_SUCCESS && !broken[size_t(r)] &&
            MPI_Test_cancelled(&status, &cancelled) == MPI_SUCCESS && !cancelled)
          answers[size_t(r)] = received(status, text[size_t(r)]);
      }
    }
    return roll_call_report(rank, number, what, answers, grace_s);
  }

  // The text a completed receive of an answer left in `buffer`.
  static std::string received(const MPI_Status& status, const std::vector<char>& buffer) {
    int bytes = 0;
    MPI_Get_count(&status, MPI_CHAR, &bytes);
    return std::string(buffer.data(), size_t(std::clamp(bytes, 0, int(buffer.size()))));
  }

  ~MpiState() {
    if (mpi_finalized()) return;
    std::lock_guard lock(mu);
    // Unwaited handles dropped just before the communicator: give the other ranks a moment (not
    // the full timeout: this usually runs while a failing job unwinds), unless a wait has already
    // waited the full timeout for them (then the error it threw is reported without delay).
    const auto start = std::chrono::steady_clock::now();
    const double grace = gave_up ? 0.0 : std::min(timeout_s, 10.0);
    for (reap_locked(); !orphans.empty() && seconds_since(start) < grace; reap_locked())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (!orphans.empty()) {
      std::fprintf(stderr, "tessera: MPI %s never completed; leaking its communicator\n",
                   orphans.front().what.c_str());
      g_unfinished = true;
      return;
    }
    if (bf16_sum != MPI_OP_NULL) MPI_Op_free(&bf16_sum);
    if (bf16_max != MPI_OP_NULL) MPI_Op_free(&bf16_max);
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
};

class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<MpiState> state, Tensor buffer, std::string what)
      : state_(std::move(state)),
        buffer_(std::move(buffer)),
        what_(std::move(what)),
        number_(++state_->issued) {}

  MPI_Request* request() { return &request_; }
  void mark_failed() { done_ = true; }  // the collective never started: nothing to drive
  const std::string& what() const { return what_; }
  std::function<void()> finish;  // once, on completion: the mean's division, moving the shard
  std::vector<int> counts, displs;

  bool test() override {
    if (done_) return true;
    int flag = 0, rc = MPI_SUCCESS;
    {
      std::lock_guard lock(state_->mu);
      rc = MPI_Test(&request_, &flag, MPI_STATUS_IGNORE);
    }
    if (rc != MPI_SUCCESS) {
      done_ = true;  // a failed request is complete: nothing left to drive
      mpi_fail(rc, "MPI_Test", __FILE__, __LINE__, what_);
    }
    if (!flag) return false;
    done_ = true;
    if (finish) finish();
    return true;
  }

  void wait() override {
    const auto start = std::chrono::steady_clock::now();
    // Open MPI progresses non-blocking collectives only inside MPI calls, one step of the
    // algorithm per call, so polling must be hot: a 3 MiB all-reduce takes hundreds of steps, and
    // sleeping even 20 us between them made it 7x slower than MPI_Wait (scripts/bench_dp.sh).
    // Spin (yielding, so oversubscribed ranks share the cores) as MPI_Wait does; after a second a
    // peer is late, latency no longer matters, and a 1 ms sleep stops burning the core.
    while (!test()) {
      const double waited = seconds_since(start);
      if (waited >= MpiState::kAnswerAfter_s) {
        std::lock_guard lock(state_->mu);
        state_->answer_roll_calls_locked(number_, waited, what_);
      }
      if (waited >= state_->timeout_s) {
        state_->gave_up = true;
        TESSERA_FAIL("MPI ", what_, " (collective #", number_,
                     ") did not complete within timeout_s = ", state_->timeout_s,
                     " s: another rank has not joined it. ",
                     state_->roll_call(number_, what_, [&] { return seconds_since(start); }),
                     " (The request stays in flight: a program may wait() again, or end the job "
                     "with MPI_Abort.)");
      }
      if (waited < 1.0)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  ~MpiWork() override {
    if (done_ || mpi_finalized()) return;
    std::lock_guard lock(state_->mu);
    state_->orphans.push_back({request_, std::move(buffer_), what_});
  }

 private:
  std::shared_ptr<MpiState> state_;
  Tensor buffer_;  // keeps the storage MPI reads and writes alive
  std::string what_;
  uint64_t number_ = 0;  // its place among the collectives issued on the communicator
  MPI_Request request_ = MPI_REQUEST_NULL;
  bool done_ = false;
};

// ---- the communicator --------------------------------------------------------------------------

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(const CommOptions& options, const LaunchInfo& launch)
      : s_(std::make_shared<MpiState>()), local_rank_(launch.local_rank) {
    ensure_mpi_initialized(options.timeout_s, launch);
    s_->timeout_s = options.timeout_s;
    MPI_Comm comm = MPI_COMM_NULL;
    MPI_Request request = MPI_REQUEST_NULL;
    MPI_CHECK(MPI_Comm_idup(MPI_COMM_WORLD, &comm, &request), "communicator init");
    const auto start = std::chrono::steady_clock::now();
    for (int flag = 0; !flag;) {
      MPI_CHECK(MPI_Test(&request, &flag, MPI_STATUS_IGNORE), "communicator init");
      if (flag) break;
      if (seconds_since(start) >= options.timeout_s) {
        g_unfinished = true;  // the pending idup would stall MPI_Finalize
        TESSERA_FAIL("MPI communicator init (MPI_Comm_idup) on rank ", launch.rank, " of ",
                     launch.world, " did not complete within timeout_s = ", options.timeout_s,
                     " s: not every rank is creating a communicator");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    s_->comm = comm;
    MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "communicator init");
    MPI_CHECK(MPI_Comm_rank(comm, &s_->rank), "communicator init");
    MPI_CHECK(MPI_Comm_size(comm, &s_->world), "communicator init");
    MPI_CHECK(MPI_Op_create(bf16_sum, 1, &s_->bf16_sum), "communicator init");
    MPI_CHECK(MPI_Op_create(bf16_max, 1, &s_->bf16_max), "communicator init");
    TESSERA_CHECK(s_->rank == launch.rank && s_->world == launch.world, "MPI says rank ",
                  s_->rank, " of ", s_->world, ", but the ", launch.launcher, " launch (",
                  launch_variables(launch.launcher), ") says rank ", launch.rank, " of ",
                  launch.world, ": was the job started by another launcher than its variables "
                  "say?");
  }

  int rank() const override { return s_->rank; }
  int world() const override { return s_->world; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "mpi"; }
  const std::shared_ptr<MpiState>& state() const { return s_; }
  Device device() const override { return Device::cpu(); }

  WorkHandle all_reduce_async(const Tensor& t, ReduceOp op) override {
    auto w = begin("all_reduce", op, true, t);
    issue(w, [&](MPI_Request* r) {
      return MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), int(t.numel()), mpi_type(t.dtype()),
                            mpi_op(op, t.dtype()), s_->comm, r);
    });
    if (op == ReduceOp::Average)
      w->finish = [t, world = s_->world] { divide(t.data_ptr(), t.numel(), t.dtype(), world); };
    return w;
  }

  WorkHandle reduce_scatter_async(const Tensor& t, ReduceOp op) override {
    auto w = begin("reduce_scatter", op, true, t);
    shard_layout(*w, t.numel());
    issue(w, [&](MPI_Request* r) {
      return MPI_Ireduce_scatter(MPI_IN_PLACE, t.data_ptr(), w->counts.data(),
                                 mpi_type(t.dtype()), mpi_op(op, t.dtype()), s_->comm, r);
    });
    const Range mine = shard_range(t.numel(), s_->world, s_->rank);
    w->finish = [t, mine, op, world = s_->world] {
      const size_t es = dtype_size(t.dtype());
      char* base = static_cast<char*>(t.data_ptr());
      if (mine.size() > 0)
        std::memmove(base + mine.begin * int64_t(es), base, size_t(mine.size()) * es);
      if (op == ReduceOp::Average)
        divide(base + mine.begin * int64_t(es), mine.size(), t.dtype(), world);
    };
    return w;
  }

  WorkHandle all_gather_async(const Tensor& t) override {
    auto w = begin("all_gather", ReduceOp::Sum, false, t);
    shard_layout(*w, t.numel());
    issue(w, [&](MPI_Request* r) {
      return MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, t.data_ptr(), w->counts.data(),
                             w->displs.data(), mpi_type(t.dtype()), s_->comm, r);
    });
    return w;
  }

  WorkHandle broadcast_async(const Tensor& t, int root) override {
    auto w = begin("broadcast", ReduceOp::Sum, false, t);
    TESSERA_CHECK(root >= 0 && root < s_->world, "broadcast: root ", root, " is not a rank of ",
                  s_->world);
    issue(w, [&](MPI_Request* r) {
      return MPI_Ibcast(t.data_ptr(), int(t.numel()), mpi_type(t.dtype()), root, s_->comm, r);
    });
    return w;
  }

  void barrier() override {
    auto w = std::make_unique<MpiWork>(
        s_, Tensor(),
        "barrier on rank " + std::to_string(s_->rank) + " of " + std::to_string(s_->world));
    {
      std::lock_guard lock(s_->mu);
      s_->reap_locked();
    }
    issue(w, [&](MPI_Request* r) { return MPI_Ibarrier(s_->comm, r); });
    w->wait();
  }

 private:
  std::unique_ptr<MpiWork> begin(const char* what, ReduceOp op, bool reduces, const Tensor& t) {
    check_collective_tensor(t, what, reduces);
    TESSERA_CHECK(t.device().is_cpu(), what, ": ", t.str(), " is not on the CPU; the mpi backend "
                  "reduces CPU tensors (nccl reduces CUDA tensors)");
    // MPI counts and displacements are int.
    TESSERA_CHECK(t.numel() <= INT_MAX, what, ": ", t.numel(), " elements exceed MPI's int "
                  "counts; split the buffer");
    {
      std::lock_guard lock(s_->mu);
      s_->reap_locked();
    }
    return std::make_unique<MpiWork>(
        s_, t, describe_collective(what, op, reduces, t, s_->rank, s_->world));
  }

  template <typename Start>
  void issue(const std::unique_ptr<MpiWork>& w, Start start) {
    std::lock_guard lock(s_->mu);
    const int rc = start(w->request());
    if (rc != MPI_SUCCESS) {
      w->mark_failed();
      mpi_fail(rc, "starting the collective", __FILE__, __LINE__, w->what());
    }
  }

  // Per-rank counts and displacements of shard_range: the v-forms' layout of the flat buffer.
  void shard_layout(MpiWork& w, int64_t n) const {
    w.counts.resize(size_t(s_->world));
    w.displs.resize(size_t(s_->world));
    for (int r = 0; r < s_->world; ++r) {
      const Range range = shard_range(n, s_->world, r);
      w.counts[size_t(r)] = int(range.size());
      w.displs[size_t(r)] = int(range.begin);
    }
  }

  MPI_Op mpi_op(ReduceOp op, DType d) const {
    if (op == ReduceOp::Max) return d == DType::BF16 ? s_->bf16_max : MPI_MAX;
    return d == DType::BF16 ? s_->bf16_sum : MPI_SUM;  // Average: sum, divided on completion
  }

  std::shared_ptr<MpiState> s_;
  int local_rank_;
};

// The roll call of another backend's collectives over an MPI communicator's state (kept alive
// here when the communicator goes).
class MpiRollCall final : public RollCallChannel {
 public:
  explicit MpiRollCall(std::shared_ptr<MpiState> s) : s_(std::move(s)) {}

  void answer(uint64_t number, double waited_s, const std::string& what) override {
    if (mpi_finalized()) return;
    std::lock_guard lock(s_->mu);
    s_->answer_roll_calls_locked(number, waited_s, what);
  }

  std::string take(uint64_t number, double waited_s, const std::string& what) override {
    if (mpi_finalized()) return "";
    const auto start = std::chrono::steady_clock::now();
    return s_->roll_call(number, what, [&] { return waited_s + seconds_since(start); });
  }

 private:
  std::shared_ptr<MpiState> s_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& options,
                                                    const LaunchInfo& launch) {
  return std::make_unique<MpiCommunicator>(options, launch);
}

std::unique_ptr<RollCallChannel> make_mpi_roll_call(Communicator& mpi) {
  auto* m = dynamic_cast<MpiCommunicator*>(&mpi);
  return m ? std::make_unique<MpiRollCall>(m->state()) : nullptr;
}

}  // namespace tessera::dist
