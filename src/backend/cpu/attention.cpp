// CPU causal softmax attention: the materialised kernels (the CPU's training path, saving P) and
// the flash-style ones (saving each row's log-sum-exp; a sliding window and KV-cached decoding),
// which every fused GPU kernel's saved state is checked against.
//
// q, out, dq, dout (B, H, T, D); k, v, dk, dv (B, Hkv, T, D); probs (B, H, T, T); lse (B, H, T).
// Every kernel here keeps the strided contract of backend/attention_shapes.h: q, k, v, out and the
// gradients may be any views whose rows are contiguous (HeadStrides), so the fused-projection
// layout of ops/packed_attention.h runs here exactly as on the GPU; probs and lse are contiguous.
//
// Grouped-query attention (GQA; Ainslie et al. 2023, arXiv:2305.13245): the H query heads form Hkv
// groups of G = H / Hkv consecutive heads, and group g shares kv head g, so query head h reads kv
// head h / G. Hkv == H is ordinary multi-head attention, Hkv == 1 multi-query attention.
//
// Forward, causal (query i attends to keys 0..i, itself included; with a sliding window of w > 0,
// to keys i - w < j <= i):
//   S = scale * q k^T,  P = softmax_j(S) over the attended j (P[i, j] = 0 elsewhere),  out = P v.
// With ALiBi (backend/attention_mask.h) S[i, j] also has -m_h (i - j); the backward is unchanged.
// With a forget gate (Forgetting Attention, the same header) S[i, j] also has c[i] - c[j], and the
// backward adds dc[i] += sum_j dS[i, j], dc[j] -= sum_i dS[i, j] (per query head).
// Backward, per query head (softmax Jacobian applied row by row):
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dP * P)),  dQ = scale * dS K,
//   dK = scale * dS^T Q;
// a kv head's dK and dV are the sums of these over the G query heads of its group.
//
// The flash_attention_* entries compute the same attention the way FlashAttention-2 (Dao 2023,
// arXiv:2307.08691) does on the GPU: the forward saves lse[i] = m_i + log sum_j exp(S[i, j] - m_i)
// instead of P, the backward rebuilds P[i, j] = exp(S[i, j] - lse[i]) and replaces
// rowsum(dP * P) by the equal rowsum(dO * O) (since sum_j P[i, j] dO_i . v_j = dO_i . out_i).
// flash_attention_forward also takes Tq < Tk queries (KV-cached decoding): query i sits at
// position Tk - Tq + i and attends keys up to it.
//
// Both compute the products per head with BLAS, as PyTorch's math attention does with bmm (so
// they round like it: f32 accumulation in f32, each row's softmax sum and rowsum in double), over
// blocks of kRowBlock query rows that read only the keys the block attends: from its first row's
// first key to its last row's position (the causal half, and with a window a band of at most
// w + kRowBlock - 1 keys). Forwards split the work over (b, h); backwards over (b, kv head), so one
// thread owns a kv head's dK and dV (which gather from every query head of the group) together
// with those query heads' dQ, and no two threads write one row. Every BLAS call runs on its
// thread, so the bits do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/attention_heads.h"
#include "backend/cpu/blas.h"
#include "backend/cpu/cpu.h"
#include "backend/cpu/fast_exp.h"

namespace tessera::cpu {
namespace {

using Dims = AttentionDims;
constexpr auto check_like = check_attention_like;

// An output or gradient view (strided contract).
void check_view(const char* kernel, const char* name, const Tensor& t, const Tensor& like,
                bool output) {
  check_attention_view(kernel, name, t, like.shape(), like.dtype(), output);
}

// The query rows [r0, r0 + rows) of one head, at positions pos0 = offset + r0 on, and the keys
// [k0, k0 + n) they attend between them: from the first row's first key (0, or pos0 - window + 1
// with a window) to the last row's position. Row i (0-based in the block) attends block keys
// lo(i)..hi(i). slope: the head's ALiBi slope (backend/attention_mask.h), 0 without ALiBi.
struct Block {
  int64_t r0, rows, pos0, window, k0, n;
  double slope;
  Block(int64_t r0_, int64_t rows_, int64_t pos0_, int64_t window_, double slope_ = 0)
      : r0(r0_),
        rows(rows_),
        pos0(pos0_),
        window(window_),
        k0(first(pos0_)),
        n(pos0_ + rows_ - k0),
        slope(slope_) {}
  int64_t first(int64_t pos) const {
    return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
  }
  int64_t lo(int64_t i) const { return first(pos0 + i) - k0; }
  int64_t hi(int64_t i) const { return pos0 + i - k0; }
  // rows x n of any block over Tk keys fits in this many elements.
  static size_t scratch(int64_t T, int64_t Tk, int64_t window) {
    const int64_t keys = window > 0 ? std::min(Tk, window + kRowBlock - 1) : Tk;
    return size_t(std::min(kRowBlock, T) * keys);
  }
};

// The biases on row i's scores s[lo..hi]: ALiBi's -slope (position - key), the distance from the
// row's position pos0 + i back to key k0 + j; the forget gate's c[pos0 + i] - c[k0 + j], c the
// head's running sum of log forget gates over every key position (null: none).
template <typename F>
void add_bias(const Block& blk, int64_t i, F* s, const F* c) {
  if (blk.slope != 0)
    for (int64_t j = blk.lo(i); j <= blk.hi(i); ++j)
      s[j] -= F(blk.slope * double(blk.pos0 + i - blk.k0 - j));
  if (c)
    for (int64_t j = blk.lo(i); j <= blk.hi(i); ++j) s[j] += c[blk.pos0 + i] - c[blk.k0 + j];
}

// Zeroes a row's entries outside its keys [lo, hi] of n: P and dS are exactly zero there.
template <typename F>
void zero_outside(F* row, int64_t lo, int64_t hi, int64_t n) {
  std::fill(row, row + lo, F(0));
  std::fill(row + hi + 1, row + n, F(0));
}

// A row of P from its scores p[0..n) in place: the softmax over [lo, hi] (the max subtracted, so
// every exp <= 1; the sum in double), exactly zero elsewhere. Returns the row's log-sum-exp of the
// scores, m + log(sum).
template <typename F>
double softmax_row(F* p, int64_t lo, int64_t hi, int64_t n) {
  F m = p[lo];
  for (int64_t j = lo + 1; j <= hi; ++j) m = std::max(m, p[j]);
  for (int64_t j = lo; j <= hi; ++j) p[j] = fast_exp(p[j] - m);
  double sum = 0;
  for (int64_t j = lo; j <= hi; ++j) sum += double(p[j]);
  const F inv = F(1.0 / sum);
  for (int64_t j = lo; j <= hi; ++j) p[j] *= inv;
  zero_outside(p, lo, hi, n);
  return double(m) + std::log(sum);
}

// Forward of one block of query head (b, h) (kv head hk): S = scale Q K^T over the block's keys
// into pb (row stride ldp), the biases (c: the head's forget-gate sums, or null), P in place row
// by row (zero from the keys' end up to `fill`), out = P V; each row's log-sum-exp into
// lse[0..rows) when lse is given.
template <typename F>
void forward_block(const Block& blk, const Heads<const F>& q, const Heads<const F>& k,
                   const Heads<const F>& v, const Heads<F>& out, int64_t b, int64_t h, int64_t hk,
                   int64_t D, double scale, F* pb, int64_t ldp, int64_t fill, F* lse,
                   const F* c = nullptr) {
  if (blk.rows == 1) {
    // One query (a decoding step, or a sequence's last row past a block boundary): a BLAS call
    // costs more than its n D products here, so direct loops, each score's dot in double and
    // out's sums in F, key by key.
    const F* qi = q.at(b, h, blk.r0);
    for (int64_t j = 0; j < blk.n; ++j) {
      const F* kj = k.at(b, hk, blk.k0 + j);
      double dot = 0;
      for (int64_t e = 0; e < D; ++e) dot += double(qi[e]) * double(kj[e]);
      pb[j] = F(scale * dot);
    }
    add_bias(blk, 0, pb, c);
    const double l = softmax_row(pb, blk.lo(0), blk.hi(0), fill);
    if (lse) lse[0] = F(l);
    F* o = out.at(b, h, blk.r0);
    std::fill(o, o + D, F(0));
    for (int64_t j = blk.lo(0); j <= blk.hi(0); ++j) {
      const F* vj = v.at(b, hk, blk.k0 + j);
      for (int64_t e = 0; e < D; ++e) o[e] += pb[j] * vj[e];
    }
    return;
  }
  blas_gemm<F>(false, true, blk.rows, blk.n, D, F(scale), q.at(b, h, blk.r0), q.ld,
               k.at(b, hk, blk.k0), k.ld, F(0), pb, ldp);
  for (int64_t i = 0; i < blk.rows; ++i) {
    add_bias(blk, i, pb + i * ldp, c);
    const double l = softmax_row(pb + i * ldp, blk.lo(i), blk.hi(i), fill);
    if (lse) lse[i] = F(l);
  }
  blas_gemm<F>(false, false, blk.rows, D, blk.n, F(1), pb, ldp, v.at(b, hk, blk.k0), v.ld, F(0),
               out.at(b, h, blk.r0), out.ld);
}

// The backward's operands: the inputs and dO read, dQ written, dK and dV added into.
template <typename F>
struct Grads {
  Heads<const F> q, k, v, dout;
  Heads<F> dq, dk, dv;
};

// Backward of one block of query head (b, h) (kv head g), P (rows x n, row stride ldp) in hand:
// dP = dO V^T into ds, dS = P * (dP - rowdot) row by row (rowdot[i] when given, else
// rowsum(dP * P) over the row's keys), then dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO.
// Entries outside a row's keys have P = 0 and get dS = 0. dc (the head's forget-gate gradient
// over every position, or null): += dS's row sums at the rows' positions, -= its column sums at
// the keys' (colsum: n doubles of scratch).
template <typename F>
void backward_block(const Block& blk, const Grads<F>& x, int64_t b, int64_t h, int64_t g, int64_t D,
                    double scale, const F* pb, int64_t ldp, const double* rowdot, F* ds, F* dc,
                    double* colsum) {
  const int64_t n = blk.n;
  blas_gemm<F>(false, true, blk.rows, n, D, F(1), x.dout.at(b, h, blk.r0), x.dout.ld,
               x.v.at(b, g, blk.k0), x.v.ld, F(0), ds, n);
  for (int64_t i = 0; i < blk.rows; ++i) {
    F* d = ds + i * n;
    const F* p = pb + i * ldp;
    const int64_t lo = blk.lo(i), hi = blk.hi(i);
    double dot = 0;
    if (rowdot) {
      dot = rowdot[i];
    } else {
      for (int64_t j = lo; j <= hi; ++j) dot += double(d[j]) * double(p[j]);
    }
    const F r = F(dot);
    for (int64_t j = lo; j <= hi; ++j) d[j] = p[j] * (d[j] - r);
    zero_outside(d, lo, hi, n);
  }
  if (dc) {
    std::fill(colsum, colsum + n, 0.0);
    for (int64_t i = 0; i < blk.rows; ++i) {
      double row = 0;
      for (int64_t j = 0; j < n; ++j) {
        row += double(ds[i * n + j]);
        colsum[j] += double(ds[i * n + j]);
      }
      dc[blk.pos0 + i] += F(row);
    }
    for (int64_t j = 0; j < n; ++j) dc[blk.k0 + j] -= F(colsum[j]);
  }
  blas_gemm<F>(false, false, blk.rows, D, n, F(scale), ds, n, x.k.at(b, g, blk.k0), x.k.ld, F(0),
               x.dq.at(b, h, blk.r0), x.dq.ld);
  blas_gemm<F>(true, false, n, D, blk.rows, F(scale), ds, n, x.q.at(b, h, blk.r0), x.q.ld, F(1),
               x.dk.at(b, g, blk.k0), x.dk.ld);
  blas_gemm<F>(true, false, n, D, blk.rows, F(1), pb, ldp, x.dout.at(b, h, blk.r0), x.dout.ld,
               F(1), x.dv.at(b, g, blk.k0), x.dv.ld);
}

// Both backwards: per (b, kv head), its dK and dV zeroed, then every row block of its group's
// query heads; block_p(blk, b, h, g, P-sized scratch, rowdot) hands back that block's P (and its
// row stride) and fills rowdot when the kernel has it another way.
template <typename F, typename BlockP>
void backward_heads(const Dims& d, const Grads<F>& x, double scale, const AttentionMask& mask,
                    const BlockP& block_p) {
  const int64_t window = mask.window;
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, T = d.T, D = d.D, G = H / Hkv;
#pragma omp parallel if (B * H * T * T * D > 65536)
  {
    const size_t scratch = Block::scratch(T, T, window);
    std::vector<F> ds(scratch), p(scratch);
    std::vector<double> rowdot(static_cast<size_t>(kRowBlock)), colsum(static_cast<size_t>(T));
    F* dc_all = mask.forget_grad.defined() ? static_cast<F*>(mask.forget_grad.data_ptr()) : nullptr;
#pragma omp for schedule(dynamic)
    for (int64_t bk = 0; bk < B * Hkv; ++bk) {
      const int64_t b = bk / Hkv, g = bk % Hkv;
      // The group's query heads add into one kv head's dK and dV.
      zero_head_rows(x.dk, b, g, T, D);
      zero_head_rows(x.dv, b, g, T, D);
      for (int64_t h = g * G; h < (g + 1) * G; ++h) {
        F* dc = dc_all ? dc_all + (b * H + h) * T : nullptr;  // this thread's heads alone
        if (dc) std::fill(dc, dc + T, F(0));
        for (int64_t r0 = 0; r0 < T; r0 += kRowBlock) {
          const Block blk(r0, std::min(kRowBlock, T - r0), r0, window,
                          mask.alibi ? alibi_slope(h, H) : 0);
          const auto [pb, ldp, have_rowdot] = block_p(blk, b, h, g, p.data(), rowdot.data());
          backward_block(blk, x, b, h, g, D, scale, pb, ldp, have_rowdot ? rowdot.data() : nullptr,
                         ds.data(), dc, colsum.data());
        }
      }
    }
  }
}

template <typename F>
Grads<F> grads_of(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                  const Tensor& q, const Tensor& k, const Tensor& v) {
  return {heads_of<F>(q),     heads_of<F>(k),     heads_of<F>(v),    heads_of<F>(dout),
          mut_heads_of<F>(dq), mut_heads_of<F>(dk), mut_heads_of<F>(dv)};
}

// The flash backward's P for a block of query head (b, h) (kv head g), rebuilt from the saved lse
// (lse[0..rows)): S = scale Q K^T over the block's keys into p (row stride n), P = exp(S - lse) on
// each row's keys, zero elsewhere; and rowdot = rowsum(dO * O) in double.
template <typename F>
void rebuild_p(const Block& blk, const Grads<F>& x, const Heads<const F>& out, const F* lse,
               int64_t b, int64_t h, int64_t g, int64_t D, double scale, F* p, double* rowdot,
               const F* c) {
  const int64_t n = blk.n;
  blas_gemm<F>(false, true, blk.rows, n, D, F(scale), x.q.at(b, h, blk.r0), x.q.ld,
               x.k.at(b, g, blk.k0), x.k.ld, F(0), p, n);
  for (int64_t i = 0; i < blk.rows; ++i) {
    F* pi = p + i * n;
    const int64_t lo = blk.lo(i), hi = blk.hi(i);
    add_bias(blk, i, pi, c);
    for (int64_t j = lo; j <= hi; ++j) pi[j] = fast_exp(pi[j] - lse[i]);
    zero_outside(pi, lo, hi, n);
    const F* o = out.at(b, h, blk.r0 + i);
    const F* dO = x.dout.at(b, h, blk.r0 + i);
    double dot = 0;
    for (int64_t e = 0; e < D; ++e) dot += double(dO[e]) * double(o[e]);
    rowdot[i] = dot;
  }
}

// What a backward's block hands backward_block: P, its row stride, and whether rowdot was filled.
template <typename F>
struct BlockP {
  const F* p;
  int64_t ldp;
  bool rowdot;
};

}  // namespace

void attention_forward(const Tensor& out, const Tensor& probs, const Tensor& q, const Tensor& k,
                       const Tensor& v, double scale) {
  const Dims d = check_strided_qkv("attention_forward", q, k, v);
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, T = d.T, D = d.D;
  check_view("attention_forward", "out", out, q, true);
  check_like("attention_forward", "probs", probs, {B, H, T, T}, q.dtype());
  const int64_t G = H / Hkv;
  single_threaded_blas_unless_asked();
  const Tensor qb = blas_readable(q), kb = blas_readable(k), vb = blas_readable(v);

  dispatch_float("attention_forward", q.dtype(), [&](auto z) {
    using F = decltype(z);
    const Heads<const F> qh = heads_of<F>(qb), kh = heads_of<F>(kb), vh = heads_of<F>(vb);
    const Heads<F> oh = mut_heads_of<F>(out);
    F* pp = static_cast<F*>(probs.data_ptr());
#pragma omp parallel for schedule(dynamic) if (B * H * T * T * D > 65536)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t r0 = 0; r0 < T; r0 += kRowBlock) {
        const Block blk(r0, std::min(kRowBlock, T - r0), r0, /*window=*/0);
        // P's rows are the saved probabilities themselves, zero up to T past the causal keys.
        forward_block(blk, qh, kh, vh, oh, b, h, h / G, D, scale, pp + (bh * T + r0) * T, T, T,
                      static_cast<F*>(nullptr));
      }
    }
  });
}

void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                        const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
                        double scale) {
  const Dims d = check_strided_qkv("attention_backward", q, k, v);
  const int64_t B = d.B, H = d.H, T = d.T;
  check_attention_grads("attention_backward", dq, dk, dv, dout, q, k, v, /*strided=*/true);
  check_like("attention_backward", "probs", probs, {B, H, T, T}, q.dtype());
  single_threaded_blas_unless_asked();
  const Tensor qb = blas_readable(q), kb = blas_readable(k), vb = blas_readable(v),
               dob = blas_readable(dout);

  dispatch_float("attention_backward", q.dtype(), [&](auto z) {
    using F = decltype(z);
    const F* pp = static_cast<const F*>(probs.data_ptr());
    backward_heads<F>(d, grads_of<F>(dq, dk, dv, dob, qb, kb, vb), scale, /*window=*/0,
                      [&](const Block& blk, int64_t b, int64_t h, int64_t, F*, double*) {
                        return BlockP<F>{pp + ((b * H + h) * T + blk.r0) * T, T, false};
                      });
  });
}

void flash_attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                             const Tensor& v, double scale, const AttentionMask& mask) {
  const Dims d = check_strided_qkv("flash_attention_forward", q, k, v, /*allow_offset=*/true);
  const int64_t window = mask.window;
  // T queries at positions off + i over Tk keys (off = 0: self-attention). k and v may be a
  // cache's filled prefix: a strided view like any other.
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, T = d.T, D = d.D, Tk = d.Tk, off = d.offset();
  check_view("flash_attention_forward", "out", out, q, true);
  check_like("flash_attention_forward", "lse", lse, {B, H, T}, stat_dtype(q.dtype()));
  if (mask.forget.defined())
    check_like("flash_attention_forward", "forget", mask.forget, {B, H, Tk}, stat_dtype(q.dtype()));
  const int64_t G = H / Hkv;
  single_threaded_blas_unless_asked();
  const Tensor qb = blas_readable(q), kb = blas_readable(k), vb = blas_readable(v);

  dispatch_float("flash_attention_forward", q.dtype(), [&](auto z) {
    using F = decltype(z);
    const Heads<const F> qh = heads_of<F>(qb), kh = heads_of<F>(kb), vh = heads_of<F>(vb);
    const Heads<F> oh = mut_heads_of<F>(out);
    F* lp = static_cast<F*>(lse.data_ptr());  // stat dtype == F for f32 and f64
    const F* cp = mask.forget.defined() ? static_cast<const F*>(mask.forget.data_ptr()) : nullptr;
#pragma omp parallel if (B * H * T * Tk * D > 65536)
    {
      std::vector<F> p(Block::scratch(T, Tk, window));
#pragma omp for schedule(dynamic)
      for (int64_t bh = 0; bh < B * H; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        for (int64_t r0 = 0; r0 < T; r0 += kRowBlock) {
          const Block blk(r0, std::min(kRowBlock, T - r0), off + r0, window,
                          mask.alibi ? alibi_slope(h, H) : 0);
          forward_block(blk, qh, kh, vh, oh, b, h, h / G, D, scale, p.data(), blk.n, blk.n,
                        lp + bh * T + r0, cp ? cp + bh * Tk : nullptr);
        }
      }
    }
  });
}

void flash_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                              const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& out, const Tensor& lse, double scale,
                              const AttentionMask& mask) {
  const Dims d = check_strided_qkv("flash_attention_backward", q, k, v);
  const int64_t B = d.B, H = d.H, T = d.T, D = d.D;
  check_attention_grads("flash_attention_backward", dq, dk, dv, dout, q, k, v, /*strided=*/true);
  check_view("flash_attention_backward", "out", out, q, false);
  check_like("flash_attention_backward", "lse", lse, {B, H, T}, stat_dtype(q.dtype()));
  TESSERA_CHECK(mask.forget.defined() == mask.forget_grad.defined(),
                "flash_attention_backward: a forget gate and its gradient go together");
  if (mask.forget.defined()) {
    check_like("flash_attention_backward", "forget", mask.forget, {B, H, T}, stat_dtype(q.dtype()));
    check_like("flash_attention_backward", "forget_grad", mask.forget_grad, {B, H, T},
               stat_dtype(q.dtype()));
  }
  single_threaded_blas_unless_asked();
  const Tensor qb = blas_readable(q), kb = blas_readable(k), vb = blas_readable(v),
               dob = blas_readable(dout);

  dispatch_float("flash_attention_backward", q.dtype(), [&](auto z) {
    using F = decltype(z);
    const Grads<F> x = grads_of<F>(dq, dk, dv, dob, qb, kb, vb);
    const Heads<const F> oh = heads_of<F>(out);
    const F* lp = static_cast<const F*>(lse.data_ptr());
    const F* cp = mask.forget.defined() ? static_cast<const F*>(mask.forget.data_ptr()) : nullptr;
    backward_heads<F>(d, x, scale, mask,
                      [&](const Block& blk, int64_t b, int64_t h, int64_t g, F* p, double* rowdot) {
                        rebuild_p(blk, x, oh, lp + (b * H + h) * T + blk.r0, b, h, g, D, scale, p,
                                  rowdot, cp ? cp + (b * H + h) * T : nullptr);
                        return BlockP<F>{p, blk.n, true};
                      });
  });
}

}  // namespace tessera::cpu
