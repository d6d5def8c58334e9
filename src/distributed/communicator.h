// Communicator: collectives over the ranks of a job, with single-process, MPI and NCCL backends
// chosen at link time (the MPI and NCCL code is compiled only when CMake found them; stubs say so).
//
//   auto comm = dist::make_communicator({.device = Device::cuda()});  // tensors on comm->device()
//   dist::WorkHandle w = comm->all_reduce_async(grad_bucket, dist::ReduceOp::Average);
//   ...                                                 // backward of earlier layers overlaps here
//   w->wait();                                          // grad_bucket: the mean over ranks
//   double loss = comm->all_reduce_host({local_loss}, dist::ReduceOp::Average)[0];
//
// Invariants every backend keeps:
//  - Every rank issues the same collectives in the same order with the same numel and dtype (the
//    MPI and NCCL rule). Handles may be waited in any order, from any thread.
//  - Collectives work in place on contiguous tensors; a handle keeps its tensor's storage alive
//    until the handle is gone, so dropping the tensor early is safe.
//  - Reductions are exact whenever every partial sum is representable (integers, multiples of a
//    power of two); the order of additions across ranks is otherwise the backend's (MPI's tree,
//    NCCL's ring or tree), so results repeat for one backend, world and size, not across them.
//  - Average = Sum / world, divided once after the sum (i32: truncated towards zero). NCCL's
//    ncclAvg may instead pre-multiply by 1/world; both are exact for power-of-two worlds.
//  - Nothing hangs forever: a collective that makes no progress for timeout_s is a tessera::Error.
//    MPI: wait() gives up after blocking timeout_s; the request stays in flight, so wait() may be
//    called again (a late rank completes it), and a handle dropped unfinished is finished by later
//    calls. Before it gives up it takes a roll call (mpi.cpp): the error names the ranks that did
//    not answer (stopped, dead, busy elsewhere) and those waiting in another collective. A dead
//    peer means the job must end (MPI_Abort, or exit: tessera then skips
//    MPI_Finalize, which would hang, and mpirun reports the failure); only the caller knows
//    whether to save first, so tessera never aborts on its own.
//    NCCL: wait() makes the compute stream (the legacy default stream, where tessera's kernels
//    run) wait for the collective and returns without blocking the host; a watchdog thread aborts
//    the NCCL communicator when a collective is not done timeout_s after it was issued or NCCL
//    reports an asynchronous error, so the GPU does not spin forever; the next call on the
//    communicator (or wait()/test() of any handle) throws that error. Where the id came over MPI
//    the watchdog takes the roll call too, over that MPI communicator (backends.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera::dist {

// Max is an addition to the brief's {Sum, Average}: the host-scalar "max over ranks" (a non-finite
// flag, the slowest rank's step time) needs it, and every backend has it natively.
enum class ReduceOp { Sum, Average, Max };
const char* reduce_op_name(ReduceOp op);  // "sum" | "average" | "max"

// Shard r of a flat buffer of n elements over `world` ranks: [r*c, min(n, (r+1)*c)) with
// c = ceil(n / world) (empty shards possible at the end). Equal-sized shards except the last ones
// let NCCL's in-place reduce_scatter/all_gather (recvbuff = sendbuff + rank*c) serve every
// divisible size directly.
struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
Range shard_range(int64_t n, int world, int rank);

struct LaunchInfo {
  int rank = 0, world = 1, local_rank = 0;
  std::string launcher = "none";  // "mpirun" | "mpiexec" | "srun" | "env" | "none"
  // What names this launch among others, the same on every rank: Open MPI's PMIX_NAMESPACE (else
  // OMPI_MCA_ess_base_jobid), srun's SLURM_JOB_ID.SLURM_STEP_ID(.rSLURM_RESTART_COUNT), torchrun's
  // TORCHELASTIC_RUN_ID(.rTORCHELASTIC_RESTART_COUNT);
  // "" where the launcher sets none (MPICH's mpiexec, RANK/WORLD_SIZE by hand). Files the ranks
  // share carry it in their names, so a file a crashed launch left is not read as this one's.
  std::string job;
};
// From the environment: OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK (Open MPI's mpirun), PMI_RANK /
// PMI_SIZE / MPI_LOCALRANKID (MPICH's and Intel MPI's mpiexec), SLURM_PROCID / SLURM_NTASKS /
// SLURM_LOCALID (srun), RANK / WORLD_SIZE / LOCAL_RANK; none -> rank 0 of 1. An MPI launcher's
// variables win over the others (mpirun inside an sbatch script); otherwise groups that disagree on
// the world size give the one of more than one process (SLURM_NTASKS=1 around a RANK/WORLD_SIZE
// loop), or an Error naming both when several have more. Rank and size must both be set; a missing
// local rank defaults to the rank (right on one node; on several, the device check catches it).
// Malformed or inconsistent values (non-numbers, world < 1, rank >= world) are an Error naming
// the variable (launch.cpp).
LaunchInfo detect_launch();
// "OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE" for mpirun etc.: for messages.
std::string launch_variables(const std::string& launcher);

class Work {  // an asynchronous collective in flight
 public:
  virtual ~Work() = default;
  // Blocks until done (NCCL: until the compute stream is ordered after it, see above); throws
  // tessera::Error on failure/timeout, naming the collective, its size and the timeout.
  virtual void wait() = 0;
  virtual bool test() = 0;  // non-blocking progress poll; true once complete
};
using WorkHandle = std::unique_ptr<Work>;

struct CommOptions {
  std::string backend = "auto";   // auto | single | mpi | nccl
  std::string init;               // NCCL without MPI: "file:///shared/dir" (ncclUniqueId in a file)
  double timeout_s = 300;         // a collective or init without progress this long is an Error
  Device device = Device::cpu();  // where the tensors live: CPU -> mpi (or single), CUDA -> nccl
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual int local_rank() const = 0;
  virtual std::string backend() const = 0;  // "single" | "mpi" | "nccl"
  // Where collective tensors must live: the CPU for mpi; for nccl cuda:local_rank, or cuda:0 when
  // the rank sees one GPU (CUDA_VISIBLE_DEVICES per rank); single accepts any device.
  virtual Device device() const { return Device::cpu(); }

  // All operate IN PLACE on a contiguous tensor (any shape, treated as flat), dtypes f32, f64, bf16
  // and i32 (bf16 reduced with a user-defined MPI op: sum in f32, round to bf16 at every step).
  // broadcast and all_gather also take u8 (bytes: they do not reduce).
  virtual WorkHandle all_reduce_async(const Tensor& t, ReduceOp op) = 0;
  // After wait(): this rank's shard_range(t.numel(), world, rank) of t holds the reduction over
  // ranks of that range; the rest of t is unspecified.
  virtual WorkHandle reduce_scatter_async(const Tensor& t, ReduceOp op) = 0;
  // Each rank's shard_range of t is its contribution; after wait() all of t holds every shard.
  virtual WorkHandle all_gather_async(const Tensor& t) = 0;
  virtual WorkHandle broadcast_async(const Tensor& t, int root) = 0;
  virtual void barrier() = 0;  // host-blocking, with the timeout

  // Blocking conveniences: all_reduce(t, op) = all_reduce_async(t, op)->wait(), and so on.
  void all_reduce(const Tensor& t, ReduceOp op);
  void reduce_scatter(const Tensor& t, ReduceOp op);
  void all_gather(const Tensor& t);
  void broadcast(const Tensor& t, int root);
  // Host scalars (loss, norms, counters): the reduction over ranks of a vector of doubles, the
  // same on every rank. Goes through an f64 tensor on device().
  std::vector<double> all_reduce_host(std::vector<double> v, ReduceOp op);
};

// Builds the communicator the options and the launch ask for. backend "auto": world == 1 ->
// single; CPU device -> mpi; CUDA device -> nccl. A backend missing from this build is an Error
// saying so and naming the CMake option (TESSERA_MPI / TESSERA_NCCL). world > 1 with "single" is
// an Error naming the launch variables. NCCL with world > 1 gets its ncclUniqueId from rank 0
// through options.init's file if set, else through MPI when launched by mpirun.
std::unique_ptr<Communicator> make_communicator(const CommOptions& options,
                                                const LaunchInfo& launch = detect_launch());

}  // namespace tessera::dist
