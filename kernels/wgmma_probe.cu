// The building blocks of the wgmma flash kernels (kernels/wgmma_tiles.cuh's CoreTiles: the tile
// load, Q K^T with both operands in shared memory or the left one held in registers, P V with P in
// the accumulators' registers) run one at a time on one warpgroup, on operands a GPU test gives, so
// that the test can compare each with a plain product (tests/cuda/test_wgmma_probe.cpp). Rows and
// columns travel between global memory and registers by the bodies' own fragment map (flash_mma.h:
// a warp's rows r0 + 16 mt + g and + 8, columns 8 n + 2 c and + 1), so a wrong map, descriptor or
// core-matrix offset shows as a product that disagrees. With the descriptors' LBO and SBO swapped
// (CoreTilesT's kSwapK, kSwapN) the same block says which other reading of the layout, if any, the
// hardware agrees with. Compiled with flash_wgmma.cu (sm_90a only, CMakeLists.txt).
#include <cuda_bf16.h>

#include <cstring>
#include <string>
#include <vector>

#include "attention.cuh"
#include "backend/cuda.h"
#include "common.cuh"
#include "wgmma_tiles.cuh"

namespace tessera::cuda {
namespace {

using attn::kMmaThreads;
using attn::kMmaTile;
using attn::wgmma::CoreTilesT;
using attn::wgmma::WgmmaCtx;

// Enough for any reading the probe tries: the swapped N-major descriptor at D 128 reaches ~43 KB
// past its tile's start (16 core matrices along n, 2048 bytes apart, from the fourth k-step's
// 12 KB on), and the tiles before it take up to 32 KB. Zeroed first, so what a wrong reading
// picks up outside the tiles is a plain 0.
constexpr size_t kProbeSmem = 96 * 1024;

__device__ float bf16_to_float(uint16_t bits) {
  const uint32_t u = uint32_t(bits) << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// Element (mt, n, e) of this lane's fragments is row r0 + 16 mt + g + 8 (e / 2), column
// 8 n + 2 c + e % 2 of a row-major matrix with `cols` columns.
__device__ int64_t fragment_index(int r0, int mt, int n, int e, int lane, int cols) {
  const int g = lane / 4, c = lane % 4;
  return int64_t(r0 + 16 * mt + g + 8 * (e >> 1)) * cols + 8 * n + 2 * c + (e & 1);
}

template <int D, int MT, class Tiles>
__global__ void __launch_bounds__(kMmaThreads)
    wgmma_probe_kernel(WgmmaBlock block, float* out, const uint16_t* a, const uint16_t* b) {
  extern __shared__ __align__(128) unsigned char smem[];
  WgmmaCtx w{smem};
  const int warp = w.thread() / 32, lane = w.thread() % 32, r0 = warp * 16 * MT;
  for (size_t i = w.thread(); i < kProbeSmem / 4; i += kMmaThreads)
    reinterpret_cast<uint32_t*>(smem)[i] = 0;
  w.sync_block();
  uint16_t* As = reinterpret_cast<uint16_t*>(smem);
  uint16_t* Bs = reinterpret_cast<uint16_t*>(smem + MT * Tiles::template bytes<D>);
  if (block != WgmmaBlock::Pm)
    Tiles::template load<D, kMmaTile * MT>(w, As, a, 0, kMmaTile * MT, D);
  Tiles::template load<D, kMmaTile>(w, Bs, b, 0, kMmaTile, D);
  w.cp_async_commit();
  w.cp_async_wait_all();
  w.sync_block();

  if (block == WgmmaBlock::Pm) {  // out = a b: a (64 MT, 64) as P, b (64, D) as V
    float p[MT][8][4], acc[MT][D / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          p[mt][n][e] = bf16_to_float(a[fragment_index(r0, mt, n, e, lane, kMmaTile)]);
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][n][e] = 0.0f;
    }
    Tiles::template pm<D, MT>(w, acc, p, Bs, lane);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) out[fragment_index(r0, mt, n, e, lane, D)] = acc[mt][n][e];
    return;
  }
  float s[MT][8][4];  // out = a b^T: a (64 MT, D), b (64, D)
  if constexpr (MT == 1) {
    if (block == WgmmaBlock::Abt) Tiles::template abt<D, 1>(w, s, As, r0, Bs, lane);
  }
  if (block == WgmmaBlock::AbtHeld) {
    typename Tiles::template Held<D, MT> held;
    Tiles::template hold<D, MT>(w, held, As, r0, lane);
    Tiles::template abt_held<D, MT>(w, s, held, As, r0, Bs, lane);
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) out[fragment_index(r0, mt, n, e, lane, kMmaTile)] = s[mt][n][e];
}

template <int D, int MT, bool kSwapK, bool kSwapN>
void launch_probe(WgmmaBlock block, float* out, const uint16_t* a, const uint16_t* b) {
  auto kernel = wgmma_probe_kernel<D, MT, CoreTilesT<kSwapK, kSwapN>>;
  allow_smem(kernel, kProbeSmem, "wgmma_probe_kernel", "the probe's tiles");
  kernel<<<1, kMmaThreads, kProbeSmem>>>(block, out, a, b);
  CUDA_CHECK_LAUNCH();
}

template <int D, int MT>
void launch_probe(WgmmaBlock block, bool swap_k, bool swap_n, float* out, const uint16_t* a,
                  const uint16_t* b) {
  if (swap_k && swap_n)
    launch_probe<D, MT, true, true>(block, out, a, b);
  else if (swap_k)
    launch_probe<D, MT, true, false>(block, out, a, b);
  else if (swap_n)
    launch_probe<D, MT, false, true>(block, out, a, b);
  else
    launch_probe<D, MT, false, false>(block, out, a, b);
}

// Device memory for the probe's scope.
struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace

std::vector<float> wgmma_probe(WgmmaBlock block, int D, int MT, bool swap_k, bool swap_n,
                               const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  TESSERA_CHECK(flash_wgmma_available(), "wgmma_probe: the wgmma kernels cannot run here");
  TESSERA_CHECK((D == 64 && (MT == 1 || MT == 2)) || (D == 128 && MT == 1), "wgmma_probe: D ", D,
                " with MT ", MT, " (the kernels use D 64 with MT 1 or 2, D 128 with MT 1)");
  TESSERA_CHECK(block != WgmmaBlock::Abt || MT == 1,
                "wgmma_probe: Abt reads its left operand from shared memory, 64 rows (MT 1)");
  const size_t rows = size_t(kMmaTile) * MT;
  const size_t a_cols = block == WgmmaBlock::Pm ? size_t(kMmaTile) : size_t(D);
  const size_t out_cols = block == WgmmaBlock::Pm ? size_t(D) : size_t(kMmaTile);
  TESSERA_CHECK(a.size() == rows * a_cols, "wgmma_probe: a has ", a.size(), " elements, not ", rows,
                " x ", a_cols);
  TESSERA_CHECK(b.size() == size_t(kMmaTile) * D, "wgmma_probe: b has ", b.size(),
                " elements, not 64 x ", D);
  DeviceBuffer da(a.size() * 2), db(b.size() * 2), dout(rows * out_cols * 4);
  CUDA_CHECK(cudaMemcpy(da.p, a.data(), a.size() * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(db.p, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
  float* out = static_cast<float*>(dout.p);
  const auto* ap = static_cast<const uint16_t*>(da.p);
  const auto* bp = static_cast<const uint16_t*>(db.p);
  if (D == 64 && MT == 2)
    launch_probe<64, 2>(block, swap_k, swap_n, out, ap, bp);
  else if (D == 64)
    launch_probe<64, 1>(block, swap_k, swap_n, out, ap, bp);
  else
    launch_probe<128, 1>(block, swap_k, swap_n, out, ap, bp);
  std::vector<float> result(rows * out_cols);
  CUDA_CHECK(cudaMemcpy(result.data(), out, result.size() * 4, cudaMemcpyDeviceToHost));
  return result;
}

}  // namespace tessera::cuda
