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
// between the Muon matrices. A Muon matrix keeps a momentum (saved as /optimizer/<name>/momentum)
// and no m or v. Newton-Schulz needs a whole matrix, so under data parallelism each matrix has one
// owner rank (muon_owners: the largest first, to the least loaded rank): the owner alone keeps its
// momentum and orthogonalises it, then broadcasts the result (written over the matrix's gradient,
// so nothing is allocated for it), and every rank applies it to the values it holds, all of them
// or, with ZeRO-1, its shards'. The Newton-Schulz work and the momenta are divided over the ranks
// whether or not the AdamW state is sharded. With ZeRO-1 the buckets that hold a Muon matrix are
// all-reduced rather than reduce-scattered (an owner needs the whole mean gradient of its
// matrices), the others reduce-scattered; AdamW's moments and the f32 masters are sharded as
// without Muon.
#pragma once

#include <map>
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
  // Muon matrices orthogonalised in row blocks, each block a map of its own with its own lr ratio
  // (GPT-2's fused c_attn as q, k and v: nn::muon_qkv_blocks): name -> the blocks' row counts.
  std::map<std::string, std::vector<int64_t>> muon_blocks = {};
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

  const std::vector<FlatRange>& owned() const { return owned_.ranges[size_t(comm_.rank())]; }
  // The rank that orthogonalises each Muon matrix, by name (empty without Muon).
  std::vector<std::pair<std::string, int>> muon_owners() const;
  double comm_wait_seconds() const override;

 private:
  // Where each rank keeps its compact state: the flat ranges it holds, per rank, and their offsets
  // in its tensors. master_ follows the owned ranges (every owned element); m_ and v_ the AdamW
  // ranges (the owned ranges minus the Muon matrices).
  struct Layout {
    std::vector<std::vector<FlatRange>> ranges;  // per rank
    std::vector<std::vector<int64_t>> local;     // per rank: each range's compact offset
    void add(int rank, FlatRange r);             // appended after that rank's last range
  };
  struct Piece {  // a part of one parameter that some rank holds
    int rank;
    int64_t flat_begin, size;  // in the flat buffers
    int64_t local;             // offset in that rank's compact tensor
  };
  // s's pieces in a layout: every rank's when sharded, else this rank's (every rank holds all).
  std::vector<Piece> pieces_of(const FlatParams::Slot& s, const Layout& l) const;
  Tensor gather(const Tensor& local, const FlatParams::Slot& s, const Layout& l);  // s's state
  Tensor view(const Tensor& t, int64_t begin, int64_t size) const;
  Tensor matrix(const Tensor& flat, const FlatParams::Slot& s) const;  // s's (rows, cols) view
  struct MuonMatrix {
    size_t slot;                  // index into flat_.slots()
    std::vector<int64_t> blocks;  // the row counts of the blocks orthogonalised apart
    int owner;                    // the rank that keeps its momentum and orthogonalises it
    int64_t local;                // its momentum's offset in mom_ (owner only)
  };
  // Finds the Muon matrices (checking the options), picks their owners and this rank's momentum
  // offsets; returns their flat ranges, in buffer order.
  std::vector<FlatRange> place_muon();
  const MuonMatrix* muon_of(const FlatParams::Slot& s) const;  // nullptr: AdamW's
  Tensor momentum_of(const MuonMatrix& mm);                    // broadcast from its owner
  void muon_step(double lr, double coef);

  FlatParams& flat_;
  dist::Communicator& comm_;
  FlatAdamWOptions opt_;
  bool sharded_;                          // zero and world > 1
  std::unique_ptr<dist::GradSync> sync_;  // world > 1
  Layout owned_, adam_layout_;
  struct AdamRange {  // a range of this rank's state that AdamW updates (between Muon matrices)
    FlatRange flat;
    int64_t local, alocal;  // offsets into master_, and into m_ and v_
    Tensor decay;           // FlatParams::decay_ranges
  };
  std::vector<AdamRange> adam_;
  std::vector<MuonMatrix> muon_;  // in buffer order
  // This rank's compact state: master_ over its owned ranges (aliasing the values unless bf16),
  // m_ and v_ over its AdamW ranges, mom_ the momenta of the Muon matrices it owns.
  Tensor m_, v_, mom_, master_;
  bool own_master_ = false;
  std::optional<double> norm_;
  int64_t t_ = 0;
};

}  // namespace tessera
