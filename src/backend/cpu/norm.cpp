// CPU LayerNorm and RMSNorm over the last dimension.
//
// x, y, dx, dy (N, C); w, b, dw, db (C); mean, rstd (N)
//
// LayerNorm (Ba, Kiros & Hinton 2016): y = (x - mean) * rstd * w + b, rstd = 1 / sqrt(var + eps),
// var the biased (divide by C) variance of the row.
// RMSNorm (Zhang & Sennrich 2019): y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).
// With xhat = normalised x and dxhat = dy * w, the input gradients are
//   layernorm: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
//   rmsnorm:   dx = rstd * (dxhat - xhat * mean(dxhat * xhat))
// and dw = sum over rows of dy * xhat, db = sum over rows of dy. An output marked in
// NormAccumulate holds the gradient so far and receives its sum with this one rounded to T (the
// sum of two T values formed exactly, then rounded): the bits of adding a separate one with axpby.
//
// Row statistics and the backward's sums are accumulated in double: this is the reference the CUDA
// kernels are tested against, so it should be as exact as is cheap. mean and rstd are saved in x's
// dtype; backward reads them back, so forward and backward see the same statistics.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu.h"

namespace tessera::cpu {
namespace {

// Parallelise only when a row loop has enough work to pay for waking the thread team.
constexpr int64_t kParallelWork = 32768;
// dw and db are reductions over rows. Splitting the columns into blocks, each summed over every row
// by one thread, keeps the summation order fixed (results do not depend on the thread count) and
// reads x and dy row-contiguously within a block.
constexpr int64_t kColBlock = 32;

void check_rows(const char* kernel, const Tensor& x, const Tensor& y, const Tensor& w,
                const Tensor& stat) {
  const int64_t N = rows_of(x), C = cols_of(x);
  TESSERA_CHECK(y.numel() == x.numel() && w.numel() == C && stat.numel() == N &&
                    y.dtype() == x.dtype() && w.dtype() == x.dtype(),
                kernel, ": x ", x.str(), ", out ", y.str(), ", weight ", w.str(), ", stats ",
                shape_str(stat.shape()), " (expected x (N, C), weight (C), stats (N), one dtype)");
}

// out = v rounded to T, or (accumulate) out + that rounded to T: axpby's bits.
template <typename T>
void put(T& out, double v, bool accumulate) {
  out = accumulate ? T(double(out) + double(T(v))) : T(v);
}

}  // namespace

void layernorm_forward(const Tensor& y, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                       const Tensor& w, const Tensor& b, double eps) {
  check_rows("layernorm_forward", x, y, w, mean);
  check_rows("layernorm_forward", x, y, b, rstd);
  const int64_t N = rows_of(x), C = cols_of(x);
  dispatch_float("layernorm_forward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* wp = static_cast<const T*>(w.data_ptr());
    const T* bp = static_cast<const T*>(b.data_ptr());
    T* yp = static_cast<T*>(y.data_ptr());
    T* mp = static_cast<T*>(mean.data_ptr());
    T* rp = static_cast<T*>(rstd.data_ptr());
#pragma omp parallel for if (N * C > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = xp + n * C;
      double sum = 0;
      for (int64_t c = 0; c < C; ++c) sum += double(xr[c]);
      const double m = sum / double(C);
      // Two passes (sum of squared deviations) rather than E[x^2] - mean^2, which cancels
      // catastrophically when |mean| is large against the spread.
      double ss = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double d = double(xr[c]) - m;
        ss += d * d;
      }
      const double r = 1.0 / std::sqrt(ss / double(C) + eps);
      T* yr = yp + n * C;
      for (int64_t c = 0; c < C; ++c)
        yr[c] = T((double(xr[c]) - m) * r * double(wp[c]) + double(bp[c]));
      mp[n] = T(m);
      rp[n] = T(r);
    }
  });
}

void layernorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                        const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                        NormAccumulate acc) {
  check_rows("layernorm_backward", x, dy, w, mean);
  check_rows("layernorm_backward", x, dx, dw, rstd);
  check_rows("layernorm_backward", x, dx, db, rstd);
  const int64_t N = rows_of(x), C = cols_of(x);
  dispatch_float("layernorm_backward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* wp = static_cast<const T*>(w.data_ptr());
    const T* gp = static_cast<const T*>(dy.data_ptr());
    const T* mp = static_cast<const T*>(mean.data_ptr());
    const T* rp = static_cast<const T*>(rstd.data_ptr());
    T* dxp = static_cast<T*>(dx.data_ptr());
    T* dwp = static_cast<T*>(dw.data_ptr());
    T* dbp = static_cast<T*>(db.data_ptr());
#pragma omp parallel for if (N * C > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = xp + n * C;
      const T* gr = gp + n * C;
      const double m = double(mp[n]), r = double(rp[n]);
      double sum_g = 0, sum_gx = 0;  // sums of dxhat and dxhat * xhat
      for (int64_t c = 0; c < C; ++c) {
        const double g = double(gr[c]) * double(wp[c]);
        sum_g += g;
        sum_gx += g * (double(xr[c]) - m) * r;
      }
      const double mean_g = sum_g / double(C), mean_gx = sum_gx / double(C);
      T* dxr = dxp + n * C;
      for (int64_t c = 0; c < C; ++c) {
        const double xhat = (double(xr[c]) - m) * r;
        const double g = double(gr[c]) * double(wp[c]);
        put(dxr[c], r * (g - mean_g - xhat * mean_gx), acc.dx);
      }
    }
#pragma omp parallel for if (N * C > kParallelWork)
    for (int64_t c0 = 0; c0 < C; c0 += kColBlock) {
      const int64_t c1 = std::min(C, c0 + kColBlock);
      double acc_w[kColBlock] = {}, acc_b[kColBlock] = {};
      for (int64_t n = 0; n < N; ++n) {
        const double m = double(mp[n]), r = double(rp[n]);
        for (int64_t c = c0; c < c1; ++c) {
          const double g = double(gp[n * C + c]);
          acc_w[c - c0] += g * (double(xp[n * C + c]) - m) * r;
          acc_b[c - c0] += g;
        }
      }
      for (int64_t c = c0; c < c1; ++c) {
        put(dwp[c], acc_w[c - c0], acc.dw);
        put(dbp[c], acc_b[c - c0], acc.db);
      }
    }
  });
}

void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w,
                     double eps) {
  check_rows("rmsnorm_forward", x, y, w, rstd);
  const int64_t N = rows_of(x), C = cols_of(x);
  dispatch_float("rmsnorm_forward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* wp = static_cast<const T*>(w.data_ptr());
    T* yp = static_cast<T*>(y.data_ptr());
    T* rp = static_cast<T*>(rstd.data_ptr());
#pragma omp parallel for if (N * C > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = xp + n * C;
      double ss = 0;
      for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * double(xr[c]);
      const double r = 1.0 / std::sqrt(ss / double(C) + eps);
      T* yr = yp + n * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = T(double(xr[c]) * r * double(wp[c]));
      rp[n] = T(r);
    }
  });
}

void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                      const Tensor& w, const Tensor& rstd, NormAccumulate acc) {
  check_rows("rmsnorm_backward", x, dy, w, rstd);
  check_rows("rmsnorm_backward", x, dx, dw, rstd);
  const int64_t N = rows_of(x), C = cols_of(x);
  dispatch_float("rmsnorm_backward", x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* wp = static_cast<const T*>(w.data_ptr());
    const T* gp = static_cast<const T*>(dy.data_ptr());
    const T* rp = static_cast<const T*>(rstd.data_ptr());
    T* dxp = static_cast<T*>(dx.data_ptr());
    T* dwp = static_cast<T*>(dw.data_ptr());
#pragma omp parallel for if (N * C > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = xp + n * C;
      const T* gr = gp + n * C;
      const double r = double(rp[n]);
      double sum_gx = 0;  // sum of dxhat * xhat
      for (int64_t c = 0; c < C; ++c) sum_gx += double(gr[c]) * double(wp[c]) * double(xr[c]) * r;
      const double mean_gx = sum_gx / double(C);
      T* dxr = dxp + n * C;
      for (int64_t c = 0; c < C; ++c) {
        const double xhat = double(xr[c]) * r;
        put(dxr[c], r * (double(gr[c]) * double(wp[c]) - xhat * mean_gx), acc.dx);
      }
    }
#pragma omp parallel for if (N * C > kParallelWork)
    for (int64_t c0 = 0; c0 < C; c0 += kColBlock) {
      const int64_t c1 = std::min(C, c0 + kColBlock);
      double acc_w[kColBlock] = {};
      for (int64_t n = 0; n < N; ++n) {
        const double r = double(rp[n]);
        for (int64_t c = c0; c < c1; ++c)
          acc_w[c - c0] += double(gp[n * C + c]) * double(xp[n * C + c]) * r;
      }
      for (int64_t c = c0; c < c1; ++c) put(dwp[c], acc_w[c - c0], acc.dw);
    }
  });
}

}  // namespace tessera::cpu
