// NCCL backend (src/distributed/backends.h: make_nccl_communicator): CUDA tensors, compiled only
// when CMake found NCCL (else src/distributed/nccl_stub.cpp).
//
// Streams. Every tessera kernel and copy runs on the legacy default stream (the compute stream;
// common.cuh, allocator.cuh). Collectives run on a stream of their own (cudaStreamNonBlocking, so
// it never synchronises implicitly with the legacy stream), ordered by events:
//
//   compute: ...kernels that produce t... [ready]                  <wait done> ...kernels using t
//   comm:                                  <wait ready> -> NCCL -> [done]
//
// Work::wait() adds the <wait done> arrow and returns: the host does not block, the GPU orders.
//
// Buffers. The caching allocator hands a freed block to the next legacy-stream user at once, which
// is safe only while every user of the block is on that stream. A collective is not, so a handle
// owns its tensor (and any padded temporary) and lets them go only after the compute stream has
// been made to wait for `done`: whoever reuses the block is queued behind the collective.
//
// Errors and timeouts. The communicator is non-blocking (config.blocking = 0): no NCCL call blocks
// the host, a call may return ncclInProgress, and the operation is enqueued only once
// ncclCommGetAsyncError leaves ncclInProgress (settle_locked), so nothing else may be put on the
// stream before that. A watchdog thread polls the collectives in flight (cudaEventQuery) and
// ncclCommGetAsyncError every 50 ms; when one is not done timeout_s after it was issued, or NCCL
// reports an asynchronous error, it aborts the communicator (the kernels spinning on a dead peer
// then exit, leaving garbage in their buffers) and records why; every later call, wait() and test()
// throws that error. wait() and test() also run the same check themselves. Where the ranks were
// started by mpirun, the MPI communicator that carried the id stays as a side channel for the roll
// call (backends.h): before a timeout aborts, the rank asks every peer which collective it waits
// in, and each watchdog answers for its rank every 50 ms, so the error names the ranks that have
// not issued the collective and those that are silent (stopped, dead).
//
// Reductions: bf16 -> ncclBfloat16, Average -> ncclAvg. reduce_scatter / all_gather use NCCL's
// in-place forms (recvbuff = sendbuff + rank*c) when world divides numel; otherwise the buffer goes
// through a temporary padded to world * c elements, since NCCL needs equal counts per rank.
#include <nccl.h>

#include <algorithm>
#include <exception>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <list>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "backend/cuda.h"
#include "common.cuh"
#include "distributed/backends.h"

// Any result other than success or in-progress (a non-blocking communicator's "queued") fails.
#define NCCL_CHECK(call)                                                                \
  do {                                                                                  \
    const ncclResult_t r_ = (call);                                                     \
    if (r_ != ncclSuccess && r_ != ncclInProgress)                                      \
      TESSERA_FAIL("NCCL error: ", ncclGetErrorString(r_), " (", ncclGetLastError(nullptr), \
                   ") in ", #call);                                                     \
  } while (0)

namespace tessera::dist {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

ncclDataType_t nccl_type(DType d) {
  switch (d) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::BF16: return ncclBfloat16;
    case DType::I32: return ncclInt32;
    case DType::U8: return ncclUint8;
  }
  TESSERA_FAIL("no NCCL type for ", dtype_name(d));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Average: return ncclAvg;
    case ReduceOp::Max: return ncclMax;
  }
  TESSERA_FAIL("no NCCL op for ", reduce_op_name(op));
}

struct Event {
  cudaEvent_t event = nullptr;
  explicit Event(int device) {
    cuda::DeviceGuard guard(device);
    CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  }
  ~Event() {
    if (event) cudaEventDestroy(event);  // legal while pending: freed once it completes
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

// The communicator's state, shared with its handles (a handle may outlive the communicator) and
// with the watchdog. `mu` serialises every NCCL call on `comm`: the watchdog's abort must not race
// an enqueue.
struct NcclState {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  std::unique_ptr<Event> ready;  // recorded on the compute stream before each collective
  int device = 0, rank = 0, world = 1;
  double timeout_s = 300;
  std::unique_ptr<RollCallChannel> roll_call;  // null without an MPI bootstrap

  std::mutex mu;
  bool aborted = false;
  std::string error;  // why it was aborted
  std::atomic<uint64_t> issued{0};  // collectives called on this communicator, numbering them
  struct InFlight {
    std::shared_ptr<Event> done;
    Clock::time_point issued;
    std::string what;
    uint64_t number = 0;
  };
  std::list<InFlight> in_flight;

  // Answers the peers' roll calls: the oldest collective in flight, or none.
  void answer_locked() {
    if (!roll_call) return;
    if (in_flight.empty())
      roll_call->answer(issued, -1, "");
    else
      roll_call->answer(in_flight.front().number, seconds_since(in_flight.front().issued),
                        in_flight.front().what);
  }

  void abort_locked(const std::string& why) {
    if (aborted) return;
    aborted = true;
    error = why;
    std::fprintf(stderr, "tessera: aborting the NCCL communicator: %s\n", why.c_str());
    if (comm) ncclCommAbort(comm);  // also frees it
    in_flight.clear();
  }

  [[noreturn]] void fail_locked(const std::string& why) {
    abort_locked(why);
    TESSERA_FAIL(error);
  }

  void throw_if_aborted_locked() const {
    TESSERA_CHECK(!aborted, "the NCCL communicator (rank ", rank, " of ", world,
                  ") was aborted: ", error);
  }

  // Waits (bounded by timeout_s) for the previous call to leave ncclInProgress: only then is its
  // operation enqueued, and only then may the next NCCL call or stream operation follow it.
  void settle_locked(const std::string& what) {
    const auto start = Clock::now();
    for (int polls = 0;; ++polls) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
      if (r != ncclSuccess) state = r;
      if (state == ncclSuccess) return;
      if (state != ncclInProgress)
        fail_locked("NCCL " + what + " failed: " + ncclGetErrorString(state) + " (" +
                    ncclGetLastError(comm) + ")");
      if (seconds_since(start) >= timeout_s)
        fail_locked("NCCL " + what + " was not enqueued within timeout_s = " +
                    std::to_string(timeout_s) + " s");
      if (polls > 100) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  // Non-blocking: retires completed collectives; aborts on an asynchronous error or a collective
  // in flight longer than timeout_s.
  void check_locked() {
    if (aborted) return;
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) state = r;
    if (state != ncclSuccess && state != ncclInProgress) {
      abort_locked(std::string("NCCL reported an asynchronous error on rank ") +
                   std::to_string(rank) + ": " + ncclGetErrorString(state) + " (" +
                   ncclGetLastError(comm) + ")");
      return;
    }
    for (auto it = in_flight.begin(); it != in_flight.end();) {
      const cudaError_t q = cudaEventQuery(it->done->event);
      if (q == cudaSuccess) {
        it = in_flight.erase(it);
        continue;
      }
      if (q != cudaErrorNotReady) {
        abort_locked("CUDA error " + std::string(cudaGetErrorString(q)) + " during NCCL " +
                     it->what);
        return;
      }
      if (seconds_since(it->issued) >= timeout_s) {
        std::ostringstream why;
        why << "NCCL " << it->what << " (collective #" << it->number
            << ") did not complete within timeout_s = " << timeout_s
            << " s of being issued: another rank has not joined it. ";
        if (roll_call)
          why << roll_call->take(it->number, seconds_since(it->issued), it->what);
        else
          why << "(Dead, stuck, or issuing collectives in a different order.)";
        abort_locked(why.str());
        return;
      }
      ++it;
    }
  }

  ~NcclState() {
    try {
      cudaSetDevice(device);
      if (comm && !aborted && std::uncaught_exceptions() > 0) {
        // Destroyed while an error unwinds (this rank failed, its peers may have too): abort at
        // once, so that the error is printed and the process ends without waiting out
        // timeout_s on a finalize whose peers may never join it.
        ncclCommAbort(comm);
      } else if (comm && !aborted) {
        // Finalize flushes what is in flight; bounded, since a dead peer would stall it.
        const auto start = Clock::now();
        ncclResult_t state = ncclCommFinalize(comm);
        while (state == ncclInProgress && seconds_since(start) < timeout_s) {
          std::this_thread::sleep_for(std::chrono::microseconds(100));
          if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) break;
        }
        if (state == ncclSuccess) {
          ncclCommDestroy(comm);
        } else {
          std::fprintf(stderr, "tessera: NCCL communicator did not finalise (%s); aborting it\n",
                       ncclGetErrorString(state));
          ncclCommAbort(comm);
        }
      }
      ready.reset();
      if (stream) cudaStreamDestroy(stream);
    } catch (...) {  // destructor: nothing to report to
    }
  }
};

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclState> state, Tensor buffer, std::string what)
      : s_(std::move(state)), buffer_(std::move(buffer)), what_(std::move(what)) {}

  std::shared_ptr<Event> done;  // null: nothing was issued (an empty tensor)
  Tensor padded;                // the temporary of a non-divisible reduce_scatter / all_gather
  uint64_t number = 0;          // its place among the communicator's collectives
  const std::string& what() const { return what_; }

  void wait() override {
    if (!done) return;
    std::lock_guard lock(s_->mu);
    s_->check_locked();
    s_->throw_if_aborted_locked();
    order_compute_stream_locked();
  }

  bool test() override {
    if (!done) return true;
    std::lock_guard lock(s_->mu);
    s_->check_locked();
    s_->throw_if_aborted_locked();
    const cudaError_t q = cudaEventQuery(done->event);
    if (q == cudaErrorNotReady) return false;
    if (q != cudaSuccess) s_->fail_locked("CUDA error " + std::string(cudaGetErrorString(q)) +
                                          " during NCCL " + what_);
    return true;
  }

  // The buffers go back to the allocator after this body: order the compute stream first.
  ~NcclWork() override {
    if (!done) return;
    try {
      std::lock_guard lock(s_->mu);
      if (!s_->aborted) order_compute_stream_locked();
    } catch (...) {  // destructor: a broken device shows up at the next call
    }
  }

 private:
  void order_compute_stream_locked() {
    if (ordered_) return;
    cuda::DeviceGuard guard(s_->device);  // the legacy stream is per device
    CUDA_CHECK(cudaStreamWaitEvent(cudaStreamLegacy, done->event, 0));
    ordered_ = true;
  }

  std::shared_ptr<NcclState> s_;
  Tensor buffer_;  // the collective reads and writes it: kept alive until the handle goes
  std::string what_;
  bool ordered_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const CommOptions& options, const LaunchInfo& launch, Communicator* bootstrap)
      : s_(std::make_shared<NcclState>()), local_rank_(launch.local_rank) {
    s_->rank = launch.rank;
    s_->world = launch.world;
    s_->timeout_s = options.timeout_s;
    const int count = cuda::device_count();
    TESSERA_CHECK(count > 0, "backend nccl: rank ", launch.rank, " sees no CUDA device");
    // One visible GPU: the launcher gave each rank its own (CUDA_VISIBLE_DEVICES per rank).
    s_->device = count == 1 ? 0 : launch.local_rank;
    TESSERA_CHECK(s_->device < count, "backend nccl: local rank ", launch.local_rank,
                  " has no GPU of its own (this node shows ", count, "): launch at most ", count,
                  " ranks per node, or give each rank one GPU");
    CUDA_CHECK(cudaSetDevice(s_->device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&s_->stream, cudaStreamNonBlocking));
    s_->ready = std::make_unique<Event>(s_->device);

    ncclUniqueId id{};
    if (launch.rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    std::vector<uint8_t> bytes(sizeof(id));
    std::memcpy(bytes.data(), &id, sizeof(id));
    bytes = share_from_rank0(bytes, kIdFile, options, launch, bootstrap);
    std::memcpy(&id, bytes.data(), sizeof(id));
    if (bootstrap) s_->roll_call = make_mpi_roll_call(*bootstrap);

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // init and collectives return at once; we poll with a timeout
    std::lock_guard lock(s_->mu);
    const ncclResult_t init =
        ncclCommInitRankConfig(&s_->comm, launch.world, id, launch.rank, &config);
    if (init != ncclSuccess && init != ncclInProgress)  // abort_locked frees a half-made comm
      s_->fail_locked(std::string("NCCL communicator init (ncclCommInitRankConfig) failed: ") +
                      ncclGetErrorString(init) + " (" + ncclGetLastError(nullptr) + ")");
    s_->settle_locked("communicator init (ncclCommInitRankConfig) on rank " +
                      std::to_string(launch.rank) + " of " + std::to_string(launch.world) +
                      " on cuda:" + std::to_string(s_->device));
    // Rank 0's init completes only once every rank has joined with the id: the file is spent.
    if (launch.rank == 0) remove_shared_bytes(kIdFile, options, launch);
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclCommunicator() override {
    {
      std::lock_guard lock(s_->mu);
      stopping_ = true;
    }
    wake_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
  }

  int rank() const override { return s_->rank; }
  int world() const override { return s_->world; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "nccl"; }
  Device device() const override { return Device::cuda(s_->device); }

  WorkHandle all_reduce_async(const Tensor& t, ReduceOp op) override {
    return run("all_reduce", op, true, t, 0, [&](NcclWork& w, char* base, size_t) {
      enqueue(w, ncclAllReduce(base, base, size_t(t.numel()), nccl_type(t.dtype()), nccl_op(op),
                               s_->comm, s_->stream));
    });
  }

  WorkHandle reduce_scatter_async(const Tensor& t, ReduceOp op) override {
    const int64_t n = t.numel(), c = (n + s_->world - 1) / s_->world;
    const Range mine = shard_range(n, s_->world, s_->rank);
    auto body = [&](NcclWork& w, char* base, size_t es) {
      const size_t own = size_t(s_->rank) * size_t(c) * es;
      if (n % s_->world == 0) {
        enqueue(w, ncclReduceScatter(base, base + own, size_t(c), nccl_type(t.dtype()),
                                     nccl_op(op), s_->comm, s_->stream));
        return;
      }
      char* tmp = static_cast<char*>(w.padded.data_ptr());
      const size_t padded_bytes = size_t(s_->world) * size_t(c) * es, used = size_t(n) * es;
      CUDA_CHECK(cudaMemcpyAsync(tmp, base, used, cudaMemcpyDeviceToDevice, s_->stream));
      // The pad joins the last shards' sums, which are cut off: zero keeps them finite.
      CUDA_CHECK(cudaMemsetAsync(tmp + used, 0, padded_bytes - used, s_->stream));
      enqueue(w, ncclReduceScatter(tmp, tmp + own, size_t(c), nccl_type(t.dtype()), nccl_op(op),
                                   s_->comm, s_->stream));
      if (mine.size() > 0)
        CUDA_CHECK(cudaMemcpyAsync(base + size_t(mine.begin) * es, tmp + own,
                                   size_t(mine.size()) * es, cudaMemcpyDeviceToDevice, s_->stream));
    };
    return run("reduce_scatter", op, true, t, padded_size(n), body);
  }

  WorkHandle all_gather_async(const Tensor& t) override {
    const int64_t n = t.numel(), c = (n + s_->world - 1) / s_->world;
    const Range mine = shard_range(n, s_->world, s_->rank);
    auto body = [&](NcclWork& w, char* base, size_t es) {
      const size_t own = size_t(s_->rank) * size_t(c) * es;
      if (n % s_->world == 0) {
        enqueue(w, ncclAllGather(base + own, base, size_t(c), nccl_type(t.dtype()), s_->comm,
                                 s_->stream));
        return;
      }
      // The own block's tail past n is never read back: no need to clear it.
      char* tmp = static_cast<char*>(w.padded.data_ptr());
      if (mine.size() > 0)
        CUDA_CHECK(cudaMemcpyAsync(tmp + own, base + size_t(mine.begin) * es,
                                   size_t(mine.size()) * es, cudaMemcpyDeviceToDevice, s_->stream));
      enqueue(w, ncclAllGather(tmp + own, tmp, size_t(c), nccl_type(t.dtype()), s_->comm,
                               s_->stream));
      CUDA_CHECK(cudaMemcpyAsync(base, tmp, size_t(n) * es, cudaMemcpyDeviceToDevice, s_->stream));
    };
    return run("all_gather", ReduceOp::Sum, false, t, padded_size(n), body);
  }

  WorkHandle broadcast_async(const Tensor& t, int root) override {
    TESSERA_CHECK(root >= 0 && root < s_->world, "broadcast: root ", root, " is not a rank of ",
                  s_->world);
    return run("broadcast", ReduceOp::Sum, false, t, 0, [&](NcclWork& w, char* base, size_t) {
      enqueue(w, ncclBroadcast(base, base, size_t(t.numel()), nccl_type(t.dtype()), root,
                               s_->comm, s_->stream));
    });
  }

  // Host-blocking: a one-element all_reduce, polled until done; test() throws on abort or timeout.
  void barrier() override {
    const Tensor token = Tensor::empty({1}, {DType::F32, device()});  // its value is irrelevant
    WorkHandle w = all_reduce_async(token, ReduceOp::Sum);
    while (!w->test()) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }

 private:
  static constexpr const char* kIdFile = "tessera_nccl_id";

  // world * c elements when world does not divide n (the padded temporary), else 0.
  int64_t padded_size(int64_t n) const {
    return n % s_->world == 0 ? 0 : (n + s_->world - 1) / s_->world * s_->world;
  }

  // Checks t, then under the lock: record `ready` on the compute stream, make the comm stream wait
  // for it, enqueue (copies and NCCL calls on the comm stream), record `done`.
  template <typename Enqueue>
  WorkHandle run(const char* what, ReduceOp op, bool reduces, const Tensor& t, int64_t padded,
                 Enqueue body) {
    check_collective_tensor(t, what, reduces);
    TESSERA_CHECK(t.device().is_cuda() && t.device().index == s_->device, what, ": ", t.str(),
                  " is on ", t.device().str(), ", this rank's NCCL communicator reduces ",
                  "tensors on ", device().str(), " (Communicator::device())");
    auto w = std::make_unique<NcclWork>(s_, t,
                                        describe_collective(what, op, reduces, t, s_->rank,
                                                            s_->world));
    w->number = ++s_->issued;  // empty ones too: every rank calls the same collectives
    const int64_t n = t.numel();
    if (n == 0) {  // every rank has the same n: skipping together keeps the collectives matched
      std::lock_guard lock(s_->mu);
      s_->throw_if_aborted_locked();
      return w;
    }
    // Allocated before `ready` is recorded: the block's previous legacy-stream users come first.
    if (padded > 0) w->padded = Tensor::empty({padded}, {t.dtype(), t.device()});
    w->done = std::make_shared<Event>(s_->device);
    std::lock_guard lock(s_->mu);
    s_->check_locked();
    s_->throw_if_aborted_locked();
    cuda::DeviceGuard guard(s_->device);
    CUDA_CHECK(cudaEventRecord(s_->ready->event, cudaStreamLegacy));
    CUDA_CHECK(cudaStreamWaitEvent(s_->stream, s_->ready->event, 0));
    body(*w, static_cast<char*>(t.data_ptr()), dtype_size(t.dtype()));
    CUDA_CHECK(cudaEventRecord(w->done->event, s_->stream));
    s_->in_flight.push_back({w->done, Clock::now(), w->what(), w->number});
    return w;
  }

  // After an NCCL call, with the lock held: fail on an error, else wait until it is enqueued.
  void enqueue(NcclWork& w, ncclResult_t result) {
    if (result != ncclSuccess && result != ncclInProgress)
      s_->fail_locked("NCCL " + w.what() + " failed: " + ncclGetErrorString(result) + " (" +
                      ncclGetLastError(s_->comm) + ")");
    s_->settle_locked(w.what());
  }

  void watch() {
    cudaSetDevice(s_->device);  // cudaEventQuery in this thread
    std::unique_lock lock(s_->mu);
    while (!stopping_) {
      wake_.wait_for(lock, std::chrono::milliseconds(50));
      if (stopping_) break;
      s_->check_locked();
      s_->answer_locked();  // here only: the collectives' own calls stay off MPI
    }
  }

  std::shared_ptr<NcclState> s_;
  int local_rank_;
  bool stopping_ = false;  // guarded by s_->mu
  std::condition_variable wake_;
  std::thread watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions& options,
                                                     const LaunchInfo& launch,
                                                     Communicator* bootstrap) {
  return std::make_unique<NcclCommunicator>(options, launch, bootstrap);
}

}  // namespace tessera::dist
