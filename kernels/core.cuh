// Shared by the core kernel files (core.cu, elementwise.cu, embedding.cu, norm.cu, softmax.cu,
// rope.cu, forget_gate.cu, attention_materialised.cu; optim.cu for its 16-byte loop): bf16 loads
// and stores, 16-byte grouped accesses, dtype dispatch, argument checks, reproducible block
// reductions, and each file's registration function.
//
// Numerics, for every kernel of these files (the CPU twins are in src/backend/cpu/):
//  - tensors are f32 or bf16 (bf16 = the top 16 bits of an f32, held as uint16_t); arithmetic is
//    f32; a bf16 result rounds to nearest even once, when it is stored. f64 is the CPU backend's
//    alone (gradient checks): an f64 tensor gets an error naming the kernel and the dtype. The
//    memory-like entries of core.cu (arange, uniform, normal) take every dtype, like copy and fill.
//  - saved statistics (layernorm mean/rstd, rmsnorm rstd, cross-entropy lse and losses, attention
//    probs) may be f32 even when the activations are bf16 (StatPtr): the CPU keeps them in x's
//    dtype, which the kernels accept too, but a bf16 lse or rstd costs 8 bits the backward needs.
//  - no float atomics: reductions run in a fixed order (a fixed tree per launch configuration), so
//    the same inputs give the same bits on every run.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "backend/kernels.h"
#include "common.cuh"

namespace tessera::cuda {

// Registration functions, called from add_core_kernels (core.cu).
void add_elementwise_kernels(Kernels& k);  // binary, axpby, sum/expand_dim, activations, dropout
void add_embedding_kernels(Kernels& k);    // embedding.cu
void add_norm_kernels(Kernels& k);         // norm.cu: layernorm, rmsnorm
void add_softmax_kernels(Kernels& k);      // softmax.cu: softmax, log-softmax, cross-entropy
void add_rope_kernels(Kernels& k);         // rope.cu
void add_forget_gate_kernels(Kernels& k);  // forget_gate.cu: Forgetting Attention's gate sums
void add_materialised_attention_kernels(Kernels& k);  // attention_materialised.cu

namespace core {

constexpr int kThreads = 256;  // threads per block of every core kernel unless it says otherwise
constexpr unsigned kFullMask = 0xffffffffu;

// ---- bf16 as uint16_t bits ------------------------------------------------------------------

__device__ __forceinline__ float bf16_to_f32(uint16_t b) {
  return __uint_as_float(uint32_t(b) << 16);
}

// Round to nearest even, NaN kept NaN (a quiet bit forced so rounding cannot make it infinity):
// the same rule as core/dtype.h's bf16::from_float.
__device__ __forceinline__ uint16_t f32_to_bf16(float v) {
  const uint32_t u = __float_as_uint(v);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return uint16_t((u >> 16) | 0x0040u);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float ld(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float ld(const uint16_t* p, int64_t i) { return bf16_to_f32(p[i]); }
__device__ __forceinline__ void st(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(uint16_t* p, int64_t i, float v) { p[i] = f32_to_bf16(v); }
// v rounded to the precision of p's elements, as a float: what st then ld would give back.
__device__ __forceinline__ float rounded(const float*, float v) { return v; }
__device__ __forceinline__ float rounded(const uint16_t*, float v) { return bf16_to_f32(f32_to_bf16(v)); }

// A sum s written to p[i]: alone, or (accumulate) added to what p[i] holds, rounded to p's type
// first, then one rounded add: axpby's bits (a bias's or a norm weight's gradient summed straight
// into its buffer).
template <typename O>
__device__ __forceinline__ void put_sum(O* p, int64_t i, float s, bool accumulate) {
  st(p, i, accumulate ? __fadd_rn(ld(p, i), rounded(p, s)) : s);
}

// ---- 16-byte accesses ------------------------------------------------------------------------
// A memory-bound kernel keeps the memory system busy only with enough bytes in flight: one 2-byte
// load per thread leaves HBM mostly idle, one 16-byte load (8 bf16 or 4 f32) per thread does not
// (NVIDIA's "vectorized memory access" guidance; llm.c's Packed128 for the same reason). Kernels
// below are templated on W, the elements they move per access: kPack<T> when the host has checked
// that every pointer the kernel offsets by multiples of W is 16-byte aligned (aligned16), else 1.
// An elementwise result does not depend on W (the arithmetic is per element); a row reduction's
// order of f32 additions does (each thread sums its groups), which is rounding, not a contract.
// Under the emulator every 16-byte access is checked for alignment and bounds (check_vector).

template <typename T>
inline constexpr int kPack = int(16 / sizeof(T));  // 4 f32, 8 bf16

// The emulator's check of a 16-byte access (alignment, bounds); nothing on the GPU.
__device__ __forceinline__ void check_vector(const void* p) {
#ifdef TESSERA_CUDA_EMULATED
  ::tessera::emu::check_vector_access(p);
#else
  (void)p;
#endif
}

// p[i, i + W) as they are, any element type (f64 included): one 16-byte access when the group is
// 16 bytes, else W element accesses.
template <int W, typename T>
__device__ __forceinline__ void ld_raw(const T* p, int64_t i, T (&v)[W]) {
  if constexpr (W * sizeof(T) == 16) {
    check_vector(p + i);
    const uint4 r = *reinterpret_cast<const uint4*>(p + i);
    memcpy(v, &r, 16);
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) v[k] = p[i + k];
  }
}
template <int W, typename T>
__device__ __forceinline__ void st_raw(T* p, int64_t i, const T (&v)[W]) {
  if constexpr (W * sizeof(T) == 16) {
    check_vector(p + i);
    uint4 r;
    memcpy(&r, v, 16);
    *reinterpret_cast<uint4*>(p + i) = r;
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) p[i + k] = v[k];
  }
}

// p[i, i + W) as floats (ld of each element): one 16-byte load when W is kPack<T>.
template <int W, typename T>
__device__ __forceinline__ void ld_n(const T* p, int64_t i, float (&v)[W]) {
  T raw[W];
  ld_raw<W>(p, i, raw);
#pragma unroll
  for (int k = 0; k < W; ++k) v[k] = ld(raw, k);
}

// v stored to p[i, i + W), each value rounded to T as st does: one 16-byte store when W is
// kPack<T>.
template <int W, typename T>
__device__ __forceinline__ void st_n(T* p, int64_t i, const float (&v)[W]) {
  T raw[W];
#pragma unroll
  for (int k = 0; k < W; ++k) st(raw, k, v[k]);
  st_raw<W>(p, i, raw);
}

// Whether every pointer is 16-byte aligned (null pointers, absent operands, pass).
inline bool aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Whether rows of C elements of T can be walked in 16-byte groups: every row start aligned.
template <typename T>
bool rows_packed(int64_t C, std::initializer_list<const void*> ps) {
  return C % kPack<T> == 0 && aligned16(ps);
}

// An f32 or bf16 buffer whose dtype is known only at run time: the saved statistics, which may be
// f32 while the activations are bf16. The branch is uniform across a launch, so it costs nothing.
struct StatPtr {
  void* p = nullptr;
  bool bf16 = false;
  __device__ __forceinline__ float load(int64_t i) const {
    return bf16 ? bf16_to_f32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
  }
  __device__ __forceinline__ void store(int64_t i, float v) const {
    if (bf16) {
      static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
    } else {
      static_cast<float*>(p)[i] = v;
    }
  }
};

// ---- host-side dispatch and checks ------------------------------------------------------------

// Calls f(T{}) with T = float for f32 and uint16_t for bf16; any other dtype is an error.
template <typename F>
void dispatch(const char* kernel, DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); break;
    case DType::BF16: f(uint16_t{}); break;
    default:
      TESSERA_FAIL("cuda kernel ", kernel, ": dtype ", dtype_name(t),
                   " is not supported (CUDA kernels take f32 or bf16; f64 runs on the CPU only)");
  }
}

struct Arg {
  const char* name;
  const Tensor& t;
};

// Throws unless every argument is defined, contiguous, of dtype `dtype` and on the CUDA device of
// the first: the layout the kernels index. The error names the kernel and the argument.
// contiguous = false: any layout (the kernel checks its own, e.g. rope's HeadStrides views).
inline void check_args(const char* kernel, DType dtype, std::initializer_list<Arg> args,
                       bool contiguous = true) {
  const Arg& first = *args.begin();
  TESSERA_CHECK(first.t.defined() && first.t.device().is_cuda(), "cuda kernel ", kernel, ": ",
                first.name, " must be a CUDA tensor, got ",
                first.t.defined() ? first.t.str() : std::string("an undefined tensor"));
  for (const Arg& a : args) {
    TESSERA_CHECK(a.t.defined(), "cuda kernel ", kernel, ": ", a.name, " is undefined");
    TESSERA_CHECK(a.t.dtype() == dtype && (!contiguous || a.t.is_contiguous()) &&
                      a.t.device() == first.t.device(),
                  "cuda kernel ", kernel, ": ", a.name, " must be a ", contiguous ? "contiguous " : "",
                  dtype_name(dtype), " tensor on ", first.t.device().str(), ", got ", a.t.str());
  }
}

// A saved statistic: contiguous, n elements, on x's device, f32 or x's dtype (see StatPtr).
inline StatPtr stat_arg(const char* kernel, const char* name, const Tensor& t, const Tensor& x,
                        int64_t n) {
  TESSERA_CHECK(t.defined() && t.is_contiguous() && t.device() == x.device() && t.numel() == n &&
                    (t.dtype() == DType::F32 || t.dtype() == x.dtype()),
                "cuda kernel ", kernel, ": ", name, " must be a contiguous f32 or ",
                dtype_name(x.dtype()), " tensor of ", n, " elements on ", x.device().str(),
                ", got ", t.defined() ? t.str() : std::string("an undefined tensor"));
  return {t.data_ptr(), t.dtype() == DType::BF16};
}

// Rows and columns: every leading dimension flattened, and the last.
inline int64_t rows_of(const Tensor& x) {
  return x.dim() ? x.numel() / std::max<int64_t>(x.size(-1), 1) : 1;
}
inline int64_t cols_of(const Tensor& x) { return x.dim() ? x.size(-1) : 1; }

// Blocks for a grid-stride loop over n elements: enough to fill the GPU, never more than needed.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  return unsigned(std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 16));
}

// A one-block-per-row launch: rows must fit the grid's x dimension.
inline unsigned row_grid(const char* kernel, int64_t rows) {
  TESSERA_CHECK(rows <= int64_t(0x7fffffff), "cuda kernel ", kernel, ": ", rows,
                " rows exceed the grid limit");
  return unsigned(rows);
}

// ---- device-side loops and reductions ---------------------------------------------------------

__device__ __forceinline__ int64_t global_index() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Butterfly (xor) reduction: partners exchange the same two values at every step and both
// operations are commutative, so every lane ends with bit-identical results.
template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Reduction over the whole block (blockDim.x a multiple of 32), returned to every thread. Every
// thread must call it; scratch is 32 floats of shared memory, reusable by the next call (the
// leading barrier waits until the previous result has been read). The order of operations depends
// only on blockDim.x: the result is reproducible.
template <typename Op>
__device__ float block_reduce(float v, Op op, float identity, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_reduce(v, op);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  return warp_reduce(lane < warps ? scratch[lane] : identity, op);
}
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  return block_reduce(v, SumOp{}, 0.0f, scratch);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  return block_reduce(v, MaxOp{}, -INFINITY, scratch);
}

// ---- loops in groups of W elements (see "16-byte accesses") -----------------------------------

template <int W>
using Width = std::integral_constant<int, W>;

// Calls f(Width<kPack<T>>{}) when `packed`, else f(Width<1>{}): the host's choice of W.
template <typename T, typename F>
void with_width(bool packed, F&& f) {
  if (packed && kPack<T> > 1) {
    f(Width<kPack<T>>{});
  } else {
    f(Width<1>{});
  }
}

// One block's walk over a row's columns [0, C): thread t takes the groups of W starting at
// W t, W (t + blockDim.x), ... below C - C % W, calling f(c, Width<W>{}), then one of the last
// C % W columns each (f(c, Width<1>{})). Every column is visited once.
template <int W, typename F>
__device__ __forceinline__ void row_groups(int64_t C, F&& f) {
  const int64_t full = C - C % W;
  for (int64_t c = int64_t(threadIdx.x) * W; c < full; c += int64_t(blockDim.x) * W)
    f(c, Width<W>{});
  if constexpr (W > 1) {
    const int64_t c = full + threadIdx.x;
    if (c < C) f(c, Width<1>{});
  }
}

// A grid-stride loop over n elements: body.template run<W>(i) for i = 0, W, 2W, ... below
// n - n % W, then body.template run<1>(i) for each of the last n % W.
template <int W, typename Body>
__global__ void __launch_bounds__(kThreads) packed_loop_kernel(int64_t n, Body body) {
  const int64_t groups = n / W;
  for (int64_t j = global_index(); j < groups; j += grid_stride()) body.template run<W>(j * W);
  if constexpr (W > 1) {
    const int64_t t = groups * W + global_index();
    if (t < n) body.template run<1>(t);
  }
}

// Runs body over n elements, 16 bytes of T per access when `aligned` (every pointer the body
// offsets by the element index is 16-byte aligned: aligned16).
template <typename T, typename Body>
void launch_packed(int64_t n, bool aligned, const Body& body) {
  with_width<T>(aligned, [&](auto w) {
    constexpr int W = decltype(w)::value;
    packed_loop_kernel<W, Body><<<grid_for((n + W - 1) / W), kThreads>>>(n, body);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace core
}  // namespace tessera::cuda
