// Optimizer kernels for the kernel table: the fused AdamW step, the sum of squares behind global
// gradient norms, and the LOMO / AdaLomo updates that run inside backward (section at the end). Contracts: src/backend/kernels.h; CPU twins: src/backend/cpu/optim.cpp.
//
// adamw_step: one pass over n elements reading g, m, v, w and writing m, v, w (and the bf16 working
// copy): 28 bytes per bf16 parameter, so it runs at memory bandwidth. Every operation is an
// explicitly rounded intrinsic (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn; the __d*_rn ones for
// f64) in the CPU twin's order: nvcc would otherwise contract a * b + c into one fma and round once
// where the CPU rounds twice. Same operations, same roundings: the same bits as the CPU.
//
// adamw_step_flat: the same element update (adamw_update, shared with adamw_step's kernel) over a
// whole flat buffer in one grid-stride launch, 16 bytes of each state buffer per access (4 f32
// elements: core.cuh's grouped loop), each gradient element multiplied by the clipping coefficient
// as it is read (a 124M-parameter model's f32 gradients are 0.5 GB: a separate scaling pass would
// read and write them once more). A group learns which elements are decayed from one binary search
// over the 2K range boundaries (K is a few hundred: ~10 cached loads per 4 elements, small beside
// the 4 x 30 bytes of state traffic), and picks between the two decay factors the CPU twin forms.
//
// sum_squares: a fixed grid (a function of n alone, never of the device) of grid-stride threads
// accumulating x^2 in double, a tree reduction per block, then one block adding the block sums in a
// fixed tree: deterministic, no atomics. Not the CPU's order, so it agrees with the CPU to double
// rounding (~1e-16 relative), not bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "backend/adamw_flat_args.h"
#include "backend/kernels.h"
#include "common.cuh"
#include "core.cuh"

namespace tessera::cuda {
namespace {

// ---- rounding-explicit arithmetic in the state type S ----
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ double sqrt_rn(double a) { return __dsqrt_rn(a); }

__device__ __forceinline__ float to_f32(uint16_t b) { return __uint_as_float(uint32_t(b) << 16); }
// Round to nearest even, NaN kept NaN: core/dtype.h's bf16::from_float.
__device__ __forceinline__ uint16_t to_bf16(float v) {
  const uint32_t u = __float_as_uint(v);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return uint16_t((u >> 16) | 0x0040u);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

template <typename S>
__device__ __forceinline__ S load_grad(const S* g, int64_t i) {
  return g[i];
}
__device__ __forceinline__ float load_grad(const uint16_t* g, int64_t i) { return to_f32(g[i]); }

template <typename S>
struct AdamCoefs {
  S decay, b1, b2, one_minus_b1, one_minus_b2, eps, step_size, bc2_sqrt;
  S grad_scale;  // the clipping coefficient (1: exact, for adamw_step)
};

// The AdamW update of one element's master weight w and moments m, v from its gradient gi
// (already multiplied by the clipping coefficient), decay being c.decay or the undecayed factor.
template <typename S>
__device__ __forceinline__ void adamw_update(S& w, S& m, S& v, S gi, S decay,
                                             const AdamCoefs<S>& c) {
  m = add(mul(c.b1, m), mul(c.one_minus_b1, gi));
  v = add(mul(c.b2, v), mul(mul(c.one_minus_b2, gi), gi));
  const S p = mul(w, decay);
  w = sub(p, mul(c.step_size, div(m, add(div(sqrt_rn(v), c.bc2_sqrt), c.eps))));
}

// The parameter's copy of an updated master value: bf16 bits, or the value itself.
template <typename P, typename S>
__device__ __forceinline__ P param_of(S p) {
  if constexpr (std::is_same_v<P, uint16_t>) {
    return to_bf16(float(p));
  } else {
    return p;
  }
}

// Element i of the AdamW step. G: the gradient's element type (S, or uint16_t bf16 bits). out: the
// parameter when it is not w itself (bf16 bits, or S for an f32/f64 parameter kept apart from its
// master), else null.
template <typename S, typename G, typename P>
__device__ __forceinline__ void adamw_element(S* __restrict__ w, S* __restrict__ m,
                                              S* __restrict__ v, const G* __restrict__ g, P* out,
                                              int64_t i, S decay, const AdamCoefs<S>& c) {
  S wi = w[i], mi = m[i], vi = v[i];
  adamw_update(wi, mi, vi, mul(load_grad(g, i), c.grad_scale), decay, c);
  m[i] = mi;
  v[i] = vi;
  w[i] = wi;
  if (out) out[i] = param_of<P>(wi);
}

template <typename S, typename G, typename P>
__global__ void adamw_kernel(S* __restrict__ w, S* __restrict__ m, S* __restrict__ v,
                             const G* __restrict__ g, P* out, int64_t n, AdamCoefs<S> c) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    adamw_element(w, m, v, g, out, i, c.decay, c);
}

// The first of the range boundaries begin_0 <= end_0 <= begin_1 <= ... that is > i. They never
// decrease, so i is inside a range exactly when that index is odd (an odd number of boundaries
// are <= i; empty and adjacent ranges included). Any bounds at all keep the search inside the
// array: bad ranges give wrong answers, not faults.
__device__ __forceinline__ int64_t boundary_above(const int32_t* __restrict__ bounds,
                                                  int64_t nbounds, int64_t i) {
  int64_t lo = 0, hi = nbounds;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (int64_t(bounds[mid]) <= i) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// The flat step over elements [i, i + W) (core::packed_loop_kernel's body): 16-byte accesses to
// the f32 state and gradient when W is 4 (f64: 2), one binary search per group for the decay
// ranges, then a step past each boundary inside the group. g: the gradient in the state type
// (bf16 parameters accumulate theirs in f32).
template <typename S, typename P>
struct AdamwFlat {
  S* w;
  S* m;
  S* v;
  const S* g;
  P* out;
  const int32_t* bounds;
  int64_t nbounds;
  AdamCoefs<S> c;
  S no_decay;
  template <int W>
  __device__ void run(int64_t i) const {
    S wv[W], mv[W], vv[W], gv[W];
    core::ld_raw<W>(w, i, wv);
    core::ld_raw<W>(m, i, mv);
    core::ld_raw<W>(v, i, vv);
    core::ld_raw<W>(g, i, gv);
    int64_t b = boundary_above(bounds, nbounds, i);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      while (b < nbounds && int64_t(bounds[b]) <= i + k) ++b;
      adamw_update(wv[k], mv[k], vv[k], mul(gv[k], c.grad_scale), (b & 1) ? c.decay : no_decay,
                   c);
    }
    core::st_raw<W>(m, i, mv);
    core::st_raw<W>(v, i, vv);
    core::st_raw<W>(w, i, wv);
    if (out) {
      P pv[W];
#pragma unroll
      for (int k = 0; k < W; ++k) pv[k] = param_of<P>(wv[k]);
      core::st_raw<W>(out, i, pv);
    }
  }
};

// The coefficients formed in double exactly as the CPU twin forms them, then rounded to S.
template <typename S>
AdamCoefs<S> adam_coefs(double lr, double beta1, double beta2, double eps, double weight_decay,
                        double bias_correction1, double bias_correction2, double grad_scale = 1.0) {
  return AdamCoefs<S>{S(1.0 - lr * weight_decay), S(beta1),
                      S(beta2),                   S(1.0 - beta1),
                      S(1.0 - beta2),             S(eps),
                      S(lr / bias_correction1),   S(std::sqrt(bias_correction2)),
                      S(grad_scale)};
}

unsigned grid_for(int64_t n, int threads) {
  const int64_t per_block = int64_t(threads) * 4;  // a few elements per thread; bounded grid
  return unsigned(std::min<int64_t>((n + per_block - 1) / per_block, 65535));
}

void check_state(const char* name, const Tensor& param, const Tensor& t, DType want) {
  TESSERA_CHECK(t.defined() && t.device() == param.device() && t.is_contiguous() &&
                    t.dtype() == want && t.numel() == param.numel(),
                "cuda kernel adamw_step: ", name, " must be a contiguous ", dtype_name(want),
                " tensor of ", param.numel(), " elements on ", param.device().str(), " (param ",
                param.str(), "), got ", t.defined() ? t.str() : std::string("an undefined tensor"));
}

void adamw_step(const Tensor& param, const Tensor& master, const Tensor& m, const Tensor& v,
                const Tensor& grad, double lr, double beta1, double beta2, double eps,
                double weight_decay, double bias_correction1, double bias_correction2) {
  const DType pt = param.dtype();
  TESSERA_CHECK(param.device().is_cuda() && param.is_contiguous() &&
                    (pt == DType::F32 || pt == DType::F64 || pt == DType::BF16),
                "cuda kernel adamw_step: param must be a contiguous f32, f64 or bf16 CUDA tensor, "
                "got ",
                param.str());
  const DType st = pt == DType::F64 ? DType::F64 : DType::F32;
  check_state("master", param, master, st);
  check_state("m", param, m, st);
  check_state("v", param, v, st);
  check_state("grad", param, grad, pt);
  const int64_t n = param.numel();
  if (n == 0) return;
  DeviceGuard guard(param.device().index);
  const bool aliased = master.data_ptr() == param.data_ptr();
  constexpr int threads = 256;
  const unsigned blocks = grid_for(n, threads);
  auto coefs = [&](auto z) {
    return adam_coefs<decltype(z)>(lr, beta1, beta2, eps, weight_decay, bias_correction1,
                                   bias_correction2);
  };
  if (pt == DType::F64) {
    adamw_kernel<double, double, double><<<blocks, threads>>>(
        static_cast<double*>(master.data_ptr()), static_cast<double*>(m.data_ptr()),
        static_cast<double*>(v.data_ptr()), static_cast<const double*>(grad.data_ptr()),
        aliased ? nullptr : static_cast<double*>(param.data_ptr()), n, coefs(double{}));
  } else if (pt == DType::F32) {
    adamw_kernel<float, float, float><<<blocks, threads>>>(
        static_cast<float*>(master.data_ptr()), static_cast<float*>(m.data_ptr()),
        static_cast<float*>(v.data_ptr()), static_cast<const float*>(grad.data_ptr()),
        aliased ? nullptr : static_cast<float*>(param.data_ptr()), n, coefs(float{}));
  } else {
    TESSERA_CHECK(!aliased, "cuda kernel adamw_step: a bf16 param needs its own f32 master");
    adamw_kernel<float, uint16_t, uint16_t><<<blocks, threads>>>(
        static_cast<float*>(master.data_ptr()), static_cast<float*>(m.data_ptr()),
        static_cast<float*>(v.data_ptr()), static_cast<const uint16_t*>(grad.data_ptr()),
        static_cast<uint16_t*>(param.data_ptr()), n, coefs(float{}));
  }
  CUDA_CHECK_LAUNCH();
}

void adamw_step_flat(const Tensor& param, const Tensor& master, const Tensor& m, const Tensor& v,
                     const Tensor& grad, const Tensor& decay_ranges, double lr, double beta1,
                     double beta2, double eps, double weight_decay, double bias_correction1,
                     double bias_correction2, double grad_scale) {
  // Shape, dtype and device only: the range values stay on the device (kernels.h).
  const AdamwFlatArgs args = check_adamw_flat_args("cuda kernel adamw_step_flat", true, param,
                                                    master, m, v, grad, decay_ranges, grad_scale);
  const DType st = args.state;
  const int64_t n = args.n;
  const bool bf16_param = args.bf16_param;
  if (n == 0) return;
  DeviceGuard guard(master.device().index);
  const auto* bounds = static_cast<const int32_t*>(decay_ranges.data_ptr());
  const int64_t nbounds = decay_ranges.numel();
  // Groups of 16 bytes of state when the four state buffers allow (the bf16 copy is written an
  // element at a time).
  const bool packed =
      core::aligned16({master.data_ptr(), m.data_ptr(), v.data_ptr(), grad.data_ptr()});
  auto launch = [&](auto z, auto* out) {
    using S = decltype(z);
    using P = std::remove_pointer_t<decltype(out)>;
    const AdamCoefs<S> c = adam_coefs<S>(lr, beta1, beta2, eps, weight_decay, bias_correction1,
                                         bias_correction2, grad_scale);
    // What adamw_step forms for weight_decay 0, so undecayed elements get its bits too.
    const S no_decay =
        adam_coefs<S>(lr, beta1, beta2, eps, 0.0, bias_correction1, bias_correction2).decay;
    core::launch_packed<S>(
        n, packed,
        AdamwFlat<S, P>{static_cast<S*>(master.data_ptr()), static_cast<S*>(m.data_ptr()),
                        static_cast<S*>(v.data_ptr()), static_cast<const S*>(grad.data_ptr()),
                        out, bounds, nbounds, c, no_decay});
  };
  if (st == DType::F64) {
    launch(double{}, static_cast<double*>(nullptr));
  } else if (bf16_param) {
    launch(float{}, static_cast<uint16_t*>(param.data_ptr()));
  } else {
    launch(float{}, static_cast<float*>(nullptr));
  }
}

// ---- sum of squares ----

constexpr int kSumThreads = 256;
constexpr int kMaxSumBlocks = 1024;  // also the finishing block's thread count

__device__ __forceinline__ double as_double(float x) { return double(x); }
__device__ __forceinline__ double as_double(double x) { return x; }
__device__ __forceinline__ double as_double(uint16_t x) { return double(to_f32(x)); }

// Fixed-shape tree over a block's shared array of size Threads.
template <int Threads>
__device__ double block_sum(double* sh, double mine) {
  sh[threadIdx.x] = mine;
  __syncthreads();
  for (int s = Threads / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  return sh[0];
}

template <typename T>
__global__ void __launch_bounds__(kSumThreads)
    sum_squares_partial_kernel(double* partial, const T* x, int64_t n) {
  __shared__ double sh[kSumThreads];
  double acc = 0.0;
  const int64_t stride = int64_t(gridDim.x) * kSumThreads;
  for (int64_t i = int64_t(blockIdx.x) * kSumThreads + threadIdx.x; i < n; i += stride) {
    const double d = as_double(x[i]);
    acc += d * d;
  }
  const double total = block_sum<kSumThreads>(sh, acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

template <typename O>
__global__ void __launch_bounds__(kMaxSumBlocks)
    sum_squares_finish_kernel(O* out, const double* partial, int blocks) {
  __shared__ double sh[kMaxSumBlocks];
  const double mine = int(threadIdx.x) < blocks ? partial[threadIdx.x] : 0.0;
  const double total = block_sum<kMaxSumBlocks>(sh, mine);
  if (threadIdx.x == 0) *out = O(total);
}

void sum_squares(const Tensor& out, const Tensor& x) {
  TESSERA_CHECK(out.defined() && out.numel() == 1 && out.device().is_cuda() &&
                    (out.dtype() == DType::F32 || out.dtype() == DType::F64),
                "cuda kernel sum_squares: out must be one f32 or f64 CUDA element, got ",
                out.defined() ? out.str() : std::string("an undefined tensor"));
  TESSERA_CHECK(
      x.defined() && x.device() == out.device() && x.is_contiguous() &&
          (x.dtype() == DType::F32 || x.dtype() == DType::F64 || x.dtype() == DType::BF16),
      "cuda kernel sum_squares: x must be a contiguous f32, f64 or bf16 tensor on ",
      out.device().str(), ", got ", x.defined() ? x.str() : std::string("an undefined tensor"));
  DeviceGuard guard(out.device().index);
  const int64_t n = x.numel();
  // Eight elements per thread before a block is added; at most kMaxSumBlocks blocks.
  const int blocks = int(std::max<int64_t>(
      1, std::min<int64_t>((n + kSumThreads * 8 - 1) / (kSumThreads * 8), kMaxSumBlocks)));
  Tensor partial = Tensor::empty({blocks}, {DType::F64, out.device()});
  auto* pp = static_cast<double*>(partial.data_ptr());
  switch (x.dtype()) {
    case DType::F32:
      sum_squares_partial_kernel<<<blocks, kSumThreads>>>(
          pp, static_cast<const float*>(x.data_ptr()), n);
      break;
    case DType::F64:
      sum_squares_partial_kernel<<<blocks, kSumThreads>>>(
          pp, static_cast<const double*>(x.data_ptr()), n);
      break;
    default:
      sum_squares_partial_kernel<<<blocks, kSumThreads>>>(
          pp, static_cast<const uint16_t*>(x.data_ptr()), n);
  }
  CUDA_CHECK_LAUNCH();
  if (out.dtype() == DType::F64) {
    sum_squares_finish_kernel<<<1, kMaxSumBlocks>>>(static_cast<double*>(out.data_ptr()), pp,
                                                    blocks);
  } else {
    sum_squares_finish_kernel<<<1, kMaxSumBlocks>>>(static_cast<float*>(out.data_ptr()), pp,
                                                    blocks);
  }
  CUDA_CHECK_LAUNCH();
}


// ---- LOMO and AdaLomo (optim/lomo.h) ----
//
// One parameter per call, inside its gradient hook, with nothing read back to the host: every sum
// (the gradient's squares for the global norm, RMS(master), RMS(U), the row and column means of
// u = G^2 + 1e-30) goes into f64 scratch on the device through the fixed-shape reductions above,
// and the step's scalars (eta = lr max(1e-3, RMS(p)), the update-clipping divisor, the decay) are
// formed by each thread of the final kernel from those device sums. The element arithmetic is the
// CPU twin's (src/backend/cpu/optim.cpp), operation by operation, with explicit rounding; the
// column sums of u are added in the CPU's order (per block of 256 rows, then the blocks in order),
// so they agree bit for bit; the other sums are trees, so they agree to double rounding and, once
// rounded to f32, almost always exactly.

constexpr int64_t kAdaRows = 256;  // rows per block of the column sums (the CPU twin's kRows)

// G = clamp(g / loss_scale, -clip_value, clip_value) * coef in S; the comparisons mirror
// std::max / std::min (a NaN passes through as on the CPU).
template <typename S>
struct LomoPrep {
  S loss_scale, clip_value, coef;
  bool clamp;
  __device__ __forceinline__ S operator()(S x) const {
    x = div(x, loss_scale);
    if (clamp) {
      x = x < -clip_value ? -clip_value : x;
      x = clip_value < x ? clip_value : x;
    }
    return mul(x, coef);
  }
};

template <typename S>
__device__ __forceinline__ void store_update(S* w, uint16_t* out, int64_t i, S p) {
  w[i] = p;
  if (out) out[i] = to_bf16(float(p));
}

// sum_{i < n} f(i) in double into *out: a fixed grid of grid-stride threads, a tree per block,
// then sum_squares_finish_kernel's fixed tree over the block sums. Deterministic.
template <typename F>
__global__ void __launch_bounds__(kSumThreads) sum_partial_kernel(double* partial, int64_t n, F f) {
  __shared__ double sh[kSumThreads];
  double acc = 0.0;
  const int64_t stride = int64_t(gridDim.x) * kSumThreads;
  for (int64_t i = int64_t(blockIdx.x) * kSumThreads + threadIdx.x; i < n; i += stride)
    acc += f(i);
  const double total = block_sum<kSumThreads>(sh, acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

template <typename F>
void device_sum(double* out, int64_t n, const F& f, Device dev) {
  const int blocks = int(std::max<int64_t>(
      1, std::min<int64_t>((n + kSumThreads * 8 - 1) / (kSumThreads * 8), kMaxSumBlocks)));
  Tensor partial = Tensor::empty({blocks}, {DType::F64, dev});
  auto* pp = static_cast<double*>(partial.data_ptr());
  sum_partial_kernel<<<blocks, kSumThreads>>>(pp, n, f);
  CUDA_CHECK_LAUNCH();
  sum_squares_finish_kernel<<<1, kMaxSumBlocks>>>(out, pp, blocks);
  CUDA_CHECK_LAUNCH();
}

// The summands.
template <typename G>
struct ScaledSquare {  // (g / loss_scale)^2, the norm's: exactly g^2 when loss_scale is 1
  const G* g;
  double loss_scale;
  __device__ double operator()(int64_t i) const {
    const double x = __ddiv_rn(as_double(g[i]), loss_scale);
    return __dmul_rn(x, x);
  }
};
template <typename S>
struct Square {  // w^2, for RMS(p)
  const S* w;
  __device__ double operator()(int64_t i) const { return __dmul_rn(double(w[i]), double(w[i])); }
};
template <typename S>
struct Plain {  // the running row means, for mean(R)
  const S* r;
  __device__ double operator()(int64_t i) const { return double(r[i]); }
};
template <typename S, typename G>
struct VectorUpdateSquare {  // U = G / sqrt(v)
  const G* g;
  const S* v;
  LomoPrep<S> prep;
  __device__ double operator()(int64_t i) const {
    const double u = double(div(prep(load_grad(g, i)), sqrt_rn(v[i])));
    return __dmul_rn(u, u);
  }
};
template <typename S, typename G>
struct MatrixUpdateSquare {  // U = G * rf[row] * cf[col]
  const G* g;
  const S *rf, *cf;
  int64_t cols;
  LomoPrep<S> prep;
  __device__ double operator()(int64_t i) const {
    const double u = double(mul(mul(prep(load_grad(g, i)), rf[i / cols]), cf[i % cols]));
    return __dmul_rn(u, u);
  }
};

template <typename S, typename G>
__global__ void lomo_sgd_kernel(S* __restrict__ w, const G* __restrict__ g, uint16_t* out,
                                int64_t n, LomoPrep<S> prep, S lr, S decay) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    store_update(w, out, i, sub(mul(w[i], decay), mul(lr, prep(load_grad(g, i)))));
}

// row_acc[i] = sum_j double(G[i,j]^2 + 1e-30): one block per row.
template <typename S, typename G>
__global__ void __launch_bounds__(kSumThreads)
    ada_row_kernel(double* row_acc, const G* g, int64_t cols, LomoPrep<S> prep) {
  __shared__ double sh[kSumThreads];
  const int64_t r = blockIdx.x;
  double acc = 0.0;
  for (int64_t j = threadIdx.x; j < cols; j += kSumThreads) {
    const S x = prep(load_grad(g, r * cols + j));
    acc += double(add(mul(x, x), S(1e-30)));
  }
  const double total = block_sum<kSumThreads>(sh, acc);
  if (threadIdx.x == 0) row_acc[r] = total;
}

// col_part[b, j] = sum over the rows of block b, in order, of double(G^2 + 1e-30).
template <typename S, typename G>
__global__ void ada_col_part_kernel(double* col_part, const G* g, int64_t rows, int64_t cols,
                                    LomoPrep<S> prep) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (j >= cols) return;
  double acc = 0.0;
  const int64_t end = rows < (b + 1) * kAdaRows ? rows : (b + 1) * kAdaRows;
  for (int64_t i = b * kAdaRows; i < end; ++i) {
    const S x = prep(load_grad(g, i * cols + j));
    acc = __dadd_rn(acc, double(add(mul(x, x), S(1e-30))));
  }
  col_part[b * cols + j] = acc;
}

// R = b2 R + (1 - b2) S(row_acc / cols); C likewise with the column sums (blocks added in order).
template <typename S>
__global__ void ada_rc_kernel(S* R, S* C, const double* row_acc, const double* col_part,
                              int64_t rows, int64_t cols, int64_t blocks, S b2, S one_minus_b2) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k < rows) {
    R[k] = add(mul(b2, R[k]), mul(one_minus_b2, S(__ddiv_rn(row_acc[k], double(cols)))));
  } else if (k < rows + cols) {
    const int64_t j = k - rows;
    double acc = 0.0;
    for (int64_t b = 0; b < blocks; ++b) acc = __dadd_rn(acc, col_part[b * cols + j]);
    C[j] = add(mul(b2, C[j]), mul(one_minus_b2, S(__ddiv_rn(acc, double(rows)))));
  }
}

// rf[i] = 1 / sqrt(R[i] / mean(R)), cf[j] = 1 / sqrt(C[j]); sum_r is on the device.
template <typename S>
__global__ void ada_factor_kernel(S* rf, S* cf, const S* R, const S* C, const double* sum_r,
                                  int64_t rows, int64_t cols) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const S mean_r = S(__ddiv_rn(*sum_r, double(rows)));
  if (k < rows) {
    rf[k] = div(S(1), sqrt_rn(div(R[k], mean_r)));
  } else if (k < rows + cols) {
    cf[k - rows] = div(S(1), sqrt_rn(C[k - rows]));
  }
}

// v = b2 v + (1 - b2) (G^2 + 1e-30).
template <typename S, typename G>
__global__ void ada_v_kernel(S* v, const G* g, int64_t n, LomoPrep<S> prep, S b2,
                             S one_minus_b2) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const S x = prep(load_grad(g, i));
    v[i] = add(mul(b2, v[i]), mul(one_minus_b2, add(mul(x, x), S(1e-30))));
  }
}

// The step's scalars from the device sums, as the CPU's ada_scalars forms them in double:
// sums[0] = sum p^2 (before the update), sums[1] = sum U^2.
struct AdaStep {
  double div, eta, decay;
};
__device__ __forceinline__ AdaStep ada_step(const double* sums, int64_t n, double lr, double wd) {
  const double rms_p = __dsqrt_rn(__ddiv_rn(sums[0], double(n)));
  const double eta = __dmul_rn(lr, 1e-3 < rms_p ? rms_p : 1e-3);  // std::max(1e-3, rms_p)
  const double rms_u = __ddiv_rn(__dsqrt_rn(__ddiv_rn(sums[1], double(n))), 1.0);
  return {1.0 < rms_u ? rms_u : 1.0, eta, __dsub_rn(1.0, __dmul_rn(eta, wd))};
}

// p = p * decay - eta * (U / div); U from the factors (matrix) or from v (vector).
template <typename S, typename G, bool Matrix>
__global__ void ada_update_kernel(S* __restrict__ w, const G* __restrict__ g, uint16_t* out,
                                  int64_t n, int64_t cols, const S* rf, const S* cf, const S* v,
                                  const double* sums, LomoPrep<S> prep, double lr, double wd) {
  const AdaStep a = ada_step(sums, n, lr, wd);
  const S dv = S(a.div), eta = S(a.eta), decay = S(a.decay);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const S x = prep(load_grad(g, i));
    const S u = Matrix ? mul(mul(x, rf[i / cols]), cf[i % cols]) : div(x, sqrt_rn(v[i]));
    store_update(w, out, i, sub(mul(w[i], decay), mul(eta, div(u, dv))));
  }
}

void check_lomo_args(const char* kernel, const Tensor& param, const Tensor& master,
                     const Tensor& grad) {
  const DType pt = param.dtype();
  TESSERA_CHECK(param.device().is_cuda() && param.is_contiguous() &&
                    (pt == DType::F32 || pt == DType::F64 || pt == DType::BF16),
                "cuda kernel ", kernel, ": param must be a contiguous f32, f64 or bf16 CUDA "
                "tensor, got ", param.str());
  const DType st = pt == DType::F64 ? DType::F64 : DType::F32;
  auto check = [&](const char* name, const Tensor& t, DType want) {
    TESSERA_CHECK(t.defined() && t.device() == param.device() && t.is_contiguous() &&
                      t.dtype() == want && t.numel() == param.numel(),
                  "cuda kernel ", kernel, ": ", name, " must be a contiguous ", dtype_name(want),
                  " tensor of ", param.numel(), " elements on ", param.device().str(),
                  " (param ", param.str(), "), got ",
                  t.defined() ? t.str() : std::string("an undefined tensor"));
  };
  check("master", master, st);
  check("grad", grad, pt);
  TESSERA_CHECK(pt == DType::BF16 ? master.data_ptr() != param.data_ptr()
                                  : master.data_ptr() == param.data_ptr(),
                "cuda kernel ", kernel, ": a bf16 param needs its own f32 master; an f32 or f64 ",
                "param is its own master (param ", param.str(), ", master ", master.str(), ")");
}

// Calls f(S{}, grad pointer, bf16 out or null) for the param's dtype.
template <typename F>
void dispatch_lomo(const Tensor& param, const Tensor& grad, F&& f) {
  switch (param.dtype()) {
    case DType::F64:
      f(double{}, static_cast<const double*>(grad.data_ptr()), static_cast<uint16_t*>(nullptr));
      break;
    case DType::F32:
      f(float{}, static_cast<const float*>(grad.data_ptr()), static_cast<uint16_t*>(nullptr));
      break;
    default:
      f(float{}, static_cast<const uint16_t*>(grad.data_ptr()),
        static_cast<uint16_t*>(param.data_ptr()));
  }
}

template <typename S>
LomoPrep<S> lomo_prep(const LomoGrad& g) {
  return {S(g.loss_scale), S(g.clip_value), S(g.clip_coef), g.clip_value > 0};
}

void lomo_grad_sum_squares(const Tensor& out, const Tensor& grad, double loss_scale) {
  TESSERA_CHECK(out.defined() && out.numel() == 1 && out.device().is_cuda() &&
                    out.dtype() == DType::F64,
                "cuda kernel lomo_grad_sum_squares: out must be one f64 CUDA element, got ",
                out.defined() ? out.str() : std::string("an undefined tensor"));
  TESSERA_CHECK(grad.defined() && grad.device() == out.device() && grad.is_contiguous() &&
                    (grad.dtype() == DType::F32 || grad.dtype() == DType::F64 ||
                     grad.dtype() == DType::BF16),
                "cuda kernel lomo_grad_sum_squares: grad must be a contiguous f32, f64 or bf16 "
                "tensor on ", out.device().str(), ", got ",
                grad.defined() ? grad.str() : std::string("an undefined tensor"));
  DeviceGuard guard(out.device().index);
  auto* o = static_cast<double*>(out.data_ptr());
  const int64_t n = grad.numel();
  switch (grad.dtype()) {
    case DType::F32:
      device_sum(o, n, ScaledSquare<float>{static_cast<const float*>(grad.data_ptr()), loss_scale},
                 out.device());
      break;
    case DType::F64:
      device_sum(o, n,
                 ScaledSquare<double>{static_cast<const double*>(grad.data_ptr()), loss_scale},
                 out.device());
      break;
    default:
      device_sum(o, n,
                 ScaledSquare<uint16_t>{static_cast<const uint16_t*>(grad.data_ptr()), loss_scale},
                 out.device());
  }
}

void lomo_step(const Tensor& param, const Tensor& master, const Tensor& grad, const LomoGrad& g,
               double lr, double decay) {
  check_lomo_args("lomo_step", param, master, grad);
  const int64_t n = param.numel();
  if (n == 0) return;
  DeviceGuard guard(param.device().index);
  constexpr int threads = 256;
  dispatch_lomo(param, grad, [&](auto z, const auto* gp, uint16_t* out) {
    using S = decltype(z);
    lomo_sgd_kernel<<<grid_for(n, threads), threads>>>(static_cast<S*>(master.data_ptr()), gp,
                                                        out, n, lomo_prep<S>(g), S(lr), S(decay));
  });
  CUDA_CHECK_LAUNCH();
}

void adalomo_step(const Tensor& param, const Tensor& master, const Tensor& grad,
                  const Tensor& row, const Tensor& col, const Tensor& v, const LomoGrad& g,
                  double beta2, double lr, double weight_decay) {
  check_lomo_args("adalomo_step", param, master, grad);
  const int64_t n = param.numel();
  const bool matrix = !v.defined();
  const DType st = master.dtype();
  const Device dev = param.device();
  auto check_state = [&](const char* name, const Tensor& t, int64_t len) {
    TESSERA_CHECK(t.defined() && t.device() == dev && t.is_contiguous() && t.dtype() == st &&
                      t.numel() == len,
                  "cuda kernel adalomo_step: ", name, " must be a contiguous ", dtype_name(st),
                  " tensor of ", len, " elements on ", dev.str(), " (param ", param.str(),
                  "), got ", t.defined() ? t.str() : std::string("an undefined tensor"));
  };
  int64_t rows = 0, cols = 0;
  if (matrix) {
    TESSERA_CHECK(row.defined() && col.defined(),
                  "cuda kernel adalomo_step: give row and col (a matrix) or v (a vector)");
    rows = row.numel(), cols = col.numel();
    TESSERA_CHECK(rows * cols == n, "cuda kernel adalomo_step: row (", rows, ") x col (", cols,
                  ") does not factor param ", param.str());
    check_state("row", row, rows);
    check_state("col", col, cols);
  } else {
    check_state("v", v, n);
  }
  if (n == 0) return;
  DeviceGuard guard(dev.index);
  constexpr int threads = 256;
  Tensor sums = Tensor::empty({3}, {DType::F64, dev});  // sum p^2, sum U^2, sum R
  auto* sp = static_cast<double*>(sums.data_ptr());
  dispatch_lomo(param, grad, [&](auto z, const auto* gp, uint16_t* out) {
    using S = decltype(z);
    using G = std::remove_const_t<std::remove_pointer_t<decltype(gp)>>;
    S* w = static_cast<S*>(master.data_ptr());
    const LomoPrep<S> prep = lomo_prep<S>(g);
    const S b2 = S(beta2), one_minus_b2 = S(1.0 - beta2);
    device_sum(sp, n, Square<S>{w}, dev);  // RMS(p) before the update
    if (!matrix) {
      S* vp = static_cast<S*>(v.data_ptr());
      ada_v_kernel<<<grid_for(n, threads), threads>>>(vp, gp, n, prep, b2, one_minus_b2);
      CUDA_CHECK_LAUNCH();
      device_sum(sp + 1, n, VectorUpdateSquare<S, G>{gp, vp, prep}, dev);
      ada_update_kernel<S, G, false><<<grid_for(n, threads), threads>>>(
          w, gp, out, n, 1, nullptr, nullptr, vp, sp, prep, lr, weight_decay);
      CUDA_CHECK_LAUNCH();
      return;
    }
    S* R = static_cast<S*>(row.data_ptr());
    S* C = static_cast<S*>(col.data_ptr());
    const int64_t blocks = (rows + kAdaRows - 1) / kAdaRows;
    Tensor row_acc = Tensor::empty({rows}, {DType::F64, dev});
    Tensor col_part = Tensor::empty({blocks * cols}, {DType::F64, dev});
    Tensor factors = Tensor::empty({rows + cols}, {st, dev});
    auto* ra = static_cast<double*>(row_acc.data_ptr());
    auto* cp = static_cast<double*>(col_part.data_ptr());
    S* rf = static_cast<S*>(factors.data_ptr());
    S* cf = rf + rows;
    ada_row_kernel<<<unsigned(rows), kSumThreads>>>(ra, gp, cols, prep);
    CUDA_CHECK_LAUNCH();
    ada_col_part_kernel<<<dim3(unsigned((cols + threads - 1) / threads), unsigned(blocks)),
                          threads>>>(cp, gp, rows, cols, prep);
    CUDA_CHECK_LAUNCH();
    const unsigned rc_blocks = unsigned((rows + cols + threads - 1) / threads);
    ada_rc_kernel<<<rc_blocks, threads>>>(R, C, ra, cp, rows, cols, blocks, b2, one_minus_b2);
    CUDA_CHECK_LAUNCH();
    device_sum(sp + 2, rows, Plain<S>{R}, dev);
    ada_factor_kernel<<<rc_blocks, threads>>>(rf, cf, R, C, sp + 2, rows, cols);
    CUDA_CHECK_LAUNCH();
    device_sum(sp + 1, n, MatrixUpdateSquare<S, G>{gp, rf, cf, cols, prep}, dev);
    ada_update_kernel<S, G, true><<<grid_for(n, threads), threads>>>(
        w, gp, out, n, cols, rf, cf, nullptr, sp, prep, lr, weight_decay);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void add_optim_kernels(Kernels& k) {
  k.adamw_step = adamw_step;
  k.adamw_step_flat = adamw_step_flat;
  k.sum_squares = sum_squares;
  k.lomo_grad_sum_squares = lomo_grad_sum_squares;
  k.lomo_step = lomo_step;
  k.adalomo_step = adalomo_step;
}

}  // namespace tessera::cuda
