// CPU optimizer kernels: the fused AdamW step, the sum of squares behind gradient norms, and the
// LOMO / AdaLomo updates run inside backward (section at the end).
//
// adamw_step, per element, with w the master weight (state type S: float, or double for f64
// parameters) and g the gradient (the parameter's dtype G: S, or bf16 for bf16 parameters):
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   w = w * (1 - lr wd) - (lr / (1 - b1^t)) * (m / (sqrt(v) / sqrt(1 - b2^t) + eps))
// PyTorch's single-tensor AdamW (torch/optim/adamw.py) in its own order, so a golden comparison
// against PyTorch differs only by rounding (PyTorch updates m with lerp(m, g, 1 - b1), equal up to
// rounding). The scalar coefficients are formed once in double and rounded to S. Elements are
// independent, so the OpenMP split changes no result; the CUDA twin (kernels/optim.cu) performs the
// same operations in the same order with one rounding each and gives the same bits.
//
// adamw_step_flat: the buffer cut at the decay ranges' boundaries into runs that are decayed or not,
// each run given to the same adamw_update as adamw_step with the coefficients adamw_step would form
// for it, so the bits are adamw_step's by construction (on the gradient times grad_scale, the
// clipping coefficient, rounded once to the state type: adamw_step itself multiplies by 1).
//
// sum_squares: fixed blocks of 65536 elements, each summed in order in double, then the block sums
// in order: the same bits for any thread count, so a resumed run (perhaps with another
// OMP_NUM_THREADS) clips exactly as the uninterrupted one did.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "backend/adamw_flat_args.h"
#include "backend/cpu/cpu.h"
#include "backend/cpu/simd.h"

namespace tessera::cpu {
namespace {

struct Coefs {
  double decay;  // 1 - lr * wd (1 when wd is 0: a parameter without decay)
  double b1, b2, eps;
  double step_size;  // lr / (1 - b1^t)
  double bc2_sqrt;   // sqrt(1 - b2^t)
  double grad_scale = 1.0;  // the clipping coefficient each gradient element is multiplied by
};

Coefs coefs_for(double lr, double beta1, double beta2, double eps, double weight_decay,
                double bias_correction1, double bias_correction2) {
  return {1.0 - lr * weight_decay, beta1,
          beta2,                   eps,
          lr / bias_correction1,   std::sqrt(bias_correction2)};
}

template <typename S, typename G>
inline S load(const G& g) {
  if constexpr (std::is_same_v<G, bf16>) {
    return S(float(g));
  } else {
    return S(g);
  }
}

// out: the bf16 parameter receiving round(w), or null when w is the parameter.
template <typename S, typename G>
TESSERA_SIMD_CLONES void adamw_update(S* w, S* m, S* v, const G* g, bf16* out, int64_t n,
                                      const Coefs& c) {
  const S decay = S(c.decay), b1 = S(c.b1), b2 = S(c.b2), eps = S(c.eps);
  const S one_minus_b1 = S(1.0 - c.b1), one_minus_b2 = S(1.0 - c.b2);
  const S step_size = S(c.step_size), bc2_sqrt = S(c.bc2_sqrt), grad_scale = S(c.grad_scale);
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const S gi = load<S>(g[i]) * grad_scale;  // exact when grad_scale is 1
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

void check_state(const char* kernel, const Tensor& param, const char* name, const Tensor& t,
                 DType want) {
  TESSERA_CHECK(t.defined() && t.device().is_cpu() && t.is_contiguous() && t.dtype() == want &&
                    t.numel() == param.numel(),
                "cpu kernel ", kernel, ": ", name, " must be a contiguous ", dtype_name(want),
                " CPU tensor of ", param.numel(), " elements (param ", param.str(), "), got ",
                t.defined() ? t.str() : std::string("an undefined tensor"));
}

}  // namespace

void adamw_step(const Tensor& param, const Tensor& master, const Tensor& m, const Tensor& v,
                const Tensor& grad, double lr, double beta1, double beta2, double eps,
                double weight_decay, double bias_correction1, double bias_correction2) {
  const DType pt = param.dtype();
  TESSERA_CHECK(pt == DType::F32 || pt == DType::F64 || pt == DType::BF16,
                "cpu kernel adamw_step: param must be f32, f64 or bf16, got ", param.str());
  TESSERA_CHECK(param.is_contiguous(), "cpu kernel adamw_step: param ", param.str(),
                " is not contiguous");
  const DType st = pt == DType::F64 ? DType::F64 : DType::F32;
  check_state("adamw_step", param, "master", master, st);
  check_state("adamw_step", param, "m", m, st);
  check_state("adamw_step", param, "v", v, st);
  check_state("adamw_step", param, "grad", grad, pt);
  const bool aliased = master.data_ptr() == param.data_ptr();
  TESSERA_CHECK(aliased || pt == DType::BF16, "cpu kernel adamw_step: an ", dtype_name(pt),
                " param must be its own master (the same storage), got param ", param.str(),
                " and master ", master.str());
  const int64_t n = param.numel();
  if (n == 0) return;
  const Coefs c =
      coefs_for(lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2);
  switch (pt) {
    case DType::F32:
      adamw_update(master.data<float>(), m.data<float>(), v.data<float>(), grad.data<float>(),
                   nullptr, n, c);
      break;
    case DType::F64:
      adamw_update(master.data<double>(), m.data<double>(), v.data<double>(), grad.data<double>(),
                   nullptr, n, c);
      break;
    default:
      adamw_update(master.data<float>(), m.data<float>(), v.data<float>(), grad.data<bf16>(),
                   param.data<bf16>(), n, c);
  }
}

void adamw_step_flat(const Tensor& param, const Tensor& master, const Tensor& m, const Tensor& v,
                     const Tensor& grad, const Tensor& decay_ranges, double lr, double beta1,
                     double beta2, double eps, double weight_decay, double bias_correction1,
                     double bias_correction2, double grad_scale) {
  const AdamwFlatArgs args = check_adamw_flat_args("cpu kernel adamw_step_flat", false, param,
                                                    master, m, v, grad, decay_ranges, grad_scale);
  const DType st = args.state;
  const int64_t n = args.n;
  const bool bf16_param = args.bf16_param;
  const int32_t* bounds = decay_ranges.data<int32_t>();
  const int64_t nbounds = decay_ranges.numel();
  for (int64_t k = 0; k < nbounds / 2; ++k) {
    const int64_t begin = bounds[2 * k], end = bounds[2 * k + 1];
    TESSERA_CHECK(begin <= end, "cpu kernel adamw_step_flat: decay range ", k, " = [", begin, ", ",
                  end, ") ends before it begins");
    TESSERA_CHECK(begin >= 0 && end <= n, "cpu kernel adamw_step_flat: decay range ", k, " = [",
                  begin, ", ", end, ") is out of bounds for tensors of ", n, " elements");
    TESSERA_CHECK(k == 0 || begin >= bounds[2 * k - 1], "cpu kernel adamw_step_flat: decay range ",
                  k, " = [", begin, ", ", end, ") begins before range ", k - 1, " = [",
                  bounds[2 * k - 2], ", ", bounds[2 * k - 1],
                  ") ends: ranges must be sorted and disjoint");
  }
  if (n == 0) return;
  Coefs decayed = coefs_for(lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2);
  Coefs plain = coefs_for(lr, beta1, beta2, eps, 0.0, bias_correction1, bias_correction2);
  decayed.grad_scale = plain.grad_scale = grad_scale;
  auto run = [&](int64_t begin, int64_t end, const Coefs& c) {
    if (begin == end) return;
    if (st == DType::F64) {
      adamw_update(master.data<double>() + begin, m.data<double>() + begin,
                   v.data<double>() + begin, grad.data<double>() + begin, nullptr, end - begin, c);
    } else {
      adamw_update(master.data<float>() + begin, m.data<float>() + begin, v.data<float>() + begin,
                   grad.data<float>() + begin, bf16_param ? param.data<bf16>() + begin : nullptr,
                   end - begin, c);
    }
  };
  int64_t done = 0;  // [0, done) is updated
  for (int64_t k = 0; k < nbounds / 2; ++k) {
    run(done, bounds[2 * k], plain);
    run(bounds[2 * k], bounds[2 * k + 1], decayed);
    done = bounds[2 * k + 1];
  }
  run(done, n, plain);
}

void sum_squares(const Tensor& out, const Tensor& x) {
  TESSERA_CHECK(out.defined() && out.numel() == 1 && out.device().is_cpu() &&
                    (out.dtype() == DType::F32 || out.dtype() == DType::F64),
                "cpu kernel sum_squares: out must be one f32 or f64 CPU element, got ",
                out.defined() ? out.str() : std::string("an undefined tensor"));
  TESSERA_CHECK(
      x.defined() && x.device().is_cpu() && x.is_contiguous() &&
          (x.dtype() == DType::F32 || x.dtype() == DType::F64 || x.dtype() == DType::BF16),
      "cpu kernel sum_squares: x must be a contiguous f32, f64 or bf16 CPU tensor, got ",
      x.defined() ? x.str() : std::string("an undefined tensor"));
  const int64_t n = x.numel();
  constexpr int64_t kBlock = 65536;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(size_t(blocks), 0.0);
  auto run = [&](auto z) {
    using T = decltype(z);
    const T* p = static_cast<const T*>(x.data_ptr());
#pragma omp parallel for if (blocks > 1)
    for (int64_t b = 0; b < blocks; ++b) {
      double acc = 0.0;
      for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i)
        acc += convert<double>(p[i]) * convert<double>(p[i]);
      partial[size_t(b)] = acc;
    }
  };
  switch (x.dtype()) {
    case DType::F32:
      run(float{});
      break;
    case DType::F64:
      run(double{});
      break;
    default:
      run(bf16{});
      break;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  if (out.dtype() == DType::F64) {
    *static_cast<double*>(out.data_ptr()) = total;
  } else {
    *static_cast<float*>(out.data_ptr()) = float(total);
  }
}

// ---- LOMO and AdaLomo (optim/lomo.h) ----
//
// One parameter per call over contiguous host memory (n = numel):
//   w (n): the weights the update runs on, type S (float, or double for f64 parameters): the
//          parameter itself, or the f32 master of a bf16 parameter
//   g (n): the parameter's gradient, type G (S, or bf16)
//   out (n): the bf16 parameter that receives round(w) after the update, or null
//   AdaLomo state, type S: R (rows), C (cols) for a matrix seen as (rows, cols); v (n) otherwise
// Elementwise loops split over OpenMP threads freely. Every reduction sums in double over fixed
// blocks (flat: 65536 elements, as sum_squares; matrices: by rows) and adds the partial sums in
// block order, so a result never depends on the thread count and a resumed run, perhaps with
// another OMP_NUM_THREADS, repeats the uninterrupted one bit for bit. The CUDA twins
// (kernels/optim.cu) do the same element operations in the same order.
namespace {

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
Prep<S> prep_for(const LomoGrad& g) {
  return {S(g.loss_scale), S(g.clip_value), S(g.clip_coef), g.clip_value > 0};
}

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

// The shared checks of lomo_step and adalomo_step: master is param (f32, f64) or a bf16 param's
// own f32 master; grad has param's dtype; all contiguous host tensors of n elements.
void check_lomo_args(const char* kernel, const Tensor& param, const Tensor& master,
                     const Tensor& grad) {
  const DType pt = param.dtype();
  TESSERA_CHECK(param.device().is_cpu() && param.is_contiguous() &&
                    (pt == DType::F32 || pt == DType::F64 || pt == DType::BF16),
                "cpu kernel ", kernel, ": param must be a contiguous f32, f64 or bf16 CPU tensor, "
                "got ", param.str());
  const DType st = pt == DType::F64 ? DType::F64 : DType::F32;
  check_state(kernel, param, "master", master, st);
  check_state(kernel, param, "grad", grad, pt);
  TESSERA_CHECK(pt == DType::BF16 ? master.data_ptr() != param.data_ptr()
                                  : master.data_ptr() == param.data_ptr(),
                "cpu kernel ", kernel, ": a bf16 param needs its own f32 master; an f32 or f64 "
                "param is its own master (param ", param.str(), ", master ", master.str(), ")");
}

// Calls f(S{}, G{}, bf16 out or null) for the param's dtype.
template <typename F>
void dispatch_lomo(const Tensor& param, F&& f) {
  switch (param.dtype()) {
    case DType::F32: f(float{}, float{}, static_cast<bf16*>(nullptr)); break;
    case DType::F64: f(double{}, double{}, static_cast<bf16*>(nullptr)); break;
    default: f(float{}, bf16{}, param.data<bf16>());
  }
}

}  // namespace

void lomo_grad_sum_squares(const Tensor& out, const Tensor& grad, double loss_scale) {
  TESSERA_CHECK(out.defined() && out.numel() == 1 && out.device().is_cpu() &&
                    out.dtype() == DType::F64,
                "cpu kernel lomo_grad_sum_squares: out must be one f64 CPU element, got ",
                out.defined() ? out.str() : std::string("an undefined tensor"));
  TESSERA_CHECK(grad.defined() && grad.device().is_cpu() && grad.is_contiguous() &&
                    (grad.dtype() == DType::F32 || grad.dtype() == DType::F64 ||
                     grad.dtype() == DType::BF16),
                "cpu kernel lomo_grad_sum_squares: grad must be a contiguous f32, f64 or bf16 CPU "
                "tensor, got ", grad.defined() ? grad.str() : std::string("an undefined tensor"));
  double total = 0.0;
  auto run = [&](auto z) {
    using G = decltype(z);
    const G* gd = static_cast<const G*>(grad.data_ptr());
    total = blocked_sum(grad.numel(), [&](int64_t k) {
      const double x = convert<double>(gd[k]) / loss_scale;  // = g exactly when loss_scale = 1
      return x * x;
    });
  };
  switch (grad.dtype()) {
    case DType::F32: run(float{}); break;
    case DType::F64: run(double{}); break;
    default: run(bf16{});
  }
  *static_cast<double*>(out.data_ptr()) = total;
}

void lomo_step(const Tensor& param, const Tensor& master, const Tensor& grad, const LomoGrad& g,
               double lr, double decay) {
  check_lomo_args("lomo_step", param, master, grad);
  if (param.numel() == 0) return;
  dispatch_lomo(param, [&](auto s, auto gz, bf16* out) {
    using S = decltype(s);
    using G = decltype(gz);
    lomo_update(master.data<S>(), grad.data<G>(), out, param.numel(), prep_for<S>(g), lr, decay);
  });
}

void adalomo_step(const Tensor& param, const Tensor& master, const Tensor& grad,
                  const Tensor& row, const Tensor& col, const Tensor& v, const LomoGrad& g,
                  double beta2, double lr, double weight_decay) {
  check_lomo_args("adalomo_step", param, master, grad);
  const int64_t n = param.numel();
  const DType st = master.dtype();
  if (v.defined()) {
    check_state("adalomo_step", param, "v", v, st);
  } else {
    TESSERA_CHECK(row.defined() && col.defined() && row.numel() * col.numel() == n,
                  "cpu kernel adalomo_step: give row and col with rows x cols = ", n,
                  " (a matrix) or v (a vector) for param ", param.str());
    TESSERA_CHECK(row.device().is_cpu() && row.is_contiguous() && row.dtype() == st &&
                      col.device().is_cpu() && col.is_contiguous() && col.dtype() == st,
                  "cpu kernel adalomo_step: row and col must be contiguous ", dtype_name(st),
                  " CPU tensors, got ", row.str(), " and ", col.str());
  }
  if (n == 0) return;
  dispatch_lomo(param, [&](auto s, auto gz, bf16* out) {
    using S = decltype(s);
    using G = decltype(gz);
    const Prep<S> prep = prep_for<S>(g);
    if (v.defined()) {
      adalomo_vector(master.data<S>(), grad.data<G>(), out, n, v.data<S>(), prep, beta2, lr,
                     weight_decay);
      return;
    }
    const int64_t rows = row.numel(), cols = col.numel();
    // A tensor, so the allocator counts it like every other byte of the step (it is small: rows
    // and columns, not rows x columns).
    const int64_t blocks = (rows + kRows - 1) / kRows;
    Tensor scratch = Tensor::empty({2 * (rows + cols) + blocks * cols}, DType::F64);
    adalomo_matrix(master.data<S>(), grad.data<G>(), out, rows, cols, row.data<S>(),
                   col.data<S>(), scratch.data<double>(), prep, beta2, lr, weight_decay);
  });
}

}  // namespace tessera::cpu
