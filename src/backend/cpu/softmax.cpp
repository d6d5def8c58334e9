// CPU softmax, log-softmax and cross-entropy over the last dimension.
// x, y, dx, dy (N, C); logits, dlogits (N, V); targets i32 (N); losses, dlosses, lse (N)
//
// Rows are independent, so OpenMP splits rows across threads and each row is reduced serially by
// one thread: results do not depend on the thread count. Every exp is taken of x - max(x) <= 0 (or
// of x - lse <= 0), so it cannot overflow however large the logits; row sums accumulate in double
// because this backend is the reference the CUDA kernels are tested against.
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>

#include "backend/cpu/cpu.h"

namespace tessera::cpu {
namespace {

// Below this many elements the loop is cheaper than starting an OpenMP team, which takes
// microseconds, and milliseconds when OpenMP's thread count exceeds the cores actually available.
constexpr int64_t kParallelWork = 1 << 15;

// Throws unless every tensor has a's shape and dtype (the kernels read them with one element type).
void check_like(const char* kernel, const Tensor& a, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    TESSERA_CHECK(t->shape() == a.shape() && t->dtype() == a.dtype(), "cpu kernel ", kernel,
                  ": ", t->str(), " does not match ", a.str());
}

// log sum_c exp(x[c]) = m + log sum_c exp(x[c] - m), m = max_c x[c].
template <typename T>
double row_lse(const T* x, int64_t C) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t c = 0; c < C; ++c) m = std::max(m, double(x[c]));
  // An all -inf row would give -inf - -inf = NaN below; its lse is -inf (sum of zeros).
  if (std::isinf(m) && m < 0) return m;
  double s = 0;
  for (int64_t c = 0; c < C; ++c) s += std::exp(double(x[c]) - m);
  return m + std::log(s);
}

// y[n, c] = out(x[n, c] - lse[n]) for every row: the shared body of both forwards.
template <typename Out>
void lse_rows(const char* kernel, const Tensor& y, const Tensor& x, Out out) {
  check_like(kernel, x, {&y});
  if (x.numel() == 0) return;
  const int64_t N = rows_of(x), C = cols_of(x);
  dispatch_float(kernel, x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x.data_ptr());
    T* yp = static_cast<T*>(y.data_ptr());
#pragma omp parallel for if (N * C > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = xp + n * C;
      const double lse = row_lse(xr, C);
      for (int64_t c = 0; c < C; ++c) yp[n * C + c] = T(out(double(xr[c]) - lse));
    }
  });
}

// dx[n, c] = grad(dy[n, c], y[n, c], s[n]) with s[n] = sum_c term(dy[n, c], y[n, c]) in double:
// the shared body of both backwards.
template <typename Term, typename Grad>
void dot_rows(const char* kernel, const Tensor& dx, const Tensor& dy, const Tensor& y, Term term,
              Grad grad) {
  check_like(kernel, y, {&dx, &dy});
  if (y.numel() == 0) return;
  const int64_t N = rows_of(y), C = cols_of(y);
  dispatch_float(kernel, y.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* yp = static_cast<const T*>(y.data_ptr());
    const T* gp = static_cast<const T*>(dy.data_ptr());
    T* dp = static_cast<T*>(dx.data_ptr());
#pragma omp parallel for if (N * C > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      const int64_t r = n * C;
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += term(double(gp[r + c]), double(yp[r + c]));
      for (int64_t c = 0; c < C; ++c) dp[r + c] = T(grad(double(gp[r + c]), double(yp[r + c]), s));
    }
  });
}

}  // namespace

// y = exp(x - lse) rather than exp(x - m) / sum: one rounding per element, not two.
void softmax_forward(const Tensor& y, const Tensor& x) {
  lse_rows("softmax_forward", y, x, [](double v) { return std::exp(v); });
}

void log_softmax_forward(const Tensor& y, const Tensor& x) {
  lse_rows("log_softmax_forward", y, x, [](double v) { return v; });
}

// dx = y * (dy - sum_c dy[c] y[c]): the softmax Jacobian diag(y) - y y^T applied to dy.
void softmax_backward(const Tensor& dx, const Tensor& dy, const Tensor& y) {
  dot_rows("softmax_backward", dx, dy, y, [](double g, double v) { return g * v; },
           [](double g, double v, double dot) { return v * (g - dot); });
}

// dx = dy - softmax(x) * sum_c dy[c], with softmax(x) = exp(y) recovered from the saved output.
void log_softmax_backward(const Tensor& dx, const Tensor& dy, const Tensor& y) {
  dot_rows("log_softmax_backward", dx, dy, y, [](double g, double) { return g; },
           [](double g, double v, double s) { return g - std::exp(v) * s; });
}

namespace {

// Shapes and dtypes shared by the two cross-entropy kernels, and targets in range: the op validates
// targets with a message for the user; this check keeps the kernel itself from reading out of
// bounds when called directly. It runs before the parallel loop because an exception must not
// escape an OpenMP region.
void check_cross_entropy(const char* kernel, const Tensor& logits, const Tensor& lse,
                         const Tensor& targets, int64_t ignore_index, int64_t classes) {
  TESSERA_CHECK(logits.dim() == 2 && logits.is_contiguous(), "cpu kernel ", kernel,
                ": logits must be a contiguous (N, V), got ", logits.str());
  const int64_t N = logits.size(0), V = logits.size(1);
  TESSERA_CHECK(classes >= 1 && classes <= V, "cpu kernel ", kernel, ": classes ", classes,
                " must be in [1, ", V, "] for logits ", logits.str());
  TESSERA_CHECK(lse.dtype() == logits.dtype() && lse.numel() == N, "cpu kernel ", kernel, ": lse ",
                lse.str(), " does not match logits ", logits.str());
  TESSERA_CHECK(targets.dtype() == DType::I32 && targets.numel() == N, "cpu kernel ", kernel,
                ": targets ", targets.str(), " must be i32 with one entry per row of ",
                logits.str());
  const int32_t* t = static_cast<const int32_t*>(targets.data_ptr());
  for (int64_t n = 0; n < N; ++n)
    TESSERA_CHECK(t[n] == ignore_index || (t[n] >= 0 && t[n] < classes), "cpu kernel ", kernel,
                  ": target ", t[n], " at row ", n, " is outside [0, ", classes, ")");
}

// Row n's gradient, g (softmax(x) - onehot(t)) with softmax = exp(x - l), l the lse as saved
// (rounded to T); 0 on the padding columns and on an ignored row. dr may be xr: the target's
// logit is read before the row is written.
template <typename T>
void write_row_gradient(T* dr, const T* xr, double g, double l, int32_t t, bool ignored, int64_t V,
                        int64_t classes) {
  if (ignored) {
    for (int64_t v = 0; v < V; ++v) dr[v] = T(0);
    return;
  }
  const double e_t = std::exp(double(xr[t]) - l);  // read before dr may overwrite it
  for (int64_t v = 0; v < classes; ++v) dr[v] = T(g * std::exp(double(xr[v]) - l));
  for (int64_t v = classes; v < V; ++v) dr[v] = T(0);
  dr[t] = T(g * (e_t - 1.0));
}

}  // namespace

void cross_entropy_forward(const Tensor& losses, const Tensor& lse, const Tensor& logits,
                           const Tensor& targets, int64_t ignore_index, int64_t classes) {
  check_cross_entropy("cross_entropy_forward", logits, lse, targets, ignore_index, classes);
  check_like("cross_entropy_forward", lse, {&losses});
  const int64_t N = logits.size(0), V = logits.size(1);
  dispatch_float("cross_entropy_forward", logits.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(logits.data_ptr());
    const int32_t* tp = static_cast<const int32_t*>(targets.data_ptr());
    T* lp = static_cast<T*>(losses.data_ptr());
    T* sp = static_cast<T*>(lse.data_ptr());
    // -log softmax(x)[t] = lse - x[t]: the probabilities themselves are never formed. Rows lie V
    // apart; the padding columns past `classes` are never read.
#pragma omp parallel for if (N * V > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      const double l = row_lse(xp + n * V, classes);
      sp[n] = T(l);
      lp[n] = tp[n] == ignore_index ? T(0) : T(l - double(xp[n * V + tp[n]]));
    }
  });
}

// dlogits = dlosses[n] * (softmax(x) - onehot(t)), softmax recomputed as exp(x - lse) from the
// saved lse so the forward never has to store an (N, V) probability matrix; padding columns get 0.
// dlogits may be logits: each row's target logit is read before the row is written.
void cross_entropy_backward(const Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& lse, const Tensor& targets, int64_t ignore_index,
                            int64_t classes) {
  check_cross_entropy("cross_entropy_backward", logits, lse, targets, ignore_index, classes);
  check_like("cross_entropy_backward", logits, {&dlogits});
  check_like("cross_entropy_backward", lse, {&dlosses});
  const int64_t N = logits.size(0), V = logits.size(1);
  dispatch_float("cross_entropy_backward", logits.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(logits.data_ptr());
    const T* sp = static_cast<const T*>(lse.data_ptr());
    const T* gp = static_cast<const T*>(dlosses.data_ptr());
    const int32_t* tp = static_cast<const int32_t*>(targets.data_ptr());
    T* dp = static_cast<T*>(dlogits.data_ptr());
#pragma omp parallel for if (N * V > kParallelWork)
    for (int64_t n = 0; n < N; ++n)
      write_row_gradient(dp + n * V, xp + n * V, double(gp[n]), double(sp[n]), tp[n],
                         tp[n] == ignore_index, V, classes);
  });
}

// The two above in one pass over each row: its lse and loss (the target's logit read first),
// then its gradient from the lse as cross_entropy_forward saves it, so the values are the two
// kernels' bit for bit. dlogits may be logits.
void cross_entropy_fused(const Tensor& losses, const Tensor& lse, const Tensor& dlogits,
                         const Tensor& dlosses, const Tensor& logits, const Tensor& targets,
                         int64_t ignore_index, int64_t classes) {
  check_cross_entropy("cross_entropy_fused", logits, lse, targets, ignore_index, classes);
  check_like("cross_entropy_fused", lse, {&losses, &dlosses});
  check_like("cross_entropy_fused", logits, {&dlogits});
  const int64_t N = logits.size(0), V = logits.size(1);
  dispatch_float("cross_entropy_fused", logits.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(logits.data_ptr());
    const T* gp = static_cast<const T*>(dlosses.data_ptr());
    const int32_t* tp = static_cast<const int32_t*>(targets.data_ptr());
    T* lp = static_cast<T*>(losses.data_ptr());
    T* sp = static_cast<T*>(lse.data_ptr());
    T* dp = static_cast<T*>(dlogits.data_ptr());
#pragma omp parallel for if (N * V > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = xp + n * V;
      const bool ignored = tp[n] == ignore_index;
      const double l = row_lse(xr, classes);
      sp[n] = T(l);
      lp[n] = ignored ? T(0) : T(l - double(xr[tp[n]]));
      write_row_gradient(dp + n * V, xr, double(gp[n]), double(T(l)), tp[n], ignored, V, classes);
    }
  });
}

void cross_entropy_rescale(const Tensor& dlogits, const Tensor& dy, double expected) {
  TESSERA_CHECK(dlogits.is_contiguous() && dy.numel() == 1 && dy.dtype() == dlogits.dtype(),
                "cpu kernel cross_entropy_rescale: dlogits ", dlogits.str(),
                " must be contiguous and dy ", dy.str(), " one element of its dtype");
  dispatch_float("cross_entropy_rescale", dlogits.dtype(), [&](auto z) {
    using T = decltype(z);
    const double d = double(*static_cast<const T*>(dy.data_ptr()));
    if (d == double(T(expected))) return;
    T* p = static_cast<T*>(dlogits.data_ptr());
    const int64_t n = dlogits.numel();
    const double r = d / double(T(expected));
#pragma omp parallel for if (n > kParallelWork)
    for (int64_t i = 0; i < n; ++i) p[i] = T(double(p[i]) * r);
  });
}

}  // namespace tessera::cpu
