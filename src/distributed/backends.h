// Internal to src/distributed and kernels/nccl_comm.cu: the backend factories make_communicator
// dispatches to, and what the backends share. Plain C++: no MPI, NCCL or CUDA headers, so the NCCL
// side (compiled by nvcc) and the MPI side meet only here.
//
// Each factory has a real implementation and a stub that throws, and CMake links exactly one:
//   make_mpi_communicator   src/distributed/mpi.cpp       | src/distributed/mpi_stub.cpp
//   make_nccl_communicator  kernels/nccl_comm.cu          | src/distributed/nccl_stub.cpp
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distributed/communicator.h"

namespace tessera::dist {

std::unique_ptr<Communicator> make_single_communicator(const CommOptions& options,
                                                       const LaunchInfo& launch);
std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& options,
                                                    const LaunchInfo& launch);
// bootstrap: an MPI communicator over the same ranks that carries rank 0's ncclUniqueId, or null
// when options.init names a file (or world == 1). Only used during construction.
std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions& options,
                                                     const LaunchInfo& launch,
                                                     Communicator* bootstrap);

// Checks shared by the backends; `what` names the collective in the message ("all_reduce").
// reduces: the dtype must be f32, f64, bf16 or i32 (u8 is allowed for broadcast / all_gather).
void check_collective_tensor(const Tensor& t, const char* what, bool reduces);

// "all_reduce (sum) of 7 f32 elements on rank 1 of 2": the subject of every error message.
std::string describe_collective(const char* what, ReduceOp op, bool reduces, const Tensor& t,
                                int rank, int world);

// Rank 0's bytes (an ncclUniqueId) on every rank. With options.init = "file:///dir", rank 0 writes
// dir/<name>.<launch.job> (dir/<name> where the launcher names no job) atomically (temporary
// file + rename) and the others poll for it until options.timeout_s; otherwise the bytes travel
// as a u8 broadcast through `bootstrap`. The file holds the world size, so a stale file from a run
// of another size is refused; one of the same size is another file where the launch has a job
// name, and is not detectable where it has none, hence remove_shared_bytes once every rank has
// used them.
std::vector<uint8_t> share_from_rank0(const std::vector<uint8_t>& bytes, const std::string& name,
                                      const CommOptions& options, const LaunchInfo& launch,
                                      Communicator* bootstrap);
void remove_shared_bytes(const std::string& name, const CommOptions& options,
                         const LaunchInfo& launch);  // never throws
// The directory of "file:///dir" ("" for an empty init); anything else is an Error.
std::string init_directory(const std::string& init);

// The roll call a rank takes when one of its collectives times out (mpi.cpp): it asks every peer
// which collective it is waiting in. A peer waiting in one answers roll_call_answer(its collective
// number on this communicator, seconds it has waited, its describe_collective); a peer that waits
// in none but can answer (NCCL's watchdog thread answers for its rank) answers
// roll_call_answer(the number of collectives it has issued, -1, ""); a peer stopped, dead or (on
// MPI) busy outside the collectives does not answer within grace_s. roll_call_report turns the
// answers (indexed by rank; this rank's and unanswered ones empty) into the sentences of the
// timeout error, ending with the ranks to look at: the silent ones, those that have not issued the
// collective, and those in another one: another number, or the same number but another kind, op,
// dtype or size (describe_collective's text before " on rank"; swapped collectives: issued in a
// different order).
std::string roll_call_answer(uint64_t number, double waited_s, const std::string& what);
std::string roll_call_report(int rank, uint64_t number, const std::string& what,
                             const std::vector<std::optional<std::string>>& answers,
                             double grace_s);
// "rank 3", "ranks 1-3, 7": sorted, distinct ranks, runs collapsed (a 512-rank job stays one line).
std::string rank_list(const std::vector<int>& ranks);

// The roll call over a side channel, for a backend whose own transport cannot carry it (NCCL,
// which has no messages between hosts): an MPI communicator of the same ranks. Thread-safe.
class RollCallChannel {
 public:
  virtual ~RollCallChannel() = default;
  // Answers the questions peers have asked so far, without blocking: this rank waits in
  // collective `number` (what) for waited_s, or in none (waited_s < 0: number = collectives issued).
  virtual void answer(uint64_t number, double waited_s, const std::string& what) = 0;
  // Asks every peer, collects their answers for up to a second (answering theirs meanwhile) and
  // returns roll_call_report's sentences; this rank waits in collective `number` (what).
  virtual std::string take(uint64_t number, double waited_s, const std::string& what) = 0;
};
// Over the MPI communicator `mpi` (made by make_mpi_communicator; it may be destroyed after, the
// channel keeps what it needs). Null where `mpi` is not an MPI communicator or MPI is not built.
std::unique_ptr<RollCallChannel> make_mpi_roll_call(Communicator& mpi);

}  // namespace tessera::dist
