// AdamW: the bookkeeping (state, checks, checkpoints). The update itself is the kernel table's
// adamw_step (src/backend/kernels.h), one fused pass per parameter on the parameter's device: the
// CPU twin in src/backend/cpu/optim.cpp follows PyTorch's single-tensor AdamW step for step, and
// the CUDA one (kernels/optim.cu) reproduces the CPU's bits.
#include "optim/adamw.h"

#include <cmath>

#include "autograd/autograd.h"
#include "backend/kernels.h"

namespace tessera {
namespace {

// f64 parameters keep f64 state (so tests can compare against double arithmetic); all others f32.
DType state_dtype(DType param) { return param == DType::F64 ? DType::F64 : DType::F32; }

bool same_data(const Tensor& a, const Tensor& b) {
  return a.device() == b.device() && a.data_ptr() == b.data_ptr();
}

}  // namespace

AdamW::AdamW(std::vector<NamedParam> params, AdamWOptions opt)
    : opt_(opt), params_(std::move(params)) {
  TESSERA_CHECK(opt_.lr >= 0, "AdamW: lr must be >= 0, got ", opt_.lr);
  TESSERA_CHECK(opt_.beta1 >= 0 && opt_.beta1 < 1, "AdamW: beta1 must be in [0, 1), got ",
                opt_.beta1);
  TESSERA_CHECK(opt_.beta2 >= 0 && opt_.beta2 < 1, "AdamW: beta2 must be in [0, 1), got ",
                opt_.beta2);
  TESSERA_CHECK(opt_.eps > 0, "AdamW: eps must be > 0, got ", opt_.eps);
  TESSERA_CHECK(opt_.weight_decay >= 0, "AdamW: weight_decay must be >= 0, got ",
                opt_.weight_decay);

  NoGradGuard no_grad;  // the master copy below is not part of any graph
  std::unordered_map<const void*, std::string> seen_data;
  slots_.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    TESSERA_CHECK(!name.empty(), "AdamW: parameter ", i, " has an empty name");
    TESSERA_CHECK(p.defined(), "AdamW: parameter '", name, "' is an undefined tensor");
    TESSERA_CHECK(index_.emplace(name, i).second, "AdamW: two parameters are named '", name, "'");
    const DType t = p.dtype();
    TESSERA_CHECK(t == DType::F32 || t == DType::F64 || t == DType::BF16, "AdamW: parameter '",
                  name, "' is ", dtype_name(t), " (expected f32, f64 or bf16)");
    TESSERA_CHECK(p.is_contiguous(), "AdamW: parameter '", name, "' ", p.str(),
                  " is not contiguous (the update runs over flat memory)");
    // A tensor listed twice (e.g. tied weights under two names) would be updated twice per step.
    if (p.numel() > 0) {
      auto [it, fresh] = seen_data.emplace(p.data_ptr(), name);
      TESSERA_CHECK(fresh, "AdamW: parameters '", it->second, "' and '", name,
                    "' are the same tensor; list it once");
    }
    Slot s;
    s.decay = p.dim() >= 2;
    const Options so{state_dtype(t), p.device()};
    s.m = zeros(p.shape(), so);
    s.v = zeros(p.shape(), so);
    s.master = t == so.dtype ? p.detach() : p.detach().to(so.dtype);
    slots_.push_back(std::move(s));
  }
}

void AdamW::step(double lr) {
  // Check everything first: an error leaves parameters, state and step count as they were.
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    const Tensor& g = p.grad();
    if (!g.defined()) continue;
    TESSERA_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype() && g.device() == p.device(),
                  "AdamW: gradient of '", name, "' is ", g.str(), " but the parameter is ",
                  p.str());
  }
  t_ += 1;
  // Bias corrections in double: at t = 1 they are 1 - b (0.1, 0.05) and must not lose digits.
  const double bc1 = 1.0 - std::pow(opt_.beta1, double(t_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, double(t_));
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].param;
    const Tensor& grad = p.grad();
    if (!grad.defined() || p.numel() == 0) continue;
    const Slot& s = slots_[i];
    const Tensor g = grad.is_contiguous() ? grad.detach() : grad.detach().contiguous();
    TESSERA_KERNEL(p, adamw_step)(p.detach(), s.master, s.m, s.v, g, lr, opt_.beta1, opt_.beta2,
                                  opt_.eps, s.decay ? opt_.weight_decay : 0.0, bc1, bc2);
  }
}

void AdamW::zero_grad() {
  for (auto& np : params_) np.param.zero_grad();
}

const AdamW::Slot& AdamW::slot(const std::string& name, const char* what) const {
  auto it = index_.find(name);
  TESSERA_CHECK(it != index_.end(), "AdamW::", what, ": no parameter named '", name, "'");
  return slots_[it->second];
}

bool AdamW::decays(const std::string& name) const { return slot(name, "decays").decay; }
const Tensor& AdamW::m(const std::string& name) const { return slot(name, "m").m; }
const Tensor& AdamW::v(const std::string& name) const { return slot(name, "v").v; }
const Tensor& AdamW::master(const std::string& name) const {
  return slot(name, "master").master;
}

void AdamW::set_step_count(int64_t t) {
  TESSERA_CHECK(t >= 0, "AdamW::set_step_count: step count must be >= 0, got ", t);
  t_ = t;
}

std::vector<StateEntry> AdamW::state() const {
  std::vector<StateEntry> out;
  out.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    out.push_back({params_[i].name, slots_[i].m, slots_[i].v, slots_[i].master});
  return out;
}

void AdamW::load_state(const std::vector<StateEntry>& entries) {
  // Validate everything first, so that a bad checkpoint loses nothing.
  std::vector<const StateEntry*> by_param(params_.size(), nullptr);
  for (const StateEntry& e : entries) {
    auto it = index_.find(e.name);
    TESSERA_CHECK(it != index_.end(), "AdamW::load_state: state for '", e.name,
                  "', which is not a parameter of this optimizer");
    TESSERA_CHECK(!by_param[it->second], "AdamW::load_state: two entries for '", e.name, "'");
    by_param[it->second] = &e;
    const Tensor& p = params_[it->second].param;
    auto check = [&](const Tensor& t, const char* what) {
      TESSERA_CHECK(t.shape() == p.shape(), "AdamW::load_state: ", what, " of '", e.name,
                    "' has shape ", shape_str(t.shape()), " but the parameter has shape ",
                    shape_str(p.shape()));
      TESSERA_CHECK(is_floating(t.dtype()), "AdamW::load_state: ", what, " of '", e.name,
                    "' is ", dtype_name(t.dtype()), " (expected a floating dtype)");
    };
    TESSERA_CHECK(e.m.defined() && e.v.defined(), "AdamW::load_state: entry '", e.name,
                  "' lacks ", e.m.defined() ? "v" : "m");
    check(e.m, "m");
    check(e.v, "v");
    if (e.master.defined()) check(e.master, "master");
  }
  for (size_t i = 0; i < params_.size(); ++i)
    TESSERA_CHECK(by_param[i], "AdamW::load_state: no state for parameter '", params_[i].name,
                  "' (", entries.size(), " entries for ", params_.size(), " parameters)");

  NoGradGuard no_grad;
  auto put = [](Tensor& dst, const Tensor& src) {
    if (!same_data(dst, src)) dst.copy_(src);  // state() handed back: already in place
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const StateEntry& e = *by_param[i];
    Slot& s = slots_[i];
    put(s.m, e.m);
    put(s.v, e.v);
    if (!e.master.defined()) continue;
    put(s.master, e.master);
    const Tensor& p = params_[i].param;
    if (!same_data(s.master, p)) p.detach().copy_(s.master);  // bf16: round the restored master
  }
}

}  // namespace tessera
