// Data-parallel gradient sync: bucketed, asynchronous, overlapped with backward.
//
//   GradSync sync(flat, comm, /*shard=*/false);   // registers a gradient-ready hook per parameter
//   for (micro ...) { if (last) sync.arm(); backward(loss); }
//   sync.finish();     // every bucket reduced: flat.grads() is the mean over all ranks
//
// While armed (the last micro-batch of a step; earlier ones only accumulate locally), each
// parameter's hook marks it ready; a bucket (optim/flat.h) whose parameters are all ready starts
// its collective on the communicator at once, while backward goes on with the layers below. Buckets
// start strictly in buffer order, waiting for earlier ones to be ready, so every rank issues the
// same collectives in the same order whatever order its hooks fire in. finish() starts any bucket
// still waiting (a parameter without a gradient this step) and waits for all of them.
//
// shard = false: each bucket is all-reduced (average). shard = true (ZeRO-1): each bucket is
// reduce-scattered (average), and afterwards only this rank's shard of every bucket
// (dist::shard_range of the bucket) holds the mean; the rest of the buffer is stale.
//
// The mean is over ranks; each micro-batch's loss was already divided by the micro-batch count, so
// the result is the mean over the global batch.
#pragma once

#include <memory>
#include <vector>

#include "distributed/communicator.h"
#include "optim/flat.h"

namespace tessera::dist {

class GradSync {
 public:
  GradSync(const FlatParams& flat, Communicator& comm, bool shard);
  // Per bucket: reduce-scattered where true, all-reduced where false (FlatAdamW under ZeRO-1 with
  // Muon: a bucket holding a Muon matrix is all-reduced, its owner needing the whole mean).
  GradSync(const FlatParams& flat, Communicator& comm, std::vector<bool> shard);
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  void arm();     // the next backward is the step's last
  void finish();  // starts what is left, waits for everything, disarms

  // The flat ranges this rank owns after finish(): the whole buffer, or its shard of each bucket.
  static std::vector<FlatRange> owned(const FlatParams& flat, int world, int rank, bool shard);

  double exposed_seconds() const;  // total time finish() spent waiting (communication not hidden)
  int64_t bytes_reduced() const;   // total gradient bytes handed to collectives

 private:
  struct Core;  // shared with the hooks, which hold it weakly (hooks cannot be unregistered)
  std::shared_ptr<Core> core_;
};

}  // namespace tessera::dist
