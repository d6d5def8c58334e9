// CPU causal softmax attention: the materialised kernels (the CPU's training path, saving P) and
// the flash-style reference every fused GPU kernel's saved state is checked against.
//
// q, out, dq, dout (B, H, T, D); k, v, dk, dv (B, Hkv, T, D); probs (B, H, T, T). Every kernel here
// keeps the strided contract of backend/attention_shapes.h: q, k, v, out and the gradients may be
// any views whose rows are contiguous (HeadStrides), so the fused-projection layout of
// ops/packed_attention.h runs here exactly as on the GPU; probs and lse are contiguous.
//
// Grouped-query attention (GQA; Ainslie et al. 2023, arXiv:2305.13245): the H query heads form Hkv
// groups of G = H / Hkv consecutive heads, and group g shares kv head g, so query head h reads kv
// head h / G. Hkv == H is ordinary multi-head attention, Hkv == 1 multi-query attention.
//
// Forward, causal (query i attends to keys 0..i, itself included):
//   S = scale * q k^T,  P = softmax_j(S) over j <= i with P[i, j] = 0 for j > i,  out = P v.
// Backward, per query head, from the saved P (softmax Jacobian applied row by row):
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dP * P)),  dQ = scale * dS K,
//   dK = scale * dS^T Q;
// a kv head's dK and dV are the sums of these over the G query heads of its group.
//
// attention_forward / attention_backward compute those products per head with BLAS, as PyTorch's
// math attention does with bmm (so they round like it: f32 accumulation in f32, each row's softmax
// sum in double), over row blocks of kRowBlock queries that read only the keys up to the block's
// last row (the causal half). Forward splits the work over (b, h); backward over (b, kv head), so
// one thread owns a kv head's dK and dV (which gather from every query head of the group) together
// with those query heads' dQ, and no two threads write one row. Every BLAS call runs on its
// thread, so the bits do not depend on the thread count.
//
// The flash_attention_* entries compute the same attention the way FlashAttention-2 (Dao 2023,
// arXiv:2307.08691) does on the GPU, so the CUDA kernels have a reference for its saved state: the
// forward saves lse[i] = m_i + log sum_j exp(S[i, j] - m_i) instead of P, the backward rebuilds
// P[i, j] = exp(S[i, j] - lse[i]) and replaces rowsum(dP * P) by the equal rowsum(dO * O) (since
// sum_j P[i, j] dO_i . v_j = dO_i . out_i). They add an optional sliding window: query i attends
// keys i - window < j <= i when window > 0. flash_attention_forward also takes Tq < Tk queries
// (KV-cached decoding): query i sits at position Tk - Tq + i and attends keys up to it. They are
// plain loops with double accumulators for every dot product, softmax max and sum, rowsum and
// group sum: ground truth, exactness rather than speed (no gemm, whose f32 accumulation order
// differs between BLAS builds).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/attention_shapes.h"
#include "backend/cpu/blas.h"
#include "backend/cpu/cpu.h"
#include "backend/cpu/fast_exp.h"

namespace tessera::cpu {
namespace {

using Dims = AttentionDims;
AttentionDims check_qkv(const char* kernel, const Tensor& q, const Tensor& k, const Tensor& v,
                        bool allow_offset = false) {
  return check_attention_qkv(kernel, q, k, v, allow_offset, /*strided=*/true);
}

constexpr auto check_like = check_attention_like;

// An output or gradient view (strided contract).
void check_view(const char* kernel, const char* name, const Tensor& t, const Tensor& like,
                bool output) {
  check_attention_view(kernel, name, t, like.shape(), like.dtype(), output);
}

// Element pointer and row geometry of a strided (B, H, T, D) view.
template <typename P>
struct Rows {
  P* p;
  HeadStrides s;
  P* at(int64_t b, int64_t h, int64_t t) const { return p + s.row(b, h, t); }
};
template <typename F>
Rows<const F> rows_of(const Tensor& t) {
  return {static_cast<const F*>(t.data_ptr()), head_strides(t)};
}
template <typename F>
Rows<F> mut_rows_of(const Tensor& t) {
  return {static_cast<F*>(t.data_ptr()), head_strides(t)};
}

template <typename P>
int64_t ld_of(const Rows<P>& r, int64_t T, int64_t D) {
  return head_ld(r.s.t, T, D);
}

// Row i of P from its scores p[0..i] in place (the causal softmax; the max subtracted, so every
// exp <= 1), the sum in double; p[i+1..T) set to exactly zero.
template <typename F>
void softmax_causal_row(F* p, int64_t i, int64_t T) {
  F m = p[0];
  for (int64_t j = 1; j <= i; ++j) m = std::max(m, p[j]);
  for (int64_t j = 0; j <= i; ++j) p[j] = fast_exp(p[j] - m);
  double sum = 0;
  for (int64_t j = 0; j <= i; ++j) sum += double(p[j]);
  const F inv = F(1.0 / sum);
  for (int64_t j = 0; j <= i; ++j) p[j] *= inv;
  std::fill(p + i + 1, p + T, F(0));
}

// Row i of dS from its dP in place: dS = P * (dP - rowsum(dP * P)) over j <= i (the sum in
// double), zero past i up to `keys`.
template <typename F>
void softmax_backward_causal_row(F* ds, const F* p, int64_t i, int64_t keys) {
  double rowdot = 0;
  for (int64_t j = 0; j <= i; ++j) rowdot += double(ds[j]) * double(p[j]);
  const F r = F(rowdot);
  for (int64_t j = 0; j <= i; ++j) ds[j] = p[j] * (ds[j] - r);
  std::fill(ds + i + 1, ds + keys, F(0));
}

}  // namespace

void attention_forward(const Tensor& out, const Tensor& probs, const Tensor& q, const Tensor& k,
                       const Tensor& v, double scale) {
  const Dims d = check_qkv("attention_forward", q, k, v);
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, T = d.T, D = d.D;
  check_view("attention_forward", "out", out, q, true);
  check_like("attention_forward", "probs", probs, {B, H, T, T}, q.dtype());
  const int64_t G = H / Hkv;
  single_threaded_blas_unless_asked();
  const Tensor qb = blas_readable(q), kb = blas_readable(k), vb = blas_readable(v);

  dispatch_float("attention_forward", q.dtype(), [&](auto z) {
    using F = decltype(z);
    const Rows<const F> qr = rows_of<F>(qb), kr = rows_of<F>(kb), vr = rows_of<F>(vb);
    const Rows<F> orow = mut_rows_of<F>(out);
    const int64_t lq = ld_of(qr, T, D), lk = ld_of(kr, T, D), lv = ld_of(vr, T, D),
                  lo = ld_of(orow, T, D);
    F* pp = static_cast<F*>(probs.data_ptr());
#pragma omp parallel for schedule(dynamic) if (B * H * T * T * D > 65536)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, hk = h / G;
      F* ph = pp + bh * T * T;
      for (int64_t r0 = 0; r0 < T; r0 += kRowBlock) {
        // causal: the block's rows attend keys < r0 + rows
        const int64_t rows = std::min(kRowBlock, T - r0), keys = r0 + rows;
        F* pb = ph + r0 * T;
        blas_gemm<F>(false, true, rows, keys, D, F(scale), qr.at(b, h, r0), lq, kr.at(b, hk, 0),
                     lk, F(0), pb, T);
        for (int64_t i = r0; i < r0 + rows; ++i) softmax_causal_row(ph + i * T, i, T);
        blas_gemm<F>(false, false, rows, D, keys, F(1), pb, T, vr.at(b, hk, 0), lv, F(0),
                     orow.at(b, h, r0), lo);
      }
    }
  });
}

void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                        const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
                        double scale) {
  const Dims d = check_qkv("attention_backward", q, k, v);
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, T = d.T, D = d.D;
  check_attention_grads("attention_backward", dq, dk, dv, dout, q, k, v, /*strided=*/true);
  check_like("attention_backward", "probs", probs, {B, H, T, T}, q.dtype());
  const int64_t G = H / Hkv;
  single_threaded_blas_unless_asked();
  const Tensor qb = blas_readable(q), kb = blas_readable(k), vb = blas_readable(v),
               dob = blas_readable(dout);

  dispatch_float("attention_backward", q.dtype(), [&](auto z) {
    using F = decltype(z);
    const Rows<const F> qr = rows_of<F>(qb), kr = rows_of<F>(kb), vr = rows_of<F>(vb),
                        dor = rows_of<F>(dob);
    const Rows<F> dqr = mut_rows_of<F>(dq), dkr = mut_rows_of<F>(dk), dvr = mut_rows_of<F>(dv);
    const int64_t lq = ld_of(qr, T, D), lk = ld_of(kr, T, D), lv = ld_of(vr, T, D),
                  ldo = ld_of(dor, T, D), ldq = ld_of(dqr, T, D), ldk = ld_of(dkr, T, D),
                  ldv = ld_of(dvr, T, D);
    const F* pp = static_cast<const F*>(probs.data_ptr());
#pragma omp parallel if (B * H * T * T * D > 65536)
    {
      std::vector<F> ds(size_t(std::min(kRowBlock, T) * T));  // dP, then dS, of one row block
#pragma omp for schedule(dynamic)
      for (int64_t bk = 0; bk < B * Hkv; ++bk) {
        const int64_t b = bk / Hkv, g = bk % Hkv;
        // The group's query heads add into one kv head's dK and dV.
        zero_head_rows(dkr.p, dkr.s, b, g, T, D);
        zero_head_rows(dvr.p, dvr.s, b, g, T, D);
        for (int64_t h = g * G; h < (g + 1) * G; ++h) {
          const F* ph = pp + (b * H + h) * T * T;
          for (int64_t r0 = 0; r0 < T; r0 += kRowBlock) {
            const int64_t rows = std::min(kRowBlock, T - r0), keys = r0 + rows;
            const F* pb = ph + r0 * T;
            // dP = dO V^T; masked entries (j > i) have P = 0, hence dS = 0.
            blas_gemm<F>(false, true, rows, keys, D, F(1), dor.at(b, h, r0), ldo,
                         vr.at(b, g, 0), lv, F(0), ds.data(), keys);
            for (int64_t i = 0; i < rows; ++i)
              softmax_backward_causal_row(ds.data() + i * keys, pb + i * T, r0 + i, keys);
            // dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO.
            blas_gemm<F>(false, false, rows, D, keys, F(scale), ds.data(), keys,
                         kr.at(b, g, 0), lk, F(0), dqr.at(b, h, r0), ldq);
            blas_gemm<F>(true, false, keys, D, rows, F(scale), ds.data(), keys,
                         qr.at(b, h, r0), lq, F(1), dkr.at(b, g, 0), ldk);
            blas_gemm<F>(true, false, keys, D, rows, F(1), pb, T, dor.at(b, h, r0), ldo, F(1),
                         dvr.at(b, g, 0), ldv);
          }
        }
      }
    }
  });
}

namespace {
// First key query i attends: 0, or i - window + 1 with a sliding window.
int64_t first_key(int64_t i, int64_t window) {
  return window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
}

DType stat_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// dK and dV of kv head (b, g) out of their double accumulators, one (T, D) block each.
template <typename F>
void store_kv_grads(const Rows<F>& dk, const Rows<F>& dv, int64_t b, int64_t g, int64_t T,
                    int64_t D, double scale, const std::vector<double>& dk_acc,
                    const std::vector<double>& dv_acc) {
  for (int64_t j = 0; j < T; ++j) {
    F* dkj = dk.at(b, g, j);
    F* dvj = dv.at(b, g, j);
    for (int64_t e = 0; e < D; ++e) {
      dkj[e] = F(scale * dk_acc[size_t(j * D + e)]);
      dvj[e] = F(dv_acc[size_t(j * D + e)]);
    }
  }
}
}  // namespace

void flash_attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                             const Tensor& k, const Tensor& v, double scale, int64_t window) {
  const Dims d = check_qkv("flash_attention_forward", q, k, v, /*allow_offset=*/true);
  // T queries at positions off + i over Tk keys (off = 0: self-attention). k and v may be a
  // cache's filled prefix: a strided view like any other.
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, T = d.T, D = d.D, Tk = d.Tk, off = d.offset();
  check_view("flash_attention_forward", "out", out, q, true);
  check_like("flash_attention_forward", "lse", lse, {B, H, T}, stat_dtype(q.dtype()));
  const int64_t G = H / Hkv;

  dispatch_float("flash_attention_forward", q.dtype(), [&](auto z) {
    using F = decltype(z);
    const Rows<const F> qr = rows_of<F>(q), kr = rows_of<F>(k), vr = rows_of<F>(v);
    const Rows<F> orow = mut_rows_of<F>(out);
    F* lp = static_cast<F*>(lse.data_ptr());  // stat dtype == F for f32 and f64
#pragma omp parallel if (B * H * T * T * D > 65536)
    {
      std::vector<double> s(size_t(Tk), 0.0), acc(size_t(D), 0.0);
#pragma omp for
      for (int64_t bh = 0; bh < B * H; ++bh) {
        const int64_t b = bh / H, h = bh % H, hk = h / G;
        for (int64_t i = 0; i < T; ++i) {
          const F* qi = qr.at(b, h, i);
          const int64_t pos = off + i, j0 = first_key(pos, window);
          double m = -std::numeric_limits<double>::infinity();
          for (int64_t j = j0; j <= pos; ++j) {
            const F* kj = kr.at(b, hk, j);
            double dot = 0;
            for (int64_t e = 0; e < D; ++e) dot += double(qi[e]) * double(kj[e]);
            s[size_t(j)] = scale * dot;
            m = std::max(m, s[size_t(j)]);
          }
          double sum = 0;
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int64_t j = j0; j <= pos; ++j) {
            const double p = std::exp(s[size_t(j)] - m);
            sum += p;
            const F* vj = vr.at(b, hk, j);
            for (int64_t e = 0; e < D; ++e) acc[size_t(e)] += p * double(vj[e]);
          }
          F* oi = orow.at(b, h, i);
          for (int64_t e = 0; e < D; ++e) oi[e] = F(acc[size_t(e)] / sum);
          lp[bh * T + i] = F(m + std::log(sum));
        }
      }
    }
  });
}

void flash_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                              const Tensor& dout, const Tensor& q, const Tensor& k,
                              const Tensor& v, const Tensor& out, const Tensor& lse, double scale,
                              int64_t window) {
  const Dims d = check_qkv("flash_attention_backward", q, k, v);
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, T = d.T, D = d.D;
  check_attention_grads("flash_attention_backward", dq, dk, dv, dout, q, k, v, /*strided=*/true);
  check_view("flash_attention_backward", "out", out, q, false);
  check_like("flash_attention_backward", "lse", lse, {B, H, T}, stat_dtype(q.dtype()));
  const int64_t G = H / Hkv;

  dispatch_float("flash_attention_backward", q.dtype(), [&](auto z) {
    using F = decltype(z);
    const Rows<const F> qr = rows_of<F>(q), kr = rows_of<F>(k), vr = rows_of<F>(v),
                        outr = rows_of<F>(out), dor = rows_of<F>(dout);
    const Rows<F> dqr = mut_rows_of<F>(dq), dkr = mut_rows_of<F>(dk), dvr = mut_rows_of<F>(dv);
    const F* lp = static_cast<const F*>(lse.data_ptr());
    // Split over (b, kv head) like attention_backward: one thread owns a kv head's dK and dV.
#pragma omp parallel if (B * H * T * T * D > 65536)
    {
      std::vector<double> dk_acc(size_t(T * D), 0.0), dv_acc(size_t(T * D), 0.0),
          dq_acc(size_t(D), 0.0);
#pragma omp for
      for (int64_t bk = 0; bk < B * Hkv; ++bk) {
        const int64_t b = bk / Hkv, g = bk % Hkv;
        std::fill(dk_acc.begin(), dk_acc.end(), 0.0);
        std::fill(dv_acc.begin(), dv_acc.end(), 0.0);
        for (int64_t h = g * G; h < (g + 1) * G; ++h) {
          const int64_t bh = b * H + h;
          for (int64_t i = 0; i < T; ++i) {
            const F* qi = qr.at(b, h, i);
            const F* doi = dor.at(b, h, i);
            const F* oi = outr.at(b, h, i);
            const double l = double(lp[bh * T + i]);
            double rowdot = 0;  // rowsum(dO * O) = rowsum(dP * P)
            for (int64_t e = 0; e < D; ++e) rowdot += double(doi[e]) * double(oi[e]);
            std::fill(dq_acc.begin(), dq_acc.end(), 0.0);
            for (int64_t j = first_key(i, window); j <= i; ++j) {
              const F* kj = kr.at(b, g, j);
              const F* vj = vr.at(b, g, j);
              double s = 0, dp = 0;
              for (int64_t e = 0; e < D; ++e) {
                s += double(qi[e]) * double(kj[e]);
                dp += double(doi[e]) * double(vj[e]);
              }
              const double p = std::exp(scale * s - l);
              const double ds = p * (dp - rowdot);
              for (int64_t e = 0; e < D; ++e) {
                dq_acc[size_t(e)] += ds * double(kj[e]);
                dk_acc[size_t(j * D + e)] += ds * double(qi[e]);
                dv_acc[size_t(j * D + e)] += p * double(doi[e]);
              }
            }
            F* dqi = dqr.at(b, h, i);
            for (int64_t e = 0; e < D; ++e) dqi[e] = F(scale * dq_acc[size_t(e)]);
          }
        }
        store_kv_grads(dkr, dvr, b, g, T, D, scale, dk_acc, dv_acc);
      }
    }
  });
}

}  // namespace tessera::cpu
