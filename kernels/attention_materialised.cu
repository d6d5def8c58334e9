// CUDA causal softmax attention, materialised: the twin of attention_forward / attention_backward
// in src/backend/cpu/attention.cpp (formulas and grouped-query layout there).
//
// q, out, dq, dout (B, H, T, D); k, v, dk, dv (B, Hkv, T, D); probs (B, H, T, T), f32 or q's
// dtype (core.cuh's StatPtr). Query head h reads kv head h / (H / Hkv).
//
// Simple kernels written for correctness, not speed (flash_attention.cu is the fast path): all
// arithmetic f32, no tensor cores.
//  - forward: one block per query row (b, h, i). Warps take keys j <= i in turn, each computing
//    s_j = scale * q_i . k_j with its lanes across D; the row's softmax runs in shared memory; the
//    block then writes probs (zeros for j > i) and out_i = sum_j p_ij v_j, threads across D, with
//    the unrounded f32 probabilities (as the CPU uses its unrounded double ones).
//  - backward, pass 1: one block per query row: dP_ij = dO_i . v_j, rowdot = sum_j dP_ij P_ij,
//    dS_ij = P_ij (dP_ij - rowdot) into an f32 (B, H, T, T) scratch, dQ_i = scale sum_j dS_ij k_j.
//  - backward, pass 2: one block per key row (b, kv head, j), threads across D: dK_j = scale *
//    sum over the group's query heads and i >= j of dS_ij q_i, dV_j = sum P_ij dO_i. Each output
//    row has one owner and sums in a fixed order: deterministic, no atomics.
// A row's scores live in shared memory, which bounds T + D at 12224 (48 KiB); the fused kernels
// are the path for long sequences.
#include <algorithm>
#include <cstdint>

#include "backend/attention_shapes.h"
#include "backend/kernels.h"
#include "common.cuh"
#include "core.cuh"

namespace tessera::cuda {
namespace {

using core::block_max;
using core::block_sum;
using core::kThreads;
using core::ld;
using core::st;
using core::StatPtr;
using core::warp_reduce;

// Dynamic shared memory per row, in floats (backend/attention_shapes.h).
constexpr int64_t kMaxSharedFloats = kCudaMaterialisedMaxFloats;

struct Dims : AttentionDims {
  // kv row j of query row bh's group, as an element offset of k or v.
  __device__ int64_t kv_row(int64_t bh, int64_t j) const {
    return (((bh / H) * Hkv + (bh % H) / (H / Hkv)) * T + j) * D;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
attention_forward_kernel(T* out, StatPtr probs, const T* q, const T* k, const T* v, Dims d,
                         float scale) {
  extern __shared__ float smem[];
  float* qs = smem;         // q_i, D floats
  float* s = smem + d.D;    // scores, then probabilities, of row i: T floats
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x, bh = row / d.T, i = row % d.T;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t e = threadIdx.x; e < d.D; e += blockDim.x) qs[e] = ld(q, row * d.D + e);
  __syncthreads();
  for (int64_t j = warp; j <= i; j += warps) {
    const T* kj = k + d.kv_row(bh, j);
    float dot = 0.0f;
    for (int64_t e = lane; e < d.D; e += 32) dot += qs[e] * ld(kj, e);
    dot = warp_reduce(dot, core::SumOp{});
    if (lane == 0) s[j] = scale * dot;
  }
  __syncthreads();
  // Stable softmax over j <= i: key i itself is always there, so the max is finite.
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) m = fmaxf(m, s[j]);
  m = block_max(m, scratch);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
    s[j] = expf(s[j] - m);
    sum += s[j];
  }
  sum = block_sum(sum, scratch);
  for (int64_t j = threadIdx.x; j < d.T; j += blockDim.x) {
    if (j <= i) s[j] /= sum;
    probs.store(row * d.T + j, j <= i ? s[j] : 0.0f);  // masked: exactly zero
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < d.D; e += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j <= i; ++j) acc += s[j] * ld(v + d.kv_row(bh, j), e);
    st(out, row * d.D + e, acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
attention_backward_rows_kernel(T* dq, float* ds_out, const T* dout, const T* k, const T* v,
                               StatPtr probs, Dims d, float scale) {
  extern __shared__ float smem[];
  float* dos = smem;         // dO_i, D floats
  float* ds = smem + d.D;    // dP_ij, then dS_ij: T floats
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x, bh = row / d.T, i = row % d.T;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t e = threadIdx.x; e < d.D; e += blockDim.x) dos[e] = ld(dout, row * d.D + e);
  __syncthreads();
  for (int64_t j = warp; j <= i; j += warps) {
    const T* vj = v + d.kv_row(bh, j);
    float dot = 0.0f;
    for (int64_t e = lane; e < d.D; e += 32) dot += dos[e] * ld(vj, e);
    dot = warp_reduce(dot, core::SumOp{});
    if (lane == 0) ds[j] = dot;
  }
  __syncthreads();
  // Masked entries (j > i) have P = 0, hence dS = 0: they are never formed.
  float rowdot = 0.0f;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x)
    rowdot += ds[j] * probs.load(row * d.T + j);
  rowdot = block_sum(rowdot, scratch);
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
    ds[j] = probs.load(row * d.T + j) * (ds[j] - rowdot);
    ds_out[row * d.T + j] = ds[j];
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < d.D; e += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j <= i; ++j) acc += ds[j] * ld(k + d.kv_row(bh, j), e);
    st(dq, row * d.D + e, scale * acc);
  }
}

// Block (b, g, j) of B * Hkv * T: key row j of kv head g.
template <typename T>
__global__ void attention_backward_kv_kernel(T* dk, T* dv, const float* ds, const T* q,
                                             const T* dout, StatPtr probs, Dims d, float scale) {
  const int64_t krow = blockIdx.x, j = krow % d.T, bg = krow / d.T;
  const int64_t b = bg / d.Hkv, g = bg % d.Hkv, G = d.H / d.Hkv;
  for (int64_t e = threadIdx.x; e < d.D; e += blockDim.x) {
    float acc_k = 0.0f, acc_v = 0.0f;
    for (int64_t h = g * G; h < (g + 1) * G; ++h) {
      const int64_t bh = b * d.H + h;
      for (int64_t i = j; i < d.T; ++i) {
        const int64_t qrow = bh * d.T + i;
        acc_k += ds[qrow * d.T + j] * ld(q, qrow * d.D + e);
        acc_v += probs.load(qrow * d.T + j) * ld(dout, qrow * d.D + e);
      }
    }
    st(dk, krow * d.D + e, scale * acc_k);
    st(dv, krow * d.D + e, acc_v);
  }
}

// ---- entries ----------------------------------------------------------------------------------

Dims check_qkv(const char* kernel, const Tensor& q, const Tensor& k, const Tensor& v) {
  const Dims d{check_attention_qkv((std::string("cuda kernel ") + kernel).c_str(), q, k, v)};
  core::check_args(kernel, q.dtype(), {{"q", q}, {"k", k}, {"v", v}});
  TESSERA_CHECK(d.T + d.D <= kMaxSharedFloats, "cuda kernel ", kernel, ": T + D = ", d.T + d.D,
                " exceeds ", kMaxSharedFloats,
                " (a row of scores in shared memory); use flash attention, q ",
                shape_str(q.shape()));
  TESSERA_CHECK(d.B * std::max(d.H, d.Hkv) * d.T <= int64_t(0x7fffffff), "cuda kernel ", kernel,
                ": B * H * T exceeds the grid limit, q ", shape_str(q.shape()));
  return d;
}

void check_shape(const char* kernel, const char* name, const Tensor& t, const Shape& shape) {
  TESSERA_CHECK(t.shape() == shape, "cuda kernel ", kernel, ": ", name, " must be ",
                shape_str(shape), ", got ", t.str());
}

// Threads for a loop across D alone: whole warps, at most kThreads.
int threads_for_d(int64_t D) { return int(std::min<int64_t>(kThreads, (D + 31) / 32 * 32)); }

void attention_forward(const Tensor& out, const Tensor& probs, const Tensor& q, const Tensor& k,
                       const Tensor& v, double scale) {
  const char* kernel = "attention_forward";
  const Dims d = check_qkv(kernel, q, k, v);
  check_shape(kernel, "out", out, q.shape());
  check_shape(kernel, "probs", probs, {d.B, d.H, d.T, d.T});
  core::check_args(kernel, q.dtype(), {{"q", q}, {"out", out}});
  const StatPtr p = core::stat_arg(kernel, "probs", probs, q, d.B * d.H * d.T * d.T);
  if (d.B * d.H * d.T == 0) return;  // (D == 0 still has probabilities to write)
  DeviceGuard guard(q.device().index);
  const size_t smem = size_t(d.T + d.D) * sizeof(float);
  core::dispatch(kernel, q.dtype(), [&](auto z) {
    using T = decltype(z);
    allow_smem(attention_forward_kernel<T>, smem, kernel, "a row of T scores and D outputs in f32");
    attention_forward_kernel<T><<<unsigned(d.B * d.H * d.T), kThreads, smem>>>(
        static_cast<T*>(out.data_ptr()), p, static_cast<const T*>(q.data_ptr()),
        static_cast<const T*>(k.data_ptr()), static_cast<const T*>(v.data_ptr()), d, float(scale));
    CUDA_CHECK_LAUNCH();
  });
}

void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                        const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
                        double scale) {
  const char* kernel = "attention_backward";
  const Dims d = check_qkv(kernel, q, k, v);
  check_shape(kernel, "dq", dq, q.shape());
  check_shape(kernel, "dk", dk, k.shape());
  check_shape(kernel, "dv", dv, v.shape());
  check_shape(kernel, "dout", dout, q.shape());
  check_shape(kernel, "probs", probs, {d.B, d.H, d.T, d.T});
  core::check_args(kernel, q.dtype(),
                   {{"q", q}, {"dq", dq}, {"dk", dk}, {"dv", dv}, {"dout", dout}});
  const StatPtr p = core::stat_arg(kernel, "probs", probs, q, d.B * d.H * d.T * d.T);
  if (q.numel() == 0) return;
  DeviceGuard guard(q.device().index);
  Tensor ds = Tensor::empty({d.B, d.H, d.T, d.T}, {DType::F32, q.device()});
  const size_t smem = size_t(d.T + d.D) * sizeof(float);
  core::dispatch(kernel, q.dtype(), [&](auto z) {
    using T = decltype(z);
    allow_smem(attention_backward_rows_kernel<T>, smem, kernel,
               "a row of T scores and D outputs in f32");
    attention_backward_rows_kernel<T><<<unsigned(d.B * d.H * d.T), kThreads, smem>>>(
        static_cast<T*>(dq.data_ptr()), static_cast<float*>(ds.data_ptr()),
        static_cast<const T*>(dout.data_ptr()), static_cast<const T*>(k.data_ptr()),
        static_cast<const T*>(v.data_ptr()), p, d, float(scale));
    CUDA_CHECK_LAUNCH();
    attention_backward_kv_kernel<T><<<unsigned(d.B * d.Hkv * d.T), threads_for_d(d.D)>>>(
        static_cast<T*>(dk.data_ptr()), static_cast<T*>(dv.data_ptr()),
        static_cast<const float*>(ds.data_ptr()), static_cast<const T*>(q.data_ptr()),
        static_cast<const T*>(dout.data_ptr()), p, d, float(scale));
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void add_materialised_attention_kernels(Kernels& k) {
  k.attention_forward = attention_forward;
  k.attention_backward = attention_backward;
}

}  // namespace tessera::cuda
