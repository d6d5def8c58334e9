// FlashAttention-2 (Dao 2023, arXiv:2307.08691) on register tiles: the bf16 forward body behind
// flash_attention_forward at head dims 64 and 128, and the fragments, tiles and masks it shares
// with the backward's (flash_mma_backward.h) and stick-breaking's (stick_mma.h) bodies
// (kernels/flash_launch.cuh launches them), with S, P, O and the gradients' accumulators held in
// registers as mma.sync fragments instead of staged through shared memory, and K/V tiles streamed
// in by cp.async.
//
// Same mathematics, masks and layouts as the wmma kernels of flash_attention.cu (whose header has
// the formulas): causal, an optional sliding window, grouped-query heads, the strided contract of
// backend/attention_shapes.h (FlashParams carries each tensor's HeadStrides; rows 16-byte aligned),
// lse saved in natural log, deterministic backward (a key-tile-major pass for dK, dV and a
// query-tile-major pass for dQ; no atomics). Softmax runs in base 2: x = scale log2(e) s.
// ALiBi (Press et al. 2022, arXiv:2108.12409; backend/attention_mask.h) in the bodies compiled
// with kBias = ScoreBias::Alibi (launched where FlashParams::alibi says so; the instances without
// it hold none of its code): x = scale log2(e) s - log2(e) m_h (i - j) for query head h, the query
// at position i and key j, on every element of every tile, all-visible ones included
// (alibi_tile), before the mask; lse is that of the biased scores, the backward's
// P = 2^(x - lse log2(e)). Forgetting Attention (Lin et al. 2025, arXiv:2503.02130; the same
// header) likewise with kBias = ScoreBias::Forget (where FlashParams::forget is set):
// x = scale log2(e) s + log2(e) (c[i] - c[j]), c the query head's running sums of log forget
// gates (forget_tile); the backward's dK dV body writes dS's column sums into dL/dc and its dQ
// body then adds the row sums (flash_mma_backward.h).
//
// Plain C++ over a context type W that supplies the warp instructions, so the same bodies run on
// the GPU (mma_device.cuh's DeviceCtx: inline PTX) and on the CPU under tests/kernels' warp
// emulator (one std::thread per lane), which checks their indexing against the CPU reference before
// any GPU does. W provides:
//   thread(), smem(), sync_block(); cp_async16(dst, src, valid), cp_async_commit(),
//   cp_async_wait_all(); ldmatrix_x4(r, row), ldmatrix_x4_trans(r, row) (lane l gives row l % 8 of
//   8x8 matrix l / 8); mma_bf16_16816(d, a, b0, b1) (d += a b, m16n8k16, f32 accumulate);
//   shfl_xor(x, mask); pack_bf16x2(lo, hi); exp2(x); log(x); log2(x), rcp(x) (stick_mma.h).
//   any(p), a warp vote (stick_mma.h).
//
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16" with .bf16), g = lane / 4, c = lane % 4:
//   A 16x16: a[0] (g, 2c..2c+1), a[1] (g+8, 2c..), a[2] (g, 2c+8..), a[3] (g+8, 2c+8..);
//   B 16x8 (k x n): b0 (k 2c..2c+1, n g), b1 (k 2c+8.., n g);
//   C 16x8: d[0], d[1] (g, 2c, 2c+1), d[2], d[3] (g+8, 2c, 2c+1).
// So an S tile's C fragments of keys [16s, 16s+8) and [16s+8, 16s+16), rounded to bf16, are the A
// fragment of P for the product P V over those 16 keys: P never leaves the registers.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backend/attention_mask.h"
#include "backend/attention_shapes.h"
#include "block_order.h"
#include "core/error.h"
#include "doc_tiles.h"

#if defined(__CUDACC__)
#define TESSERA_MMA_FN __device__ __forceinline__
#define TESSERA_MMA_UNROLL _Pragma("unroll")
#define TESSERA_MMA_NO_UNROLL _Pragma("unroll 1")
#else
#define TESSERA_MMA_FN inline
#define TESSERA_MMA_UNROLL
#define TESSERA_MMA_NO_UNROLL
#endif

namespace tessera::cuda::attn {

constexpr int kMmaTile = 64;  // rows per block (16 per warp) and columns per inner tile
constexpr int kMmaWarps = 4;
constexpr int kMmaThreads = kMmaWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct FlashParams {
  int64_t T;  // queries; every kernel but the plain forward needs T == Tk
  int H, Hkv;
  float scale;
  int64_t window;  // <= 0: no window
  int64_t Tk;      // keys; query i sits at position Tk - T + i
  // Where each tensor's rows lie (element (b, h, t, e) at s.row(b, h, t) + e); the backward's
  // gradients take theirs from dq, dk, dv and dout.
  HeadStrides q, k, v, o;
  HeadStrides dq, dk, dv, dout;
  // TESSERA_FLASH_RESCALE=eager: the mma forwards rescale O at every key tile, as before their
  // lazy rescaling (online_softmax's kLazy), for a before-and-after measurement.
  bool eager_rescale = false;
  DocTiles docs;  // a documents launch's table (doc_tiles.h); unread elsewhere
  // ALiBi: grid head h (bh % H) is query head alibi_h0 + h of the model's alibi_heads and takes
  // that head's slope (alibi_h0 > 0 in a pass over a slice of the kv heads, head_slices.h).
  bool alibi = false;
  int alibi_heads = 0, alibi_h0 = 0;
  // Forgetting Attention (backend/attention_mask.h): c (B, H, Tk) f32, grid row bh's at
  // forget + bh Tk (the keys', and query i's at Tk - T + i); forget_grad, the backward's dL/dc
  // (B, H, T), each entry written by the dK dV pass (-colsum dS), then added to by the dQ pass
  // (rowsum dS). Null: no forget gate. A pass over a head slice points both at the slice's first
  // row, as it does lse.
  const float* forget = nullptr;
  float* forget_grad = nullptr;
};
// Element i of row bh of lse (and drow): rows T apart, or lse_t in a documents launch, whose T is a
// document's length (flash_launch.cuh); the other launches pass a literal 0, folded away.
TESSERA_MMA_FN int64_t stat_at(int64_t bh, int64_t i, int64_t T, int64_t lse_t) {
  return bh * (lse_t > 0 ? lse_t : T) + i;
}

TESSERA_MMA_FN bool visible(int64_t i, int64_t j, const FlashParams& p) {
  return j <= i && i < p.T && (p.window <= 0 || i - j < p.window);
}
// Whether every query of [i0, i0 + rows) sees every key of [j0, j0 + cols): no mask needed.
TESSERA_MMA_FN bool all_visible(int64_t i0, int rows, int64_t j0, int cols, const FlashParams& p) {
  return j0 + cols - 1 <= i0 && i0 + rows <= p.T &&
         (p.window <= 0 || i0 + rows - 1 - j0 < p.window);
}

// ALiBi's slope m_h of grid head h (0 <= h < H), in double as the CPU reference computes it;
// 0 without ALiBi. alibi_slope2: in base-2 units, log2(e) m_h (x at distance i - j loses that
// times i - j), rounded to f32 once.
TESSERA_MMA_FN double alibi_slope_of(int64_t h, const FlashParams& p) {
  return p.alibi ? alibi_slope(p.alibi_h0 + h, p.alibi_heads) : 0.0;
}
TESSERA_MMA_FN float alibi_slope2(int64_t h, const FlashParams& p) {
  return float(alibi_slope_of(h, p) * 1.4426950408889634);
}
// f(std::bool_constant<p.alibi>{}) on the host: a launch picks its kernels' kAlibi instances in f
// (the families and launches that take no forget gate: refuse_forget first).
template <class F>
void with_alibi(const FlashParams& p, F&& f) {
  if (p.alibi)
    f(std::true_type{});
  else
    f(std::false_type{});
}

// The bias a body compiles in (kBias): none, ALiBi's, or the forget gate's. The instances of each
// hold none of the others' code.
enum class ScoreBias { None, Alibi, Forget };
template <ScoreBias B>
using BiasKind = std::integral_constant<ScoreBias, B>;
constexpr ScoreBias bias_of(bool alibi) { return alibi ? ScoreBias::Alibi : ScoreBias::None; }
// f(BiasKind<...>{}) on the host, as p says: the mma.sync family and the warp-per-row kernels,
// which have a Forget instance of every kernel.
template <class F>
void with_bias(const FlashParams& p, F&& f) {
  if (p.forget)
    f(BiasKind<ScoreBias::Forget>{});
  else if (p.alibi)
    f(BiasKind<ScoreBias::Alibi>{});
  else
    f(BiasKind<ScoreBias::None>{});
}
// A family or launch with no forget instances (`what`, and how to get one: `instead`) refuses a
// forget gate; ops::attention_support lets Forgetting Attention through to the flash kernels.
inline void refuse_forget(const FlashParams& p, const char* what, const char* instead) {
  TESSERA_CHECK(p.forget == nullptr, "CUDA flash attention: ", what,
                " take no forget gate (Forgetting Attention runs in the mma.sync families and the "
                "warp-per-row kernels): ",
                instead);
}
constexpr const char* kUseMmaFamily =
    "set TESSERA_FLASH_KERNELS to an mma family (mma, mma-narrow, mma-3blocks, mma-5blocks, "
    "mma-2stage, mma-ds or mma-2stage-ds)";

// Batch, query head and kv head of grid row bh = b H + h.
struct HeadIndex {
  int64_t b, h, g;
};
TESSERA_MMA_FN HeadIndex head_index(int64_t bh, const FlashParams& p) {
  return {bh / p.H, bh % p.H, (bh % p.H) / (p.H / p.Hkv)};
}

// Key tiles [first, last] that the queries [q0, q0 + rows) can see.
TESSERA_MMA_FN int64_t first_key_tile(int64_t q0, const FlashParams& p) {
  return p.window > 0 ? (q0 - p.window + 1 > 0 ? q0 - p.window + 1 : 0) / kMmaTile : 0;
}
TESSERA_MMA_FN int64_t last_key_tile(int64_t q0, const FlashParams& p, int rows = kMmaTile) {
  return (q0 + rows - 1 < p.T - 1 ? q0 + rows - 1 : p.T - 1) / kMmaTile;
}
// The last query that can see a key of tile [k0, k0 + 64).
TESSERA_MMA_FN int64_t last_query(int64_t k0, const FlashParams& p) {
  const int64_t last = k0 + kMmaTile - 1 + (p.window > 0 ? p.window - 1 : p.T);
  return last < p.T - 1 ? last : p.T - 1;
}

namespace mma {

// Shared-memory tiles: 64 rows of D bf16, row stride D + 8 elements (16 bytes of padding), so the
// eight 16-byte rows one ldmatrix phase reads start 4 banks apart and never collide.
template <int D>
constexpr int kLd = D + 8;
template <int D>
constexpr size_t kTileBytes = size_t(kMmaTile) * kLd<D> * 2;

// Rows [row0, row0 + R) of a (rows_total, D) bf16 matrix whose rows lie ld elements apart into a
// padded tile, 16 bytes per cp.async; rows past rows_total are zero-filled (masked scores, and zero
// rows of V or dO add nothing).
template <int D, int R = kMmaTile, class W>
TESSERA_MMA_FN void load_tile_async(W& w, uint16_t* dst, const uint16_t* src, int64_t row0,
                                    int64_t rows_total, int64_t ld) {
  constexpr int kPerRow = D / 8;                      // 16-byte copies a row
  constexpr int kRowsAtOnce = kMmaThreads / kPerRow;  // rows the block copies a pass
  static_assert(kMmaThreads % kPerRow == 0 && R % kRowsAtOnce == 0);
  // This thread's column and first row; each pass moves it kRowsAtOnce rows on. Addresses are
  // stepped, not computed from the index (which cost ~30 instructions a copy in 64-bit
  // arithmetic), and the loop is not unrolled: unrolled, ptxas keeps every copy's address live
  // across the products (nvcc 13.0, sm_90: the D 64 forward 230 -> 173 registers, dK dV
  // 240 -> 187).
  const int r = w.thread() / kPerRow, c = (w.thread() % kPerRow) * 8;
  const uint16_t* from = src + (row0 + r) * ld + c;
  uint16_t* to = dst + r * kLd<D> + c;
  int64_t rows_left = rows_total - row0 - r;  // rows from this thread's to the matrix's end
  TESSERA_MMA_NO_UNROLL
  for (int pass = 0; pass < R / kRowsAtOnce; ++pass) {
    const bool valid = rows_left > 0;  // else zero-filled, reading nothing
    w.cp_async16(to, valid ? from : src, valid);
    from += kRowsAtOnce * ld;
    to += kRowsAtOnce * kLd<D>;
    rows_left -= kRowsAtOnce;
  }
}

// The ldmatrix row address this lane gives for a 16x16 A operand at rows r0.., cols c0.. of a tile
// (matrices: rows 0-7 / 8-15 x cols 0-7, then cols 8-15, the order of a[0..3]); the same address
// with .trans gives the B operands (k = rows r0.., n = cols c0..c0+7 then c0+8..) of a product
// whose k runs down the tile's rows (P V, dS K, P^T dO, dS^T Q).
// Rows maps a product's row (or column) index to the tile row that holds it: TileRows for the
// tile's own order; stick_mma.h streams K and V in a permuted key order.
struct TileRows {
  static constexpr int row(int x) { return x; }
};
template <int D, class Rows = TileRows>
TESSERA_MMA_FN const uint16_t* a_row(const uint16_t* tile, int r0, int c0, int lane) {
  return tile + Rows::row(r0 + lane % 16) * kLd<D> + c0 + (lane / 16) * 8;
}
// The address for two B operands (n = rows r0..r0+7, then r0+8..r0+15; k = cols c0..c0+15) of a
// product whose k runs along the tile's rows (Q K^T, dO V^T, K Q^T, V dO^T): r[0], r[1] are the
// first n-block's b0, b1 and r[2], r[3] the second's.
template <int D, class Rows = TileRows>
TESSERA_MMA_FN const uint16_t* bt_row(const uint16_t* tile, int r0, int c0, int lane) {
  return tile + Rows::row(r0 + lane % 8 + (lane / 16) * 8) * kLd<D> + c0 + ((lane / 8) % 2) * 8;
}

// acc0 += a b0 and acc1 += a b1, b0 = (b[0], b[1]) and b1 = (b[2], b[3]): the two 8-column
// n-blocks one ldmatrix x4 (bt_row, or a_row with .trans) loads.
template <class W>
TESSERA_MMA_FN void mma_pair(W& w, float (&acc0)[4], float (&acc1)[4], const uint32_t (&a)[4],
                             const uint32_t (&b)[4]) {
  w.mma_bf16_16816(acc0, a, b[0], b[1]);
  w.mma_bf16_16816(acc1, a, b[2], b[3]);
}

// acc[mt] (16 x 64 as eight 16x8 C fragments) = rows a_r0 + 16 mt .. + 15 of tile a (16 x D each,
// MT of them) @ b^T (b: the 64 rows of tile b, column x of acc from row Rows::row(x)). Each B
// fragment read from shared memory feeds MT products, so more rows per warp read b fewer times per
// product.
template <int D, int MT, class Rows = TileRows, class W>
TESSERA_MMA_FN void tile_abt(W& w, float (&acc)[MT][8][4], const uint16_t* a, int a_r0,
                             const uint16_t* b, int lane) {
  TESSERA_MMA_UNROLL
  for (int mt = 0; mt < MT; ++mt)
    for (int n = 0; n < 8; ++n)
      for (int e = 0; e < 4; ++e) acc[mt][n][e] = 0.0f;
  TESSERA_MMA_UNROLL
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t af[MT][4];
    TESSERA_MMA_UNROLL
    for (int mt = 0; mt < MT; ++mt)
      w.ldmatrix_x4(af[mt], a_row<D>(a, a_r0 + 16 * mt, kk * 16, lane));
    TESSERA_MMA_UNROLL
    for (int np = 0; np < 4; ++np) {
      uint32_t bf[4];
      w.ldmatrix_x4(bf, bt_row<D, Rows>(b, np * 16, kk * 16, lane));
      TESSERA_MMA_UNROLL
      for (int mt = 0; mt < MT; ++mt)
        mma_pair(w, acc[mt][2 * np], acc[mt][2 * np + 1], af[mt], bf);
    }
  }
}

// acc[mt] (16 x D as D / 8 C fragments) += p[mt] (16 x 64, eight C fragments, rounded to bf16
// here) @ m (the 64 rows x D of tile m, p's column x times row Rows::row(x)), for MT row groups
// sharing each B fragment.
template <int D, int MT, class Rows = TileRows, class W>
TESSERA_MMA_FN void tile_pm(W& w, float (&acc)[MT][D / 8][4], const float (&p)[MT][8][4],
                            const uint16_t* m, int lane) {
  TESSERA_MMA_UNROLL
  for (int ks = 0; ks < 4; ++ks) {
    uint32_t pa[MT][4];
    TESSERA_MMA_UNROLL
    for (int mt = 0; mt < MT; ++mt) {
      pa[mt][0] = W::pack_bf16x2(p[mt][2 * ks][0], p[mt][2 * ks][1]);
      pa[mt][1] = W::pack_bf16x2(p[mt][2 * ks][2], p[mt][2 * ks][3]);
      pa[mt][2] = W::pack_bf16x2(p[mt][2 * ks + 1][0], p[mt][2 * ks + 1][1]);
      pa[mt][3] = W::pack_bf16x2(p[mt][2 * ks + 1][2], p[mt][2 * ks + 1][3]);
    }
    TESSERA_MMA_UNROLL
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t bf[4];
      w.ldmatrix_x4_trans(bf, a_row<D, Rows>(m, ks * 16, dp * 16, lane));
      TESSERA_MMA_UNROLL
      for (int mt = 0; mt < MT; ++mt) mma_pair(w, acc[mt][2 * dp], acc[mt][2 * dp + 1], pa[mt], bf);
    }
  }
}

// Rows r0 + g and r0 + g + 8 of a (rows_total, D) bf16 matrix (rows ld apart) from a 16 x D
// accumulator, times mul; each lane writes its pairs of columns.
template <int D, class W>
TESSERA_MMA_FN void store_rows(uint16_t* dst, int64_t r0, int64_t rows_total, int64_t ld,
                               const float (&acc)[D / 8][4], float mul0, float mul1, int lane) {
  const int g = lane / 4, c = lane % 4;
  TESSERA_MMA_UNROLL
  for (int half = 0; half < 2; ++half) {
    const int64_t r = r0 + g + 8 * half;
    if (r >= rows_total) continue;
    const float mul = half ? mul1 : mul0;
    uint16_t* row = dst + r * ld;
    TESSERA_MMA_UNROLL
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<uint32_t*>(row + n * 8 + 2 * c) =
          W::pack_bf16x2(mul * acc[n][2 * half], mul * acc[n][2 * half + 1]);
  }
}

// How the tiles of the forward and backward blocks lie in shared memory and are multiplied.
// RowTiles: rows kLd<D> apart, read by ldmatrix into mma.sync (this file). wgmma_tiles.cuh's
// CoreTiles: 8 x 8 core matrices read by Hopper's wgmma. A policy provides bytes<D> (one 64-row
// tile), load<D, R> (R rows, as load_tile_async), abt<D, MT> (tile_abt's S = Q K^T), pm<D, MT>
// (tile_pm's O += P V), abt2<D> and pm2<D> (two such products at once, the backward's); and
// Held<D, MT>, hold<D, MT>, abt_held<D, MT> and abt_held2<D> for a left operand a block keeps for
// all its products (Q in the forward, Q and dO in dQ, K and V in dK dV; a warp's MT groups of 16
// rows): taken into registers where the policy does so (CoreTiles: once in the forward, at every
// item in the backward, whose loops would otherwise lose them; see backward_dkdv_block), read
// from its tile at every product where it does not.
struct RowTiles {
  template <int D>
  static constexpr size_t bytes = kTileBytes<D>;
  template <int D, int R, class W>
  TESSERA_MMA_FN static void load(W& w, uint16_t* dst, const uint16_t* src, int64_t row0,
                                  int64_t rows_total, int64_t ld) {
    load_tile_async<D, R>(w, dst, src, row0, rows_total, ld);
  }
  template <int D, int MT, class W>
  TESSERA_MMA_FN static void abt(W& w, float (&acc)[MT][8][4], const uint16_t* a, int a_r0,
                                 const uint16_t* b, int lane) {
    tile_abt<D, MT>(w, acc, a, a_r0, b, lane);
  }
  template <int D, int MT, class W>
  TESSERA_MMA_FN static void pm(W& w, float (&acc)[MT][D / 8][4], const float (&p)[MT][8][4],
                                const uint16_t* m, int lane) {
    tile_pm<D, MT>(w, acc, p, m, lane);
  }
  template <int D, int MT>
  struct Held {};  // nothing: tile_abt reads its A fragments from the tile each time
  template <int D, int MT, class W>
  TESSERA_MMA_FN static void hold(W&, Held<D, MT>&, const uint16_t*, int, int) {}
  template <int D, int MT, class W>
  TESSERA_MMA_FN static void abt_held(W& w, float (&acc)[MT][8][4], const Held<D, MT>&,
                                      const uint16_t* a, int a_r0, const uint16_t* b, int lane) {
    tile_abt<D, MT>(w, acc, a, a_r0, b, lane);
  }
  // Two products of a kind at once (the backward's S and dP, dV and dK): one after the other
  // here; CoreTiles issues both and waits once.
  template <int D, class W>
  TESSERA_MMA_FN static void abt2(W& w, float (&acc1)[1][8][4], const uint16_t* a1,
                                  const uint16_t* b1, float (&acc2)[1][8][4], const uint16_t* a2,
                                  const uint16_t* b2, int a_r0, int lane) {
    tile_abt<D, 1>(w, acc1, a1, a_r0, b1, lane);
    tile_abt<D, 1>(w, acc2, a2, a_r0, b2, lane);
  }
  template <int D, class W>
  TESSERA_MMA_FN static void abt_held2(W& w, float (&acc1)[1][8][4], const Held<D, 1>&,
                                       const uint16_t* a1, const uint16_t* b1,
                                       float (&acc2)[1][8][4], const Held<D, 1>&,
                                       const uint16_t* a2, const uint16_t* b2, int a_r0, int lane) {
    abt2<D>(w, acc1, a1, b1, acc2, a2, b2, a_r0, lane);
  }
  template <int D, class W>
  TESSERA_MMA_FN static void pm2(W& w, float (&acc1)[1][D / 8][4], const float (&p1)[1][8][4],
                                 const uint16_t* m1, float (&acc2)[1][D / 8][4],
                                 const float (&p2)[1][8][4], const uint16_t* m2, int lane) {
    tile_pm<D, 1>(w, acc1, p1, m1, lane);
    tile_pm<D, 1>(w, acc2, p2, m2, lane);
  }
};

// The forward's row state before the first key tile: O = 0, no maximum, no sum.
template <int D, int MT>
TESSERA_MMA_FN void start_rows(float (&o)[MT][D / 8][4], float (&m)[MT][2], float (&l)[MT][2]) {
  TESSERA_MMA_UNROLL
  for (int mt = 0; mt < MT; ++mt) {
    for (int n = 0; n < D / 8; ++n)
      for (int e = 0; e < 4; ++e) o[mt][n][e] = 0.0f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.0f;
  }
}

// Which pairs of a query tile at q0 and a key tile at k0 (offsets qo, ko in [0, 64)) are seen, on
// 32-bit offsets: the 64-bit bounds are taken once a tile pair, clamped to what offsets within 64
// can tell apart. Key k0 + ko is seen by query q0 + qo when ko - qo <= lag (causal: lag = q0 - k0;
// one less where a query may not see its own key), qo < query_end (queries past T see nothing)
// and qo - ko < window_end (a sliding window of w: w - (q0 - k0)).
struct TileVisibility {
  int lag, query_end, window_end;
  TESSERA_MMA_FN static int clamp64(int64_t v) { return int(v < -64 ? -64 : v > 64 ? 64 : v); }
  TESSERA_MMA_FN TileVisibility(int64_t lag_, int64_t query_end_, int64_t window_end_)
      : lag(clamp64(lag_)), query_end(clamp64(query_end_)), window_end(clamp64(window_end_)) {}
  TESSERA_MMA_FN bool operator()(int qo, int ko) const {
    return ko - qo <= lag && qo < query_end && qo - ko < window_end;
  }
};
// visible() of the tile pair at (q0, k0).
TESSERA_MMA_FN TileVisibility tile_visibility(int64_t q0, int64_t k0, const FlashParams& p) {
  return {q0 - k0, p.T - q0, p.window > 0 ? p.window - (q0 - k0) : 64};
}

// The elements of a 16 x 64 tile of C fragments (a lane holds rows g and g + 8) that the queries
// do not see set to `masked`: the causal diagonal, the window's edge, queries past T. Its rows
// are queries and its columns keys (kRowsAreQueries: S, dP) or the other way round (S^T, dP^T),
// column x of the product being tile row Cols::row(x) (tile_abt's Rows); `vis` is the tile
// pair's, taken at its first row and column. Only the tiles that all_visible rejects come here,
// so that every other tile's loop is straight-line code (with the test inside it, ptxas branched
// around each element: about 100 more instructions a key tile in the D 64 forward, nvcc 13.0).
template <bool kRowsAreQueries, class Cols = TileRows>
TESSERA_MMA_FN void mask_tile(float (&s)[8][4], const TileVisibility& vis, float masked, int lane) {
  const int g = lane / 4, c = lane % 4;
  TESSERA_MMA_UNROLL
  for (int n = 0; n < 8; ++n) {
    TESSERA_MMA_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int ro = g + 8 * (e >> 1), co = Cols::row(n * 8 + 2 * c + (e & 1));
      if (!(kRowsAreQueries ? vis(ro, co) : vis(co, ro))) s[n][e] = masked;
    }
  }
}

// ALiBi's bias on a 16 x 64 tile of C fragments laid out as mask_tile's (rows queries or keys,
// kRowsAreQueries): x = x mul - step (i - j), i the element's query position and j its key's, lag
// = i - j at the tile's first row and column. Every element, masked ones too (mask_tile then sets
// those); the distances are exact in f32 below 2^24.
template <bool kRowsAreQueries>
TESSERA_MMA_FN void alibi_tile(float (&s)[8][4], int64_t lag, float mul, float step, int lane) {
  const int g = lane / 4, c = lane % 4;
  const float d0 = float(lag);
  TESSERA_MMA_UNROLL
  for (int n = 0; n < 8; ++n) {
    TESSERA_MMA_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int ro = g + 8 * (e >> 1), co = n * 8 + 2 * c + (e & 1);
      const float d = d0 + float(kRowsAreQueries ? ro - co : co - ro);
      s[n][e] = fmaf(s[n][e], mul, -step * d);
    }
  }
}

// Forgetting Attention's sums as a warp's tiles read them: c of grid row bh (Tk entries), and c
// at the lane's query (or key) rows g and g + 8 of each of MT groups of 16 from r0, 0 past T
// (those rows are masked, or their lse is +inf). Row i's entry is position Tk - T + i's.
template <int MT>
struct ForgetRows {
  const float* c = nullptr;
  float at[MT][2] = {};
};
template <int MT>
TESSERA_MMA_FN ForgetRows<MT> forget_rows(const FlashParams& p, int64_t bh, int64_t r0, int lane) {
  ForgetRows<MT> f;
  f.c = p.forget + bh * p.Tk;
  TESSERA_MMA_UNROLL
  for (int mt = 0; mt < MT; ++mt)
    for (int half = 0; half < 2; ++half) {
      const int64_t i = r0 + 16 * mt + lane / 4 + 8 * half;
      f.at[mt][half] = i < p.T ? f.c[p.Tk - p.T + i] : 0.0f;
    }
  return f;
}

// The forget gate's bias on a 16 x 64 tile of C fragments laid out as mask_tile's (rows queries or
// keys, kRowsAreQueries): x = x mul + step (c[i] - c[j]), i the element's query and j its key;
// rows: c at the lane's rows g and g + 8; cols: c at the tile's first column, of which the first
// `valid` are real. The others read column 0's (their pairs are masked, or their rows' lse is
// +inf) by a clamped index: a select of 0 there cost the D 64 backward kernels 80 to 130 bytes
// more spill (ptxas, nvcc 13, sm_90). The difference is taken in f32 before it is scaled, as the
// CPU forms it: |c| reaches thousands at long T, where c[i] folded into a row's maximum or lse
// would lose the bias's low bits.
template <bool kRowsAreQueries>
TESSERA_MMA_FN void forget_tile(float (&s)[8][4], const float (&rows)[2], const float* cols,
                                int64_t valid, float mul, float step, int lane) {
  const int c = lane % 4, n_valid = int(valid < kMmaTile ? valid : kMmaTile);
  TESSERA_MMA_UNROLL
  for (int n = 0; n < 8; ++n) {
    TESSERA_MMA_UNROLL
    for (int e = 0; e < 2; ++e) {
      const int co = n * 8 + 2 * c + e;
      const float cc = cols[co < n_valid ? co : 0];
      TESSERA_MMA_UNROLL
      for (int half = 0; half < 2; ++half) {
        const float d = kRowsAreQueries ? rows[half] - cc : cc - rows[half];
        s[n][2 * half + e] = fmaf(s[n][2 * half + e], mul, step * d);
      }
    }
  }
}

// The online softmax of key tile k0 .. k0 + 63 for a warp's MT groups of 16 rows (r0 + 16 mt ..;
// a lane holds rows g and g + 8 of each): the scores in s become P = 2^(s scale2 - m) (masked
// ones 0), the base-2 running maxima m and this lane's partial sums l move on, and alpha is what
// the rows' O must be multiplied by before P V is added (rescale[mt]: whether it is other than 1
// in group mt).
// kFold: where scale2 > 0 (1 / sqrt(D), every model's) the scale goes into the exponent's FFMA,
// 2^fma(s, scale2, -m), and the tile's maximum is taken over the unscaled scores, then scaled
// once a row (a positive factor keeps the order, and rounding is monotonic): 32 FMULs a tile
// fewer. Any other scale, or !kFold, multiplies the scores first, so that the masked -inf never
// meets a factor of 0.
// kBias: ALiBi's bias, alibi2 (alibi_slope2) a key of distance in base-2 units, or the forget
// gate's, log2(e) (c[i] - c[j]) (forget: the warp's rows), added to the scores before the mask in
// their units: base 2 once multiplied, else raw (divided by scale2).
// kLazy: a group's m moves only when some row's tile maximum passes it by more than
// kRescaleAbove (a warp vote; Flash Attention 4 rescales only when the maximum has moved enough,
// per Modal's "We reverse-engineered Flash Attention 4", 2025); otherwise its rows keep their m,
// P reaches at most 2^kRescaleAbove (bf16 and f32 hold that as they hold 1), alpha is 1 and O is
// not rescaled. The mathematics is the same, m being any offset common to a row's exponents, sums
// and O; most key tiles after a row's first raise its maximum by little.
constexpr float kRescaleAbove = 8.0f;
template <int MT, bool kFold, bool kLazy = false, ScoreBias kBias = ScoreBias::None, class W>
TESSERA_MMA_FN void online_softmax(W& w, float (&s)[MT][8][4], float (&m)[MT][2], float (&l)[MT][2],
                                   float (&alpha)[MT][2], bool (&rescale)[MT], int64_t r0,
                                   int64_t k0, float scale2, const FlashParams& p, int lane,
                                   float alibi2 = 0.0f, const ForgetRows<MT>& forget = {}) {
  const bool prescale = !kFold || !(scale2 > 0.0f);
  const float mul = prescale ? 1.0f : scale2;
  TESSERA_MMA_UNROLL
  for (int mt = 0; mt < MT; ++mt) {
    if (prescale) {
      TESSERA_MMA_UNROLL
      for (int n = 0; n < 8; ++n)
        for (int e = 0; e < 4; ++e) s[mt][n][e] *= scale2;
    }
    if constexpr (kBias == ScoreBias::Alibi)  // kFold's raw scores: scale2 > 0
      alibi_tile<true>(s[mt], r0 + 16 * mt - k0, 1.0f, prescale ? alibi2 : alibi2 / scale2, lane);
    if constexpr (kBias == ScoreBias::Forget)
      forget_tile<true>(s[mt], forget.at[mt], forget.c + k0, p.Tk - k0, 1.0f,
                        prescale ? kLog2e : kLog2e / scale2, lane);
    if (!all_visible(r0 + 16 * mt, 16, k0, kMmaTile, p))
      mask_tile<true>(s[mt], tile_visibility(r0 + 16 * mt, k0, p), -INFINITY, lane);
    float tmax[2];
    TESSERA_MMA_UNROLL
    for (int half = 0; half < 2; ++half) {
      float t = -INFINITY;
      TESSERA_MMA_UNROLL
      for (int n = 0; n < 8; ++n) t = fmaxf(t, fmaxf(s[mt][n][2 * half], s[mt][n][2 * half + 1]));
      t = fmaxf(t, w.shfl_xor(t, 1));  // the four lanes of a row
      t = fmaxf(t, w.shfl_xor(t, 2));
      tmax[half] = t * mul;
    }
    // Whether the group's m moves (-inf > -inf + 8 is false: a row that sees nothing yet keeps
    // its -inf; a first visible key moves it).
    rescale[mt] = !kLazy || p.eager_rescale ||
                  w.any(tmax[0] > m[mt][0] + kRescaleAbove || tmax[1] > m[mt][1] + kRescaleAbove);
    TESSERA_MMA_UNROLL
    for (int half = 0; half < 2; ++half) {
      const float mx = rescale[mt] ? fmaxf(m[mt][half], tmax[half]) : m[mt][half];
      const float base = mx == -INFINITY ? 0.0f : mx;  // nothing visible yet: P = 0, O stays 0
      alpha[mt][half] = rescale[mt] ? w.exp2(m[mt][half] - base) : 1.0f;  // 0 while m is -inf
      float sum = 0.0f;
      TESSERA_MMA_UNROLL
      for (int n = 0; n < 8; ++n)
        TESSERA_MMA_UNROLL
        for (int e = 0; e < 2; ++e) {
          float& x = s[mt][n][2 * half + e];
          x = w.exp2(fmaf(x, mul, -base));
          sum += x;
        }
      l[mt][half] = alpha[mt][half] * l[mt][half] + sum;
      m[mt][half] = mx;
    }
  }
}

// O *= alpha, row by row, in the groups whose alpha is not 1.
template <int D, int MT>
TESSERA_MMA_FN void scale_rows(float (&o)[MT][D / 8][4], const float (&alpha)[MT][2],
                               const bool (&rescale)[MT]) {
  TESSERA_MMA_UNROLL
  for (int mt = 0; mt < MT; ++mt) {
    if (!rescale[mt]) continue;
    TESSERA_MMA_UNROLL
    for (int half = 0; half < 2; ++half)
      TESSERA_MMA_UNROLL
      for (int n = 0; n < D / 8; ++n) {
        o[mt][n][2 * half] *= alpha[mt][half];
        o[mt][n][2 * half + 1] *= alpha[mt][half];
      }
  }
}

// After the last key tile: each row's sum over its quad, lse = (m + log2 sum) ln 2, and O / sum
// written to out (rows past T are neither).
template <int D, int MT, class W>
TESSERA_MMA_FN void finish_rows(W& w, uint16_t* out, float* lse, const float (&o)[MT][D / 8][4],
                                const float (&m)[MT][2], const float (&l)[MT][2], int64_t r0,
                                int64_t bh, const HeadIndex& hi, const FlashParams& p, int lane,
                                int64_t lse_t = 0) {
  const int g = lane / 4, c = lane % 4;
  TESSERA_MMA_UNROLL
  for (int mt = 0; mt < MT; ++mt) {
    float inv[2];
    TESSERA_MMA_UNROLL
    for (int half = 0; half < 2; ++half) {
      float lt = l[mt][half] + w.shfl_xor(l[mt][half], 1);
      lt += w.shfl_xor(lt, 2);
      // Every query < T sees its own key, so lt > 0 on the rows written.
      inv[half] = lt > 0.0f ? 1.0f / lt : 0.0f;
      const int64_t i = r0 + 16 * mt + g + 8 * half;
      if (c == 0 && i < p.T) lse[stat_at(bh, i, p.T, lse_t)] = m[mt][half] * kLn2 + W::log(lt);
    }
    store_rows<D, W>(out + p.o.row(hi.b, hi.h, 0), r0 + 16 * mt, p.T, p.o.t, o[mt], inv[0],
                     inv[1], lane);
  }
}

// The two-stage stream of the dQ bodies and the two-stage forward: waits for key tile kt's copies
// and, every warp being done with the other stage, starts tile kt + 1's into it (fetch(kt + 1,
// stage)); kt's stage.
template <class W, class Fetch>
TESSERA_MMA_FN int next_stage(W& w, int64_t kt, int64_t kt0, int64_t kt1, Fetch&& fetch) {
  const int s = int((kt - kt0) & 1);
  w.cp_async_wait_all();  // key tile kt is in
  w.sync_block();         // and every warp is done with stage s ^ 1
  if (kt < kt1) fetch(kt + 1, s ^ 1);
  return s;
}

// The forward's tiles: MT 64-row tiles of Q (one per 16 rows of each warp), then K and V, in
// kStages stages (kv(s): stage s's K; its V one tile after).
template <int D, int MT, class Tiles = RowTiles, int kStages = 1>
struct ForwardSmem {
  static constexpr size_t tile = Tiles::template bytes<D>;
  static constexpr size_t kv(int stage) { return (MT + 2 * size_t(stage)) * tile; }
  static constexpr size_t q = 0, k = kv(0), v = k + tile, bytes = kv(kStages);
};

// One block: the 64 MT queries [q0, q0 + 64 MT), q0 = 64 MT qt, of grid row bh = b H + h. Warp w
// owns queries q0 + 16 MT w .. + 16 MT - 1 as MT groups of 16; a lane holds rows g and g + 8 of
// each. MT = 2 (FlashAttention-2's 128-row blocks) loads each K and V tile once for twice the
// queries (and under RowTiles reads each of their fragments once per two products); MT = 1 halves
// the registers and doubles the blocks.
// kStages 1: V of this key tile streams in while Q K^T runs, K of the next while P V runs, two
// barriers a tile. kStages 2: K and V of the next key tile stream into the other stage while this
// one's are used, one barrier a tile, a whole tile's work to cover the copies' latency, for two
// more tiles of shared memory (46 KB a block at D 64, MT 1).
template <int D, int MT, class Tiles = RowTiles, int kStages = 1, ScoreBias kBias = ScoreBias::None,
          class W>
TESSERA_MMA_FN void forward_block(W& w, uint16_t* out, float* lse, const uint16_t* q,
                                  const uint16_t* k, const uint16_t* v, const FlashParams& p,
                                  int64_t qt, int64_t bh, int64_t lse_t = 0) {
  static_assert(kStages == 1 || kStages == 2);
  using M = ForwardSmem<D, MT, Tiles, kStages>;
  constexpr int kRows = kMmaTile * MT;
  auto tile = [&](size_t at) { return reinterpret_cast<uint16_t*>(w.smem() + at); };
  uint16_t* Qs = tile(M::q);
  const int warp = w.thread() / 32, lane = w.thread() % 32;
  const HeadIndex hi = head_index(bh, p);
  const int64_t T = p.T, q0 = qt * kRows, r0 = q0 + warp * 16 * MT;
  const uint16_t* kh = k + p.k.row(hi.b, hi.g, 0);
  const uint16_t* vh = v + p.v.row(hi.b, hi.g, 0);
  const int64_t kt0 = first_key_tile(q0, p), kt1 = last_key_tile(q0, p, kRows);
  auto load_k = [&](int64_t kt, int s) {
    Tiles::template load<D, kMmaTile>(w, tile(M::kv(s)), kh, kt * kMmaTile, T, p.k.t);
  };
  auto load_v = [&](int64_t kt, int s) {
    Tiles::template load<D, kMmaTile>(w, tile(M::kv(s) + M::tile), vh, kt * kMmaTile, T, p.v.t);
  };

  Tiles::template load<D, kRows>(w, Qs, q + p.q.row(hi.b, hi.h, 0), q0, T, p.q.t);
  load_k(kt0, 0);
  if constexpr (kStages == 2) load_v(kt0, 0);
  w.cp_async_commit();
  w.cp_async_wait_all();
  w.sync_block();
  typename Tiles::template Held<D, MT> qheld;
  Tiles::template hold<D, MT>(w, qheld, Qs, warp * 16 * MT, lane);

  float o[MT][D / 8][4];
  float m[MT][2], l[MT][2];  // base-2 running max; this lane's partial sums
  start_rows<D, MT>(o, m, l);
  const float scale2 = p.scale * kLog2e;
  const float alibi2 = kBias == ScoreBias::Alibi ? alibi_slope2(hi.h, p) : 0.0f;
  ForgetRows<MT> forget;
  if constexpr (kBias == ScoreBias::Forget) forget = forget_rows<MT>(p, bh, r0, lane);
  // The scale folded into the exponent (online_softmax) at D 64: the loop's path a key tile
  // (scripts/sass_loop_stats.py, nvcc 13.0, sm_90) 416 -> 392 instructions at MT 1. Not at D 128,
  // whose MT 2 instance (255 registers) then spills 84 bytes instead of 28, and whose MT 1 one
  // must give MT 2's bits (tests/kernels/test_flash_mma_emulated.cpp).
  constexpr bool kFold = D == 64;

  for (int64_t kt = kt0; kt <= kt1; ++kt) {
    const int64_t k0 = kt * kMmaTile;
    int stage = 0;
    if constexpr (kStages == 2) {
      stage = next_stage(w, kt, kt0, kt1, [&](int64_t next, int into) {
        load_k(next, into);
        load_v(next, into);
        w.cp_async_commit();
      });
    } else {
      load_v(kt, 0);
      w.cp_async_commit();
    }
    float s[MT][8][4], alpha[MT][2];
    bool rescale[MT];
    Tiles::template abt_held<D, MT>(w, s, qheld, Qs, warp * 16 * MT, tile(M::kv(stage)), lane);
    online_softmax<MT, kFold, true, kBias>(w, s, m, l, alpha, rescale, r0, k0, scale2, p, lane,
                                           alibi2, forget);
    scale_rows<D, MT>(o, alpha, rescale);
    if constexpr (kStages == 1) {
      w.cp_async_wait_all();  // V is in
      w.sync_block();         // and every warp is done with K
      if (kt < kt1) {
        load_k(kt + 1, 0);
        w.cp_async_commit();
      }
    }
    Tiles::template pm<D, MT>(w, o, s, tile(M::kv(stage) + M::tile), lane);
    if constexpr (kStages == 1) {
      w.cp_async_wait_all();  // the next K is in
      w.sync_block();         // and every warp is done with V
    }
  }
  finish_rows<D, MT, W>(w, out, lse, o, m, l, r0, bh, hi, p, lane, lse_t);
}

}  // namespace mma
}  // namespace tessera::cuda::attn
