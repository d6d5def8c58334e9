// CPU stick-breaking attention (Tan et al. 2024, "Stick-breaking Attention", arXiv:2410.17980): the
// reference for the fused CUDA kernels in kernels/stick_breaking.cu.
//
// q, out, dq, dout (B, H, T, D); k, v, dk, dv (B, Hkv, T, D), any views with contiguous rows
// (the strided contract of backend/attention_shapes.h); log_rem, rem (B, H, T) contiguous.
// Grouped-query heads as in attention.cpp: query head h reads kv head h / (H / Hkv).
//
// Query j attends the keys S_j = {i < j} ({i <= j} with attend_current). Writing, for i in S_j,
//   z[i] = scale q_j . k_i,  beta[i] = sigmoid(z[i]),  sp[i] = softplus(z[i]) = -log(1 - beta[i]),
// a stick of length 1 is broken from the nearest key backwards: key i takes the fraction beta[i] of
// what the keys after it left over, so
//   log A[i] = log beta[i] + sum_{k in S_j, k > i} log(1 - beta[k])
//            = logsigmoid(z[i]) - sum_{k in S_j, k > i} sp[k],
//   out_j = sum_{i in S_j} A[i] v_i  (+ rem_j v_j with add_remainder, the paper's remainder term),
//   log rem_j = -sum_{i in S_j} sp[i],   and sum_i A[i] + rem_j = 1 exactly (the stick is
//   conserved).
// The sums run from the diagonal backwards and every term is <= 0, so a long context cannot
// underflow an intermediate: only an A[i] that truly is below the smallest double rounds to 0.
// There is no normalisation and no running max (A <= 1).
//
// Backward, per query row j, with a[i] = dout_j . v_i, g[i] = A[i] a[i] and rbar = dout_j . v_j
// when add_remainder (the gradient reaching rem_j), else 0. From the log form,
//   d log A[i] / dz[k] = 1 - beta[k] (k == i),  -beta[k] (k > i),  0 (k < i);
//   d log rem_j / dz[k] = -beta[k];
// so dL/dz[k] = sum_i g[i] d log A[i]/dz[k] + rbar rem_j d log rem_j/dz[k]
//             = g[k] - beta[k] (sum_{i <= k} g[i] + rbar rem_j),
// and dq_j = scale sum_k dz[k] k_k,  dk_k += scale dz[k] q_j,  dv_i += A[i] dout_j,
// dv_j += rem_j dout_j (add_remainder).
//
// The running sum above starts at rbar rem_j and ends at rbar rem_j + sum_i g[i] = dout_j . out_j
// (because sum_i A[i] v_i = out_j - rem_j v_j when add_remainder): the CUDA backward walks the keys
// from the diagonal down, so it starts from that total (computed from the saved out) and
// subtracts. Here the backward recomputes A and beta from q and k, walking up from key 0; out and
// log_rem are checked but not read. The forward also takes Tq < Tk queries (KV-cached decoding):
// query j sits at position Tk - Tq + j, and its own value is v at that position.
//
// The products run per head through BLAS (blas.h) over blocks of kRowBlock query rows that read
// the keys up to the block's last position: Z = scale Q K^T and out = A V forward; Z and
// dA = dO V^T again backward, then dQ = scale dZ K, dK += scale dZ^T Q, dV += A^T dO. Each row's
// scan (the logs, A, beta, log rem, and backward the running sum and dz) runs in double on the
// scores rounded to the input type; the products accumulate in it (f32 sums for f32, as softmax
// attention's kernels here). Forward splits over (b, h); backward over (b, kv head) so one thread
// owns a kv head's dk and dv; every BLAS call runs on its thread, so the bits do not depend on the
// thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/attention_heads.h"
#include "backend/cpu/blas.h"
#include "backend/cpu/cpu.h"
#include "backend/cpu/fast_exp.h"
#include "backend/cpu/simd.h"

namespace tessera::cpu {
namespace {

using Dims = AttentionDims;
constexpr auto check_like = check_attention_like;

// One query row's scan over its n attended keys, from their scores z[0..n): fills a[i] = A[i] and
// beta[i], returns log rem. With e = exp(-|z|): softplus(z) = max(z, 0) + log1p(e) and
// logsigmoid(z) = min(z, 0) - log1p(e), neither of which overflows or cancels for large |z|.
// Three passes: the per-key functions (independent, so they vectorise; fast_exp.h's exp_in and
// log1p_in: libm's for f64, straight-line ones within 1 ulp of libm's for f32), the running sum
// of the softplus terms from the last key back (serial: additions only), then A from its log.
template <typename F>
TESSERA_SIMD_CLONES double stick_scan(const F* z, int64_t n, double* a, double* beta) {
  for (int64_t i = 0; i < n; ++i) {
    const double zi = double(z[i]), ez = exp_in<F>(-std::abs(zi));
    a[i] = log1p_in<F>(ez);
    beta[i] = zi >= 0 ? 1 / (1 + ez) : ez / (1 + ez);
  }
  double tail = 0;  // sum of softplus(z[k]) over the attended k > i: -log of the stick left for i
  for (int64_t i = n - 1; i >= 0; --i) {
    const double zi = double(z[i]), l = a[i];
    a[i] = std::min(zi, 0.0) - l - tail;
    tail += std::max(zi, 0.0) + l;
  }
  for (int64_t i = 0; i < n; ++i) a[i] = exp_in<F>(a[i]);
  return -tail;
}

}  // namespace

void stick_breaking_forward(const Tensor& out, const Tensor& log_rem, const Tensor& rem,
                            const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                            bool attend_current, bool add_remainder) {
  const Dims d = check_strided_qkv("stick_breaking_forward", q, k, v, /*allow_offset=*/true);
  // T queries at positions off + j over Tk keys (off = 0: self-attention).
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, T = d.T, D = d.D, Tk = d.Tk, off = d.offset();
  check_attention_view("stick_breaking_forward", "out", out, q.shape(), q.dtype(), true);
  check_like("stick_breaking_forward", "log_rem", log_rem, {B, H, T}, stat_dtype(q.dtype()));
  if (rem.defined()) check_like("stick_breaking_forward", "rem", rem, {B, H, T}, q.dtype());
  const int64_t G = H / Hkv;
  single_threaded_blas_unless_asked();
  const Tensor qb = blas_readable(q), kb = blas_readable(k), vb = blas_readable(v);

  dispatch_float("stick_breaking_forward", q.dtype(), [&](auto zero) {
    using F = decltype(zero);
    const Heads<const F> qh = heads_of<F>(qb), kh = heads_of<F>(kb), vh = heads_of<F>(vb);
    const Heads<F> oh = mut_heads_of<F>(out);
    F* lrp = static_cast<F*>(log_rem.data_ptr());  // stat dtype == F for f32 and f64
    F* rp = rem.defined() ? static_cast<F*>(rem.data_ptr()) : nullptr;
#pragma omp parallel if (B * H * T * T * D > 65536)
    {
      // Z, then A in place, of one row block; the scan's doubles of one row; the block's log rem.
      std::vector<F> za(size_t(std::min(kRowBlock, T) * Tk));
      std::vector<double> a(size_t(Tk), 0.0), beta(size_t(Tk), 0.0),
          lr(size_t(std::min(kRowBlock, T)), 0.0);
#pragma omp for schedule(dynamic)
      for (int64_t bh = 0; bh < B * H; ++bh) {
        const int64_t b = bh / H, h = bh % H, g = h / G;
        const F* k0 = kh.at(b, g, 0);  // a cache's filled prefix is a view too
        const F* v0 = vh.at(b, g, 0);
        for (int64_t r0 = 0; r0 < T; r0 += kRowBlock) {
          const int64_t rows = std::min(kRowBlock, T - r0);
          const int64_t last = off + r0 + rows - 1;  // the block's last query position
          const int64_t keys = attend_current ? last + 1 : last;
          blas_gemm<F>(false, true, rows, keys, D, F(scale), qh.at(b, h, r0), qh.ld, k0, kh.ld,
                       F(0), za.data(), keys);
          for (int64_t jj = 0; jj < rows; ++jj) {
            const int64_t pos = off + r0 + jj, n = attend_current ? pos + 1 : pos;
            F* row = za.data() + jj * keys;
            lr[size_t(jj)] = stick_scan(row, n, a.data(), beta.data());
            for (int64_t i = 0; i < n; ++i) row[i] = F(a[size_t(i)]);
            std::fill(row + n, row + keys, F(0));
          }
          blas_gemm<F>(false, false, rows, D, keys, F(1), za.data(), keys, v0, vh.ld, F(0),
                       oh.at(b, h, r0), oh.ld);
          for (int64_t jj = 0; jj < rows; ++jj) {
            const int64_t j = r0 + jj, pos = off + j;
            const double r = std::exp(lr[size_t(jj)]);
            if (add_remainder) {
              F* oj = oh.at(b, h, j);
              const F* vj = vh.at(b, g, pos);
              for (int64_t e = 0; e < D; ++e) oj[e] = F(double(oj[e]) + r * double(vj[e]));
            }
            lrp[bh * T + j] = F(lr[size_t(jj)]);
            if (rp) rp[bh * T + j] = F(r);
          }
        }
      }
    }
  });
}

void stick_breaking_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& out, const Tensor& log_rem, double scale,
                             bool attend_current, bool add_remainder) {
  const Dims d = check_strided_qkv("stick_breaking_backward", q, k, v);
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, T = d.T, D = d.D;
  check_attention_grads("stick_breaking_backward", dq, dk, dv, dout, q, k, v, /*strided=*/true);
  check_attention_view("stick_breaking_backward", "out", out, q.shape(), q.dtype(), false);
  check_like("stick_breaking_backward", "log_rem", log_rem, {B, H, T}, stat_dtype(q.dtype()));
  const int64_t G = H / Hkv;
  single_threaded_blas_unless_asked();
  const Tensor qb = blas_readable(q), kb = blas_readable(k), vb = blas_readable(v),
               dob = blas_readable(dout);

  dispatch_float("stick_breaking_backward", q.dtype(), [&](auto zero) {
    using F = decltype(zero);
    const Heads<const F> qh = heads_of<F>(qb), kh = heads_of<F>(kb), vh = heads_of<F>(vb),
                         doh = heads_of<F>(dob);
    const Heads<F> dqh = mut_heads_of<F>(dq), dkh = mut_heads_of<F>(dk), dvh = mut_heads_of<F>(dv);
#pragma omp parallel if (B * H * T * T * D > 65536)
    {
      // Z, then dZ in place; dA, then A in place: one row block each. The scan's doubles of a row.
      const size_t block = size_t(std::min(kRowBlock, T) * T);
      std::vector<F> zz(block), aa(block);
      std::vector<double> a(size_t(T), 0.0), beta(size_t(T), 0.0);
#pragma omp for schedule(dynamic)
      for (int64_t bk = 0; bk < B * Hkv; ++bk) {
        const int64_t b = bk / Hkv, g = bk % Hkv;
        const F* k0 = kh.at(b, g, 0);
        const F* v0 = vh.at(b, g, 0);
        // The group's query heads add into one kv head's dK and dV.
        zero_head_rows(dkh, b, g, T, D);
        zero_head_rows(dvh, b, g, T, D);
        for (int64_t h = g * G; h < (g + 1) * G; ++h) {
          for (int64_t r0 = 0; r0 < T; r0 += kRowBlock) {
            const int64_t rows = std::min(kRowBlock, T - r0), last = r0 + rows - 1;
            const int64_t keys = attend_current ? last + 1 : last;
            const F* qblk = qh.at(b, h, r0);
            const F* doblk = doh.at(b, h, r0);
            blas_gemm<F>(false, true, rows, keys, D, F(scale), qblk, qh.ld, k0, kh.ld, F(0),
                         zz.data(), keys);
            blas_gemm<F>(false, true, rows, keys, D, F(1), doblk, doh.ld, v0, vh.ld, F(0),
                         aa.data(), keys);
            for (int64_t jj = 0; jj < rows; ++jj) {
              const int64_t j = r0 + jj, n = attend_current ? j + 1 : j;
              F* zrow = zz.data() + jj * keys;  // z, then dz
              F* arow = aa.data() + jj * keys;  // dA, then A
              const F* doj = doh.at(b, h, j);
              const double rem = std::exp(stick_scan(zrow, n, a.data(), beta.data()));
              double rbar = 0;
              if (add_remainder) {
                const F* vj = vh.at(b, g, j);
                F* dvj = dvh.at(b, g, j);
                for (int64_t e = 0; e < D; ++e) rbar += double(doj[e]) * double(vj[e]);
                for (int64_t e = 0; e < D; ++e) dvj[e] = F(double(dvj[e]) + rem * double(doj[e]));
              }
              double prefix = rbar * rem;  // rbar rem_j + sum_{i <= k} g[i], built as k rises
              for (int64_t i = 0; i < n; ++i) {
                const double A = a[size_t(i)], gi = A * double(arow[i]);
                prefix += gi;
                zrow[i] = F(gi - beta[size_t(i)] * prefix);
                arow[i] = F(A);
              }
              std::fill(zrow + n, zrow + keys, F(0));
              std::fill(arow + n, arow + keys, F(0));
            }
            blas_gemm<F>(false, false, rows, D, keys, F(scale), zz.data(), keys, k0, kh.ld, F(0),
                         dqh.at(b, h, r0), dqh.ld);
            blas_gemm<F>(true, false, keys, D, rows, F(scale), zz.data(), keys, qblk, qh.ld, F(1),
                         dkh.at(b, g, 0), dkh.ld);
            blas_gemm<F>(true, false, keys, D, rows, F(1), aa.data(), keys, doblk, doh.ld, F(1),
                         dvh.at(b, g, 0), dvh.ld);
          }
        }
      }
    }
  });
}

}  // namespace tessera::cpu
