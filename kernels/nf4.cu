// NF4 (QLoRA) kernels for the kernel table: dequantisation, double-quantised absmax, and the
// matmul that reads NF4 codes directly. Entries and layouts: src/backend/kernels.h.
//
// nf4_matmul is a tiled SIMT gemm: each 256-thread block computes a 64 x 64 tile of c, stepping
// through the reduction dimension 32 at a time; the activation tile and the weight tile are staged
// in shared memory, the weight tile dequantised there from its 4-bit codes and block absmax (so the
// full weight never exists in bf16 or f32), and every thread accumulates a 4 x 4 block in f32.
// Activations and outputs are f32 or bf16. A tensor-core version (bf16 mma after the shared-memory
// dequantisation) is the next step; this one is written for correctness and readability first.
#include <cstdint>
#include <type_traits>

#include "backend/kernels.h"
#include "backend/nf4_codebook.h"
#include "common.cuh"

namespace tessera::cuda {
namespace {

__constant__ float kCodebook[16];

// __constant__ memory is per device: the table goes to each device the first time it is used
// there (the caller's DeviceGuard made it current).
void upload_codebook() {
  constexpr int kMaxDevices = 64;
  static bool done[kMaxDevices] = {};
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  TESSERA_CHECK(device < kMaxDevices, "nf4: device ", device, " beyond ", kMaxDevices);
  if (done[device]) return;
  CUDA_CHECK(cudaMemcpyToSymbol(kCodebook, kNF4, sizeof kNF4));
  done[device] = true;
}

__device__ __forceinline__ float load_f32(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_f32(const uint16_t* p, int64_t i) {  // bf16 bits
  return __uint_as_float(uint32_t(p[i]) << 16);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(uint16_t* p, int64_t i, float v) {  // round to nearest even
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) {
    p[i] = uint16_t((u >> 16) | 0x40);  // NaN stays NaN
    return;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  p[i] = uint16_t(u >> 16);
}

// Weight element e of the flattened (R, K) weight.
__device__ __forceinline__ float weight_at(const uint8_t* codes, const float* absmax, int64_t e) {
  const uint8_t byte = codes[e >> 1];
  const int code = (e & 1) ? (byte >> 4) : (byte & 0x0F);
  return kCodebook[code] * absmax[e / kNF4Block];
}

template <typename T>
__global__ void dequantize_kernel(T* out, const uint8_t* codes, const float* absmax, int64_t n) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < n) store(out, e, weight_at(codes, absmax, e));
}

__global__ void absmax_kernel(float* absmax, const uint8_t* q, const float* scales, float mean,
                              int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  // Rounded after the product and after the sum, as the CPU twin does: nvcc would fuse a plain
  // `x * s + mean` into one fma (one rounding), and the dequantised weights would differ.
  if (i < n)
    absmax[i] = __fadd_rn(__fmul_rn(float(int8_t(q[i])) / 127.0f, scales[i / kNF4AbsmaxBlock]), mean);
}

constexpr int kTile = 64;   // c tile is kTile x kTile
constexpr int kStep = 32;   // reduction step
constexpr int kThreads = 256;

// c (N, J) = sum over t of a (N, Tr)[n, t] * Wt[j, t], where Wt[j, t] = W[j, t] (trans_w: the
// Linear's forward, J = R, Tr = K) or W[t, j] (the input gradient, J = K, Tr = R).
template <typename T, bool TransW>
__global__ void __launch_bounds__(kThreads)
nf4_matmul_kernel(T* c, const T* a, const uint8_t* codes, const float* absmax, int64_t N,
                  int64_t J, int64_t Tr, int64_t K) {
  __shared__ float As[kTile][kStep + 1];  // +1: no bank conflicts on the column reads
  __shared__ float Ws[kTile][kStep + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t n0 = int64_t(blockIdx.y) * kTile, j0 = int64_t(blockIdx.x) * kTile;
  float acc[4][4] = {};
  for (int64_t t0 = 0; t0 < Tr; t0 += kStep) {
    for (int i = threadIdx.x; i < kTile * kStep; i += kThreads) {
      const int r = i / kStep, t = i % kStep;
      const int64_t n = n0 + r, j = j0 + r, tt = t0 + t;
      As[r][t] = (n < N && tt < Tr) ? load_f32(a, n * Tr + tt) : 0.0f;
      float w = 0.0f;
      if (j < J && tt < Tr) w = weight_at(codes, absmax, TransW ? j * K + tt : tt * K + j);
      Ws[r][t] = w;
    }
    __syncthreads();
#pragma unroll 8
    for (int t = 0; t < kStep; ++t) {
      float av[4], wv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[ty * 4 + i][t], wv[i] = Ws[tx * 4 + i][t];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int k = 0; k < 4; ++k) acc[i][k] += av[i] * wv[k];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t n = n0 + ty * 4 + i, j = j0 + tx * 4 + k;
      if (n < N && j < J) store(c, n * J + j, acc[i][k]);
    }
}

void nf4_dequantize(const Tensor& out, const Tensor& codes, const Tensor& absmax) {
  check_nf4_layout("nf4_dequantize", codes, absmax, out.numel());
  TESSERA_CHECK(out.is_contiguous(), "nf4_dequantize: out ", out.str(), " is not contiguous");
  DeviceGuard guard(out.device().index);
  upload_codebook();
  const int64_t n = out.numel();
  if (n == 0) return;
  const int threads = 256;
  const unsigned blocks = unsigned((n + threads - 1) / threads);
  const auto* cp = static_cast<const uint8_t*>(codes.data_ptr());
  const auto* ap = static_cast<const float*>(absmax.data_ptr());
  if (out.dtype() == DType::F32) {
    dequantize_kernel<<<blocks, threads>>>(static_cast<float*>(out.data_ptr()), cp, ap, n);
  } else if (out.dtype() == DType::BF16) {
    dequantize_kernel<<<blocks, threads>>>(static_cast<uint16_t*>(out.data_ptr()), cp, ap, n);
  } else {
    TESSERA_FAIL("cuda kernel nf4_dequantize: out must be f32 or bf16, got ", out.str());
  }
  CUDA_CHECK_LAUNCH();
}

void nf4_matmul(const Tensor& c, const Tensor& a, const Tensor& codes, const Tensor& absmax,
                int64_t rows, int64_t cols, bool trans_w) {
  const int64_t N = check_nf4_matmul(c, a, codes, absmax, rows, cols, trans_w);
  const int64_t Tr = trans_w ? cols : rows, J = trans_w ? rows : cols;
  DeviceGuard guard(c.device().index);
  upload_codebook();
  if (N == 0 || J == 0) return;
  const auto* cp = static_cast<const uint8_t*>(codes.data_ptr());
  const auto* ap = static_cast<const float*>(absmax.data_ptr());
  // Row tiles go in y, at most 65535 of them a launch: more rows (4.2M tokens) in chunks.
  constexpr int64_t kMaxRows = 65535 * kTile;
  auto launch = [&](auto* cptr, const auto* aptr) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(aptr)>>;
    for (int64_t r0 = 0; r0 < N; r0 += kMaxRows) {
      const int64_t n = std::min(kMaxRows, N - r0);
      const dim3 grid(unsigned((J + kTile - 1) / kTile), unsigned((n + kTile - 1) / kTile));
      if (trans_w)
        nf4_matmul_kernel<T, true><<<grid, kThreads>>>(cptr + r0 * J, aptr + r0 * Tr, cp, ap, n,
                                                        J, Tr, cols);
      else
        nf4_matmul_kernel<T, false><<<grid, kThreads>>>(cptr + r0 * J, aptr + r0 * Tr, cp, ap, n,
                                                         J, Tr, cols);
    }
  };
  if (c.dtype() == DType::F32) {
    launch(static_cast<float*>(c.data_ptr()), static_cast<const float*>(a.data_ptr()));
  } else if (c.dtype() == DType::BF16) {
    launch(static_cast<uint16_t*>(c.data_ptr()), static_cast<const uint16_t*>(a.data_ptr()));
  } else {
    TESSERA_FAIL("cuda kernel nf4_matmul: a and c must be f32 or bf16, got ", c.str());
  }
  CUDA_CHECK_LAUNCH();
}

void nf4_absmax_dequantize(const Tensor& absmax, const Tensor& qabsmax, const Tensor& scales,
                           double mean) {
  const int64_t n = absmax.numel();
  TESSERA_CHECK(absmax.dtype() == DType::F32 && qabsmax.dtype() == DType::U8 &&
                    scales.dtype() == DType::F32 && qabsmax.numel() == n &&
                    scales.numel() == (n + kNF4AbsmaxBlock - 1) / kNF4AbsmaxBlock,
                "nf4_absmax_dequantize: expected absmax f32 (n), qabsmax u8 (n), scales f32 "
                "(ceil(n / 256)); got ", absmax.str(), ", ", qabsmax.str(), ", ", scales.str());
  if (n == 0) return;
  DeviceGuard guard(absmax.device().index);
  const int threads = 256;
  absmax_kernel<<<unsigned((n + threads - 1) / threads), threads>>>(
      static_cast<float*>(absmax.data_ptr()), static_cast<const uint8_t*>(qabsmax.data_ptr()),
      static_cast<const float*>(scales.data_ptr()), float(mean), n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void add_nf4_kernels(Kernels& k) {
  k.nf4_dequantize = nf4_dequantize;
  k.nf4_matmul = nf4_matmul;
  k.nf4_absmax_dequantize = nf4_absmax_dequantize;
}

}  // namespace tessera::cuda
