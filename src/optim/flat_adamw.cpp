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
  std::vector<FlatRange> holes;  // the Muon matrices, in buffer order
  for (size_t i = 0; i < flat.slots().size(); ++i) {
    const FlatParams::Slot& s = flat.slots()[i];
    if (std::find(opt_.muon.begin(), opt_.muon.end(), s.name) == opt_.muon.end()) continue;
    TESSERA_CHECK(s.param.dim() == 2, "Muon: ", s.name, " is ", s.param.str(), ", not a matrix");
    muon_.push_back(i);
    holes.push_back({s.offset, s.offset + s.numel});
  }
  for (const std::string& name : opt_.muon)
    TESSERA_CHECK(std::any_of(muon_.begin(), muon_.end(),
                              [&](size_t i) { return flat.slots()[i].name == name; }),
                  "Muon: no parameter named ", name);
  TESSERA_CHECK(muon_.empty() || !sharded_,
                "Muon orthogonalises whole matrices: its state is not sharded (ZeRO-1) over ranks");
  if (!muon_.empty()) check(opt_.muon_options);
  if (comm.world() > 1) sync_ = std::make_unique<dist::GradSync>(flat, comm, sharded_);
  for (int r = 0; r < comm.world(); ++r) {
    owned_.push_back(
        split_long(dist::GradSync::owned(flat, comm.world(), r, sharded_), opt_.max_range));
    std::vector<int64_t> local;
    int64_t at = 0;
    for (const FlatRange& f : owned_.back()) {
      local.push_back(at);
      at += f.size();
    }
    local_.push_back(std::move(local));
  }
  int64_t n = 0, nv = 0;
  for (size_t i = 0; i < owned().size(); ++i) {
    const FlatRange& f = owned()[i];
    for (const FlatRange& a : split_long(subtract(f, holes), opt_.max_range)) {
      adam_.push_back(
          {a, local_[size_t(comm.rank())][i] + (a.begin - f.begin), nv, flat.decay_ranges(a)});
      nv += a.size();
    }
    n += f.size();
  }
  const DType param = flat.values().dtype();
  const Options so{param == DType::F64 ? DType::F64 : DType::F32, flat.device()};
  NoGradGuard no_grad;
  m_ = zeros({n}, so);
  v_ = zeros({nv}, so);
  own_master_ = param != so.dtype;
  if (own_master_) {
    master_ = Tensor::empty({n}, so);
    for (size_t i = 0; i < owned().size(); ++i)
      view(master_, local_[size_t(comm.rank())][i], owned()[i].size())
          .copy_(view(flat.values(), owned()[i].begin, owned()[i].size()));
  }
}

FlatAdamW::~FlatAdamW() = default;

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
  for (const AdamRange& r : adam_) {
    const FlatRange& f = r.flat;
    const Tensor p = view(flat_.values(), f.begin, f.size());
    const Tensor master = own_master_ ? view(master_, r.local, f.size()) : p;
    const Tensor m = view(m_, r.local, f.size()), v = view(v_, r.vlocal, f.size());
    const Tensor g = view(flat_.grads(), f.begin, f.size());
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

// Unsharded, as Muon is: the compact offsets of m_ and master_ are the flat ones.
void FlatAdamW::muon_step(double lr, double coef) {
  const MuonOptions& o = opt_.muon_options;
  // B = momentum B + g, then U = g + momentum B (Nesterov) or B, written over the gradient (zero
  // again after the step).
  std::vector<Tensor> updates;
  for (size_t i : muon_) {
    const FlatParams::Slot& s = flat_.slots()[i];
    Tensor g = matrix(flat_.grads(), s);
    const Tensor b = matrix(m_, s);
    TESSERA_KERNEL(g, axpby)(b, coef, g, o.momentum, b);
    if (o.nesterov)
      TESSERA_KERNEL(g, axpby)(g, coef, g, o.momentum, b);
    else
      g.copy_(b);
    updates.push_back(g);
  }
  const std::vector<double> sums = sums_of_squares(updates);  // one transfer
  const double decay = 1.0 - lr * opt_.adam.weight_decay;
  for (size_t k = 0; k < muon_.size(); ++k) {
    const FlatParams::Slot& s = flat_.slots()[muon_[k]];
    const Tensor o_t = newton_schulz(updates[k], std::sqrt(sums[k]), o);
    Tensor p = matrix(flat_.values(), s);
    const Tensor master = own_master_ ? matrix(master_, s) : p;
    const double step = lr * muon_lr_ratio(o, s.param.size(0), s.param.size(1));
    TESSERA_KERNEL(p, axpby)(master, decay, master, -step, o_t);
    if (own_master_) p.copy_(master);
  }
}

bool FlatAdamW::is_muon(const FlatParams::Slot& s) const {
  return std::any_of(muon_.begin(), muon_.end(), [&](size_t i) { return &flat_.slots()[i] == &s; });
}

Tensor FlatAdamW::v_of(const FlatParams::Slot& s) {
  if (muon_.empty()) return gather(v_, s);  // v's offsets are m's
  const Shape& shape = s.param.shape();     // unsharded, v_ holding the AdamW parameters alone
  return make_view(v_, shape, contiguous_strides(shape), v_.offset() + v_offset(s));
}

int64_t FlatAdamW::v_offset(const FlatParams::Slot& s) const {
  for (const AdamRange& r : adam_)
    if (s.offset >= r.flat.begin && s.offset < r.flat.end)
      return r.vlocal + (s.offset - r.flat.begin);
  TESSERA_FAIL("FlatAdamW: ", s.name, " has no AdamW state");
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

std::vector<FlatAdamW::Piece> FlatAdamW::pieces_of(const FlatParams::Slot& s) const {
  // Without sharding every rank owns everything (compact offsets are flat offsets).
  if (!sharded_) return {{comm_.rank(), s.offset, s.numel, s.offset}};
  std::vector<Piece> out;
  for (int r = 0; r < int(owned_.size()); ++r)
    for (size_t i = 0; i < owned_[size_t(r)].size(); ++i) {
      const FlatRange& f = owned_[size_t(r)][i];
      const int64_t b = std::max(f.begin, s.offset), e = std::min(f.end, s.offset + s.numel);
      if (b < e) out.push_back({r, b, e - b, local_[size_t(r)][i] + (b - f.begin)});
    }
  return out;
}

Tensor FlatAdamW::gather(const Tensor& local, const FlatParams::Slot& s) {
  const Shape& shape = s.param.shape();
  if (!sharded_) return make_view(local, shape, contiguous_strides(shape), local.offset() + s.offset);
  NoGradGuard no_grad;
  Tensor out = Tensor::empty({s.numel}, local.options());
  for (const Piece& p : pieces_of(s)) {
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
    if (is_muon(*s)) {
      out.push_back({p.name + "/momentum", [this, s] { return matrix(m_, *s); }});
    } else {
      out.push_back({p.name + "/m", [this, s] { return gather(m_, *s); }});
      out.push_back({p.name + "/v", [this, s] { return v_of(*s); }});
    }
    // A bf16 parameter's f32 master: resume needs its low bits. f32 parameters are their master.
    if (own_master_) out.push_back({p.name + "/master", [this, s] { return gather(master_, *s); }});
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
      TESSERA_CHECK(!required, "checkpoint ", path, ": no ", is_muon(s) ? "Muon" : "AdamW",
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
    const Tensor *m, *v, *master;
  };
  std::vector<Found> found;
  for (const FlatParams::Slot& s : flat_.slots()) {
    if (is_muon(s))
      found.push_back({find(s, "momentum", true), nullptr, find(s, "master", false)});
    else
      found.push_back({find(s, "m", true), find(s, "v", true), find(s, "master", false)});
  }
  for (const auto& [key, t] : saved)
    TESSERA_CHECK(used.count(key), "checkpoint ", path, ": optimizer state '", key,
                  "' belongs to no parameter of this model");

  NoGradGuard no_grad;
  for (size_t i = 0; i < flat_.slots().size(); ++i) {
    const FlatParams::Slot& s = flat_.slots()[i];
    const Tensor m = found[i].m->contiguous();
    const Tensor v = found[i].v ? found[i].v->contiguous() : Tensor();
    const Tensor master = found[i].master ? found[i].master->contiguous() : Tensor();
    for (const Piece& p : pieces_of(s)) {
      const int64_t from = p.flat_begin - s.offset;
      auto part = [&](const Tensor& t) { return make_view(t, {p.size}, {1}, t.offset() + from); };
      // f32 parameters are their own master: a bf16 run's saved master (a CUDA checkpoint resumed
      // on the CPU) holds the low bits its bf16 weights lost, so it replaces them, on every rank
      // (the values are whole on each).
      if (!own_master_ && master.defined())
        view(flat_.values(), p.flat_begin, p.size).copy_(part(master));
      if (p.rank != comm_.rank()) continue;
      view(m_, p.local, p.size).copy_(part(m));
      if (v.defined())
        view(v_, muon_.empty() ? p.local : v_offset(s) + from, p.size).copy_(part(v));
      if (!own_master_) continue;
      // Without a saved master (an older file) it restarts from the weights just loaded.
      Tensor dst = view(master_, p.local, p.size);
      if (master.defined()) {
        dst.copy_(part(master));
        view(flat_.values(), p.flat_begin, p.size).copy_(dst);  // the rounded master
      } else {
        dst.copy_(view(flat_.values(), p.flat_begin, p.size));
      }
    }
  }
}

int64_t FlatAdamW::state_bytes() const {
  return int64_t(m_.nbytes() + v_.nbytes() + (own_master_ ? master_.nbytes() : 0));
}

double FlatAdamW::comm_wait_seconds() const { return sync_ ? sync_->exposed_seconds() : 0.0; }

}  // namespace tessera
