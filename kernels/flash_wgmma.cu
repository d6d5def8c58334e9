// FlashAttention-2 (Dao 2023, arXiv:2307.08691) on Hopper's warpgroup matrix instructions
// (wgmma.mma_async, sm_90a): flash_mma.h's forward and backward bodies (the same masks, online
// softmax in base 2, lse, deterministic two-pass backward and layouts) with every product issued
// to the tensor cores a warpgroup at a time, as FlashAttention-3 does (Shah et al. 2024,
// arXiv:2407.08608). A block is one warpgroup (128 threads) and every product in those bodies is a
// 64-row one (a warp owns 16 rows of each), so each is a chain of m64nNk16: S = Q K^T (S^T = K Q^T,
// dP = dO V^T, dP^T = V dO^T) with the right operand read from shared memory and the left one too,
// or held in registers where the block keeps it (Q in the forward; Q and dO in dQ, and K and V in
// dK dV unless wgmma-narrow, at D 64: CoreTiles::hold), and O += P V (dV += P^T dO, dK += dS^T Q, dQ += dS K) with the left operand
// taken straight from the accumulators of the product before it as A registers (the accumulator
// and A-register layouts of m64nNk16 put the same elements in the same lanes) and the right one
// read from shared memory N-major.
//
// Not yet FlashAttention-3's kernel: no tensor-memory-accelerator copies (tiles come by cp.async,
// as in flash_mma.h), no warp specialisation or ping-pong between warpgroups, no overlap of one
// tile's softmax with the next tile's products (each product is waited for at once), one
// warpgroup a block (128-query forward blocks at D 64 are one warpgroup's two groups of 64 rows),
// and no swizzled shared-memory layout (tiles are in wgmma's no-swizzle layout of 8 x 8 core
// matrices). Chosen by TESSERA_FLASH_KERNELS=wgmma (FlashKernels::Wgmma; wgmma-narrow for 64-query
// forward blocks at D 64) on a compute capability 9.0 GPU with a build that compiled this file for
// sm_90a (CMakeLists.txt). The tile machinery is kernels/wgmma_tiles.cuh's.
#include <map>
#include <mutex>
#include <string>

#include "attention.cuh"
#include "backend/cuda.h"
#include "flash_launch.cuh"
#include "wgmma_tiles.cuh"

namespace tessera::cuda::attn {
namespace {

using wgmma::CoreTiles;
using wgmma::WgmmaCtx;

// flash_launch.cuh's kernels on WgmmaCtx and CoreTiles. Every product of the bodies is a 64-row
// one (a warp owns 16 queries of each of its MT groups, or 16 keys in dK dV), so each is a
// warpgroup's chain of m64nNk16. The forward at D 64 runs 128-query blocks (MT 2: each K and V tile
// loaded once for twice the queries; 2 x 32 accumulators and 2 x 16 held A registers more than
// MT 1), or 64-query ones under FlashKernels::WgmmaNarrow; at D 128 the registers of MT 2 would
// not fit (O alone is 64 a group), so it runs 64-query blocks. Likewise dK dV at D 64 holds K and
// V as A registers (the products then read only Q and dO from shared memory; ptxas, sm_90a: 158
// -> ~200 registers, 3 -> 2 blocks an SM), or reads them from their tiles under WgmmaNarrow and
// at D 128 (229 registers already).
template <int D, int MT>
constexpr auto flash_forward_wgmma = flash_forward_kernel<D, MT, WgmmaCtx, CoreTiles>;
template <int D, bool kHoldKV>
constexpr auto flash_backward_dkdv_wgmma = flash_dkdv_kernel<D, WgmmaCtx, CoreTiles, kHoldKV>;
template <int D>
constexpr auto flash_backward_dq_wgmma = flash_dq_kernel<D, WgmmaCtx, CoreTiles>;

// Why the wgmma kernels cannot run on the current device, or "" when they can; asked of the
// runtime once a device (every attention call checks it).
std::string wgmma_unavailable() {
#if !defined(TESSERA_CUDA_EMULATED) && !TESSERA_WGMMA_SM90A
  return "this build has no sm_90a code for them (CMAKE_CUDA_ARCHITECTURES must hold 90)";
#endif
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    const cudaError_t e = cudaGetLastError();  // read, so that it is not the next call's error
    return std::string("no CUDA device to run them on (") + cudaGetErrorString(e) + ")";
  }
  static std::mutex mu;
  static std::map<int, std::string> known;
  const std::lock_guard<std::mutex> lock(mu);
  if (auto it = known.find(device); it != known.end()) return it->second;
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    const cudaError_t e = cudaGetLastError();
    return "device " + std::to_string(device) + " did not say its compute capability (" +
           cudaGetErrorString(e) + ")";
  }
  return known[device] = major == 9 && minor == 0
                             ? std::string()
                             : "they need a compute capability 9.0 GPU (sm_90a code runs on no "
                               "other); device " + std::to_string(device) + " is " +
                                   std::to_string(major) + "." + std::to_string(minor);
}

void require_wgmma() {
  const std::string why = wgmma_unavailable();
  TESSERA_CHECK(why.empty(), "TESSERA_FLASH_KERNELS=wgmma (or wgmma-narrow): ", why);
}

}  // namespace

void flash_wgmma_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, const FlashParams& p, int64_t B, int64_t D, bool narrow) {
  require_wgmma();
  if (D == 64 && !narrow)
    launch_flash_forward(flash_forward_wgmma<64, 2>, mma::ForwardSmem<64, 2, CoreTiles>::bytes,
                         2 * kMmaTile, out, lse, q, k, v, p, B, D);
  else if (D == 64)
    launch_flash_forward(flash_forward_wgmma<64, 1>, mma::ForwardSmem<64, 1, CoreTiles>::bytes,
                         kMmaTile, out, lse, q, k, v, p, B, D);
  else
    launch_flash_forward(flash_forward_wgmma<128, 1>, mma::ForwardSmem<128, 1, CoreTiles>::bytes,
                         kMmaTile, out, lse, q, k, v, p, B, D);
}

void flash_wgmma_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                          const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lse,
                          const Tensor& drow, const FlashParams& p, int64_t B, int64_t D,
                          bool narrow) {
  require_wgmma();
  auto launch = [&](auto dkdv, auto dq_kernel, size_t bytes) {
    launch_flash_backward(dkdv, dq_kernel, bytes, dq, dk, dv, dout, q, k, v, lse, drow, p, B, D);
  };
  if (D == 64 && !narrow)
    launch(flash_backward_dkdv_wgmma<64, true>, flash_backward_dq_wgmma<64>,
           mma::BackwardSmem<64, CoreTiles>::bytes);
  else if (D == 64)
    launch(flash_backward_dkdv_wgmma<64, false>, flash_backward_dq_wgmma<64>,
           mma::BackwardSmem<64, CoreTiles>::bytes);
  else
    launch(flash_backward_dkdv_wgmma<128, false>, flash_backward_dq_wgmma<128>,
           mma::BackwardSmem<128, CoreTiles>::bytes);
}

}  // namespace tessera::cuda::attn

namespace tessera::cuda {
bool flash_wgmma_available() { return attn::wgmma_unavailable().empty(); }
}  // namespace tessera::cuda
