// Stick-breaking attention (Tan et al. 2024, arXiv:2410.17980) on register tiles: the bf16 forward
// and backward bodies behind stick_breaking_forward/backward at head dims 64 and 128
// (stick_breaking.cu launches them; its header and the CPU twin derive the formulas). The
// machinery is flash_mma.h's (fragment layouts, the context type W, cp.async tile streams): Q K^T,
// the weights and A V stay in registers.
//
// The row scan. Query i's weight for key j is beta_j times the product of (1 - beta) over the keys
// it attends after j: a suffix product along the row. In an S fragment a row's 64 columns sit on a
// quad of 4 lanes, 2 columns at a time, interleaved; so K and V are read in the order StickKeys,
// under which lane c of the quad holds keys 16c .. 16c + 15 of the tile (element (n, e) of its
// fragments is key 16c + 2n + e). The suffix is a walk down the lane's own 16 keys, then a
// two-shuffle exclusive suffix over the quad, then the carry from the tiles after this one (key
// tiles run from the diagonal down).
//
// The arithmetic, with u = z log2(e), e = 2^-|u| and r = 1 / (1 + e): beta = r and 1 - beta = e r
// for u >= 0, the other way round for u < 0, so no z overflows and a score costs one exp2 and one
// reciprocal. A lane multiplies its keys' (1 - beta) into `run` for the weights (a product below
// f32's range gives weights below it, zero in f32 either way), and log2(run) carries across lanes
// and tiles. In the forward, where some lane's product in a warp's 8 rows (g or g + 8) falls below
// f32's normal range, those rows take the exact log2(prod r) - sum max(u, 0) instead (prod r >=
// 2^-16; S recomputed: stick_exact_log2): every term <= 0, so log rem stays exact far past where
// the product underflows, and the usual tile does not pay the three instructions a score that
// keeping both sums in every walk cost.
//
// Backward (stick_breaking.cu's header): g = A dA with dA = dO . v, and
// dz_k = g_k - beta_k (W - sum of g over the keys after k), W = dO . out.
//  - dQ pass, a block per query tile, key tiles from the diagonal down: dq = scale sum dz k. At
//    each tile it saves, per row and lane, log2 of the lane's factor (the product of (1 - beta)
//    over the keys after the lane's 16) and the sum of g over those keys: ckpt.
//  - dK dV pass, a block per key tile of a kv head, over the query tiles and the G query heads of
//    its group: with a lane's checkpoint, its weights and dz come out of one walk down its keys
//    with no exchange. Warps own query rows for that and write A and dz (bf16) to shared memory;
//    then warps own keys: dV += A^T dO, dK += dz^T Q. Deterministic: no atomics.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "flash_mma_backward.h"

namespace tessera::cuda::attn {

struct StickParams {
  int64_t T;  // queries; every kernel but the plain forward needs T == Tk
  int H, Hkv;
  float scale;
  bool attend_current, add_remainder;
  int64_t Tk;  // keys; query i sits at position Tk - T + i
  // Where each tensor's rows lie (element (b, h, t, e) at s.row(b, h, t) + e): the strided contract
  // of backend/attention_shapes.h, rows 16-byte aligned on the register-tile path.
  HeadStrides q, k, v, o;
  HeadStrides dq, dk, dv, dout;
  DocTiles docs;  // a documents launch's table (doc_tiles.h); unread elsewhere
};

// Does query i attend key j?
TESSERA_MMA_FN bool attends(int64_t i, int64_t j, const StickParams& p) {
  return i < p.T && (p.attend_current ? j <= i : j < i);
}
// Whether every query of [i0, i0 + rows) attends every key of [j0, j0 + cols): no mask needed.
TESSERA_MMA_FN bool all_attend(int64_t i0, int rows, int64_t j0, int cols, const StickParams& p) {
  return i0 + rows <= p.T && (p.attend_current ? j0 + cols - 1 <= i0 : j0 + cols - 1 < i0);
}
// The last key any query of [q0, q0 + rows) attends (-1: none).
TESSERA_MMA_FN int64_t last_key(int64_t q0, int64_t rows, const StickParams& p) {
  const int64_t i = q0 + rows - 1 < p.T - 1 ? q0 + rows - 1 : p.T - 1;
  return p.attend_current ? i : i - 1;
}
// Batch, query head and kv head of grid row bh = b H + h.
TESSERA_MMA_FN HeadIndex head_index(int64_t bh, const StickParams& p) {
  return {bh / p.H, bh % p.H, (bh % p.H) / (p.H / p.Hkv)};
}

namespace mma {

// Column x = 8n + 2c + e of an S tile (n-block n, lane c of the quad) is key 16c + 2n + e.
struct StickKeys {
  static constexpr int row(int x) { return ((x & 7) >> 1) * 16 + (x >> 3) * 2 + (x & 1); }
};

// Of x over the quad (lanes c = 0..3 of a row): the sum over the lanes after this one, and the
// total.
template <class W>
TESSERA_MMA_FN float quad_after(W& w, float x, int c, float& total) {
  const float x1 = w.shfl_xor(x, 1);
  const float pair = x + x1;
  const float x2 = w.shfl_xor(pair, 2);
  total = pair + x2;
  return ((c & 1) ? 0.0f : x1) + (c < 2 ? x2 : 0.0f);
}

// A lane's walk down its keys of one row: the product of (1 - beta) over the keys walked (those
// after the current one). Its log2 is what carries across lanes and tiles: log2(run) while run is
// a normal float; below 2^-126 (a few keys with beta near 1 are enough) run is no longer exact, and
// the forward takes the exact log from stick_exact_log2 instead.
struct StickRun {
  float run = 1.0f;  // prod (1 - beta)
  // The next key down, u = z log2(e): returns beta; a = beta times the product after the key.
  // A key not attended comes as u = -inf: beta 0, a 0, and the product unchanged.
  template <class W>
  TESSERA_MMA_FN float step(float u, float& a) {
    const float e = W::exp2(-fabsf(u));
    const float r = W::rcp(1.0f + e), er = e * r;
    const bool up = u >= 0.0f;
    const float beta = up ? r : er;
    a = beta * run;
    run *= up ? er : r;
    return beta;
  }
};
// Below this a walk's product is not a normal float: its log2 comes from stick_exact_log2.
constexpr float kStickTiny = 0x1p-126f;

// The lane's keys of a row in walking order: element (n, e) of its fragments, last key first.
#define TESSERA_STICK_WALK(n, e)  \
  TESSERA_MMA_UNROLL              \
  for (int n = 7; n >= 0; --n)    \
    TESSERA_MMA_UNROLL            \
  for (int e = 1; e >= 0; --e)

TESSERA_MMA_FN float bf16_value(uint16_t bits) {
  const uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// The dQ pass's checkpoint of one (row, key tile, lane) for the dK dV pass: log2 of the lane's
// factor and the sum of g over the keys after the lane's. ckpt (B H, key tiles, T, 4 lanes) of
// these; in a documents launch each document's (H, its key tiles, its length, 4) from its
// DocTile::ckpt on, which the bodies' ckpt_base (0 elsewhere, folded away) points the index at.
struct StickCkpt {
  float log2_after, g_after;
};
TESSERA_MMA_FN int64_t ckpt_index(int64_t bh, int64_t kt, int64_t i, int c, int64_t T,
                                  int64_t tiles) {
  return ((bh * tiles + kt) * T + i) * 4 + c;
}

// attends() of the tile pair at (q0, k0), for mask_tile.
TESSERA_MMA_FN TileVisibility stick_visibility(int64_t q0, int64_t k0, const StickParams& p) {
  return {q0 - k0 - (p.attend_current ? 0 : 1), p.T - q0, 64};
}

// A row group's scores (16 queries from r0, key tile k0, columns in StickKeys' order) times scale2,
// the keys its queries do not attend -inf (StickRun::step then skips them).
TESSERA_MMA_FN void scale_scores(float (&s)[8][4], float scale2, int64_t r0, int64_t k0,
                                 const StickParams& p, int lane) {
  TESSERA_MMA_UNROLL
  for (int n = 0; n < 8; ++n)
    for (int e = 0; e < 4; ++e) s[n][e] *= scale2;
  if (!all_attend(r0, 16, k0, kMmaTile, p))
    mask_tile<true, StickKeys>(s, stick_visibility(r0, k0, p), -INFINITY, lane);
}

// log2 of the product of (1 - beta) over this lane's 16 keys (key tile k0, StickKeys' order) of
// row g + 8 half of the 16 query rows at row a_r0 of tile a (queries r0 ..), for rows where some
// lane's walk left f32's range (StickRun): the sum over the keys of log2 r - max(u, 0),
// r = 1 / (1 + 2^-|u|) as in StickRun::step. r >= 1/2, so the product of 16 r's stays >= 2^-16
// and the rest adds as a sum, finite however far below f32's range the product of (1 - beta)
// lies. S is recomputed from tile a and key tile b (still in shared memory), bit for bit as
// tile_abt makes it, two n-blocks at a time: the walk's own scores are gone (it writes its
// results over them).
template <int D, class W>
TESSERA_MMA_FN float stick_exact_log2(W& w, int half, const uint16_t* a, int a_r0,
                                      const uint16_t* b, float scale2, int64_t r0, int64_t k0,
                                      const StickParams& p, int lane) {
  const bool full = all_attend(r0, 16, k0, kMmaTile, p);
  const TileVisibility vis = stick_visibility(r0, k0, p);
  const int g = lane / 4, c = lane % 4;
  float mant = 1.0f, pos = 0.0f;
  // Loops kept rolled: unrolled, ptxas issued every fragment's ldmatrix ahead and the kernels
  // around this rare path took more registers (nvcc 13.0, sm_90: the D 64 forward 128 -> 164).
  TESSERA_MMA_NO_UNROLL
  for (int np = 0; np < 4; ++np) {
    float acc[2][4] = {};
    TESSERA_MMA_NO_UNROLL
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t af[4], bf[4];
      w.ldmatrix_x4(af, a_row<D>(a, a_r0, kk * 16, lane));
      w.ldmatrix_x4(bf, bt_row<D, StickKeys>(b, np * 16, kk * 16, lane));
      mma_pair(w, acc[0], acc[1], af, bf);
    }
    TESSERA_MMA_UNROLL
    for (int j = 0; j < 2; ++j)
      for (int e = 0; e < 2; ++e) {
        float u = (half ? acc[j][2 + e] : acc[j][e]) * scale2;
        if (!full && !vis(g + 8 * half, StickKeys::row((2 * np + j) * 8 + 2 * c + e)))
          u = -INFINITY;
        mant *= W::rcp(1.0f + W::exp2(-fabsf(u)));
        pos += u > 0.0f ? u : 0.0f;
      }
  }
  return W::log2(mant) - pos;
}

// log2 of a lane's walk's product (run) over its keys of row g + 8 half of the 16-row group at
// row a_r0 of tile a, against key tile b: log2(run) where the warp's products of that half are
// all normal floats (the usual case: a vote), else stick_exact_log2.
template <int D, class W>
TESSERA_MMA_FN float stick_walk_log2(W& w, float run, int half, const uint16_t* a, int a_r0,
                                     const uint16_t* b, float scale2, int64_t r0, int64_t k0,
                                     const StickParams& p, int lane) {
  if (w.any(run < kStickTiny))
    return stick_exact_log2<D>(w, half, a, a_r0, b, scale2, r0, k0, p, lane);
  return W::log2(run);
}

// One block: the 64 MT queries [q0, q0 + 64 MT) of grid row bh = b H + h, as flash_mma.h's
// forward_block (Q tile, K and V streamed in kStages stages, MT row groups of 16 per warp), key
// tiles from the diagonal down. out, q (B, H, T, D); k, v (B, Hkv, T, D), where p's strides say;
// log_rem (B, H, T) f32 and rem (B, H, T) bf16 or null, contiguous.
template <int D, int MT, int kStages = 1, class W>
TESSERA_MMA_FN void stick_forward_block(W& w, uint16_t* out, float* log_rem, uint16_t* rem,
                                        const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                        const StickParams& p, int64_t qt, int64_t bh,
                                        int64_t lse_t = 0) {
  static_assert(kStages == 1 || kStages == 2);
  using M = ForwardSmem<D, MT, RowTiles, kStages>;
  constexpr int kRows = kMmaTile * MT;
  auto tile = [&](size_t at) { return reinterpret_cast<uint16_t*>(w.smem() + at); };
  uint16_t* Qs = tile(M::q);
  const int warp = w.thread() / 32, lane = w.thread() % 32, g = lane / 4, c = lane % 4;
  const HeadIndex hi = head_index(bh, p);
  const int64_t T = p.T, q0 = qt * kRows, r0 = q0 + warp * 16 * MT;
  const uint16_t* kh = k + p.k.row(hi.b, hi.g, 0);
  const uint16_t* vh = v + p.v.row(hi.b, hi.g, 0);
  const int64_t last = last_key(q0, kRows, p), kt1 = last >= 0 ? last / kMmaTile : -1;

  auto load_k = [&](int64_t kt, int s) {
    load_tile_async<D>(w, tile(M::kv(s)), kh, kt * kMmaTile, T, p.k.t);
  };
  auto load_v = [&](int64_t kt, int s) {
    load_tile_async<D>(w, tile(M::kv(s) + M::tile), vh, kt * kMmaTile, T, p.v.t);
  };

  load_tile_async<D, kRows>(w, Qs, q + p.q.row(hi.b, hi.h, 0), q0, T, p.q.t);
  if (kt1 >= 0) {
    load_k(kt1, 0);
    if constexpr (kStages == 2) load_v(kt1, 0);
  }
  w.cp_async_commit();
  w.cp_async_wait_all();
  w.sync_block();

  float o[MT][D / 8][4];
  float carry[MT][2];  // log2 of prod (1 - beta) over the keys past this tile
  TESSERA_MMA_UNROLL
  for (int mt = 0; mt < MT; ++mt) {
    for (int n = 0; n < D / 8; ++n)
      for (int e = 0; e < 4; ++e) o[mt][n][e] = 0.0f;
    carry[mt][0] = carry[mt][1] = 0.0f;
  }
  const float scale2 = p.scale * kLog2e;

  for (int64_t kt = kt1; kt >= 0; --kt) {
    const int64_t k0 = kt * kMmaTile;
    int stage = 0;
    if constexpr (kStages == 2) {  // next_stage over the walk's index kt1 - kt
      stage = next_stage(w, kt1 - kt, 0, kt1, [&](int64_t next, int into) {
        load_k(kt1 - next, into);
        load_v(kt1 - next, into);
        w.cp_async_commit();
      });
    } else {
      load_v(kt, 0);
      w.cp_async_commit();
    }
    float s[MT][8][4];
    tile_abt<D, MT, StickKeys>(w, s, Qs, warp * 16 * MT, tile(M::kv(stage)), lane);
    TESSERA_MMA_UNROLL
    for (int mt = 0; mt < MT; ++mt) {
      scale_scores(s[mt], scale2, r0 + 16 * mt, k0, p, lane);
      TESSERA_MMA_UNROLL
      for (int half = 0; half < 2; ++half) {
        StickRun st;
        TESSERA_STICK_WALK(n, e) {
          float& x = s[mt][n][2 * half + e];
          float a;
          st.step<W>(x, a);
          x = a;
        }
        const float lg = stick_walk_log2<D>(w, st.run, half, Qs, warp * 16 * MT + 16 * mt,
                                            tile(M::kv(stage)), scale2, r0 + 16 * mt, k0, p, lane);
        float total;
        const float f = W::exp2(carry[mt][half] + quad_after(w, lg, c, total));
        TESSERA_MMA_UNROLL
        for (int n = 0; n < 8; ++n) {
          s[mt][n][2 * half] *= f;
          s[mt][n][2 * half + 1] *= f;
        }
        carry[mt][half] += total;
      }
    }
    if constexpr (kStages == 1) {
      w.cp_async_wait_all();  // V is in
      w.sync_block();         // and every warp is done with K
      if (kt > 0) {
        load_k(kt - 1, 0);
        w.cp_async_commit();
      }
    }
    tile_pm<D, MT, StickKeys>(w, o, s, tile(M::kv(stage) + M::tile), lane);  // O += A V
    if constexpr (kStages == 1) {
      w.cp_async_wait_all();  // the next K is in
      w.sync_block();         // and every warp is done with V
    }
  }

  TESSERA_MMA_UNROLL
  for (int mt = 0; mt < MT; ++mt) {
    TESSERA_MMA_UNROLL
    for (int half = 0; half < 2; ++half) {
      const int64_t i = r0 + 16 * mt + g + 8 * half;
      if (i >= T) continue;
      const float left = W::exp2(carry[mt][half]);  // rem_i, the stick left over
      if (p.add_remainder) {  // out_i += rem_i v_i
        const uint16_t* vi = vh + i * p.v.t;
        TESSERA_MMA_UNROLL
        for (int n = 0; n < D / 8; ++n)
          for (int e = 0; e < 2; ++e)
            o[mt][n][2 * half + e] += left * bf16_value(vi[n * 8 + 2 * c + e]);
      }
      if (c == 0) {
        log_rem[stat_at(bh, i, T, lse_t)] = carry[mt][half] * kLn2;
        if (rem) rem[stat_at(bh, i, T, lse_t)] = uint16_t(W::pack_bf16x2(left, 0.0f) & 0xffffu);
      }
    }
    store_rows<D, W>(out + p.o.row(hi.b, hi.h, 0), r0 + 16 * mt, T, p.o.t, o[mt], 1.0f, 1.0f,
                     lane);
  }
}

// dQ of query tile qt of grid row bh, and the checkpoints. Warp w owns queries q0 + 16 w .. + 15:
// S = Q K^T and dA = dO V^T, then dQ += dz K, in registers; key tiles from the diagonal down, the
// next one's K and V streaming into the other stage (flash_mma_backward.h's BackwardSmem).
// wrow (B, H, T): W = dO . out per row; ckpt as StickCkpt.
template <int D, class W>
TESSERA_MMA_FN void stick_backward_dq_block(W& w, uint16_t* dq, StickCkpt* ckpt, const uint16_t* q,
                                            const uint16_t* k, const uint16_t* v,
                                            const uint16_t* dout, const float* wrow,
                                            const StickParams& p, int64_t qt, int64_t bh,
                                            int64_t lse_t = 0, int64_t ckpt_base = 0) {
  using M = BackwardSmem<D>;
  auto tile = [&](size_t at) { return reinterpret_cast<uint16_t*>(w.smem() + at); };
  uint16_t* Qs = tile(M::a);
  uint16_t* dOs = tile(M::b);
  const int warp = w.thread() / 32, lane = w.thread() % 32, g = lane / 4, c = lane % 4;
  const HeadIndex hi = head_index(bh, p);
  const int64_t T = p.T, q0 = qt * kMmaTile, r0 = q0 + warp * 16;
  const int64_t tiles = (T + kMmaTile - 1) / kMmaTile;
  const float scale2 = p.scale * kLog2e;
  const uint16_t* kh = k + p.k.row(hi.b, hi.g, 0);
  const uint16_t* vh = v + p.v.row(hi.b, hi.g, 0);
  const int64_t last = last_key(q0, kMmaTile, p), kt1 = last >= 0 ? last / kMmaTile : -1;
  auto fetch = [&](int64_t kt, int s) {  // key tile kt's K and V into stage s
    load_tile_async<D>(w, tile(M::c(s)), kh, kt * kMmaTile, T, p.k.t);
    load_tile_async<D>(w, tile(M::d(s)), vh, kt * kMmaTile, T, p.v.t);
    w.cp_async_commit();
  };

  load_tile_async<D>(w, Qs, q + p.q.row(hi.b, hi.h, 0), q0, T, p.q.t);
  load_tile_async<D>(w, dOs, dout + p.dout.row(hi.b, hi.h, 0), q0, T, p.dout.t);
  if (kt1 >= 0) fetch(kt1, 0);
  float wr[2], carry[2] = {0.0f, 0.0f}, gsum[2] = {0.0f, 0.0f};  // this lane's two rows
  TESSERA_MMA_UNROLL
  for (int half = 0; half < 2; ++half) {
    const int64_t i = r0 + g + 8 * half;
    wr[half] = i < T ? wrow[stat_at(bh, i, T, lse_t)] : 0.0f;
  }
  float dqa[1][D / 8][4];
  TESSERA_MMA_UNROLL
  for (int n = 0; n < D / 8; ++n)
    for (int e = 0; e < 4; ++e) dqa[0][n][e] = 0.0f;

  for (int64_t kt = kt1; kt >= 0; --kt) {
    const int s = int((kt1 - kt) & 1);
    w.cp_async_wait_all();  // key tile kt is in
    w.sync_block();         // and every warp is done with stage s ^ 1
    if (kt > 0) fetch(kt - 1, s ^ 1);
    const uint16_t* Ks = tile(M::c(s));
    const uint16_t* Vs = tile(M::d(s));
    const int64_t k0 = kt * kMmaTile;
    float sc[1][8][4], dp[1][8][4];
    tile_abt<D, 1, StickKeys>(w, sc, Qs, warp * 16, Ks, lane);   // S = Q K^T
    tile_abt<D, 1, StickKeys>(w, dp, dOs, warp * 16, Vs, lane);  // dA = dO V^T
    scale_scores(sc[0], scale2, r0, k0, p, lane);
    TESSERA_MMA_UNROLL
    for (int half = 0; half < 2; ++half) {
      // First walk: beta into sc, h = beta (prod after) dA into dp; g = f h once the lane's factor
      // f is known.
      StickRun st;
      float hs = 0.0f;
      TESSERA_STICK_WALK(n, e) {
        float& x = sc[0][n][2 * half + e];
        float& y = dp[0][n][2 * half + e];
        float a;
        x = st.step<W>(x, a);
        y *= a;
        hs += y;
      }
      // log2 of the lane's product: -inf where it left f32's range, which changes nothing here.
      // A log that low only ever becomes a factor f = 2^log (here and in the dK dV pass), 0 in f32
      // whether the log is exact or -inf, for this lane's keys and every key before them; and no
      // sum of logs meets a +inf. (The forward's log rem, an output, takes the exact logs.)
      const float lg = W::log2(st.run);
      const int64_t i = r0 + g + 8 * half;
      float log_total, g_total;
      const float log2_after = carry[half] + quad_after(w, lg, c, log_total);
      const float f = W::exp2(log2_after);
      const float g_after = gsum[half] + quad_after(w, f * hs, c, g_total);
      if (i < T) ckpt[ckpt_base + ckpt_index(bh, kt, i, c, T, tiles)] = {log2_after, g_after};
      // Second walk: dz = g - beta (W - g over the keys after), t = W - g over the keys after.
      float t = wr[half] - g_after;
      TESSERA_STICK_WALK(n, e) {
        float& y = dp[0][n][2 * half + e];
        const float fh = f * y;
        y = fh - sc[0][n][2 * half + e] * t;
        t -= fh;
      }
      carry[half] += log_total;
      gsum[half] += g_total;
    }
    tile_pm<D, 1, StickKeys>(w, dqa, dp, Ks, lane);  // dQ += dz K
  }
  store_rows<D, W>(dq + p.dq.row(hi.b, hi.h, 0), r0, T, p.dq.t, dqa[0], p.scale, p.scale, lane);
}

// The dK dV pass's tiles: K and V (kept), kStages stages of the streamed Q and dO, then A and dz
// of the current tile pair, [query][key] bf16 (64 x 64, rows kLd<64> apart).
template <int D, int kStages>
struct StickDkdvSmem {
  static constexpr size_t kPair = size_t(kMmaTile) * kLd<kMmaTile> * 2;
  static constexpr size_t k = 0, v = kTileBytes<D>;
  static constexpr size_t q(int stage) { return (2 + 2 * size_t(stage)) * kTileBytes<D>; }
  static constexpr size_t dout(int stage) { return (3 + 2 * size_t(stage)) * kTileBytes<D>; }
  static constexpr size_t a = (2 + 2 * size_t(kStages)) * kTileBytes<D>, dz = a + kPair,
                          bytes = dz + kPair;
};

// 8 bf16 as one 16-byte word.
struct alignas(16) Keys8 {
  uint32_t w[4];
};

// acc (16 x D) += at[:, key0 .. key0 + 16)^T (the transpose of 16 columns of a [64][kLd<64>] tile)
// @ m (the 64 rows x D of tile m).
template <int D, class W>
TESSERA_MMA_FN void tile_atm(W& w, float (&acc)[D / 8][4], const uint16_t* at, int key0,
                             const uint16_t* m, int lane) {
  TESSERA_MMA_UNROLL
  for (int ks = 0; ks < 4; ++ks) {
    uint32_t af[4];
    w.ldmatrix_x4_trans(af, bt_row<kMmaTile>(at, ks * 16, key0, lane));
    TESSERA_MMA_UNROLL
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t bf[4];
      w.ldmatrix_x4_trans(bf, a_row<D>(m, ks * 16, dp * 16, lane));
      mma_pair(w, acc[2 * dp], acc[2 * dp + 1], af, bf);
    }
  }
}

// dK, dV of key tile kt of kv head bkv = b Hkv + hk: over the G query heads of the group and every
// query tile from kt on (the items, head-major). For each item the warps own query rows: S, dA, and
// from the checkpoints A and dz into shared memory; then the warps own keys k0 + 16 w .. + 15:
// dV += A^T dO, dK += dz^T Q. With kStages = 2 the next item's Q and dO stream in while this one is
// used; with 1 they load after it (less shared memory: D 128 keeps 2 blocks per SM).
template <int D, int kStages, class W>
TESSERA_MMA_FN void stick_backward_dkdv_block(
    W& w, uint16_t* dk, uint16_t* dv, const StickCkpt* ckpt, const uint16_t* q, const uint16_t* k,
    const uint16_t* v, const uint16_t* dout, const float* wrow, const float* log_rem,
    const StickParams& p, int64_t kt, int64_t bkv, int64_t lse_t = 0, int64_t ckpt_base = 0) {
  using M = StickDkdvSmem<D, kStages>;
  auto tile = [&](size_t at) { return reinterpret_cast<uint16_t*>(w.smem() + at); };
  uint16_t* Ks = tile(M::k);
  uint16_t* Vs = tile(M::v);
  uint16_t* As = tile(M::a);
  uint16_t* dZs = tile(M::dz);
  const int warp = w.thread() / 32, lane = w.thread() % 32, g = lane / 4, c = lane % 4;
  const int64_t b = bkv / p.Hkv, hk = bkv % p.Hkv, G = p.H / p.Hkv;
  const int64_t T = p.T, k0 = kt * kMmaTile, tiles = (T + kMmaTile - 1) / kMmaTile;
  const float scale2 = p.scale * kLog2e;
  // Queries attending a key of this tile start at k0 (or k0 + 1), inside query tile kt.
  const int64_t q_tiles = tiles - kt, items = G * q_tiles, q0_end = tiles * kMmaTile;
  auto fetch = [&](const DkdvItem& x, int s) {
    load_tile_async<D>(w, tile(M::q(s)), q + p.q.row(b, x.h, 0), x.q0, T, p.q.t);
    load_tile_async<D>(w, tile(M::dout(s)), dout + p.dout.row(b, x.h, 0), x.q0, T, p.dout.t);
    w.cp_async_commit();
  };
  // An item's checkpoints and W for this lane's rows; rows attending no key of this tile (past T,
  // or the tile's first query when it may not attend itself) have none and weigh nothing.
  struct Rows {
    StickCkpt ck[2];
    float w[2];
  };
  auto rows_of = [&](const DkdvItem& x) {
    Rows r;
    const int64_t bh = b * p.H + x.h;
    TESSERA_MMA_UNROLL
    for (int half = 0; half < 2; ++half) {
      const int64_t i = x.q0 + warp * 16 + g + 8 * half;
      const bool any = i < T && (p.attend_current ? i >= k0 : i > k0);
      r.ck[half] =
          any ? ckpt[ckpt_base + ckpt_index(bh, kt, i, c, T, tiles)] : StickCkpt{0.0f, 0.0f};
      r.w[half] = any ? wrow[stat_at(bh, i, T, lse_t)] : 0.0f;
    }
    return r;
  };

  load_tile_async<D>(w, Ks, k + p.k.row(b, hk, 0), k0, T, p.k.t);
  load_tile_async<D>(w, Vs, v + p.v.row(b, hk, 0), k0, T, p.v.t);
  DkdvItem item{hk * G, k0};  // item it: queries attending this tile start in query tile kt
  fetch(item, 0);
  Rows rows = rows_of(item);

  float dka[D / 8][4], dva[D / 8][4];
  TESSERA_MMA_UNROLL
  for (int n = 0; n < D / 8; ++n)
    for (int e = 0; e < 4; ++e) dka[n][e] = dva[n][e] = 0.0f;
  for (int64_t it = 0; it < items; ++it) {
    const int s = kStages == 2 ? int(it & 1) : 0;
    w.cp_async_wait_all();  // item it's tiles are in
    w.sync_block();         // and every warp is done with the last item's A, dz and stage
    const bool more = it + 1 < items;
    const DkdvItem next = next_item(item, k0, q0_end);
    if (kStages == 2 && more) fetch(next, s ^ 1);
    const uint16_t* Qs = tile(M::q(s));
    const uint16_t* dOs = tile(M::dout(s));
    const int64_t r0 = item.q0 + warp * 16;
    const Rows cur = rows;
    if (more) rows = rows_of(next);  // in flight during the products
    float sc[1][8][4], dp[1][8][4];
    tile_abt<D, 1, StickKeys>(w, sc, Qs, warp * 16, Ks, lane);   // S = Q K^T
    tile_abt<D, 1, StickKeys>(w, dp, dOs, warp * 16, Vs, lane);  // dA = dO V^T
    scale_scores(sc[0], scale2, r0, k0, p, lane);
    TESSERA_MMA_UNROLL
    for (int half = 0; half < 2; ++half) {
      // st.run: f (the checkpoint's factor for the keys past the lane's) times the product of
      // (1 - beta) over the lane's keys after the current one; t: W minus the sum of g over every
      // key after the current one (the checkpoint's, then the lane's walked so far).
      StickRun st{W::exp2(cur.ck[half].log2_after)};
      float t = cur.w[half] - cur.ck[half].g_after;
      const int at = (warp * 16 + g + 8 * half) * kLd<kMmaTile> + 16 * c;
      Keys8 a_out, dz_out;  // 8 of the lane's keys of A and dz, bf16
      TESSERA_MMA_UNROLL
      for (int n = 7; n >= 0; --n) {
        float a[2] = {0.0f, 0.0f}, dz[2] = {0.0f, 0.0f};
        TESSERA_MMA_UNROLL
        for (int e = 1; e >= 0; --e) {  // a key not attended: u = -inf, a = dz = 0
          const float beta = st.step<W>(sc[0][n][2 * half + e], a[e]);
          const float gk = a[e] * dp[0][n][2 * half + e];
          dz[e] = gk - beta * t;
          t -= gk;
        }
        a_out.w[n % 4] = W::pack_bf16x2(a[0], a[1]);
        dz_out.w[n % 4] = W::pack_bf16x2(dz[0], dz[1]);
        // The lane's keys are 32 contiguous bytes of the row. 16-byte stores cover every bank 4
        // times, the least a warp's 512 bytes need; 4-byte ones (a key pair) hit 8 banks 4 times
        // each. At D 128 the wide stores' 6 more live registers cost 20 bytes of spill (nvcc
        // 13.0, sm_90), so it keeps the narrow ones.
        if constexpr (D == 64) {
          if (n % 4 == 0) {
            reinterpret_cast<Keys8*>(As + at)[n / 4] = a_out;
            reinterpret_cast<Keys8*>(dZs + at)[n / 4] = dz_out;
          }
        } else {
          reinterpret_cast<uint32_t*>(As + at)[n] = a_out.w[n % 4];
          reinterpret_cast<uint32_t*>(dZs + at)[n] = dz_out.w[n % 4];
        }
      }
    }
    w.sync_block();  // every warp's rows of A and dz are in
    tile_atm<D>(w, dva, As, warp * 16, dOs, lane);  // dV += A^T dO
    tile_atm<D>(w, dka, dZs, warp * 16, Qs, lane);  // dK += dz^T Q
    if (kStages == 1 && more) {
      w.sync_block();  // every warp is done with Q and dO
      fetch(next, 0);
    }
    item = next;
  }
  // out_j += rem_j v_j: dv_j += rem_j dout_j over the group's heads.
  const int64_t j0 = k0 + warp * 16;
  if (p.add_remainder)
    for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {
      const int64_t bh = b * p.H + h;
      TESSERA_MMA_UNROLL
      for (int half = 0; half < 2; ++half) {
        const int64_t j = j0 + g + 8 * half;
        if (j >= T) continue;
        const float left = W::exp2(log_rem[stat_at(bh, j, T, lse_t)] * kLog2e);
        const uint16_t* dj = dout + p.dout.row(b, h, j);
        TESSERA_MMA_UNROLL
        for (int n = 0; n < D / 8; ++n)
          for (int e = 0; e < 2; ++e) dva[n][2 * half + e] += left * bf16_value(dj[n * 8 + 2 * c + e]);
      }
    }
  store_rows<D, W>(dv + p.dv.row(b, hk, 0), j0, T, p.dv.t, dva, 1.0f, 1.0f, lane);
  store_rows<D, W>(dk + p.dk.row(b, hk, 0), j0, T, p.dk.t, dka, p.scale, p.scale, lane);
}

#undef TESSERA_STICK_WALK

}  // namespace mma
}  // namespace tessera::cuda::attn
