// AdamW over flat buffers, data-parallel and optionally ZeRO-1 sharded.
//
//   FlatParams flat(named_params(model.parameters()), {.pad = comm.world()});
//   FlatAdamW opt(flat, comm, {.adam = {.lr = 6e-4}, .max_norm = 1.0, .zero = true});
//   opt.backward(loss, /*last=*/true);  double norm = *opt.grad_norm();  opt.step(lr);
//
// The update is optim/adamw.h's (PyTorch's AdamW, decay first, decay on matrices only), run by the
// kernel table's adamw_step_flat over each flat range this rank owns: one launch for the whole
// buffer without ZeRO, one per bucket shard with it.
//
// Data parallel (world > 1): a dist::GradSync averages the gradients over ranks bucket by bucket
// during the last micro-batch's backward. Without ZeRO every rank then holds every mean gradient
// and every moment, and all ranks compute the same update. With ZeRO-1 (Rajbhandari et al. 2020,
// stage 1) the buckets are reduce-scattered instead: rank r keeps the moments (and the f32 master
// of a bf16 model) of its shard of each bucket only, about 1/world of them, updates that shard,
// and the parameters are all-gathered bucket by bucket afterwards. The gradient norm is global in
// both cases: without ZeRO each rank's full (identical) buffer gives it, with ZeRO the shards' sums
// of squares are all-reduced.
//
// Checkpoints hold the full per-parameter state whatever the world size (/optimizer/<name>/m, v,
// and master for bf16 parameters), so a run resumes at any world size. With ZeRO, state() gathers
// one parameter at a time (each owner broadcasts its pieces): rank 0 never holds more than one
// parameter's state beyond its own shard. load_state() takes this rank's pieces from the
// per-parameter tensors.
//
// Muon (optim/muon.h, optim.name muon): the parameters named in FlatAdamWOptions::muon (the
// blocks' matrices) take Muon's update instead of AdamW's, every other one AdamW's, in the same
// step: the gradient norm and clipping cover all of them, the AdamW kernel runs over the ranges
// between the Muon matrices. A Muon matrix keeps its momentum where AdamW keeps m (saved as
// /optimizer/<name>/momentum) and no v: v holds the AdamW parameters' only. Muon needs whole
// matrices on each rank, so it is not sharded (zero is refused); every rank computes the same
// update from the same mean gradients.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distributed/communicator.h"
#include "optim/adamw.h"
#include "optim/flat.h"
#include "optim/muon.h"
#include "optim/optimizer.h"

namespace tessera {
namespace dist {
class GradSync;
}

struct FlatAdamWOptions {
  AdamWOptions adam;
  double max_norm = 0;  // global gradient-norm clipping; 0 = off. The coefficient rides the
                        // update (adamw_step_flat's grad_scale): the gradients are not rewritten
  bool zero = false;    // ZeRO-1: shard the optimizer state over ranks
  // The most elements one adamw_step_flat launch updates: its decay bounds are i32 offsets, so a
  // longer owned range is split (a 3e9-parameter model on one GPU: 3 launches). Tests set it small.
  int64_t max_range = int64_t(1) << 30;
  // Parameters (2-D) updated by Muon instead of AdamW, with its options; empty: AdamW for all.
  std::vector<std::string> muon = {};
  MuonOptions muon_options = {};
};

class FlatAdamW : public Optimizer {
 public:
  FlatAdamW(FlatParams& flat, dist::Communicator& comm, FlatAdamWOptions options);
  ~FlatAdamW() override;

  std::string name() const override { return muon_.empty() ? "adamw" : "muon"; }
  void backward(const Tensor& loss, bool last) override;
  std::optional<double> grad_norm() override;
  double step(double lr) override;
  void zero_grad() override;

  int64_t step_count() const override { return t_; }
  void set_step_count(int64_t t) override;
  std::vector<StateTensor> state() override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& entries,
                  const std::string& path) override;
  int64_t state_bytes() const override;

  const std::vector<FlatRange>& owned() const { return owned_[size_t(comm_.rank())]; }
  double comm_wait_seconds() const override;

 private:
  struct Piece {  // a part of one parameter that some rank owns
    int rank;
    int64_t flat_begin, size;  // in the flat buffers
    int64_t local;             // offset in that rank's compact state
  };
  std::vector<Piece> pieces_of(const FlatParams::Slot& s) const;
  Tensor gather(const Tensor& local, const FlatParams::Slot& s);  // the slot's full state
  Tensor view(const Tensor& t, int64_t begin, int64_t size) const;
  Tensor matrix(const Tensor& flat, const FlatParams::Slot& s) const;  // s's (rows, cols) view
  bool is_muon(const FlatParams::Slot& s) const;
  int64_t v_offset(const FlatParams::Slot& s) const;  // into v_ (unsharded, with Muon)
  Tensor v_of(const FlatParams::Slot& s);             // s's v, gathered under ZeRO
  void muon_step(double lr, double coef);

  FlatParams& flat_;
  dist::Communicator& comm_;
  FlatAdamWOptions opt_;
  bool sharded_;                                // zero and world > 1
  std::unique_ptr<dist::GradSync> sync_;        // world > 1
  std::vector<std::vector<FlatRange>> owned_;   // per rank
  std::vector<std::vector<int64_t>> local_;     // per rank: compact offset of each owned range
  struct AdamRange {  // a range of this rank's state that AdamW updates (between Muon matrices)
    FlatRange flat;
    int64_t local, vlocal;  // offsets into m_ and master_, and into v_
    Tensor decay;           // FlatParams::decay_ranges
  };
  std::vector<AdamRange> adam_;
  std::vector<size_t> muon_;  // indices into flat_.slots() of the Muon matrices
  // This rank's compact state: m_ and master_ over its owned ranges (master_ aliases the values
  // unless bf16), v_ over its AdamW ranges.
  Tensor m_, v_, master_;
  bool own_master_ = false;
  std::optional<double> norm_;
  int64_t t_ = 0;
};

}  // namespace tessera
