// Validation loss: see trainer.h.
#include <algorithm>

#include "autograd/autograd.h"
#include "distributed/communicator.h"
#include "train/options.h"
#include "train/trainer.h"

namespace tessera::train {

double evaluate(const nn::GPT& model, const Config& cfg, const std::string& pattern,
                int64_t batches, dist::Communicator* comm) {
  NoGradGuard no_grad;
  data::DataLoader loader(loader_options(cfg, "data.val", pattern, false));
  const int64_t n = std::min(batches, loader.batches_per_epoch());
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world() : 1;
  // Batch i is rank i mod world's: the same batches, and the same mean, at any world size.
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    data::Batch b = loader.next();
    if (i % world == rank)
      sum += model.loss(b.inputs, b.targets, false).item();  // host batch: see GPT::loss
  }
  if (world > 1) sum = comm->all_reduce_host({sum}, dist::ReduceOp::Sum)[0];
  return sum / double(n);
}

}  // namespace tessera::train
