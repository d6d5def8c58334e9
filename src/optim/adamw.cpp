// AdamW update: one fused loop per parameter over contiguous host memory (n = numel).
//   w (n) master weights, m (n), v (n): state type S (float, or double for f64 parameters)
//   g (n): the gradient, in the parameter's dtype G (S, or bf16 for bf16 parameters)
//   out (n): the bf16 parameter that receives round(w), or null when w is the parameter
// The per-element arithmetic follows PyTorch's single-tensor AdamW (torch/optim/adamw.py), so a
// golden comparison against PyTorch differs only by rounding:
//   p *= 1 - lr wd;  denom = sqrt(v) / sqrt(1 - b2^t) + eps;  p -= (lr / (1 - b1^t)) * (m / denom)
// which is the header's formula rearranged. The scalar coefficients are computed once in double.
// PyTorch updates m with lerp(m, g, 1 - b1); we use b1 m + (1 - b1) g, equal up to rounding.
// Elements are independent, so the OpenMP split does not change any result.
#include "optim/adamw.h"

#include <cmath>
#include <type_traits>

#include "autograd/autograd.h"

namespace tessera {
namespace {

struct Coefs {
  double decay;      // 1 - lr * wd, or 1 for a parameter without decay
  double b1, b2, eps;
  double step_size;  // lr / (1 - b1^t)
  double bc2_sqrt;   // sqrt(1 - b2^t)
};

template <typename S, typename G>
inline S load(const G& g) {
  if constexpr (std::is_same_v<G, bf16>) {
    return S(float(g));
  } else {
    return S(g);
  }
}

template <typename S, typename G>
void adamw_update(S* w, S* m, S* v, const G* g, bf16* out, int64_t n, const Coefs& c) {
  const S decay = S(c.decay), b1 = S(c.b1), b2 = S(c.b2), eps = S(c.eps);
  const S one_minus_b1 = S(1.0 - c.b1), one_minus_b2 = S(1.0 - c.b2);
  const S step_size = S(c.step_size), bc2_sqrt = S(c.bc2_sqrt);
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const S gi = load<S>(g[i]);
    const S mi = b1 * m[i] + one_minus_b1 * gi;
    const S vi = b2 * v[i] + one_minus_b2 * gi * gi;
    S p = w[i] * decay;
    p -= step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps));
    m[i] = mi;
    v[i] = vi;
    w[i] = p;
    if (out) out[i] = bf16(float(p));
  }
}

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
    TESSERA_CHECK(p.device().is_cpu(), "AdamW on ", p.device().str(),
                  " arrives with the CUDA backend (parameter '", name, "')");
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
    const Coefs c{s.decay ? 1.0 - lr * opt_.weight_decay : 1.0,
                  opt_.beta1,
                  opt_.beta2,
                  opt_.eps,
                  lr / bc1,
                  std::sqrt(bc2)};
    const Tensor g = grad.is_contiguous() ? grad : grad.detach().contiguous();
    const int64_t n = p.numel();
    switch (p.dtype()) {
      case DType::F32:
        adamw_update(s.master.data<float>(), s.m.data<float>(), s.v.data<float>(), g.data<float>(),
                     nullptr, n, c);
        break;
      case DType::F64:
        adamw_update(s.master.data<double>(), s.m.data<double>(), s.v.data<double>(),
                     g.data<double>(), nullptr, n, c);
        break;
      case DType::BF16:
        adamw_update(s.master.data<float>(), s.m.data<float>(), s.v.data<float>(), g.data<bf16>(),
                     p.data<bf16>(), n, c);
        break;
      default:
        TESSERA_FAIL("AdamW: parameter '", params_[i].name, "' has dtype ", dtype_name(p.dtype()));
    }
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
