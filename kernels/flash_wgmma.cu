// FlashAttention-2 (Dao 2023, arXiv:2307.08691) on Hopper's warpgroup matrix instructions
// (wgmma.mma_async, sm_90a), as FlashAttention-3 issues its products (Shah et al. 2024,
// arXiv:2407.08608): flash_mma.h's masks, ALiBi's bias, online softmax in base 2, lse,
// deterministic two-pass backward and layouts, with every product issued to the tensor cores a
// warpgroup at a time. A block is one warpgroup (128 threads) and every product is a 64-row one (a
// warp owns 16 rows of each), so each is a chain of m64nNk16:
//  - S = Q K^T (S^T = K Q^T, dP = dO V^T, dP^T = V dO^T): the right operand read from shared
//    memory K-major, the left one too, or held in registers where the block keeps it (Q in the
//    forward; Q and dO in dQ, and K and V in dK dV unless wgmma-narrow, at D 64: CoreTiles::hold);
//  - O += P V (dV += P^T dO, dK += dS^T Q, dQ += dS K): the left operand straight from the
//    accumulators of the product before it as A registers (m64nNk16's accumulator and A-register
//    layouts put the same elements in the same lanes), the right one N-major.
// The forward (forward_block_pipelined below) overlaps each key tile's softmax with the
// products; the backward is flash_mma_backward.h's bodies over CoreTiles, its products issued in
// pairs (S and dP, then dV and dK: abt2, pm2), each pair waited for at once.
//
// Not yet FlashAttention-3's kernel: no tensor-memory-accelerator copies (tiles come by
// cp.async, as in flash_mma.h), no warp specialisation or ping-pong between warpgroups, one
// warpgroup a block (128-query forward blocks at D 64 are one warpgroup's two groups of 64 rows),
// and no swizzled shared-memory layout (tiles are in wgmma's no-swizzle layout of 8 x 8 core
// matrices). Chosen by TESSERA_FLASH_KERNELS=wgmma (FlashKernels::Wgmma; wgmma-narrow for fewer
// registers at D 64) on a compute capability 9.0 GPU with a build that compiled this file for
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

// The forward's tiles: MT 64-row tiles of Q, then two stages each of K and V.
template <int D, int MT>
struct PipelinedSmem {
  static constexpr size_t tile = CoreTiles::bytes<D>;
  static constexpr size_t q = 0;
  static constexpr size_t k(int stage) { return (MT + size_t(stage)) * tile; }
  static constexpr size_t v(int stage) { return (MT + 2 + size_t(stage)) * tile; }
  static constexpr size_t bytes = (MT + 4) * tile;
};

// flash_mma.h's forward_block (the same queries, masks, online softmax and outputs) with each
// key tile's softmax overlapped with a product, as FlashAttention-3's intra-warpgroup pipelining
// does (Shah et al. 2024, section 3.2): at key tile kt the block issues S = Q K^T of tile kt + 1
// and O += P V of tile kt together, waits for S only, computes the next P and the rescaling while
// P V runs, then waits for P V and rescales O. So K of tile kt + 1 and V of tile kt are in shared
// memory at once, and while they are used V of kt + 1 and K of kt + 2 stream into the other
// stages: two stages of each. The P of tile kt sits in registers as bf16 A fragments (pa) while
// the next S accumulates (ptxas, sm_90a: 145 registers at D 64 and MT 1, 235 at MT 2, 179 at
// D 128; forward_block over CoreTiles took 106, 212 and 158). kAlibi: ALiBi's bias (flash_mma.h)
// in the softmax of every tile, which runs between the products' wait for S and for P V.
template <int D, int MT, bool kAlibi>
__device__ void forward_block_pipelined(WgmmaCtx& w, uint16_t* out, float* lse, const uint16_t* q,
                                        const uint16_t* k, const uint16_t* v, const FlashParams& p,
                                        int64_t qt, int64_t bh) {
  using M = PipelinedSmem<D, MT>;
  constexpr int kRows = kMmaTile * MT;
  auto tile = [&](size_t at) { return reinterpret_cast<uint16_t*>(w.smem() + at); };
  const int warp = w.thread() / 32, lane = w.thread() % 32;
  const HeadIndex hi = head_index(bh, p);
  const int64_t T = p.T, q0 = qt * kRows, r0 = q0 + warp * 16 * MT;
  const uint16_t* kh = k + p.k.row(hi.b, hi.g, 0);
  const uint16_t* vh = v + p.v.row(hi.b, hi.g, 0);
  const int64_t kt0 = first_key_tile(q0, p), kt1 = last_key_tile(q0, p, kRows);
  auto stage = [&](int64_t kt) { return int((kt - kt0) & 1); };  // key tile kt's K and V stage
  auto load_k = [&](int64_t kt) {
    CoreTiles::load<D, kMmaTile>(w, tile(M::k(stage(kt))), kh, kt * kMmaTile, T, p.k.t);
  };
  auto load_v = [&](int64_t kt) {
    CoreTiles::load<D, kMmaTile>(w, tile(M::v(stage(kt))), vh, kt * kMmaTile, T, p.v.t);
  };

  CoreTiles::load<D, kRows>(w, tile(M::q), q + p.q.row(hi.b, hi.h, 0), q0, T, p.q.t);
  load_k(kt0);
  load_v(kt0);
  if (kt0 < kt1) load_k(kt0 + 1);
  w.cp_async_commit();
  w.cp_async_wait_all();
  w.sync_block();
  CoreTiles::Held<D, MT> qheld;
  CoreTiles::hold<D, MT>(w, qheld, tile(M::q), warp * 16 * MT, lane);

  float o[MT][D / 8][4], m[MT][2], l[MT][2], s[MT][8][4], alpha[MT][2];
  bool rescale[MT];  // every tile's (no lazy rescaling: no branch may sit among the products)
  mma::start_rows<D, MT>(o, m, l);
  const float scale2 = p.scale * kLog2e, alibi2 = kAlibi ? alibi_slope2(hi.h, p) : 0.0f;
  CoreTiles::abt_held<D, MT>(w, s, qheld, nullptr, 0, tile(M::k(0)), lane);         // S of tile kt0
  mma::online_softmax<MT, true, false, bias_of(kAlibi)>(w, s, m, l, alpha, rescale, r0,
                                                        kt0 * kMmaTile, scale2, p, lane,
                                                        alibi2);  // O is 0

  // Every tile but the last: nothing conditional between the fence and the last wait, which ptxas
  // needs to keep the products in flight (otherwise it serialises them: C7514).
  for (int64_t kt = kt0; kt < kt1; ++kt) {
    w.cp_async_wait_all();  // V of tile kt and K of kt + 1 are in
    w.sync_block();         // and every warp is done with the stages refilled below
    load_v(kt + 1);
    if (kt + 2 <= kt1) load_k(kt + 2);
    w.cp_async_commit();
    uint32_t pa[MT][4][4];
    CoreTiles::pack<WgmmaCtx>(pa, s);  // P of tile kt
    w.wgmma_fence();
    CoreTiles::issue_abt_held<D, MT>(w, s, qheld, tile(M::k(stage(kt + 1))));
    w.wgmma_commit();
    CoreTiles::issue_pm<D, MT>(w, o, pa, tile(M::v(stage(kt))));
    w.wgmma_commit();
    w.wgmma_wait_prior();  // S of tile kt + 1; P V may still run
    w.pin(s);
    mma::online_softmax<MT, true, false, bias_of(kAlibi)>(
        w, s, m, l, alpha, rescale, r0, (kt + 1) * kMmaTile, scale2, p, lane, alibi2);
    w.wgmma_wait_all();
    w.pin(o);
    mma::scale_rows<D, MT>(o, alpha, rescale);
  }
  w.cp_async_wait_all();  // V of the last tile is in
  w.sync_block();
  CoreTiles::pm<D, MT>(w, o, s, tile(M::v(stage(kt1))), lane);
  mma::finish_rows<D, MT, WgmmaCtx>(w, out, lse, o, m, l, r0, bh, hi, p, lane);
}

template <int D, int MT, bool kAlibi>
__global__ void __launch_bounds__(kMmaThreads)
    flash_forward_wgmma(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                        const uint16_t* v, FlashParams p, BlockOrder order) {
#if TESSERA_WGMMA_BODY
  extern __shared__ __align__(128) unsigned char smem[];
  WgmmaCtx w{smem};
  const HeadTile at = query_tile_block(int64_t(blockIdx.x), order);
  forward_block_pipelined<D, MT, kAlibi>(w, out, lse, q, k, v, p, at.tile, at.head);
#else
  __trap();
#endif
}

// The backward: flash_launch.cuh's kernels on WgmmaCtx and CoreTiles. Every product of its bodies
// is a 64-row one (a warp owns 16 keys in dK dV, 16 queries in dQ), so each is a warpgroup's
// chain of m64nNk16.
//
// The forward at D 64 runs 128-query blocks (MT 2: each K and V tile loaded once for twice the
// queries; 2 x 32 accumulators, 2 x 16 held A registers and 2 x 16 of P more than MT 1), or
// 64-query ones under FlashKernels::WgmmaNarrow; at D 128 the registers of MT 2 would not fit
// (O alone is 64 a group), so it runs 64-query blocks. Likewise dK dV at D 64 takes K and V into
// A registers at every item (the products then read only Q and dO from shared memory; ptxas,
// sm_90a: 158 -> 189 registers, 3 -> 2 blocks an SM), or reads them from their tiles under
// WgmmaNarrow and at D 128 (229 registers already).
template <int D, bool kHoldKV, bool kAlibi>
constexpr auto flash_backward_dkdv_wgmma =
    flash_dkdv_kernel<D, WgmmaCtx, CoreTiles, kHoldKV, bias_of(kAlibi)>;
template <int D, bool kAlibi>
constexpr auto flash_backward_dq_wgmma = flash_dq_kernel<D, WgmmaCtx, CoreTiles, bias_of(kAlibi)>;

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
                               "other); device " +
                                   std::to_string(device) + " is " + std::to_string(major) + "." +
                                   std::to_string(minor);
}

void require_wgmma() {
  const std::string why = wgmma_unavailable();
  TESSERA_CHECK(why.empty(), "TESSERA_FLASH_KERNELS=wgmma (or wgmma-narrow): ", why);
}

}  // namespace

void flash_wgmma_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, const FlashParams& p, int64_t B, int64_t D, bool narrow) {
  refuse_forget(p, "the wgmma flash kernels (TESSERA_FLASH_KERNELS=wgmma, wgmma-narrow)",
                kUseMmaFamily);
  require_wgmma();
  with_alibi(p, [&](auto alibi) {
    constexpr bool A = decltype(alibi)::value;
    if (D == 64 && !narrow)
      launch_flash_forward(flash_forward_wgmma<64, 2, A>, PipelinedSmem<64, 2>::bytes, 2 * kMmaTile,
                           out, lse, q, k, v, p, B, D);
    else if (D == 64)
      launch_flash_forward(flash_forward_wgmma<64, 1, A>, PipelinedSmem<64, 1>::bytes, kMmaTile,
                           out, lse, q, k, v, p, B, D);
    else
      launch_flash_forward(flash_forward_wgmma<128, 1, A>, PipelinedSmem<128, 1>::bytes, kMmaTile,
                           out, lse, q, k, v, p, B, D);
  });
}

void flash_wgmma_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                          const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lse,
                          const Tensor& drow, const FlashParams& p, int64_t B, int64_t D,
                          bool narrow) {
  refuse_forget(p, "the wgmma flash kernels (TESSERA_FLASH_KERNELS=wgmma, wgmma-narrow)",
                kUseMmaFamily);
  require_wgmma();
  auto launch = [&](auto dkdv, auto dq_kernel, size_t bytes) {
    launch_flash_backward(dkdv, dq_kernel, bytes, dq, dk, dv, dout, q, k, v, lse, drow, p, B, D);
  };
  with_alibi(p, [&](auto alibi) {
    constexpr bool A = decltype(alibi)::value;
    if (D == 64 && !narrow)
      launch(flash_backward_dkdv_wgmma<64, true, A>, flash_backward_dq_wgmma<64, A>,
             mma::BackwardSmem<64, CoreTiles>::bytes);
    else if (D == 64)
      launch(flash_backward_dkdv_wgmma<64, false, A>, flash_backward_dq_wgmma<64, A>,
             mma::BackwardSmem<64, CoreTiles>::bytes);
    else
      launch(flash_backward_dkdv_wgmma<128, false, A>, flash_backward_dq_wgmma<128, A>,
             mma::BackwardSmem<128, CoreTiles>::bytes);
  });
}

}  // namespace tessera::cuda::attn

namespace tessera::cuda {
bool flash_wgmma_available() { return attn::wgmma_unavailable().empty(); }
}  // namespace tessera::cuda
