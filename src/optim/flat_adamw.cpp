// FlatAdamW: see flat_adamw.h.
#include "optim/flat_adamw.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "autograd/autograd.h"
#include "backend/kernels.h"
#include "distributed/grad_sync.h"
#include "optim/clip.h"

namespace tessera {
namespace {

// Ranges of at most max_range elements (FlatAdamWOptions::max_range), in order.
std::vector<FlatRange> split_long(const std::vector<FlatRange>& ranges, int64_t max_range) {
  std::vector<FlatRange> out;
  for (const FlatRange& f : ranges)
    for (int64_t b = f.begin; b < f.end; b += max_range)
      out.push_back({b, std::min(f.end, b + max_range)});
  return out;
}

// f without the ranges in holes (sorted, disjoint), in order.
std::vector<FlatRange> subtract(const FlatRange& f, const std::vector<FlatRange>& holes) {
  std::vector<FlatRange> out;
  int64_t at = f.begin;
  for (const FlatRange& h : holes) {
    if (h.end <= at || h.begin >= f.end) continue;
    if (h.begin > at) out.push_back({at, h.begin});
    at = std::max(at, h.end);
  }
  if (at < f.end) out.push_back({at, f.end});
  return out;
}

}  // namespace

void FlatAdamW::Layout::add(int rank, FlatRange r) {
  std::vector<FlatRange>& rs = ranges[size_t(rank)];
  local[size_t(rank)].push_back(rs.empty() ? 0 : local[size_t(rank)].back() + rs.back().size());
  rs.push_back(r);
}

FlatAdamW::FlatAdamW(FlatParams& flat, dist::Communicator& comm, FlatAdamWOptions options)
    : flat_(flat), comm_(comm), opt_(options), sharded_(options.zero && comm.world() > 1) {
  const AdamWOptions& a = opt_.adam;
  TESSERA_CHECK(a.lr >= 0 && a.beta1 >= 0 && a.beta1 < 1 && a.beta2 >= 0 && a.beta2 < 1 &&
                    a.eps > 0 && a.weight_decay >= 0,
                "AdamW: lr ", a.lr, ", beta1 ", a.beta1, ", beta2 ", a.beta2, ", eps ", a.eps,
                ", weight_decay ", a.weight_decay,
                ": need lr >= 0, betas in [0, 1), eps > 0, weight_decay >= 0");
  TESSERA_CHECK(opt_.max_range > 0 && opt_.max_range < (int64_t(1) << 31),
                "FlatAdamW: max_range must be in [1, 2^31), got ", opt_.max_range);
  const std::vector<FlatRange> holes = place_muon();  // the Muon matrices, in buffer order
  // Muon's owners need the whole mean gradient of their matrices: with ZeRO-1 the buckets that
  // hold one are all-reduced, the others reduce-scattered.
  if (comm.world() > 1) {
    std::vector<bool> shard(flat.buckets().size(), sharded_);
    for (const MuonMatrix& mm : muon_) shard[flat.slots()[mm.slot].bucket] = false;
    sync_ = std::make_unique<dist::GradSync>(flat, comm, shard);
  }
  for (Layout* l : {&owned_, &adam_layout_}) {
    l->ranges.resize(size_t(comm.world()));
    l->local.resize(size_t(comm.world()));
  }
  for (int r = 0; r < comm.world(); ++r)
    for (const FlatRange& f :
         split_long(dist::GradSync::owned(flat, comm.world(), r, sharded_), opt_.max_range)) {
      owned_.add(r, f);
      for (const FlatRange& g : split_long(subtract(f, holes), opt_.max_range)) {
        adam_layout_.add(r, g);
        if (r == comm.rank())
          adam_.push_back({g, owned_.local[size_t(r)].back() + (g.begin - f.begin),
                           adam_layout_.local[size_t(r)].back(), flat.decay_ranges(g)});
      }
    }
  int64_t n = 0;
  for (const FlatRange& f : owned()) n += f.size();
  const int64_t nv = adam_.empty() ? 0 : adam_.back().alocal + adam_.back().flat.size();
  const DType param = flat.values().dtype();
  const Options so{param == DType::F64 ? DType::F64 : DType::F32, flat.device()};
  NoGradGuard no_grad;
  m_ = zeros({nv}, so);
  v_ = zeros({nv}, so);
  int64_t nmom = 0;
  for (const MuonMatrix& mm : muon_)
    if (mm.owner == comm.rank()) nmom = mm.local + flat.slots()[mm.slot].numel;
  mom_ = zeros({nmom}, so);
  own_master_ = param != so.dtype;
  if (own_master_) {
    master_ = Tensor::empty({n}, so);
    for (size_t i = 0; i < owned().size(); ++i)
      view(master_, owned_.local[size_t(comm.rank())][i], owned()[i].size())
          .copy_(view(flat.values(), owned()[i].begin, owned()[i].size()));
  }
}

FlatAdamW::~FlatAdamW() = default;

std::vector<FlatRange> FlatAdamW::place_muon() {
  std::vector<FlatRange> holes;
  std::vector<double> flops;  // each matrix's Newton-Schulz work
  for (size_t i = 0; i < flat_.slots().size(); ++i) {
    const FlatParams::Slot& s = flat_.slots()[i];
    if (std::find(opt_.muon.begin(), opt_.muon.end(), s.name) == opt_.muon.end()) continue;
    TESSERA_CHECK(s.param.dim() == 2, "Muon: ", s.name, " is ", s.param.str(), ", not a matrix");
    const int64_t rows = s.param.size(0), cols = s.param.size(1);
    std::vector<int64_t> blocks = {rows};
    if (auto it = opt_.muon_blocks.find(s.name); it != opt_.muon_blocks.end()) blocks = it->second;
    int64_t sum = 0;
    double work = 0;
    for (int64_t b : blocks) {
      TESSERA_CHECK(b > 0, "Muon: ", s.name, "'s row blocks must be positive, got ", b);
      sum += b;
      work += newton_schulz_flops(b, cols);
    }
    TESSERA_CHECK(sum == rows, "Muon: ", s.name, "'s row blocks must sum to its ", rows,
                  " rows, got ", sum);
    muon_.push_back({i, blocks, 0, 0});
    holes.push_back({s.offset, s.offset + s.numel});
    flops.push_back(work);
  }
  for (const std::string& name : opt_.muon)
    TESSERA_CHECK(
        std::any_of(muon_.begin(), muon_.end(),
                    [&](const MuonMatrix& m) { return flat_.slots()[m.slot].name == name; }),
        "Muon: no parameter named ", name);
  for (const auto& [name, blocks] : opt_.muon_blocks)
    TESSERA_CHECK(std::find(opt_.muon.begin(), opt_.muon.end(), name) != opt_.muon.end(),
                  "Muon: row blocks for ", name, ", which is not a Muon matrix");
  if (!muon_.empty()) check(opt_.muon_options);
  // Each matrix's owner; the momenta of this rank's matrices follow each other in mom_.
  const std::vector<int> owners = tessera::muon_owners(flops, comm_.world());
  int64_t at = 0;
  for (size_t k = 0; k < muon_.size(); ++k) {
    muon_[k].owner = owners[k];
    if (owners[k] != comm_.rank()) continue;
    muon_[k].local = at;
    at += flat_.slots()[muon_[k].slot].numel;
  }
  return holes;
}

Tensor FlatAdamW::view(const Tensor& t, int64_t begin, int64_t size) const {
  return make_view(t, {size}, {1}, t.offset() + begin);
}

void FlatAdamW::backward(const Tensor& loss, bool last) {
  if (sync_ && last) sync_->arm();
  tessera::backward(loss);
}

std::optional<double> FlatAdamW::grad_norm() {
  if (norm_) return norm_;
  if (sync_) sync_->finish();
  flat_.check_attached();
  std::vector<Tensor> pieces;
  for (const FlatRange& f : owned()) pieces.push_back(view(flat_.grads(), f.begin, f.size()));
  double sum = sum_of_squares(pieces);
  if (sharded_) sum = comm_.all_reduce_host({sum}, dist::ReduceOp::Sum)[0];
  norm_ = std::sqrt(sum);
  return norm_;
}

double FlatAdamW::step(double lr) {
  const double norm = *grad_norm();
  NoGradGuard no_grad;
  const double coef = clip_coefficient(norm, opt_.max_norm);
  t_ += 1;
  const AdamWOptions& a = opt_.adam;
  // Bias corrections in double: at t = 1 they are 1 - b (0.1, 0.05) and must not lose digits.
  const double bc1 = 1.0 - std::pow(a.beta1, double(t_));
  const double bc2 = 1.0 - std::pow(a.beta2, double(t_));
  const Tensor& grads = flat_.grads();  // read once: each call checks every slot's view
  for (const AdamRange& r : adam_) {
    const FlatRange& f = r.flat;
    const Tensor p = view(flat_.values(), f.begin, f.size());
    const Tensor master = own_master_ ? view(master_, r.local, f.size()) : p;
    const Tensor m = view(m_, r.alocal, f.size()), v = view(v_, r.alocal, f.size());
    const Tensor g = view(grads, f.begin, f.size());
    const auto adamw = TESSERA_KERNEL(p, adamw_step_flat);
    adamw(p, master, m, v, g, r.decay, lr, a.beta1, a.beta2, a.eps, a.weight_decay, bc1, bc2, coef);
  }
  if (!muon_.empty()) muon_step(lr, coef);
  if (sharded_)
    for (const FlatParams::Bucket& b : flat_.buckets())
      comm_.all_gather(view(flat_.values(), b.range.begin, b.range.size()));
  zero_grad();
  return norm;
}

Tensor FlatAdamW::matrix(const Tensor& flat, const FlatParams::Slot& s) const {
  const Shape& shape = s.param.shape();
  return make_view(flat, shape, contiguous_strides(shape), flat.offset() + s.offset);
}

// Each owner updates the momenta of its matrices and orthogonalises them, block by block, over
// their gradients (scratch after the momentum update: zero again after the step); the results go
// out from there, one broadcast a matrix issued in buffer order, so an owner's later matrices
// overlap the earlier ones' transfers. Then every rank applies each result to the values it holds.
void FlatAdamW::muon_step(double lr, double coef) {
  const MuonOptions& o = opt_.muon_options;
  const int me = comm_.rank();
  const Tensor& grads = flat_.grads();  // read once: each call checks every slot's view
  // The row blocks of a tensor of mm's shape, each (rows, cols) and contiguous.
  auto blocks_of = [](const Tensor& m, const MuonMatrix& mm) {
    std::vector<Tensor> out;
    int64_t row = 0;
    for (int64_t rows : mm.blocks) {
      out.push_back(m.narrow(0, row, rows));
      row += rows;
    }
    return out;
  };
  // B = momentum B + g, then U = g + momentum B (Nesterov) or B, written over the gradient.
  std::vector<Tensor> updates;  // this rank's blocks
  for (const MuonMatrix& mm : muon_) {
    if (mm.owner != me) continue;
    const FlatParams::Slot& s = flat_.slots()[mm.slot];
    Tensor g = matrix(grads, s);
    const Tensor b = view(mom_, mm.local, s.numel).view(s.param.shape());
    TESSERA_KERNEL(g, axpby)(b, coef, g, o.momentum, b);
    if (o.nesterov)
      TESSERA_KERNEL(g, axpby)(g, coef, g, o.momentum, b);
    else
      g.copy_(b);
    for (const Tensor& u : blocks_of(g, mm)) updates.push_back(u);
  }
  const std::vector<double> sums = sums_of_squares(updates);  // one transfer
  std::vector<dist::WorkHandle> sent;
  size_t next = 0;
  for (const MuonMatrix& mm : muon_) {
    const Tensor g = matrix(grads, flat_.slots()[mm.slot]);
    if (mm.owner == me)
      for (Tensor u : blocks_of(g, mm)) u.copy_(newton_schulz(u, std::sqrt(sums[next++]), o));
    if (comm_.world() > 1) sent.push_back(comm_.broadcast_async(g, mm.owner));
  }
  for (dist::WorkHandle& h : sent) h->wait();
  const double decay = 1.0 - lr * opt_.adam.weight_decay;
  for (const MuonMatrix& mm : muon_) {
    const FlatParams::Slot& s = flat_.slots()[mm.slot];
    const int64_t cols = s.param.size(1);
    for (const Piece& p : pieces_of(s, owned_)) {
      if (p.rank != me) continue;
      int64_t at = s.offset;  // each block's part of the piece, at the block's rate
      for (int64_t rows : mm.blocks) {
        const int64_t b = std::max(at, p.flat_begin);
        const int64_t e = std::min(at + rows * cols, p.flat_begin + p.size);
        at += rows * cols;
        if (b >= e) continue;
        Tensor w = view(flat_.values(), b, e - b);
        const Tensor master = own_master_ ? view(master_, p.local + (b - p.flat_begin), e - b) : w;
        const Tensor x = view(grads, b, e - b);  // the matrix's O, over its gradient
        const double step = lr * muon_lr_ratio(o, rows, cols);
        TESSERA_KERNEL(w, axpby)(master, decay, master, -step, x);
        if (own_master_) w.copy_(master);
      }
    }
  }
}

const FlatAdamW::MuonMatrix* FlatAdamW::muon_of(const FlatParams::Slot& s) const {
  for (const MuonMatrix& mm : muon_)
    if (&flat_.slots()[mm.slot] == &s) return &mm;
  return nullptr;
}

Tensor FlatAdamW::momentum_of(const MuonMatrix& mm) {
  const FlatParams::Slot& s = flat_.slots()[mm.slot];
  if (comm_.world() == 1) return view(mom_, mm.local, s.numel).view(s.param.shape());
  NoGradGuard no_grad;
  Tensor out = Tensor::empty(s.param.shape(), mom_.options());
  if (mm.owner == comm_.rank()) out.copy_(view(mom_, mm.local, s.numel).view(s.param.shape()));
  comm_.broadcast(out, mm.owner);
  return out;
}

std::vector<std::pair<std::string, int>> FlatAdamW::muon_owners() const {
  std::vector<std::pair<std::string, int>> out;
  for (const MuonMatrix& mm : muon_) out.emplace_back(flat_.slots()[mm.slot].name, mm.owner);
  return out;
}

void FlatAdamW::zero_grad() {
  if (sync_ && !norm_) sync_->finish();  // collectives in flight must end before the buffer is reused
  flat_.zero_grad();
  norm_.reset();
}

void FlatAdamW::set_step_count(int64_t t) {
  TESSERA_CHECK(t >= 0, "AdamW: step count must be >= 0, got ", t);
  t_ = t;
}

std::vector<FlatAdamW::Piece> FlatAdamW::pieces_of(const FlatParams::Slot& s,
                                                   const Layout& l) const {
  std::vector<Piece> out;
  for (int r = 0; r < int(l.ranges.size()); ++r) {
    if (!sharded_ && r != comm_.rank()) continue;
    for (size_t i = 0; i < l.ranges[size_t(r)].size(); ++i) {
      const FlatRange& f = l.ranges[size_t(r)][i];
      const int64_t b = std::max(f.begin, s.offset), e = std::min(f.end, s.offset + s.numel);
      if (b < e) out.push_back({r, b, e - b, l.local[size_t(r)][i] + (b - f.begin)});
    }
  }
  return out;
}

Tensor FlatAdamW::gather(const Tensor& local, const FlatParams::Slot& s, const Layout& l) {
  const Shape& shape = s.param.shape();
  const std::vector<Piece> pieces = pieces_of(s, l);
  TESSERA_CHECK(!pieces.empty(), "FlatAdamW: ", s.name, " has no state in this layout");
  // Unsharded, the slot is one run of this rank's compact tensor (its ranges follow each other).
  if (!sharded_)
    return make_view(local, shape, contiguous_strides(shape), local.offset() + pieces[0].local);
  NoGradGuard no_grad;
  Tensor out = Tensor::empty({s.numel}, local.options());
  for (const Piece& p : pieces) {
    Tensor dst = view(out, p.flat_begin - s.offset, p.size);
    if (p.rank == comm_.rank()) dst.copy_(view(local, p.local, p.size));
    comm_.broadcast(dst, p.rank);
  }
  return out.view(shape);
}

std::vector<StateTensor> FlatAdamW::state() {
  std::vector<StateTensor> out;
  std::map<std::string, const FlatParams::Slot*> by_name;
  for (const FlatParams::Slot& s : flat_.slots()) by_name[s.name] = &s;
  for (const NamedParam& p : flat_.params()) {  // the model's order, as checkpoints list them
    const FlatParams::Slot* s = by_name.at(p.name);
    if (const MuonMatrix* mm = muon_of(*s)) {
      out.push_back({p.name + "/momentum", [this, mm] { return momentum_of(*mm); }});
    } else {
      out.push_back({p.name + "/m", [this, s] { return gather(m_, *s, adam_layout_); }});
      out.push_back({p.name + "/v", [this, s] { return gather(v_, *s, adam_layout_); }});
    }
    // A bf16 parameter's f32 master: resume needs its low bits. f32 parameters are their master.
    if (own_master_)
      out.push_back({p.name + "/master", [this, s] { return gather(master_, *s, owned_); }});
  }
  return out;
}

void FlatAdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& entries,
                           const std::string& path) {
  std::map<std::string, const Tensor*> saved;
  for (const auto& [key, t] : entries) saved[key] = &t;
  std::set<std::string> used;
  auto find = [&](const FlatParams::Slot& s, const char* what, bool required) -> const Tensor* {
    auto it = saved.find(s.name + "/" + what);
    if (it == saved.end()) {
      TESSERA_CHECK(!required, "checkpoint ", path, ": no ", muon_of(s) ? "Muon" : "AdamW",
                    " state for ", s.name,
                    " (resume with the optimizer it was saved with; "
                    "--init takes the weights alone)");
      return nullptr;
    }
    used.insert(it->first);
    const Tensor& t = *it->second;
    TESSERA_CHECK(t.shape() == s.param.shape() && is_floating(t.dtype()), "checkpoint ", path,
                  ": optimizer state ", s.name, "/", what, " is ", t.str(), " but the parameter is ",
                  s.param.str());
    return &t;
  };
  // Everything is checked before anything is copied: each slot's entries, then leftovers.
  struct Found {
    const Tensor *m, *v, *master;  // m: the momentum of a Muon matrix
  };
  std::vector<Found> found;
  for (const FlatParams::Slot& s : flat_.slots()) {
    if (muon_of(s))
      found.push_back({find(s, "momentum", true), nullptr, find(s, "master", false)});
    else
      found.push_back({find(s, "m", true), find(s, "v", true), find(s, "master", false)});
  }
  for (const auto& [key, t] : saved)
    TESSERA_CHECK(used.count(key), "checkpoint ", path, ": optimizer state '", key,
                  "' belongs to no parameter of this model");

  NoGradGuard no_grad;
  const int me = comm_.rank();
  for (size_t i = 0; i < flat_.slots().size(); ++i) {
    const FlatParams::Slot& s = flat_.slots()[i];
    const Tensor m = found[i].m->contiguous();
    const Tensor master = found[i].master ? found[i].master->contiguous() : Tensor();
    auto part = [&](const Tensor& t, const Piece& p) {
      return make_view(t, {p.size}, {1}, t.offset() + (p.flat_begin - s.offset));
    };
    if (const MuonMatrix* mm = muon_of(s)) {
      if (mm->owner == me) view(mom_, mm->local, s.numel).copy_(m.view({s.numel}));
    } else {
      const Tensor v = found[i].v->contiguous();
      for (const Piece& p : pieces_of(s, adam_layout_)) {
        if (p.rank != me) continue;
        view(m_, p.local, p.size).copy_(part(m, p));
        view(v_, p.local, p.size).copy_(part(v, p));
      }
    }
    for (const Piece& p : pieces_of(s, owned_)) {
      // f32 parameters are their own master: a bf16 run's saved master (a CUDA checkpoint resumed
      // on the CPU) holds the low bits its bf16 weights lost, so it replaces them, on every rank
      // (the values are whole on each).
      if (!own_master_ && master.defined())
        view(flat_.values(), p.flat_begin, p.size).copy_(part(master, p));
      if (p.rank != me || !own_master_) continue;
      // Without a saved master (an older file) it restarts from the weights just loaded.
      Tensor dst = view(master_, p.local, p.size);
      if (master.defined()) {
        dst.copy_(part(master, p));
        view(flat_.values(), p.flat_begin, p.size).copy_(dst);  // the rounded master
      } else {
        dst.copy_(view(flat_.values(), p.flat_begin, p.size));
      }
    }
  }
}

int64_t FlatAdamW::state_bytes() const {
  return int64_t(m_.nbytes() + v_.nbytes() + mom_.nbytes() + (own_master_ ? master_.nbytes() : 0));
}

double FlatAdamW::comm_wait_seconds() const { return sync_ ? sync_->exposed_seconds() : 0.0; }

}  // namespace tessera
