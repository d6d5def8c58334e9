// CPU optimizer kernels: the fused AdamW step and the sum of squares behind gradient norms.
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
// for it, so the bits are adamw_step's by construction.
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

namespace tessera::cpu {
namespace {

struct Coefs {
  double decay;  // 1 - lr * wd (1 when wd is 0: a parameter without decay)
  double b1, b2, eps;
  double step_size;  // lr / (1 - b1^t)
  double bc2_sqrt;   // sqrt(1 - b2^t)
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
                     double bias_correction2) {
  const AdamwFlatArgs args = check_adamw_flat_args("cpu kernel adamw_step_flat", false, param,
                                                    master, m, v, grad, decay_ranges);
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
  const Coefs decayed =
      coefs_for(lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2);
  const Coefs plain = coefs_for(lr, beta1, beta2, eps, 0.0, bias_correction1, bias_correction2);
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

}  // namespace tessera::cpu
