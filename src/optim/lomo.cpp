// LOMO and AdaLomo inside gradient-ready hooks: the bookkeeping of the passes here, the updates
// through the kernel table (lomo_grad_sum_squares, lomo_step, adalomo_step: backend/kernels.h; the
// CPU twins in src/backend/cpu/optim.cpp hold the element loops, kernels/optim.cu the CUDA ones),
// so one code path serves both devices. Each hook writes its gradient's sum of squares into its
// slot of a small f64 buffer on the parameters' device; the norm is read back once per pass and
// added up in parameter order, so a CUDA pass synchronises with the host once, not per parameter.
#include "optim/lomo.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <unordered_map>
#include <vector>

#include "autograd/autograd.h"
#include "backend/kernels.h"

namespace tessera {
namespace {

enum class Pass { Idle, Norm, Update };

// f64 parameters keep f64 state (so tests can compare against double arithmetic); all others f32.
DType state_dtype(DType param) { return param == DType::F64 ? DType::F64 : DType::F32; }

bool same_data(const Tensor& a, const Tensor& b) {
  return a.device() == b.device() && a.data_ptr() == b.data_ptr();
}

}  // namespace

struct FusedOptimizer::Core {
  struct Slot {
    bool matrix = false;  // dim() >= 2: decayed, and AdaLomo factors its second moment
    int64_t rows = 0, cols = 0;
    Tensor master;           // aliases the parameter unless the parameter is bf16
    Tensor row, col, v;      // AdaLomo: R, C for a matrix, v for a vector
  };

  LomoOptions opt;
  bool ada = false;
  std::vector<NamedParam> params;
  std::vector<Slot> slots;  // slots[i] belongs to params[i]
  Tensor norms;             // f64 (params), on their device: sum of (g / loss_scale)^2, this pass
  Pass pass = Pass::Idle;
  double lr = 0, coef = 1;
  int64_t t = 0;
  int64_t peak_grad_bytes = 0;

  double norm() const {
    double total = 0.0;  // in parameter order, as clip_grad_norm adds them
    if (norms.numel() == 0) return 0.0;
    for (double x : norms.to(Device::cpu()).to_vector<double>()) total += x;  // the one sync
    return std::sqrt(total);
  }

  void on_grad(size_t i, Tensor& p);
  // Adds g's squares to the norm, then (update pass) updates p and its state.
  void take(size_t i, const Tensor& p, const Tensor& g);

  // Sets the pass for one backward. The pass ends however backward returns, and what a failed
  // backward left behind is dropped, so the next pass does not take it for a stale gradient.
  class Scope {
   public:
    Scope(Core& c, Pass pass, const char* what);
    ~Scope() {
      c_.pass = Pass::Idle;
      for (auto& np : c_.params) np.param.zero_grad();
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Core& c_;
  };
};

FusedOptimizer::Core::Scope::Scope(Core& c, Pass pass, const char* what) : c_(c) {
  TESSERA_CHECK(c.pass == Pass::Idle, "FusedOptimizer::", what,
                ": called from inside a pass (a hook or a nested backward)");
  for (const auto& np : c.params)
    TESSERA_CHECK(!np.param.grad().defined(), "FusedOptimizer::", what, ": parameter '", np.name,
                  "' already holds a gradient ", np.param.grad().str(),
                  " from an earlier backward; LOMO updates inside backward and cannot "
                  "accumulate gradients (drop it with zero_grad() first)");
  if (c.norms.numel() > 0) c.norms.fill_(0.0);
  c.peak_grad_bytes = 0;
  c.pass = pass;
}

void FusedOptimizer::Core::on_grad(size_t i, Tensor& p) {
  if (pass == Pass::Idle) return;  // somebody else's backward: leave the gradient alone
  // Gradients alive now: this one, the others the current op delivered, and any still waiting for a
  // later contribution (a tied embedding's). Every increase happens right before some hook runs, so
  // sampling here finds the maximum.
  int64_t held = 0;
  for (const auto& np : params)
    if (np.param.grad().defined()) held += int64_t(np.param.grad().nbytes());
  peak_grad_bytes = std::max(peak_grad_bytes, held);

  // The engine keeps no other reference to a leaf's gradient: once p's is reset, g is the last
  // handle and the memory goes back to the allocator when this function returns.
  const Tensor g = p.grad();
  p.zero_grad();
  if (!g.defined() || g.numel() == 0) return;
  TESSERA_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype() && g.is_contiguous(),
                "FusedOptimizer: gradient of '", params[i].name, "' is ", g.str(),
                " but the parameter is ", p.str());
  TESSERA_CHECK(g.dtype() == DType::F32 || g.dtype() == DType::F64 || g.dtype() == DType::BF16,
                "FusedOptimizer: parameter '", params[i].name, "' has dtype ",
                dtype_name(g.dtype()));
  take(i, p, g);
}

void FusedOptimizer::Core::take(size_t i, const Tensor& p, const Tensor& g) {
  const Slot& s = slots[i];
  TESSERA_KERNEL(g, lomo_grad_sum_squares)(norms.narrow(0, int64_t(i), 1), g, opt.loss_scale);
  if (pass == Pass::Norm) return;

  const LomoGrad prep{.loss_scale = opt.loss_scale, .clip_value = opt.clip_value,
                      .clip_coef = coef};
  const double wd = s.matrix ? opt.weight_decay : 0.0;
  if (!ada) {
    TESSERA_KERNEL(p, lomo_step)(p, s.master, g, prep, lr, 1.0 - lr * wd);
    return;
  }
  const double beta2 = 1.0 - std::pow(double(t), -0.8);  // AdaLomo's beta2_t; 0 at t = 1
  TESSERA_KERNEL(p, adalomo_step)(p, s.master, g, s.row, s.col, s.v, prep, beta2, lr, wd);
}

FusedOptimizer::FusedOptimizer(std::vector<NamedParam> params, LomoOptions opt)
    : core_(std::make_shared<Core>()) {
  Core& c = *core_;
  TESSERA_CHECK(opt.name == "lomo" || opt.name == "adalomo",
                "FusedOptimizer: name must be lomo or adalomo, got '", opt.name, "'");
  TESSERA_CHECK(opt.weight_decay >= 0, "FusedOptimizer: weight_decay must be >= 0, got ",
                opt.weight_decay);
  TESSERA_CHECK(opt.clip_value >= 0, "FusedOptimizer: clip_value must be >= 0 (0 = off), got ",
                opt.clip_value);
  TESSERA_CHECK(opt.loss_scale > 0 && std::isfinite(opt.loss_scale),
                "FusedOptimizer: loss_scale must be finite and > 0, got ", opt.loss_scale);
  TESSERA_CHECK(opt.max_norm >= 0, "FusedOptimizer: max_norm must be >= 0 (0 = off), got ",
                opt.max_norm);
  c.opt = opt;
  c.ada = opt.name == "adalomo";
  c.params = std::move(params);

  NoGradGuard no_grad;  // masters and state are not part of any graph
  std::unordered_map<std::string, size_t> names;
  std::unordered_map<const void*, std::string> seen_data;
  c.slots.reserve(c.params.size());
  for (size_t i = 0; i < c.params.size(); ++i) {
    const auto& [name, p] = c.params[i];
    TESSERA_CHECK(!name.empty(), "FusedOptimizer: parameter ", i, " has an empty name");
    TESSERA_CHECK(p.defined(), "FusedOptimizer: parameter '", name, "' is an undefined tensor");
    TESSERA_CHECK(names.emplace(name, i).second, "FusedOptimizer: two parameters are named '", name,
                  "'");
    const DType t = p.dtype();
    TESSERA_CHECK(t == DType::F32 || t == DType::F64 || t == DType::BF16,
                  "FusedOptimizer: parameter '", name, "' is ", dtype_name(t),
                  " (expected f32, f64 or bf16)");
    TESSERA_CHECK(p.device() == c.params.front().param.device(), "FusedOptimizer: parameter '",
                  name, "' is on ", p.device().str(), " but '", c.params.front().name, "' on ",
                  c.params.front().param.device().str(), "; every parameter must share a device");
    TESSERA_CHECK(p.is_contiguous(), "FusedOptimizer: parameter '", name, "' ", p.str(),
                  " is not contiguous (the update runs over flat memory)");
    TESSERA_CHECK(p.is_leaf() && p.requires_grad(), "FusedOptimizer: parameter '", name, "' ",
                  p.str(), " is not a leaf that requires a gradient (its hook would never fire)");
    // One tensor listed twice would get two hooks, hence two updates per pass.
    if (p.numel() > 0) {
      auto [it, fresh] = seen_data.emplace(p.data_ptr(), name);
      TESSERA_CHECK(fresh, "FusedOptimizer: parameters '", it->second, "' and '", name,
                    "' are the same tensor; list it once");
    }
    Core::Slot s;
    s.matrix = p.dim() >= 2;
    s.rows = s.matrix ? p.size(0) : 0;
    s.cols = s.matrix && s.rows > 0 ? p.numel() / s.rows : 0;
    const Options so{state_dtype(t), p.device()};
    s.master = t == so.dtype ? p.detach() : p.detach().to(so.dtype);
    if (c.ada && s.matrix) {
      s.row = zeros({s.rows}, so);
      s.col = zeros({s.cols}, so);
    } else if (c.ada) {
      s.v = zeros(p.shape(), so);
    }
    c.slots.push_back(std::move(s));
  }
  if (!c.params.empty())
    c.norms = zeros({int64_t(c.params.size())}, {DType::F64, c.params.front().param.device()});
  // Only now, with everything checked: a failed constructor leaves no hooks behind.
  std::weak_ptr<Core> weak = core_;
  for (size_t i = 0; i < c.params.size(); ++i) {
    register_grad_hook(c.params[i].param, [weak, i](Tensor& p) {
      if (auto core = weak.lock()) core->on_grad(i, p);
    });
  }
}

double FusedOptimizer::grad_norm(const Tensor& loss) {
  Core& c = *core_;
  Core::Scope scope(c, Pass::Norm, "grad_norm");
  backward(loss, {}, {.retain_graph = true});  // apply() runs it again
  return c.norm();
}

double FusedOptimizer::apply(const Tensor& loss, double lr, double clip_coef) {
  Core& c = *core_;
  TESSERA_CHECK(lr >= 0 && std::isfinite(lr),
                "FusedOptimizer::apply: lr must be finite and >= 0, got ", lr);
  TESSERA_CHECK(clip_coef > 0 && std::isfinite(clip_coef),
                "FusedOptimizer::apply: clip_coef must be finite and > 0, got ", clip_coef);
  Core::Scope scope(c, Pass::Update, "apply");
  c.lr = lr;
  c.coef = clip_coef;
  c.t += 1;
  backward(loss);
  return c.norm();
}

double FusedOptimizer::clip_coef(double norm) const {
  const double max_norm = core_->opt.max_norm;
  if (!(max_norm > 0) || !std::isfinite(norm) || norm <= max_norm) return 1.0;
  return max_norm / (norm + 1e-6);
}

double FusedOptimizer::backward_step(const Tensor& loss, double lr) {
  if (!(core_->opt.max_norm > 0)) return apply(loss, lr, 1.0);
  const double norm = grad_norm(loss);
  if (!std::isfinite(norm)) return norm;  // a spike: nothing applied; the caller sees it
  apply(loss, lr, clip_coef(norm));
  return norm;
}

int64_t FusedOptimizer::peak_grad_bytes() const { return core_->peak_grad_bytes; }
const LomoOptions& FusedOptimizer::options() const { return core_->opt; }
const std::vector<NamedParam>& FusedOptimizer::params() const { return core_->params; }
int64_t FusedOptimizer::step_count() const { return core_->t; }

void FusedOptimizer::set_step_count(int64_t t) {
  TESSERA_CHECK(t >= 0, "FusedOptimizer::set_step_count: step count must be >= 0, got ", t);
  core_->t = t;
}

std::vector<std::pair<std::string, Tensor>> FusedOptimizer::state() const {
  const Core& c = *core_;
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < c.params.size(); ++i) {
    const auto& s = c.slots[i];
    const std::string& name = c.params[i].name;
    if (s.row.defined()) out.emplace_back(name + "/row", s.row);
    if (s.col.defined()) out.emplace_back(name + "/col", s.col);
    if (s.v.defined()) out.emplace_back(name + "/v", s.v);
    if (!same_data(s.master, c.params[i].param)) out.emplace_back(name + "/master", s.master);
  }
  return out;
}

void FusedOptimizer::load_state(const std::vector<std::pair<std::string, Tensor>>& entries) {
  // The keys state() lists are the required ones, but for the masters: a checkpoint of the other
  // device's dtype has them where this run has none (f32 parameters are their own master: the
  // saved one, a bf16 run's, replaces the weights it rounded) or lacks them (a bf16 master then
  // starts from the weights just loaded). Validate all before copying any.
  const auto targets = state();
  std::unordered_map<std::string, size_t> index, own_master;
  for (size_t k = 0; k < targets.size(); ++k) index.emplace(targets[k].first, k);
  for (size_t i = 0; i < core_->params.size(); ++i)
    if (same_data(core_->slots[i].master, core_->params[i].param))
      own_master.emplace(core_->params[i].name + "/master", i);
  std::vector<const Tensor*> src(targets.size(), nullptr);
  std::vector<std::pair<Tensor, const Tensor*>> into_params;  // (f32 parameter, saved master)
  for (const auto& [key, t] : entries) {
    auto it = index.find(key);
    auto own = own_master.find(key);
    TESSERA_CHECK(it != index.end() || own != own_master.end(), "FusedOptimizer::load_state: '",
                  key, "' is not a state key of this ", core_->opt.name, " optimizer");
    const Tensor& dst =
        it != index.end() ? targets[it->second].second : core_->params[own->second].param;
    TESSERA_CHECK(it == index.end() || !src[it->second],
                  "FusedOptimizer::load_state: two entries for '", key, "'");
    TESSERA_CHECK(t.defined(), "FusedOptimizer::load_state: '", key, "' is an undefined tensor");
    TESSERA_CHECK(t.shape() == dst.shape(), "FusedOptimizer::load_state: '", key, "' has shape ",
                  shape_str(t.shape()), " but the optimizer's has shape ", shape_str(dst.shape()));
    TESSERA_CHECK(is_floating(t.dtype()), "FusedOptimizer::load_state: '", key, "' is ",
                  dtype_name(t.dtype()), " (expected a floating dtype)");
    if (it != index.end())
      src[it->second] = &t;
    else
      into_params.emplace_back(dst, &t);
  }
  auto is_master = [](const std::string& key) {
    return key.size() > 7 && key.compare(key.size() - 7, 7, "/master") == 0;
  };
  for (size_t k = 0; k < targets.size(); ++k)
    TESSERA_CHECK(src[k] || is_master(targets[k].first), "FusedOptimizer::load_state: no entry "
                  "for '", targets[k].first, "' (", entries.size(), " entries for ",
                  targets.size(), " state tensors)");

  NoGradGuard no_grad;
  for (auto& [param, master] : into_params) param.detach().copy_(*master);
  for (size_t k = 0; k < targets.size(); ++k) {
    Tensor dst = targets[k].second;
    if (src[k] && !same_data(dst, *src[k])) dst.copy_(*src[k]);  // state() handed back: in place
  }
  for (size_t i = 0; i < core_->params.size(); ++i) {  // bf16 masters the checkpoint lacks
    const auto it = index.find(core_->params[i].name + "/master");
    if (it != index.end() && !src[it->second])
      core_->slots[i].master.copy_(core_->params[i].param);  // from the weights just loaded
  }
  for (size_t i = 0; i < core_->params.size(); ++i) {  // bf16: round the restored master
    const Tensor& p = core_->params[i].param;
    const Tensor& master = core_->slots[i].master;
    if (!same_data(master, p)) p.detach().copy_(master);
  }
}

}  // namespace tessera
