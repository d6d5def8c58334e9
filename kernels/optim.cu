// Optimizer kernels for the kernel table: the fused AdamW step and the sum of squares behind global
// gradient norms. Contracts: src/backend/kernels.h; CPU twins: src/backend/cpu/optim.cpp.
//
// adamw_step: one pass over n elements reading g, m, v, w and writing m, v, w (and the bf16 working
// copy): 28 bytes per bf16 parameter, so it runs at memory bandwidth. Every operation is an
// explicitly rounded intrinsic (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn; the __d*_rn ones for
// f64) in the CPU twin's order: nvcc would otherwise contract a * b + c into one fma and round once
// where the CPU rounds twice. Same operations, same roundings: the same bits as the CPU.
//
// adamw_step_flat: the same element update (adamw_element, shared with adamw_step's kernel) over a
// whole flat buffer in one grid-stride launch. Each element learns whether it is decayed by a
// binary search over the 2K range boundaries (K is a few hundred: ~10 cached loads, small beside
// the 28 bytes of state traffic), and picks between the two decay factors the CPU twin forms.
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
};

// Element i of the AdamW step, decay being c.decay or the undecayed factor. G: the gradient's
// element type (S, or uint16_t bf16 bits). out: the parameter when it is not w itself (bf16 bits,
// or S for an f32/f64 parameter kept apart from its master), else null.
template <typename S, typename G, typename P>
__device__ __forceinline__ void adamw_element(S* __restrict__ w, S* __restrict__ m,
                                              S* __restrict__ v, const G* __restrict__ g, P* out,
                                              int64_t i, S decay, const AdamCoefs<S>& c) {
  const S gi = load_grad(g, i);
  const S mi = add(mul(c.b1, m[i]), mul(c.one_minus_b1, gi));
  const S vi = add(mul(c.b2, v[i]), mul(mul(c.one_minus_b2, gi), gi));
  S p = mul(w[i], decay);
  p = sub(p, mul(c.step_size, div(mi, add(div(sqrt_rn(vi), c.bc2_sqrt), c.eps))));
  m[i] = mi;
  v[i] = vi;
  w[i] = p;
  if (out) {
    if constexpr (std::is_same_v<P, uint16_t>) {
      out[i] = to_bf16(float(p));
    } else {
      out[i] = p;
    }
  }
}

template <typename S, typename G, typename P>
__global__ void adamw_kernel(S* __restrict__ w, S* __restrict__ m, S* __restrict__ v,
                             const G* __restrict__ g, P* out, int64_t n, AdamCoefs<S> c) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    adamw_element(w, m, v, g, out, i, c.decay, c);
}

// Is i inside one of the ranges? The boundaries begin_0 <= end_0 <= begin_1 <= ... never decrease,
// so i is inside exactly when an odd number of them are <= i (empty and adjacent ranges included).
// Any bounds at all keep the search inside the array: bad ranges give wrong answers, not faults.
__device__ __forceinline__ bool in_decay_range(const int32_t* __restrict__ bounds,
                                               int64_t nbounds, int64_t i) {
  int64_t lo = 0, hi = nbounds;  // upper bound: the first boundary > i
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (int64_t(bounds[mid]) <= i) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return (lo & 1) != 0;
}

// g: the gradient in the state type (bf16 parameters accumulate theirs in f32).
template <typename S, typename P>
__global__ void adamw_flat_kernel(S* __restrict__ w, S* __restrict__ m, S* __restrict__ v,
                                  const S* __restrict__ g, P* out,
                                  const int32_t* __restrict__ bounds, int64_t nbounds, int64_t n,
                                  AdamCoefs<S> c, S no_decay) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    adamw_element(w, m, v, g, out, i, in_decay_range(bounds, nbounds, i) ? c.decay : no_decay, c);
}

// The coefficients formed in double exactly as the CPU twin forms them, then rounded to S.
template <typename S>
AdamCoefs<S> adam_coefs(double lr, double beta1, double beta2, double eps, double weight_decay,
                        double bias_correction1, double bias_correction2) {
  return AdamCoefs<S>{S(1.0 - lr * weight_decay), S(beta1),
                      S(beta2),                   S(1.0 - beta1),
                      S(1.0 - beta2),             S(eps),
                      S(lr / bias_correction1),   S(std::sqrt(bias_correction2))};
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
                     double bias_correction2) {
  // Shape, dtype and device only: the range values stay on the device (kernels.h).
  const AdamwFlatArgs args = check_adamw_flat_args("cuda kernel adamw_step_flat", true, param,
                                                    master, m, v, grad, decay_ranges);
  const DType st = args.state;
  const int64_t n = args.n;
  const bool bf16_param = args.bf16_param;
  if (n == 0) return;
  DeviceGuard guard(master.device().index);
  constexpr int threads = 256;
  const unsigned blocks = grid_for(n, threads);
  const auto* bounds = static_cast<const int32_t*>(decay_ranges.data_ptr());
  const int64_t nbounds = decay_ranges.numel();
  auto launch = [&](auto z, auto* out) {
    using S = decltype(z);
    const AdamCoefs<S> c = adam_coefs<S>(lr, beta1, beta2, eps, weight_decay, bias_correction1,
                                         bias_correction2);
    // What adamw_step forms for weight_decay 0, so undecayed elements get its bits too.
    const S no_decay =
        adam_coefs<S>(lr, beta1, beta2, eps, 0.0, bias_correction1, bias_correction2).decay;
    adamw_flat_kernel<<<blocks, threads>>>(
        static_cast<S*>(master.data_ptr()), static_cast<S*>(m.data_ptr()),
        static_cast<S*>(v.data_ptr()), static_cast<const S*>(grad.data_ptr()), out, bounds,
        nbounds, n, c, no_decay);
  };
  if (st == DType::F64) {
    launch(double{}, static_cast<double*>(nullptr));
  } else if (bf16_param) {
    launch(float{}, static_cast<uint16_t*>(param.data_ptr()));
  } else {
    launch(float{}, static_cast<float*>(nullptr));
  }
  CUDA_CHECK_LAUNCH();
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

}  // namespace

void add_optim_kernels(Kernels& k) {
  k.adamw_step = adamw_step;
  k.adamw_step_flat = adamw_step_flat;
  k.sum_squares = sum_squares;
}

}  // namespace tessera::cuda
