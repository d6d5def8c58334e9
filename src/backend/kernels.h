// The kernel table: every compute kernel an op calls, with one signature for every backend.
//
//   Tensor y = Tensor::empty(x.shape(), x.options());
//   TESSERA_KERNEL(x, gelu_forward)(y, x);        // CPU or CUDA, chosen by x's device
//
// The CPU table (src/backend/cpu/) is the reference: plain fp32/f64 loops, OpenBLAS for gemm, OpenMP
// across rows. The CUDA table (kernels/*.cu) implements the same entries; one it lacks is null and
// TESSERA_KERNEL raises an error naming it. Which table exists is decided at link time.
//
// Conventions, for every entry:
//  - outputs come first, then inputs; outputs are allocated by the caller (the op);
//  - tensors are contiguous unless the comment says otherwise, and all live on one device;
//  - kernels assign (=) their outputs, never accumulate: the autograd engine does the +=;
//  - "rows" means every leading dimension flattened: x (N, C) with C = x.size(-1).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "backend/attention_mask.h"
#include "backend/attention_shapes.h"
#include "backend/profile.h"
#include "core/tensor.h"

namespace tessera {

enum class BinaryOp { Add, Sub, Mul };

// How a LOMO / AdaLomo update reads a gradient g: G = clamp(g / loss_scale, +-clip_value) *
// clip_coef (optim/lomo.h).
struct LomoGrad {
  double loss_scale = 1.0;
  double clip_value = 0.0;  // 0: no clamp
  double clip_coef = 1.0;   // the global-norm clipping coefficient of this pass
};

// Which outputs of a norm's backward hold a gradient to add onto (the rest are written): dx a
// residual stream's accumulated gradient, dw and db a weight's (a flat buffer after an earlier
// micro-batch). Each sum is rounded to its output's dtype before the add: the bits of writing it
// alone and adding it with axpby.
struct NormAccumulate {
  bool dx = false, dw = false, db = false;
};

struct Kernels {
  // ---- memory ----
  // dst and src have the same shape, any strides and any dtypes (converted; bf16 rounds to nearest
  // even). dst must not overlap src.
  void (*copy)(const Tensor& dst, const Tensor& src);
  void (*fill)(const Tensor& dst, double value);
  void (*arange)(const Tensor& dst, double start, double step);  // dst[i] = start + i * step
  // Element i uses Philox counter offset + i with key seed (core/rng.h).
  void (*uniform)(const Tensor& dst, uint64_t seed, uint64_t offset);  // U[0, 1)
  void (*normal)(const Tensor& dst, uint64_t seed, uint64_t offset);   // N(0, 1)

  // ---- linear algebra ----
  // c (Bc, M, N) = alpha * op(a) @ op(b) + beta * c, op(x) = x^T (last two dims) when trans_x.
  // a is (Ba, M, K) or (Ba, K, M) when trans_a; b is (Bb, K, N) or (Bb, N, K) when trans_b.
  // Ba and Bb are 1 (broadcast) or Bc; a 2-D operand is batch 1. c is written when beta == 0.
  // 3-D operands are contiguous; a 2-D operand's rows may lie further apart than its columns (a
  // view of a wider matrix's first columns: backend/gemm_shapes.h).
  // One dtype throughout, or (CUDA) bf16 a and b with an f32 c: a bf16 weight's gradient written
  // or added (beta 1) straight into its f32 gradient buffer, unrounded to bf16.
  void (*gemm)(const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
               double alpha, double beta);
  // A Linear, its bias and a residual: y (R, N) = x (R, K) @ w^T + bias + residual, w (N, K),
  // bias (N) added to every row, residual (R, N) contiguous and apart from y; bias or residual may
  // be undefined (not added). On CUDA the bias rides the gemm's epilogue (cuBLASLt's
  // CUBLASLT_EPILOGUE_BIAS) and the residual is the gemm's C (beta 1), so y is written once
  // instead of written, then read and written again by each add. The CPU rounds as the separate
  // adds do (product, + bias, + residual).
  void (*linear_forward)(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& bias,
                         const Tensor& residual);
  // A Linear with a bias, then GELU (tanh form): the first half of a GPT-2 MLP. pre (R, N) =
  // x @ w^T + bias, kept for the backward; y (R, N) = gelu(pre). On CUDA one gemm writes both
  // (cuBLASLt's CUBLASLT_EPILOGUE_GELU_AUX_BIAS: y as its output, pre as the epilogue's aux).
  void (*linear_gelu_forward)(const Tensor& y, const Tensor& pre, const Tensor& x, const Tensor& w,
                              const Tensor& bias);
  // The backward of a Linear whose input was gelu(pre), through to pre: dpre (R, K) =
  // (dy (R, N) @ w (N, K)) * gelu'(pre (R, K)), the second half of a GPT-2 MLP's backward. On CUDA
  // one gemm (cuBLASLt's CUBLASLT_EPILOGUE_DGELU, pre as the epilogue's aux input); the CPU rounds
  // the product to the dtype and runs gelu_backward on it (the bits of the two ops).
  void (*linear_dgelu_backward)(const Tensor& dpre, const Tensor& dy, const Tensor& w,
                                const Tensor& pre);
  // A Linear's parameter gradients: dw (N, K) = dy (R, N)^T @ x (R, K) and db (N) = the sum of
  // dy's rows, each written or, with its accumulate flag, added onto what it holds; either may be
  // undefined (no gradient). dy's rows may be strided (gemm_shapes.h) when db is undefined; with
  // db, dy is contiguous. dw and db are each dy's dtype or (CUDA) f32 under bf16 dy and x: a bf16
  // Linear's gradients into their f32 buffers. On CUDA one gemm writes both (cuBLASLt's
  // CUBLASLT_EPILOGUE_BGRADB sums dy's rows as it reads them), so dy is read once instead of twice;
  // the CPU runs gemm, then sum_dim (their bits).
  void (*linear_param_backward)(const Tensor& dw, const Tensor& db, const Tensor& dy,
                                const Tensor& x, bool accumulate_w, bool accumulate_b);

  // ---- elementwise and reductions ----
  // out = a (op) b; b has a's numel, or is one row (a.size(-1) elements) broadcast over a's rows.
  void (*binary)(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b);
  // out = alpha * x + beta * y; y may be undefined (then out = alpha * x); out may alias x or y.
  void (*axpby)(const Tensor& out, double alpha, const Tensor& x, double beta, const Tensor& y);
  // x viewed as (outer, n, inner): out (outer, inner) = sum over n; accumulate: out += that sum,
  // rounded to out's dtype first (the bits of writing it alone and adding it with axpby). On CUDA
  // out may be f32 under a bf16 x (a bf16 bias's gradient summed straight into its f32 buffer).
  void (*sum_dim)(const Tensor& out, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                  bool accumulate);
  // out (outer, n, inner) = x (outer, inner) repeated n times along the middle dimension.
  void (*expand_dim)(const Tensor& out, const Tensor& x, int64_t outer, int64_t n, int64_t inner);

  // ---- embedding ---- table (V, C), ids i32 (N), out/dout (N, C)
  void (*embedding_forward)(const Tensor& out, const Tensor& table, const Tensor& ids);
  // dtable[ids[n]] += dout[n] for every n, into what dtable already holds (a scatter-add:
  // repeated ids sum; autograd passes the gradient accumulated so far, or zeros). dtable may be
  // f32 under bf16 dout (a bf16 table's f32 gradient buffer; CUDA only: the CPU has no bf16).
  void (*embedding_backward)(const Tensor& dtable, const Tensor& dout, const Tensor& ids);

  // ---- normalisation over the last dim ---- x, y, dx, dy (N, C); w, b, dw, db (C); mean, rstd (N)
  // acc: which of dx, dw, db receive their gradient added onto what they hold (autograd's
  // GradSink::add_into: a residual stream's gradient, a weight's gradient buffer), else are
  // written. The adds round as axpby would, so a model's gradients do not depend on which path
  // autograd took (recompute captures them apart). dw and db may be f32 under bf16 x (a bf16
  // weight's f32 gradient buffer; CUDA only: the CPU has no bf16).
  void (*layernorm_forward)(const Tensor& y, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                            const Tensor& w, const Tensor& b, double eps);
  void (*layernorm_backward)(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                             const Tensor& x, const Tensor& w, const Tensor& mean,
                             const Tensor& rstd, NormAccumulate acc);
  void (*rmsnorm_forward)(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w,
                          double eps);
  void (*rmsnorm_backward)(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                           const Tensor& w, const Tensor& rstd, NormAccumulate acc);

  // ---- activations ---- all tensors the same shape
  void (*gelu_forward)(const Tensor& y, const Tensor& x);  // tanh approximation
  void (*gelu_backward)(const Tensor& dx, const Tensor& dy, const Tensor& x);
  void (*silu_forward)(const Tensor& y, const Tensor& x);
  void (*silu_backward)(const Tensor& dx, const Tensor& dy, const Tensor& x);
  // y = silu(gate) * up
  void (*swiglu_forward)(const Tensor& y, const Tensor& gate, const Tensor& up);
  void (*swiglu_backward)(const Tensor& dgate, const Tensor& dup, const Tensor& dy,
                          const Tensor& gate, const Tensor& up);
  // y = x * keep / (1 - p), keep_i = (uniform(seed, offset + i) >= p). The same call with dy in
  // place of x is the backward: the mask is regenerated, never stored.
  void (*dropout)(const Tensor& y, const Tensor& x, double p, uint64_t seed, uint64_t offset);

  // ---- softmax family over the last dim ---- x, y, dx, dy (N, C)
  void (*softmax_forward)(const Tensor& y, const Tensor& x);
  void (*softmax_backward)(const Tensor& dx, const Tensor& dy, const Tensor& y);
  void (*log_softmax_forward)(const Tensor& y, const Tensor& x);
  void (*log_softmax_backward)(const Tensor& dx, const Tensor& dy, const Tensor& y);
  // logits (N, V) whose first `classes` columns (1 <= classes <= V) are the classes and the rest
  // padding (a row stride rounded up for aligned gemms; ignored), targets i32 (N) in
  // [0, classes). losses[n] = lse[n] - logits[n, targets[n]], lse[n] = log sum_{v < classes}
  // exp(logits[n, v]); rows whose target is ignore_index get loss 0. lse (N) is saved.
  void (*cross_entropy_forward)(const Tensor& losses, const Tensor& lse, const Tensor& logits,
                                const Tensor& targets, int64_t ignore_index, int64_t classes);
  // dlogits[n, v] = dlosses[n] * (exp(logits[n, v] - lse[n]) - [v == targets[n]]) for v < classes;
  // 0 on padding columns and on ignored rows. dlogits may be logits itself (the gradient written
  // over the logits: each element is read before it is written).
  void (*cross_entropy_backward)(const Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                                 const Tensor& lse, const Tensor& targets, int64_t ignore_index,
                                 int64_t classes);
  // The fused classifier: cross_entropy_forward and cross_entropy_backward in one pass over the
  // logits, for dlosses known before the backward runs (ops::cross_entropy's fused_dy). dlogits
  // may be logits itself: the logits are then gone once it returns.
  void (*cross_entropy_fused)(const Tensor& losses, const Tensor& lse, const Tensor& dlogits,
                              const Tensor& dlosses, const Tensor& logits, const Tensor& targets,
                              int64_t ignore_index, int64_t classes);
  // dlogits *= dy / expected, unless dy == expected (then nothing is written): the fused
  // gradient, computed for the dy `expected`, brought to the dy that came. dy is one element on
  // dlogits' device, compared where it lies (no read back); dlogits contiguous.
  void (*cross_entropy_rescale)(const Tensor& dlogits, const Tensor& dy, double expected);

  // ---- position and attention ---- (B, H, T, D) layouts
  // Rotary embedding, half-split pairs (x_i, x_{i + D/2}), angle (pos_offset + t) * inv_freq[i]
  // (inv_freq: D/2 host values, ops/rope.h), cos and sin multiplied by scale. inverse rotates by
  // -angle (same scale), which is the backward (scale times an orthogonal rotation). x and y are
  // any (B, H, T, D) views with contiguous rows (attention's strided contract: check_rope_views),
  // y's rows disjoint or y x itself.
  void (*rope)(const Tensor& y, const Tensor& x, const std::vector<double>& inv_freq, double scale,
               int64_t pos_offset, bool inverse);
  // Forgetting Attention's gate (ops/forget_gate.h): g (B, T, H) the gate's logits, c (B, H, T) in
  // g's statistics dtype (f32; f64 for f64) = start[b, h] + sum_{s <= t} log sigmoid(g[b, s, h]),
  // summed in double along t; start (B, H) of c's dtype, or undefined for 0. The backward:
  // dg[b, t, h] = sigmoid(-g[b, t, h]) sum_{s >= t} dc[b, h, s] (dg in g's dtype).
  void (*forget_gate_forward)(const Tensor& c, const Tensor& g, const Tensor& start);
  void (*forget_gate_backward)(const Tensor& dg, const Tensor& dc, const Tensor& g);
  // Causal softmax attention, materialised: q, out (B, H, T, D); k, v (B, Hkv, T, D) with H a
  // multiple of Hkv (query head h reads kv head h / (H / Hkv)); probs (B, H, T, T) is saved.
  void (*attention_forward)(const Tensor& out, const Tensor& probs, const Tensor& q,
                            const Tensor& k, const Tensor& v, double scale);
  void (*attention_backward)(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             const Tensor& dout, const Tensor& q, const Tensor& k,
                             const Tensor& v, const Tensor& probs, double scale);

  // ---- optimizer ----
  // One fused AdamW step (optim/adamw.h: PyTorch's AdamW, decay first) over every element of
  // param; all tensors contiguous with param's shape:
  //   master, m, v: the state, f32 (f64 for an f64 param), updated in place;
  //   grad: in param's dtype;
  //   param: receives the new master rounded to its dtype (bf16), unless it is master itself (the
  //          same storage: f32 and f64 parameters), when nothing more is written.
  // bias_correction1 = 1 - beta1^t, bias_correction2 = 1 - beta2^t; weight_decay is 0 for a
  // parameter that is not decayed. The scalar coefficients are formed in double; the element
  // arithmetic runs in the state's type, one rounding per operation (no fused multiply-add), so the
  // CUDA step gives the CPU's bits.
  void (*adamw_step)(const Tensor& param, const Tensor& master, const Tensor& m, const Tensor& v,
                     const Tensor& grad, double lr, double beta1, double beta2, double eps,
                     double weight_decay, double bias_correction1, double bias_correction2);
  // AdamW over a flat range (a whole flat buffer of parameters, or a ZeRO shard of it): adamw_step's
  // element update on 1-D contiguous tensors of one length n:
  //   master, m, v: the state, f32 (or f64), updated in place;
  //   grad: in master's dtype (gradients of bf16 parameters are accumulated in f32);
  //   param: master itself (the same storage) when of master's dtype, or bf16: receives the rounded
  //          new master;
  //   decay_ranges: i32 (2K) on the same device, {begin_0, end_0, begin_1, end_1, ...}: K sorted,
  //          disjoint [begin, end) offsets into these tensors, 0 <= begin_0 <= end_0 <= begin_1 ...
  //          <= n, whose elements get weight_decay; every other element gets none. i32 because
  //          tessera has no i64 dtype: decayed elements lie below 2^31 (any n works otherwise).
  //   grad_scale: the gradient-clipping coefficient (1: none), applied as g * grad_scale in the
  //          state type (one rounding) as each element is read, so clipping costs no pass of its own.
  // The bits are those of adamw_step on each sub-range with its weight decay (for bf16, fed the f32
  // values of its bf16 gradient) fed the scaled gradient. One launch on CUDA. The CPU entry checks the ranges' values; the
  // CUDA one checks only their dtype, shape and device, since reading them back would synchronise
  // every step: there, unsorted ranges decay an unspecified set but touch no other memory.
  void (*adamw_step_flat)(const Tensor& param, const Tensor& master, const Tensor& m,
                          const Tensor& v, const Tensor& grad, const Tensor& decay_ranges,
                          double lr, double beta1, double beta2, double eps, double weight_decay,
                          double bias_correction1, double bias_correction2, double grad_scale);
  // out (one element, f32 or f64, may be a view into a larger buffer) = sum of x^2 over every
  // element of x (contiguous, f32, f64 or bf16), accumulated in double in an order fixed by numel
  // alone: the same bits on every run. Global gradient norms (optim/clip.h) add these up.
  void (*sum_squares)(const Tensor& out, const Tensor& x);

  // ---- LOMO / AdaLomo (optim/lomo.h): one parameter's update inside its gradient hook ----
  // param (n): f32, f64 or bf16, contiguous. master (n): the weights the update runs on, in the
  // state type S (f32; f64 for an f64 param): param itself (the same storage), or the f32 master of
  // a bf16 param, which then receives round(master). grad (n): param's dtype. Every update reads
  //   G = clamp(grad / loss_scale, -clip_value, clip_value) * clip_coef   (no clamp when clip_value 0)
  // with each operation rounded in S (no fused multiply-add), so the CUDA element arithmetic is the
  // CPU's; sums are double, in an order fixed by the shape alone.
  // out (one f64 element, may be a view into a larger buffer on grad's device) = sum over i of
  // (grad[i] / loss_scale)^2: one parameter's share of the global norm, left on the device.
  void (*lomo_grad_sum_squares)(const Tensor& out, const Tensor& grad, double loss_scale);
  // LOMO (SGD, decoupled decay): master = master * decay - lr * G; decay = 1 - lr wd, formed by the
  // caller.
  void (*lomo_step)(const Tensor& param, const Tensor& master, const Tensor& grad,
                    const LomoGrad& g, double lr, double decay);
  // AdaLomo (formulas in optim/lomo.h): a matrix (rows, cols) when v is undefined, with its
  // factored second moment row (rows) and col (cols), rows * cols = n; a vector otherwise, with
  // v (n); state in S, updated in place. beta2 = 1 - t^-0.8; weight_decay 0 for no decay. RMS(p),
  // RMS(U) and the step size are formed where the data is (on CUDA: device scalars; nothing is
  // read back).
  void (*adalomo_step)(const Tensor& param, const Tensor& master, const Tensor& grad,
                       const Tensor& row, const Tensor& col, const Tensor& v, const LomoGrad& g,
                       double beta2, double lr, double weight_decay);

  // ---- NF4 (QLoRA, peft/nf4.h) ---- an (R, K) weight W stored as codes u8 (ceil(R K / 2)): element
  // e = r K + k is code byte e / 2, low nibble for even e; absmax f32 (ceil(R K / 64)): element e's
  // value is kNF4[code] * absmax[e / 64].
  // out (R, K) f32/f64/bf16 = W.
  void (*nf4_dequantize)(const Tensor& out, const Tensor& codes, const Tensor& absmax);
  // trans_w: c (N, R) = a (N, K) @ W^T (a Linear's forward); else c (N, K) = a (N, R) @ W (its
  // input gradient). W is dequantised a tile of rows at a time, never whole.
  void (*nf4_matmul)(const Tensor& c, const Tensor& a, const Tensor& codes, const Tensor& absmax,
                     int64_t rows, int64_t cols, bool trans_w);
  // Double quantisation: absmax (n) f32 = int8(qabsmax[i]) / 127 * scales[i / 256] + mean.
  void (*nf4_absmax_dequantize)(const Tensor& absmax, const Tensor& qabsmax, const Tensor& scales,
                                double mean);

  // ---- fused attention ---- q, out, dq, dout (B, H, T, D); k, v, dk, dv (B, Hkv, T, D) with H a
  // multiple of Hkv (query head h reads kv head h / (H / Hkv)); per-row statistics lse, log_rem
  // (B, H, T) are f32, or f64 when q is f64. Neither family materialises a (T, T) matrix (the
  // CUDA kernels tile it through shared memory); the CPU twins are plain double-accumulating loops.
  //
  // Causal softmax attention, flash-style (FlashAttention-2, Dao 2023): query i attends keys
  // j <= i, and with window > 0 only keys i - window < j <= i (a sliding window of `window` keys,
  // itself included). lse[i] = log sum_j exp(scale q_i . k_j) over those keys is saved; the backward
  // recomputes P = exp(scale q k^T - lse) from it and uses out for rowsum(dout * out).
  void (*flash_attention_forward)(const Tensor& out, const Tensor& lse, const Tensor& q,
                                  const Tensor& k, const Tensor& v, double scale,
                                  const AttentionMask& mask);
  void (*flash_attention_backward)(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                   const Tensor& dout, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const Tensor& out, const Tensor& lse,
                                   double scale, const AttentionMask& mask);
  // Optional: the two above over the documents packed in the batch's rows, one launch for all of
  // them (spans: every document, row after row, check_document_spans). A query attends the keys
  // of its own document only, as the two above on each document's (1, H, length, D) view would
  // (on CUDA with the bits of its mma.sync kernels there); lse is the whole batch's. False,
  // nothing written, where the kernels for these tensors take one document at a time (the caller
  // then runs the two above on each document's view). Null on the CPU, whose kernels have no
  // launches to save.
  bool (*flash_attention_forward_documents)(const Tensor& out, const Tensor& lse, const Tensor& q,
                                            const Tensor& k, const Tensor& v, double scale,
                                            const AttentionMask& mask,
                                            const std::vector<DocumentSpan>& spans);
  bool (*flash_attention_backward_documents)(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                             const Tensor& dout, const Tensor& q, const Tensor& k,
                                             const Tensor& v, const Tensor& out, const Tensor& lse,
                                             double scale, const AttentionMask& mask,
                                             const std::vector<DocumentSpan>& spans);
  // Stick-breaking attention (Tan et al. 2024, arXiv:2410.17980): query j attends keys i < j
  // (i <= j when attend_current) with z[i, j] = scale q_j . k_i, beta = sigmoid(z),
  // A[i, j] = beta[i, j] prod_{i<k<j} (1 - beta[k, j]); out_j = sum_i A[i, j] v_i, plus
  // rem_j v_j when add_remainder (rem_j = prod_i (1 - beta[i, j]), the stick left over).
  // log_rem (B, H, T) = log rem_j is saved for the backward; rem (B, H, T) in q's dtype is written
  // only when defined (the op's optional output). The backward also takes the forward's out:
  // rowsum(dout * out) is the total that its cumulative sums over keys start from.
  void (*stick_breaking_forward)(const Tensor& out, const Tensor& log_rem, const Tensor& rem,
                                 const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                                 bool attend_current, bool add_remainder);
  void (*stick_breaking_backward)(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                  const Tensor& dout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& out, const Tensor& log_rem,
                                  double scale, bool attend_current, bool add_remainder);
  // Optional, as the flash documents entries above: the two above over the documents of spans in
  // one launch a pass (log_rem, rem the whole batch's), or false where they take one document at a
  // time (f32; a backward whose checkpoints would pass its budget in one pass).
  bool (*stick_breaking_forward_documents)(const Tensor& out, const Tensor& log_rem,
                                           const Tensor& rem, const Tensor& q, const Tensor& k,
                                           const Tensor& v, double scale, bool attend_current,
                                           bool add_remainder,
                                           const std::vector<DocumentSpan>& spans);
  bool (*stick_breaking_backward_documents)(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                            const Tensor& dout, const Tensor& q, const Tensor& k,
                                            const Tensor& v, const Tensor& out,
                                            const Tensor& log_rem, double scale,
                                            bool attend_current, bool add_remainder,
                                            const std::vector<DocumentSpan>& spans);
};

namespace cpu {
const Kernels& kernels();
}

// The table for a device (throws for CUDA in a build without CUDA).
const Kernels& kernels_for(Device d);
inline const Kernels& kernels_for(const Tensor& t) { return kernels_for(t.device()); }

// Throws unless every tensor lives on the device of the first (names op, devices and shapes).
void check_same_device(const char* op, std::initializer_list<const Tensor*> ts);

[[noreturn]] void missing_kernel(const char* name, Device d);

}  // namespace tessera

namespace tessera::detail {
// What TESSERA_KERNEL returns: the kernel, called with its own parameter types, and timed while the
// kernel profile is on (backend/profile.h).
template <class R, class... A>
struct KernelCall {
  R (*fn)(A...);
  const char* name;
  Device device;
  R operator()(A... args) const {
    if (!profile::on()) return fn(std::forward<A>(args)...);
    const Tensor *first = nullptr, *second = nullptr;
    int64_t bytes = 0;
    profile::tensor_args(first, second, bytes, args...);
    profile::Scope scope(name, device, first, second, bytes);
    return fn(std::forward<A>(args)...);
  }
};
template <class R, class... A>
KernelCall<R, A...> kernel_call(R (*fn)(A...), const char* name, Device d) {
  if (!fn) missing_kernel(name, d);
  return {fn, name, d};
}
}  // namespace tessera::detail

// The kernel `name` for tensor t's device; an error naming the kernel when the backend lacks it.
#define TESSERA_KERNEL(t, name)                                                        \
  ([&]() {                                                                             \
    const ::tessera::Device d_ = (t).device();                                         \
    return ::tessera::detail::kernel_call(::tessera::kernels_for(d_).name, #name, d_); \
  }())
