// The bf16 attention backward on register tiles (FlashAttention-2, Dao 2023, arXiv:2307.08691,
// Algorithm 2): the bodies of the dK dV kernel (a key tile's block over every query tile that sees
// it) and of the dQ kernel (a query tile's block over the key tiles it sees), deterministic, no
// atomics; dS recomputed by each, or stored by dK dV for flash_mma_ds.h's dQ. The fragments,
// tiles, masks, the biases (ALiBi's, the forget gate's), context type W and tile policies are
// flash_mma.h's; kernels/flash_launch.cuh launches these bodies.
// With the forget gate (kBias Forget) the two bodies also write its gradient, dL/dc[t] =
// sum_j dS[t, j] - sum_i dS[i, t] per query head (backend/attention_mask.h), each in its own pass:
// a dK dV block owns its key tile's columns, so it sums them over its items (the query tiles of
// each head of its group, in order) and writes dL/dc = -colsum; a dQ block owns its query tile's
// rows of one head, so it sums them over its key tiles and adds rowsum to what dK dV wrote, the
// dK dV kernel having run first on the same stream (flash_launch.cuh's launches). Both sum the
// same numbers, the f32 dS, or where dK dV stores dS for flash_mma_ds.h's dQ the stored bf16
// values, so that dL/dc sums to zero over a row but for f32 rounding. Each (head, position) is
// written once by each pass, by one lane, its sums in a fixed order: no atomics, the same bits on
// every run.
#pragma once

#include <cstdint>
#include <cstring>

#include "flash_mma.h"

namespace tessera::cuda::attn::mma {

// Where the stored dS of query tile qt and key tile kt (kt <= qt) of grid row bh lies in the
// scratch (elements): each row's causal tile pairs one after another, query tile by query tile,
// each a 64 x 64 bf16 tile of dS^T (keys down its rows, queries along them, as dK dV computes it).
constexpr int64_t ds_tiles_per_row(int64_t T) {  // host and device
  const int64_t tiles = (T + kMmaTile - 1) / kMmaTile;
  return tiles * (tiles + 1) / 2;
}
constexpr int64_t ds_tile(int64_t bh, int64_t qt, int64_t kt, int64_t T) {
  return (bh * ds_tiles_per_row(T) + qt * (qt + 1) / 2 + kt) * kMmaTile * kMmaTile;
}

// The sum of a packed pair of bf16 (an A fragment's register, or dS^T's as stored), in f32.
TESSERA_MMA_FN float bf16x2_sum(uint32_t u) {
  const uint32_t lo = u << 16, hi = u & 0xffff0000u;
  float a, b;
  std::memcpy(&a, &lo, sizeof a);
  std::memcpy(&b, &hi, sizeof b);
  return a + b;
}

// The queries' share of the forget gate's gradient at a warp's 16 query rows r0 .. r0 + 15 of
// grad (a query head's T entries): dc, this lane's partial sums of dS over its rows g and g + 8,
// summed over a row's four lanes in a fixed order (lane c ^ 1, then c ^ 2, as dK dV sums its
// keys') and added by the row's lane c = 0 alone to the keys' share that the dK dV pass wrote.
// Rows past T are left alone.
template <class W>
TESSERA_MMA_FN void add_forget_rows(W& w, float* grad, const float (&dc)[2], int64_t r0, int64_t T,
                                    int lane) {
  TESSERA_MMA_UNROLL
  for (int half = 0; half < 2; ++half) {
    float t = dc[half] + w.shfl_xor(dc[half], 1);  // the four lanes of a row
    t += w.shfl_xor(t, 2);
    const int64_t i = r0 + lane / 4 + 8 * half;
    if (lane % 4 == 0 && i < T) grad[i] += t;
  }
}

template <int D, class Tiles = RowTiles>
struct BackwardSmem {
  // a, b: the tiles a block keeps (K, V for dK dV; Q, dO for dQ); c, d: the two tiles that stream
  // (Q, dO; K, V), in two stages so that the next pair loads while this one is used; then two
  // stages of the streamed query tile's statistics (dK dV only).
  static constexpr size_t tile = Tiles::template bytes<D>;
  static constexpr size_t a = 0, b = tile;
  static constexpr size_t c(int stage) { return (2 + 2 * size_t(stage)) * tile; }
  static constexpr size_t d(int stage) { return (3 + 2 * size_t(stage)) * tile; }
  static constexpr size_t stats(int stage) {
    return 6 * tile + size_t(stage) * 2 * kMmaTile * sizeof(float);
  }
  static constexpr size_t bytes = stats(2);
};

// An item of a dK dV block: query head h of its kv head's group and the query tile at q0. Items go
// head-major, each head's tiles from q0_first up to q0_end; the next one is stepped to, not divided
// out of the item's index (a 64-bit division is ~15 instructions inline where its operands fit 32
// bits, a call where they do not).
struct DkdvItem {
  int64_t h, q0;
};
TESSERA_MMA_FN DkdvItem next_item(const DkdvItem& x, int64_t q0_first, int64_t q0_end) {
  return x.q0 + kMmaTile < q0_end ? DkdvItem{x.h, x.q0 + kMmaTile} : DkdvItem{x.h + 1, q0_first};
}

// dK, dV of key tile kt of kv head (b, g) = bkv: over the G query heads of the group and every
// query tile that sees the key tile (the items, head-major). Warp w owns keys k0 + 16 w .. + 15,
// the rows of S^T = K Q^T and dP^T = V dO^T; then dV += P^T dO and dK += dS^T Q, all four in
// registers. Item it + 1's Q and dO tiles stream into the other stage while item it is used.
// kHoldKV: K and V, the left operands of S^T and dP^T, taken into registers (Tiles::hold) for
// the products instead of read by them from their tiles. They are taken again at every item, as
// the value of the item's own LDSM: held once across the loop, ptxas (nvcc 13.0, sm_90a) gave
// their registers to the packed P^T and dS^T of the first item (the SASS shows F2FP rewriting the
// LDSM destinations before the next item's HGMMA reads them), and on the H200 every item after
// the first came out wrong. scripts/sass_wgmma_check.py finds that pattern in a listing.
template <int D, class Tiles = RowTiles, bool kHoldKV = false, bool kStoreDs = false,
          ScoreBias kBias = ScoreBias::None, class W>
TESSERA_MMA_FN void backward_dkdv_block(W& w, uint16_t* dk, uint16_t* dv, const uint16_t* q,
                                        const uint16_t* k, const uint16_t* v, const uint16_t* dout,
                                        const float* lse, const float* drow, const FlashParams& p,
                                        int64_t kt, int64_t bkv, uint16_t* ds = nullptr,
                                        int64_t lse_t = 0) {
  using M = BackwardSmem<D, Tiles>;
  auto tile = [&](size_t at) { return reinterpret_cast<uint16_t*>(w.smem() + at); };
  uint16_t* Ks = tile(M::a);
  uint16_t* Vs = tile(M::b);
  const int warp = w.thread() / 32, lane = w.thread() % 32, c = lane % 4;
  const int64_t b = bkv / p.Hkv, hk = bkv % p.Hkv, G = p.H / p.Hkv;
  const int64_t T = p.T, k0 = kt * kMmaTile, j0 = k0 + warp * 16;
  const float scale2 = p.scale * kLog2e;
  const int64_t q_tiles = last_query(k0, p) / kMmaTile - kt + 1, items = G * q_tiles;
  const int64_t q0_end = k0 + q_tiles * kMmaTile;
  // An item's Q and dO tiles into stage s (a cp.async group of their own, with K and V for the
  // first); its row statistics (lse in base 2, the rows' dO.O) for this thread's row, if it has
  // one.
  auto fetch = [&](const DkdvItem& x, int s) {
    Tiles::template load<D, kMmaTile>(w, tile(M::c(s)), q + p.q.row(b, x.h, 0), x.q0, T, p.q.t);
    Tiles::template load<D, kMmaTile>(w, tile(M::d(s)), dout + p.dout.row(b, x.h, 0), x.q0, T,
                                      p.dout.t);
    w.cp_async_commit();
  };
  auto row_stats = [&](const DkdvItem& x, float& l2, float& dd) {
    const int64_t bh = b * p.H + x.h, i = x.q0 + w.thread();
    l2 = i < T ? lse[stat_at(bh, i, T, lse_t)] * kLog2e : INFINITY;
    dd = i < T ? drow[stat_at(bh, i, T, lse_t)] : 0.0f;
  };
  auto put_stats = [&](int s, float l2, float dd) {
    float* st = reinterpret_cast<float*>(w.smem() + M::stats(s));
    st[w.thread()] = l2;
    st[kMmaTile + w.thread()] = dd;
  };
  const bool stats_thread = w.thread() < kMmaTile;

  Tiles::template load<D, kMmaTile>(w, Ks, k + p.k.row(b, hk, 0), k0, T, p.k.t);
  Tiles::template load<D, kMmaTile>(w, Vs, v + p.v.row(b, hk, 0), k0, T, p.v.t);
  DkdvItem item{hk * G, k0};  // item it
  fetch(item, 0);
  if (stats_thread) {
    float l2, dd;
    row_stats(item, l2, dd);
    put_stats(0, l2, dd);
  }

  float dka[1][D / 8][4], dva[1][D / 8][4];
  TESSERA_MMA_UNROLL
  for (int n = 0; n < D / 8; ++n)
    for (int e = 0; e < 4; ++e) dka[0][n][e] = dva[0][n][e] = 0.0f;
  // The forget gate: this lane's partial sums of the item's head's dS over its queries, for keys
  // j0 + g and j0 + g + 8.
  [[maybe_unused]] float dc[2] = {0.0f, 0.0f};
  for (int64_t it = 0; it < items; ++it) {
    const int s = int(it & 1);
    w.cp_async_wait_all();  // item it's tiles are in
    w.sync_block();         // and its statistics; every warp is done with stage s ^ 1
    const bool more = it + 1 < items;
    const DkdvItem next = next_item(item, k0, q0_end);
    float next_l2 = 0.0f, next_dd = 0.0f;
    if (more) {
      fetch(next, s ^ 1);
      if (stats_thread) row_stats(next, next_l2, next_dd);
    }
    const uint16_t* Qs = tile(M::c(s));
    const uint16_t* dOs = tile(M::d(s));
    const float* lse_s = reinterpret_cast<const float*>(w.smem() + M::stats(s));
    const float* d_s = lse_s + kMmaTile;
    const int64_t q0 = item.q0;
    float st[1][8][4], dpt[1][8][4];
    if constexpr (kHoldKV) {  // S^T = K Q^T and dP^T = V dO^T, K and V taken again (see above)
      typename Tiles::template Held<D, 1> kheld, vheld;
      Tiles::template hold<D, 1>(w, kheld, Ks, warp * 16, lane);
      Tiles::template hold<D, 1>(w, vheld, Vs, warp * 16, lane);
      Tiles::template abt_held2<D>(w, st, kheld, Ks, Qs, dpt, vheld, Vs, dOs, warp * 16, lane);
    } else {
      Tiles::template abt2<D>(w, st, Ks, Qs, dpt, Vs, dOs, warp * 16, lane);
    }
    if constexpr (kBias != ScoreBias::None) {  // x = S^T scale2 with the item's head's bias, P^T
      if constexpr (kBias == ScoreBias::Alibi)
        alibi_tile<false>(st[0], q0 - j0, scale2, alibi_slope2(item.h, p), lane);
      if constexpr (kBias == ScoreBias::Forget) {  // rows: keys; columns: queries
        const ForgetRows<1> keys = forget_rows<1>(p, b * p.H + item.h, j0, lane);
        forget_tile<false>(st[0], keys.at[0], keys.c + q0, T - q0, scale2, kLog2e, lane);
      }
      TESSERA_MMA_UNROLL
      for (int n = 0; n < 8; ++n) {
        TESSERA_MMA_UNROLL
        for (int e = 0; e < 4; ++e)
          st[0][n][e] = w.exp2(st[0][n][e] - lse_s[n * 8 + 2 * c + (e & 1)]);
      }
    } else {
      TESSERA_MMA_UNROLL
      for (int n = 0; n < 8; ++n) {
        TESSERA_MMA_UNROLL
        for (int e = 0; e < 4; ++e) {
          const int col = n * 8 + 2 * c + (e & 1);  // the query, within the tile
          st[0][n][e] = w.exp2(st[0][n][e] * scale2 - lse_s[col]);
        }
      }
    }
    if (!all_visible(q0, kMmaTile, j0, 16, p))  // rows: keys; columns: queries
      mask_tile<false>(st[0], tile_visibility(q0, j0, p), 0.0f, lane);
    TESSERA_MMA_UNROLL
    for (int n = 0; n < 8; ++n) {
      TESSERA_MMA_UNROLL
      for (int e = 0; e < 4; ++e)
        dpt[0][n][e] = st[0][n][e] * (dpt[0][n][e] - d_s[n * 8 + 2 * c + (e & 1)]);
    }
    // The forget gate: dS^T's rows, in f32 before dS meets bf16; with kStoreDs the bf16 values
    // stored, whose row sums the stored dQ adds, so that the two shares cancel over a row.
    if constexpr (kBias == ScoreBias::Forget) {
      TESSERA_MMA_UNROLL
      for (int n = 0; n < 8; ++n) {
        if constexpr (kStoreDs) {
          for (int half = 0; half < 2; ++half)
            dc[half] += bf16x2_sum(W::pack_bf16x2(dpt[0][n][2 * half], dpt[0][n][2 * half + 1]));
        } else {
          for (int e = 0; e < 4; ++e) dc[e >> 1] += dpt[0][n][e];
        }
      }
      if (!more || next.h != item.h) {  // the head's last item: its keys' sums are whole
        TESSERA_MMA_UNROLL
        for (int half = 0; half < 2; ++half) {
          float t = dc[half] + w.shfl_xor(dc[half], 1);  // the four lanes of a key
          t += w.shfl_xor(t, 2);
          const int64_t j = j0 + lane / 4 + 8 * half;
          if (c == 0 && j < T) p.forget_grad[(b * p.H + item.h) * T + j] = -t;
          dc[half] = 0.0f;
        }
      }
    }
    if constexpr (kStoreDs)  // this warp's 16 keys of dS^T, for flash_mma_ds.h
      store_rows<kMmaTile, W>(ds + ds_tile(b * p.H + item.h, q0 / kMmaTile, kt, p.T), warp * 16,
                              kMmaTile, kMmaTile, dpt[0], 1.0f, 1.0f, lane);
    Tiles::template pm2<D>(w, dva, st, dOs, dka, dpt, Qs, lane);  // dV += P^T dO, dK += dS^T Q
    // Stage s ^ 1's statistics were last read by item it - 1, before this item's barrier.
    if (more && stats_thread) put_stats(s ^ 1, next_l2, next_dd);
    item = next;
  }
  store_rows<D, W>(dv + p.dv.row(b, hk, 0), j0, T, p.dv.t, dva[0], 1.0f, 1.0f, lane);
  store_rows<D, W>(dk + p.dk.row(b, hk, 0), j0, T, p.dk.t, dka[0], p.scale, p.scale, lane);
}

// dQ of query tile qt of grid row bh: over the key tiles it sees. Warp w owns queries
// q0 + 16 w .. + 15: S = Q K^T and dP = dO V^T, then dQ += dS K, in registers. The next key
// tile's K and V stream into the other stage while this one is used.
template <int D, class Tiles = RowTiles, ScoreBias kBias = ScoreBias::None, class W>
TESSERA_MMA_FN void backward_dq_block(W& w, uint16_t* dq, const uint16_t* q, const uint16_t* k,
                                      const uint16_t* v, const uint16_t* dout, const float* lse,
                                      const float* drow, const FlashParams& p, int64_t qt,
                                      int64_t bh, int64_t lse_t = 0) {
  using M = BackwardSmem<D, Tiles>;
  auto tile = [&](size_t at) { return reinterpret_cast<uint16_t*>(w.smem() + at); };
  uint16_t* Qs = tile(M::a);
  uint16_t* dOs = tile(M::b);
  const int warp = w.thread() / 32, lane = w.thread() % 32, g = lane / 4;
  const HeadIndex hi = head_index(bh, p);
  const int64_t T = p.T, q0 = qt * kMmaTile, r0 = q0 + warp * 16;
  const float scale2 = p.scale * kLog2e;
  const float alibi2 = kBias == ScoreBias::Alibi ? alibi_slope2(hi.h, p) : 0.0f;
  ForgetRows<1> forget;  // rows: this warp's queries
  if constexpr (kBias == ScoreBias::Forget) forget = forget_rows<1>(p, bh, r0, lane);
  // ... and this lane's partial sums of their dS over the keys, for queries r0 + g and r0 + g + 8.
  [[maybe_unused]] float dc[2] = {0.0f, 0.0f};
  const uint16_t* kh = k + p.k.row(hi.b, hi.g, 0);
  const uint16_t* vh = v + p.v.row(hi.b, hi.g, 0);
  const int64_t kt0 = first_key_tile(q0, p), kt1 = last_key_tile(q0, p);
  auto fetch = [&](int64_t kt, int s) {  // key tile kt's K and V into stage s
    Tiles::template load<D, kMmaTile>(w, tile(M::c(s)), kh, kt * kMmaTile, T, p.k.t);
    Tiles::template load<D, kMmaTile>(w, tile(M::d(s)), vh, kt * kMmaTile, T, p.v.t);
    w.cp_async_commit();
  };

  Tiles::template load<D, kMmaTile>(w, Qs, q + p.q.row(hi.b, hi.h, 0), q0, T, p.q.t);
  Tiles::template load<D, kMmaTile>(w, dOs, dout + p.dout.row(hi.b, hi.h, 0), q0, T, p.dout.t);
  fetch(kt0, 0);
  float lse2[2], dr[2];  // this lane's rows r0 + g and r0 + g + 8
  TESSERA_MMA_UNROLL
  for (int half = 0; half < 2; ++half) {
    const int64_t i = r0 + g + 8 * half;
    lse2[half] = i < T ? lse[stat_at(bh, i, T, lse_t)] * kLog2e : INFINITY;
    dr[half] = i < T ? drow[stat_at(bh, i, T, lse_t)] : 0.0f;
  }
  float dqa[1][D / 8][4];
  TESSERA_MMA_UNROLL
  for (int n = 0; n < D / 8; ++n)
    for (int e = 0; e < 4; ++e) dqa[0][n][e] = 0.0f;
  // Q and dO, the left operands of every product, held (Tiles::hold) at D 64; at D 128 in
  // CoreTiles' registers they would cost a block an SM (ptxas, sm_90a: 168 -> 239 registers).
  constexpr bool kHoldQdO = D <= 64;

  for (int64_t kt = kt0; kt <= kt1; ++kt) {
    const int s = next_stage(w, kt, kt0, kt1, fetch);
    const uint16_t* Ks = tile(M::c(s));
    const uint16_t* Vs = tile(M::d(s));
    const int64_t k0 = kt * kMmaTile;
    float sc[1][8][4], dp[1][8][4];
    if constexpr (kHoldQdO) {  // S = Q K^T and dP = dO V^T, Q and dO taken again (as dK dV's)
      typename Tiles::template Held<D, 1> qheld, doheld;
      Tiles::template hold<D, 1>(w, qheld, Qs, warp * 16, lane);
      Tiles::template hold<D, 1>(w, doheld, dOs, warp * 16, lane);
      Tiles::template abt_held2<D>(w, sc, qheld, Qs, Ks, dp, doheld, dOs, Vs, warp * 16, lane);
    } else {
      Tiles::template abt2<D>(w, sc, Qs, Ks, dp, dOs, Vs, warp * 16, lane);
    }
    if constexpr (kBias != ScoreBias::None) {  // x = S scale2 with the bias, then P
      if constexpr (kBias == ScoreBias::Alibi)
        alibi_tile<true>(sc[0], r0 - k0, scale2, alibi2, lane);
      if constexpr (kBias == ScoreBias::Forget)
        forget_tile<true>(sc[0], forget.at[0], forget.c + k0, T - k0, scale2, kLog2e, lane);
      TESSERA_MMA_UNROLL
      for (int n = 0; n < 8; ++n)
        for (int e = 0; e < 4; ++e) sc[0][n][e] = w.exp2(sc[0][n][e] - lse2[e >> 1]);
    } else {
      TESSERA_MMA_UNROLL
      for (int n = 0; n < 8; ++n)
        for (int e = 0; e < 4; ++e) sc[0][n][e] = w.exp2(sc[0][n][e] * scale2 - lse2[e >> 1]);
    }
    if (!all_visible(r0, 16, k0, kMmaTile, p))
      mask_tile<true>(sc[0], tile_visibility(r0, k0, p), 0.0f, lane);
    TESSERA_MMA_UNROLL
    for (int n = 0; n < 8; ++n)
      for (int e = 0; e < 4; ++e) sc[0][n][e] *= dp[0][n][e] - dr[e >> 1];  // dS
    if constexpr (kBias == ScoreBias::Forget) {  // dS's rows, in f32 before dS meets bf16
      TESSERA_MMA_UNROLL
      for (int n = 0; n < 8; ++n)
        for (int e = 0; e < 4; ++e) dc[e >> 1] += sc[0][n][e];
    }
    Tiles::template pm<D, 1>(w, dqa, sc, Ks, lane);  // dQ += dS K
  }
  store_rows<D, W>(dq + p.dq.row(hi.b, hi.h, 0), r0, T, p.dq.t, dqa[0], p.scale, p.scale, lane);
  if constexpr (kBias == ScoreBias::Forget)  // the queries' share, onto the keys' (dK dV's)
    add_forget_rows(w, p.forget_grad + bh * T, dc, r0, T, lane);
}

}  // namespace tessera::cuda::attn::mma
