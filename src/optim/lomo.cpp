// LOMO and AdaLomo updates, run in gradient-ready hooks over contiguous host memory (n = numel).
//   w (n): the weights the update runs on, type S (float, or double for f64 parameters): the
//          parameter itself, or the f32 master of a bf16 parameter
//   g (n): the parameter's gradient, type G (S, or bf16)
//   out (n): the bf16 parameter that receives round(w) after the update, or null
//   AdaLomo state, type S: R (rows), C (cols) for a matrix seen as (rows, cols); v (n) otherwise
// Elementwise loops split over OpenMP threads freely. Every reduction sums in double over fixed
// blocks (flat: 65536 elements, as optim/clip.cpp; matrices: by rows) and adds the partial sums in
// block order, so a result never depends on the thread count and a resumed run, perhaps with
// another OMP_NUM_THREADS, repeats the uninterrupted one bit for bit.
#include "optim/lomo.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "autograd/autograd.h"

namespace tessera {
namespace {

enum class Pass { Idle, Norm, Update };

// sum_{i < n} term(i), in double, over fixed blocks added in order.
template <typename F>
double blocked_sum(int64_t n, F&& term) {
  constexpr int64_t kBlock = 65536;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(size_t(blocks), 0.0);
#pragma omp parallel for if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    double acc = 0.0;
    for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) acc += term(i);
    partial[size_t(b)] = acc;
  }
  double total = 0.0;
  for (double x : partial) total += x;
  return total;
}

// The gradient every update sees: G = clamp(g / loss_scale, +-clip_value) * clip_coef, in S.
template <typename S>
struct Prep {
  S loss_scale, clip_value, coef;
  bool clamp;
  template <typename G>
  S operator()(G g) const {
    S x = convert<S>(g) / loss_scale;
    if (clamp) x = std::min(std::max(x, -clip_value), clip_value);
    return x * coef;
  }
};

template <typename S>
inline void store(S* w, bf16* out, int64_t i, S p) {
  w[i] = p;
  if (out) out[i] = bf16(float(p));
}

// RMS of the weights: AdaLomo's relative step size eta = lr * max(1e-3, RMS(p)).
template <typename S>
double rms(const S* w, int64_t n) {
  return std::sqrt(blocked_sum(n, [&](int64_t i) { return double(w[i]) * double(w[i]); }) /
                   double(n));
}

// LOMO: p = p * (1 - lr wd) - lr G.
template <typename S, typename G>
void lomo_update(S* w, const G* g, bf16* out, int64_t n, const Prep<S>& prep, double lr,
                 double decay) {
  const S s_lr = S(lr), s_decay = S(decay);
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) store(w, out, i, w[i] * s_decay - s_lr * prep(g[i]));
}

// U <- U / max(1, RMS(U)) (clip threshold 1), eta = lr max(1e-3, RMS(p)), decay on matrices; the
// scalars an AdaLomo update needs once RMS(U) is known.
struct AdaScalars {
  double div, eta, decay;
};
AdaScalars ada_scalars(double sum_u2, int64_t n, double rms_p, double lr, double wd) {
  const double eta = lr * std::max(1e-3, rms_p);
  return {std::max(1.0, std::sqrt(sum_u2 / double(n)) / 1.0), eta, 1.0 - eta * wd};
}

// AdaLomo for a matrix g (rows, cols); wd is 0 for no decay. scratch: 2 (rows + cols) + blocks *
// cols doubles, where blocks = ceil(rows / kRows).
constexpr int64_t kRows = 256;  // rows per block of the column sums
template <typename S, typename G>
void adalomo_matrix(S* w, const G* g, bf16* out, int64_t rows, int64_t cols, S* R, S* C,
                    double* scratch, const Prep<S>& prep, double beta2, double lr, double wd) {
  const int64_t n = rows * cols;
  const double rms_p = rms(w, n);  // before the update
  const S eps1 = S(1e-30), b2 = S(beta2), one_minus_b2 = S(1.0 - beta2);
  double* row_acc = scratch;          // (rows): sum_j u, later sum_j U^2
  double* col_acc = scratch + rows;   // (cols): sum_i u
  double* col_part = col_acc + cols;  // (blocks, cols): sum of u over each block's rows

  // Row and column sums of u = G^2 + eps1, one row block per task (its own column partials).
  const int64_t blocks = (rows + kRows - 1) / kRows;
#pragma omp parallel for if (n > 65536)
  for (int64_t b = 0; b < blocks; ++b) {
    double* cp = col_part + b * cols;
    std::fill(cp, cp + cols, 0.0);
    for (int64_t i = b * kRows; i < std::min(rows, (b + 1) * kRows); ++i) {
      double acc = 0.0;
      for (int64_t j = 0; j < cols; ++j) {
        const S x = prep(g[i * cols + j]);
        const double u = double(x * x + eps1);
        acc += u;
        cp[j] += u;
      }
      row_acc[i] = acc;
    }
  }
  for (int64_t j = 0; j < cols; ++j) col_acc[j] = 0.0;
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t j = 0; j < cols; ++j) col_acc[j] += col_part[b * cols + j];

  // Running means of u over columns (R) and rows (C).
  for (int64_t i = 0; i < rows; ++i) R[i] = b2 * R[i] + one_minus_b2 * S(row_acc[i] / double(cols));
  for (int64_t j = 0; j < cols; ++j) C[j] = b2 * C[j] + one_minus_b2 * S(col_acc[j] / double(rows));
  double sum_r = 0.0;
  for (int64_t i = 0; i < rows; ++i) sum_r += double(R[i]);
  const S mean_r = S(sum_r / double(rows));

  // U[i,j] = G[i,j] * rsqrt(R[i] / mean(R)) * rsqrt(C[j]), recomputed where needed rather than
  // stored: a gradient-sized temporary would undo the memory LOMO saves.
  S* rf = reinterpret_cast<S*>(col_part + blocks * cols);  // (rows), then cf (cols)
  S* cf = rf + rows;
  for (int64_t i = 0; i < rows; ++i) rf[i] = S(1) / std::sqrt(R[i] / mean_r);
  for (int64_t j = 0; j < cols; ++j) cf[j] = S(1) / std::sqrt(C[j]);
  auto update_at = [&](int64_t i, int64_t j) { return prep(g[i * cols + j]) * rf[i] * cf[j]; };

#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < rows; ++i) {
    double acc = 0.0;
    for (int64_t j = 0; j < cols; ++j) {
      const double u = double(update_at(i, j));
      acc += u * u;
    }
    row_acc[i] = acc;
  }
  double sum_u2 = 0.0;
  for (int64_t i = 0; i < rows; ++i) sum_u2 += row_acc[i];
  const AdaScalars a = ada_scalars(sum_u2, n, rms_p, lr, wd);
  const S div = S(a.div), eta = S(a.eta), decay = S(a.decay);
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      store(w, out, i * cols + j, w[i * cols + j] * decay - eta * (update_at(i, j) / div));
}

// AdaLomo for a vector (or scalar): unfactored second moment v.
template <typename S, typename G>
void adalomo_vector(S* w, const G* g, bf16* out, int64_t n, S* v, const Prep<S>& prep, double beta2,
                    double lr, double wd) {
  const double rms_p = rms(w, n);
  const S eps1 = S(1e-30), b2 = S(beta2), one_minus_b2 = S(1.0 - beta2);
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const S x = prep(g[i]);
    v[i] = b2 * v[i] + one_minus_b2 * (x * x + eps1);
  }
  auto update_at = [&](int64_t i) { return prep(g[i]) / std::sqrt(v[i]); };
  const double sum_u2 = blocked_sum(n, [&](int64_t i) {
    const double u = double(update_at(i));
    return u * u;
  });
  const AdaScalars a = ada_scalars(sum_u2, n, rms_p, lr, wd);
  const S div = S(a.div), eta = S(a.eta), decay = S(a.decay);
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) store(w, out, i, w[i] * decay - eta * (update_at(i) / div));
}

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
    double sum_squares = 0;  // of g / loss_scale, this pass
  };

  LomoOptions opt;
  bool ada = false;
  std::vector<NamedParam> params;
  std::vector<Slot> slots;  // slots[i] belongs to params[i]
  Pass pass = Pass::Idle;
  double lr = 0, coef = 1;
  int64_t t = 0;
  int64_t peak_grad_bytes = 0;

  double norm() const {
    double total = 0.0;  // in parameter order, as clip_grad_norm adds them
    for (const Slot& s : slots) total += s.sum_squares;
    return std::sqrt(total);
  }

  void on_grad(size_t i, Tensor& p);
  // Adds g's squares to the norm, then (update pass) updates p and its state.
  template <typename S, typename G>
  void take(Slot& s, const Tensor& p, const Tensor& g);

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
  for (auto& s : c.slots) s.sum_squares = 0.0;
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
  Slot& s = slots[i];
  TESSERA_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype() && g.is_contiguous(),
                "FusedOptimizer: gradient of '", params[i].name, "' is ", g.str(),
                " but the parameter is ", p.str());
  switch (g.dtype()) {  // S: the type the update computes in; G: the gradient's
    case DType::F32: take<float, float>(s, p, g); break;
    case DType::F64: take<double, double>(s, p, g); break;
    case DType::BF16: take<float, bf16>(s, p, g); break;
    default:
      TESSERA_FAIL("FusedOptimizer: parameter '", params[i].name, "' has dtype ",
                   dtype_name(g.dtype()));
  }
}

template <typename S, typename G>
void FusedOptimizer::Core::take(Slot& s, const Tensor& p, const Tensor& g) {
  const G* gd = g.data<G>();
  s.sum_squares = blocked_sum(p.numel(), [&](int64_t k) {
    const double x = convert<double>(gd[k]) / opt.loss_scale;  // = g exactly when loss_scale = 1
    return x * x;
  });
  if (pass == Pass::Norm) return;

  const Prep<S> prep{S(opt.loss_scale), S(opt.clip_value), S(coef), opt.clip_value > 0};
  S* w = s.master.data<S>();
  bf16* out = same_data(s.master, p) ? nullptr : p.data<bf16>();
  const double wd = s.matrix ? opt.weight_decay : 0.0;
  if (!ada) {
    lomo_update(w, gd, out, p.numel(), prep, lr, 1.0 - lr * wd);
    return;
  }
  const double beta2 = 1.0 - std::pow(double(t), -0.8);  // AdaLomo's beta2_t; 0 at t = 1
  if (!s.matrix) {
    adalomo_vector(w, gd, out, p.numel(), s.v.data<S>(), prep, beta2, lr, wd);
    return;
  }
  // A tensor, so the allocator counts it like every other byte of the step (it is small: rows and
  // columns, not rows x columns).
  const int64_t blocks = (s.rows + kRows - 1) / kRows;
  Tensor scratch = Tensor::empty({2 * (s.rows + s.cols) + blocks * s.cols}, DType::F64);
  adalomo_matrix(w, gd, out, s.rows, s.cols, s.row.data<S>(), s.col.data<S>(),
                 scratch.data<double>(), prep, beta2, lr, wd);
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
    TESSERA_CHECK(p.device().is_cpu(), "FusedOptimizer on ", p.device().str(),
                  " arrives with the CUDA backend (parameter '", name, "')");
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
  // The keys state() lists are exactly the required ones; validate all before copying any.
  const auto targets = state();
  std::unordered_map<std::string, size_t> index;
  for (size_t k = 0; k < targets.size(); ++k) index.emplace(targets[k].first, k);
  std::vector<const Tensor*> src(targets.size(), nullptr);
  for (const auto& [key, t] : entries) {
    auto it = index.find(key);
    TESSERA_CHECK(it != index.end(), "FusedOptimizer::load_state: '", key,
                  "' is not a state key of this ", core_->opt.name, " optimizer");
    TESSERA_CHECK(!src[it->second], "FusedOptimizer::load_state: two entries for '", key, "'");
    const Tensor& dst = targets[it->second].second;
    TESSERA_CHECK(t.defined(), "FusedOptimizer::load_state: '", key, "' is an undefined tensor");
    TESSERA_CHECK(t.shape() == dst.shape(), "FusedOptimizer::load_state: '", key, "' has shape ",
                  shape_str(t.shape()), " but the optimizer's has shape ", shape_str(dst.shape()));
    TESSERA_CHECK(is_floating(t.dtype()), "FusedOptimizer::load_state: '", key, "' is ",
                  dtype_name(t.dtype()), " (expected a floating dtype)");
    src[it->second] = &t;
  }
  for (size_t k = 0; k < targets.size(); ++k)
    TESSERA_CHECK(src[k], "FusedOptimizer::load_state: no entry for '", targets[k].first, "' (",
                  entries.size(), " entries for ", targets.size(), " state tensors)");

  NoGradGuard no_grad;
  for (size_t k = 0; k < targets.size(); ++k) {
    Tensor dst = targets[k].second;
    if (!same_data(dst, *src[k])) dst.copy_(*src[k]);  // state() handed back: already in place
  }
  for (size_t i = 0; i < core_->params.size(); ++i) {  // bf16: round the restored master
    const Tensor& p = core_->params[i].param;
    const Tensor& master = core_->slots[i].master;
    if (!same_data(master, p)) p.detach().copy_(master);
  }
}

}  // namespace tessera
