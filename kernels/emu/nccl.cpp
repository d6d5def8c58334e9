// The CUDA emulator's NCCL: the calls kernels/nccl_comm.cu makes, between emulated ranks that are
// processes of one machine (mpirun, srun or any launcher that sets the rank variables), so the
// NCCL communicator, and data-parallel training on "cuda" through it, run on a machine without a
// GPU. Semantics from nccl.h (NCCL 2.28):
//   all_reduce(send, recv, count); reduce_scatter(send, recv, recvcount): rank r's recv is the
//   reduction of every rank's send[r * recvcount, (r + 1) * recvcount); all_gather(send, recv,
//   sendcount): recv[r * sendcount, ...) = rank r's send; broadcast(send, recv, count, root). The
//   in-place forms (recv == send, or send == recv + rank * count) are allowed. Sum, prod, max, min
//   and avg (the sum, then divided by the rank count) over f32, f64, bf16, i32 and u8.
// The transport is files: for its s-th collective each rank writes its contribution to
// <dir>/<id>.<s>.<rank> (written under another name, then renamed, so a file that exists is
// whole), waits until every rank's file of collective s exists, and computes its result from
// them; a rank's file of collective s - 1 is deleted once every rank has reached s (they have all
// read it). Init is collective 1, as NCCL's init returns once every rank has joined. <dir> is
// TESSERA_EMU_NCCL_DIR, else the temporary directory (TMPDIR, /tmp); <id> is the unique id, which
// nccl_comm.cu hands from rank 0 to the others as it does for real NCCL.
// A collective runs on its stream as the GPU would run it: later, on that stream's thread (the
// emulator's streams.cpp), its arguments checked when it is called; only on a synchronous legacy
// stream (TESSERA_EMU_LEGACY_STREAM=sync) before the call returns, with its result. So a
// program that reads a collective's output before waiting on its stream reads the old contents.
// Calls are never left in progress (ncclCommGetAsyncError reports ncclInProgress never). A rank
// that does not join within TESSERA_EMU_NCCL_TIMEOUT_S (default 120) seconds fails the collective
// with ncclRemoteError naming the collective and the missing rank: the call's result on the legacy
// stream, else the communicator's asynchronous error. ncclCommAbort stops a collective waiting
// for a peer, as NCCL's does; finalize, destroy and abort first let the queued collectives end.
// Checked as NCCL checks: buffers that are not device memory, a config not made by
// NCCL_CONFIG_INITIALIZER, a rank outside [0, nranks), a root outside the ranks, a reduction or
// dtype NCCL does not have.
#include <cuda_bf16.h>
#include <nccl.h>
#include <unistd.h>  // getpid

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cuda_emu.h"

namespace fs = std::filesystem;

struct ncclComm {
  std::string prefix;  // <dir>/<id>
  int nranks = 1, rank = 0;
  uint64_t seq = 0;    // collectives so far, numbered when called (the host's order)
  std::atomic<ncclResult_t> async{ncclSuccess};
  std::atomic<bool> aborted{false};
  std::mutex mu;                // guards error and queued
  std::condition_variable idle;  // queued reached 0
  std::string error;             // ncclGetLastError's text for this communicator
  int queued = 0;                // collectives on a stream, not yet ended
};

namespace {

thread_local std::string g_last_error;  // for calls without a communicator

ncclResult_t fail(ncclComm* c, ncclResult_t r, const std::string& why) {
  if (!c) {
    g_last_error = "emulated NCCL: " + why;
    return r;
  }
  std::lock_guard lock(c->mu);
  c->error = "emulated NCCL: " + why;
  if (r == ncclRemoteError) c->async = r;  // as a real communicator stays broken
  return r;
}

// Waits until every collective queued on a stream has ended (run, failed or been stopped).
void wait_idle(ncclComm& c) {
  std::unique_lock lock(c.mu);
  c.idle.wait(lock, [&] { return c.queued == 0; });
}

// The collective `run` (numbered s), on `stream`: on a synchronous legacy stream at once, its
// result returned; else later, its failure the communicator's asynchronous error.
template <class Run>
ncclResult_t submit(ncclComm* c, cudaStream_t stream, Run run) {
  const uint64_t s = ++c->seq;
  if (!tessera::emu::asynchronous(stream)) {
    tessera::emu::legacy_turn();
    return run(s);
  }
  {
    std::lock_guard lock(c->mu);
    ++c->queued;
  }
  tessera::emu::enqueue(stream, [c, s, run] {
    if (c->async == ncclSuccess && !c->aborted) run(s);
    std::lock_guard lock(c->mu);
    if (--c->queued == 0) c->idle.notify_all();
  });
  return ncclSuccess;
}

// Not /dev/shm: a container's is often 64 MiB, less than a few ranks' large collectives.
fs::path directory() {
  if (const char* d = std::getenv("TESSERA_EMU_NCCL_DIR"); d && *d) return d;
  return fs::temp_directory_path();
}

double timeout_s() {
  const char* t = std::getenv("TESSERA_EMU_NCCL_TIMEOUT_S");
  return t && *t ? std::atof(t) : 120.0;
}

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclUint8: return 1;
    case ncclBfloat16: return 2;
    case ncclInt32: case ncclFloat32: return 4;
    case ncclFloat64: return 8;
    default: return 0;
  }
}

double load(ncclDataType_t t, const unsigned char* p, size_t i) {
  switch (t) {
    case ncclUint8: return p[i];
    case ncclBfloat16: {
      __nv_bfloat16 v;
      std::memcpy(&v, p + 2 * i, 2);
      return double(__bfloat162float(v));
    }
    case ncclInt32: {
      int32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case ncclFloat32: {
      float v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    default: {
      double v;
      std::memcpy(&v, p + 8 * i, 8);
      return v;
    }
  }
}

void store(ncclDataType_t t, unsigned char* p, size_t i, double v) {
  switch (t) {
    case ncclUint8: p[i] = static_cast<unsigned char>(v); break;
    case ncclBfloat16: {
      const __nv_bfloat16 b = __float2bfloat16(float(v));
      std::memcpy(p + 2 * i, &b, 2);
      break;
    }
    case ncclInt32: {
      const int32_t x = int32_t(v);
      std::memcpy(p + 4 * i, &x, 4);
      break;
    }
    case ncclFloat32: {
      const float x = float(v);
      std::memcpy(p + 4 * i, &x, 4);
      break;
    }
    default: std::memcpy(p + 8 * i, &v, 8);
  }
}

std::string name(const ncclComm& c, uint64_t seq, int rank) {
  return c.prefix + "." + std::to_string(seq) + "." + std::to_string(rank);
}

using Parts = std::vector<std::vector<unsigned char>>;  // every rank's contribution, by rank

// Writes this rank's file of collective s, whole: under another name, then renamed.
ncclResult_t post(ncclComm& c, uint64_t s, const void* data, size_t bytes) {
  const std::string own = name(c, s, c.rank), tmp = own + ".writing";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(static_cast<const char*>(data), std::streamsize(bytes));
    if (!f) return fail(&c, ncclSystemError, "cannot write " + tmp);
  }
  fs::rename(tmp, own);
  return ncclSuccess;
}

// One collective: posts `mine`, waits for every rank's file and reads them into `all`. A rank that
// does not join within the timeout fails it with ncclRemoteError, naming the rank.
ncclResult_t exchange(ncclComm& c, uint64_t s, const char* what, const void* mine, size_t bytes,
                      Parts& all) {
  if (c.nranks == 1) {  // nothing to wait for
    const auto* p = static_cast<const unsigned char*>(mine);
    all.assign(1, std::vector<unsigned char>(p, p + bytes));
    return ncclSuccess;
  }
  if (const ncclResult_t r = post(c, s, mine, bytes); r != ncclSuccess) return r;
  all.assign(size_t(c.nranks), {});
  const auto start = std::chrono::steady_clock::now();
  const double limit = timeout_s();
  for (int r = 0; r < c.nranks; ++r) {
    const std::string file = name(c, s, r);
    for (int polls = 0; !fs::exists(file); ++polls) {
      if (c.aborted)
        return fail(&c, ncclRemoteError, std::string(what) + ": the communicator was aborted");
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > limit)
        return fail(&c, ncclRemoteError,
                    std::string(what) + " (collective " + std::to_string(s) +
                        " of this communicator): rank " + std::to_string(r) + " of " +
                        std::to_string(c.nranks) + " did not join within " +
                        std::to_string(limit) + " s");
      std::this_thread::sleep_for(std::chrono::microseconds(polls < 100 ? 50 : 1000));
    }
    std::ifstream f(file, std::ios::binary);
    all[size_t(r)].assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  // Every rank has written its file of s, so every rank is done reading those of s - 1.
  if (s > 1) {
    std::error_code ec;
    fs::remove(name(c, s - 1, c.rank), ec);
  }
  return ncclSuccess;
}

// Removes the communicator's files: every rank's, or (rank >= 0) one rank's.
void remove_files(const ncclComm& c, int rank) {
  std::error_code ec;
  const std::string stem = fs::path(c.prefix).filename().string() + ".";
  std::string tail(1, '.');
  tail += std::to_string(rank);
  for (const auto& e : fs::directory_iterator(fs::path(c.prefix).parent_path(), ec)) {
    const std::string f = e.path().filename().string();
    const bool ours = f.rfind(stem, 0) == 0 &&
                      (rank < 0 || (f.size() > tail.size() &&
                                    f.compare(f.size() - tail.size(), tail.size(), tail) == 0));
    if (ours) fs::remove(e.path(), ec);
  }
}

// What every collective checks first: a live communicator and a dtype NCCL has; its element size.
ncclResult_t usable(ncclComm* c, ncclDataType_t t, size_t* es) {
  if (!c) return fail(nullptr, ncclInvalidArgument, "a null communicator");
  if (c->async != ncclSuccess) {
    std::string why;
    {
      std::lock_guard lock(c->mu);
      why = c->error;
    }
    return fail(c, ncclInvalidUsage, "the communicator has failed: " + why);
  }
  *es = type_size(t);
  return *es ? ncclSuccess : fail(c, ncclInvalidArgument, "an unknown data type");
}

ncclResult_t on_device(ncclComm* c, const void* send, size_t send_bytes, const void* recv,
                       size_t recv_bytes) {
  if ((send_bytes && !::tessera::emu::on_device(send, send_bytes)) ||
      (recv_bytes && !::tessera::emu::on_device(recv, recv_bytes)))
    return fail(c, ncclInvalidArgument, "a send or receive buffer that is not device memory");
  return ncclSuccess;
}

ncclResult_t known_op(ncclComm* c, ncclRedOp_t op) {
  return op < ncclSum || op > ncclAvg ? fail(c, ncclInvalidArgument, "an unknown reduction")
                                      : ncclSuccess;
}

// out[i] = op over ranks of the element `first + i` of each rank's contribution.
ncclResult_t reduce(ncclComm* c, const std::vector<std::vector<unsigned char>>& all, size_t first,
                    size_t count, ncclDataType_t t, ncclRedOp_t op, unsigned char* out) {
  for (size_t i = 0; i < count; ++i) {
    double acc = load(t, all[0].data(), first + i);
    for (int r = 1; r < c->nranks; ++r) {
      const double v = load(t, all[size_t(r)].data(), first + i);
      switch (op) {
        case ncclSum: case ncclAvg: acc += v; break;
        case ncclProd: acc *= v; break;
        case ncclMax: acc = std::max(acc, v); break;
        default: acc = std::min(acc, v); break;
      }
    }
    if (op == ncclAvg) {  // in the dtype's arithmetic, as the sum it divides is
      if (t == ncclInt32 || t == ncclUint8) {
        acc = std::trunc(acc / c->nranks);
      } else if (t == ncclFloat64) {
        acc = acc / c->nranks;
      } else {
        acc = double(float(acc) / float(c->nranks));
      }
    }
    store(t, out, i, acc);
  }
  return ncclSuccess;
}

}  // namespace

extern "C" {

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t c) {
  if (!c) return g_last_error.c_str();
  thread_local std::string copy;  // c->error may change on a stream's thread
  std::lock_guard lock(c->mu);
  copy = c->error;
  return copy.c_str();
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return fail(nullptr, ncclInvalidArgument, "a null unique id");
  std::memset(id, 0, sizeof *id);
  std::random_device rd;
  const std::string s = "tessera-emu-nccl-" + std::to_string(getpid()) + "-" + std::to_string(rd()) +
                        std::to_string(rd());
  std::snprintf(id->internal, sizeof id->internal, "%s", s.c_str());
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t* config) {
  if (!comm) return fail(nullptr, ncclInvalidArgument, "a null communicator pointer");
  if (config && config->magic != 0xcafebeef)
    return fail(nullptr, ncclInvalidArgument, "a config not initialised with NCCL_CONFIG_INITIALIZER");
  if (nranks < 1 || rank < 0 || rank >= nranks)
    return fail(nullptr, ncclInvalidArgument,
                "rank " + std::to_string(rank) + " of " + std::to_string(nranks));
  id.internal[sizeof id.internal - 1] = 0;
  if (std::strncmp(id.internal, "tessera-emu-nccl-", 17) != 0)
    return fail(nullptr, ncclInvalidArgument, "a unique id ncclGetUniqueId did not make");
  auto* c = new ncclComm;
  c->prefix = (directory() / id.internal).string();
  c->nranks = nranks;
  c->rank = rank;
  *comm = c;  // also on failure: the caller aborts it
  // Collective, as NCCL's init is: it returns once every rank has joined with this id.
  const unsigned char here = 1;
  Parts all;
  return exchange(*c, ++c->seq, "ncclCommInitRankConfig", &here, 1, all);
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  return ncclCommInitRankConfig(comm, nranks, id, rank, nullptr);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t* state) {
  if (!c || !state) return fail(c, ncclInvalidArgument, "a null argument");
  *state = c->async;
  return ncclSuccess;
}

// Rank 0 removes the communicator's files once every rank has finalised (each writes a last
// file of its own); the others just write theirs.
ncclResult_t ncclCommFinalize(ncclComm_t c) {
  if (!c) return fail(nullptr, ncclInvalidArgument, "a null communicator");
  wait_idle(*c);  // NCCL's finalize flushes what is in flight
  if (c->async != ncclSuccess) return c->async;
  if (c->nranks == 1) return ncclSuccess;
  const unsigned char last = 0;
  if (c->rank != 0) return post(*c, ++c->seq, &last, 1);
  Parts all;
  if (const ncclResult_t r = exchange(*c, ++c->seq, "ncclCommFinalize", &last, 1, all);
      r != ncclSuccess)
    return r;
  remove_files(*c, -1);
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t c) {
  if (c) wait_idle(*c);
  delete c;
  return ncclSuccess;
}

// Stops the collectives in flight, then removes this rank's files of the communicator (the other
// ranks remove theirs).
ncclResult_t ncclCommAbort(ncclComm_t c) {
  if (!c) return ncclSuccess;
  c->aborted = true;
  wait_idle(*c);
  remove_files(*c, c->rank);
  delete c;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t t,
                           ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
  size_t es = 0;
  if (const ncclResult_t r = usable(c, t, &es); r != ncclSuccess) return r;
  const size_t bytes = count * es;
  if (const ncclResult_t r = on_device(c, send, bytes, recv, bytes); r != ncclSuccess) return r;
  if (const ncclResult_t r = known_op(c, op); r != ncclSuccess) return r;
  return submit(c, stream, [=](uint64_t s) {
    Parts all;
    const ncclResult_t r = exchange(*c, s, "ncclAllReduce", send, bytes, all);
    if (r != ncclSuccess) return r;
    return reduce(c, all, 0, count, t, op, static_cast<unsigned char*>(recv));
  });
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recvcount, ncclDataType_t t,
                               ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
  size_t es = 0;
  if (const ncclResult_t r = usable(c, t, &es); r != ncclSuccess) return r;
  const size_t bytes = recvcount * es * size_t(c->nranks);
  if (const ncclResult_t r = on_device(c, send, bytes, recv, recvcount * es); r != ncclSuccess)
    return r;
  if (const ncclResult_t r = known_op(c, op); r != ncclSuccess) return r;
  return submit(c, stream, [=](uint64_t s) {
    Parts all;
    const ncclResult_t r = exchange(*c, s, "ncclReduceScatter", send, bytes, all);
    if (r != ncclSuccess) return r;
    return reduce(c, all, size_t(c->rank) * recvcount, recvcount, t, op,
                  static_cast<unsigned char*>(recv));
  });
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t sendcount, ncclDataType_t t,
                           ncclComm_t c, cudaStream_t stream) {
  size_t es = 0;
  if (const ncclResult_t r = usable(c, t, &es); r != ncclSuccess) return r;
  const size_t bytes = sendcount * es;
  if (const ncclResult_t r = on_device(c, send, bytes, recv, bytes * size_t(c->nranks));
      r != ncclSuccess)
    return r;
  return submit(c, stream, [=](uint64_t s) {
    Parts all;
    const ncclResult_t r = exchange(*c, s, "ncclAllGather", send, bytes, all);
    if (r != ncclSuccess) return r;
    for (int k = 0; k < c->nranks; ++k)
      std::memcpy(static_cast<unsigned char*>(recv) + size_t(k) * bytes, all[size_t(k)].data(),
                  bytes);
    return ncclSuccess;
  });
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t t, int root,
                           ncclComm_t c, cudaStream_t stream) {
  size_t es = 0;
  if (const ncclResult_t r = usable(c, t, &es); r != ncclSuccess) return r;
  if (root < 0 || root >= c->nranks)
    return fail(c, ncclInvalidArgument, "root " + std::to_string(root) + " of " + std::to_string(c->nranks));
  const size_t bytes = count * es, sent = c->rank == root ? bytes : 0;  // the others send nothing
  if (const ncclResult_t r = on_device(c, send, sent, recv, bytes); r != ncclSuccess) return r;
  return submit(c, stream, [=](uint64_t s) {
    Parts all;
    const ncclResult_t r = exchange(*c, s, "ncclBroadcast", send, sent, all);
    if (r != ncclSuccess) return r;
    std::memcpy(recv, all[size_t(root)].data(), bytes);
    return ncclSuccess;
  });
}

}  // extern "C"
