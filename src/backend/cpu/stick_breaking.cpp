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
// subtracts. Here everything is computed in double from q, k and v, walking up from key 0; out
// and log_rem are checked but not read. The forward also takes Tq < Tk queries (KV-cached
// decoding): query j sits at position Tk - Tq + j, and its own value is v at that position. Forward splits over (b, h); backward over (b, kv head) so
// one thread owns a kv head's dk and dv.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/attention_shapes.h"
#include "backend/cpu/cpu.h"

namespace tessera::cpu {
namespace {

using Dims = AttentionDims;
AttentionDims check_qkv(const char* kernel, const Tensor& q, const Tensor& k, const Tensor& v,
                        bool allow_offset = false) {
  return check_attention_qkv(kernel, q, k, v, allow_offset, /*strided=*/true);
}

constexpr auto check_like = check_attention_like;

DType stat_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// One query row over its n attended keys (n = j, or j + 1 with attend_current; key i's row at
// kh + i kt): fills a[i] = A[i] and beta[i], returns log rem. With e = exp(-|z|):
// softplus(z) = max(z, 0) + log1p(e) and logsigmoid(z) = min(z, 0) - log1p(e), neither of which
// overflows or cancels for large |z|.
template <typename F>
double stick_row(const F* qj, const F* kh, int64_t kt, int64_t n, int64_t D, double scale,
                 std::vector<double>& a, std::vector<double>& beta) {
  double tail = 0;  // sum of softplus(z[k]) over the attended k > i: -log of the stick left for i
  for (int64_t i = n - 1; i >= 0; --i) {
    double dot = 0;
    for (int64_t e = 0; e < D; ++e) dot += double(qj[e]) * double(kh[i * kt + e]);
    const double z = scale * dot, ez = std::exp(-std::abs(z)), l = std::log1p(ez);
    a[size_t(i)] = std::exp(std::min(z, 0.0) - l - tail);
    beta[size_t(i)] = z >= 0 ? 1 / (1 + ez) : ez / (1 + ez);
    tail += std::max(z, 0.0) + l;
  }
  return -tail;
}

}  // namespace

void stick_breaking_forward(const Tensor& out, const Tensor& log_rem, const Tensor& rem,
                            const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                            bool attend_current, bool add_remainder) {
  const Dims d = check_qkv("stick_breaking_forward", q, k, v, /*allow_offset=*/true);
  // T queries at positions off + j over Tk keys (off = 0: self-attention).
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, T = d.T, D = d.D, Tk = d.Tk, off = d.offset();
  check_attention_view("stick_breaking_forward", "out", out, q.shape(), q.dtype(), true);
  check_like("stick_breaking_forward", "log_rem", log_rem, {B, H, T}, stat_dtype(q.dtype()));
  if (rem.defined()) check_like("stick_breaking_forward", "rem", rem, {B, H, T}, q.dtype());
  const int64_t G = H / Hkv;

  dispatch_float("stick_breaking_forward", q.dtype(), [&](auto zero) {
    using F = decltype(zero);
    const F* qp = static_cast<const F*>(q.data_ptr());
    const F* kp = static_cast<const F*>(k.data_ptr());
    const F* vp = static_cast<const F*>(v.data_ptr());
    F* op = static_cast<F*>(out.data_ptr());
    const HeadStrides so = head_strides(out);
    F* lrp = static_cast<F*>(log_rem.data_ptr());  // stat dtype == F for f32 and f64
    F* rp = rem.defined() ? static_cast<F*>(rem.data_ptr()) : nullptr;
#pragma omp parallel if (B * H * T * T * D > 65536)
    {
      std::vector<double> a(size_t(Tk), 0.0), beta(size_t(Tk), 0.0), acc(size_t(D), 0.0);
#pragma omp for
      for (int64_t bh = 0; bh < B * H; ++bh) {
        const int64_t b = bh / H, h = bh % H, g = h / G;
        const F* kh = kp + d.k.row(b, g, 0);  // a cache's filled prefix is a view too
        const F* vh = vp + d.v.row(b, g, 0);
        for (int64_t j = 0; j < T; ++j) {
          const int64_t pos = off + j;  // the query's position among the keys
          const int64_t n = attend_current ? pos + 1 : pos;
          const double lr = stick_row(qp + d.q.row(b, h, j), kh, d.k.t, n, D, scale, a, beta);
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int64_t i = 0; i < n; ++i)
            for (int64_t e = 0; e < D; ++e)
              acc[size_t(e)] += a[size_t(i)] * double(vh[i * d.v.t + e]);
          if (add_remainder)
            for (int64_t e = 0; e < D; ++e)
              acc[size_t(e)] += std::exp(lr) * double(vh[pos * d.v.t + e]);
          F* oj = op + so.row(b, h, j);
          for (int64_t e = 0; e < D; ++e) oj[e] = F(acc[size_t(e)]);
          lrp[bh * T + j] = F(lr);
          if (rp) rp[bh * T + j] = F(std::exp(lr));
        }
      }
    }
  });
}

void stick_breaking_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& out, const Tensor& log_rem, double scale,
                             bool attend_current, bool add_remainder) {
  const Dims d = check_qkv("stick_breaking_backward", q, k, v);
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, T = d.T, D = d.D;
  check_attention_grads("stick_breaking_backward", dq, dk, dv, dout, q, k, v, /*strided=*/true);
  check_attention_view("stick_breaking_backward", "out", out, q.shape(), q.dtype(), false);
  check_like("stick_breaking_backward", "log_rem", log_rem, {B, H, T}, stat_dtype(q.dtype()));
  const int64_t G = H / Hkv;

  dispatch_float("stick_breaking_backward", q.dtype(), [&](auto zero) {
    using F = decltype(zero);
    const F* qp = static_cast<const F*>(q.data_ptr());
    const F* kp = static_cast<const F*>(k.data_ptr());
    const F* vp = static_cast<const F*>(v.data_ptr());
    const F* dop = static_cast<const F*>(dout.data_ptr());
    F* dqp = static_cast<F*>(dq.data_ptr());
    F* dkp = static_cast<F*>(dk.data_ptr());
    F* dvp = static_cast<F*>(dv.data_ptr());
    const HeadStrides sdq = head_strides(dq), sdk = head_strides(dk), sdv = head_strides(dv),
                      sdo = head_strides(dout);
#pragma omp parallel if (B * H * T * T * D > 65536)
    {
      std::vector<double> dk_acc(size_t(T * D), 0.0), dv_acc(size_t(T * D), 0.0),
          dq_acc(size_t(D), 0.0), a(size_t(T), 0.0), beta(size_t(T), 0.0);
#pragma omp for
      for (int64_t bk = 0; bk < B * Hkv; ++bk) {
        const int64_t b = bk / Hkv, g = bk % Hkv;
        const F* kh = kp + d.k.row(b, g, 0);
        const F* vh = vp + d.v.row(b, g, 0);
        const int64_t kt = d.k.t, vt = d.v.t;
        std::fill(dk_acc.begin(), dk_acc.end(), 0.0);
        std::fill(dv_acc.begin(), dv_acc.end(), 0.0);
        for (int64_t h = g * G; h < (g + 1) * G; ++h) {
          for (int64_t j = 0; j < T; ++j) {
            const F* qj = qp + d.q.row(b, h, j);
            const F* doj = dop + sdo.row(b, h, j);
            const int64_t n = attend_current ? j + 1 : j;
            const double rem = std::exp(stick_row(qj, kh, kt, n, D, scale, a, beta));
            double rbar = 0;
            if (add_remainder) {
              for (int64_t e = 0; e < D; ++e) rbar += double(doj[e]) * double(vh[j * vt + e]);
              for (int64_t e = 0; e < D; ++e) dv_acc[size_t(j * D + e)] += rem * double(doj[e]);
            }
            std::fill(dq_acc.begin(), dq_acc.end(), 0.0);
            double prefix = rbar * rem;  // rbar rem_j + sum_{i <= k} g[i], built as k rises
            for (int64_t i = 0; i < n; ++i) {
              const double A = a[size_t(i)];
              double dA = 0;
              for (int64_t e = 0; e < D; ++e) dA += double(doj[e]) * double(vh[i * vt + e]);
              const double gi = A * dA;
              prefix += gi;
              const double dz = gi - beta[size_t(i)] * prefix;
              for (int64_t e = 0; e < D; ++e) {
                dq_acc[size_t(e)] += dz * double(kh[i * kt + e]);
                dk_acc[size_t(i * D + e)] += dz * double(qj[e]);
                dv_acc[size_t(i * D + e)] += A * double(doj[e]);
              }
            }
            F* dqj = dqp + sdq.row(b, h, j);
            for (int64_t e = 0; e < D; ++e) dqj[e] = F(scale * dq_acc[size_t(e)]);
          }
        }
        for (int64_t i = 0; i < T; ++i) {
          F* dki = dkp + sdk.row(b, g, i);
          F* dvi = dvp + sdv.row(b, g, i);
          for (int64_t e = 0; e < D; ++e) {
            dki[e] = F(scale * dk_acc[size_t(i * D + e)]);
            dvi[e] = F(dv_acc[size_t(i * D + e)]);
          }
        }
      }
    }
  });
}

}  // namespace tessera::cpu
