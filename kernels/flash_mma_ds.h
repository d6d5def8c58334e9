// The attention backward's dQ from a stored dS (FlashKernels::MmaStoredDs): flash_mma_backward.h's
// backward_dkdv_block<..., kStoreDs> writes each tile pair's dS^T (mma::ds_tile), and the body here
// reads it with K instead of recomputing S and dP. The fragments, context type W and tile streams
// are flash_mma.h's.
#pragma once

#include <cstdint>

#include "flash_mma_backward.h"

namespace tessera::cuda::attn::mma {

// dQ of query tile qt of grid row bh from the dS that backward_dkdv_block stored (kStoreDs): over
// the key tiles it sees, dQ += dS K, with dS's A fragments read from its dS^T tile by
// ldmatrix.trans (bt_row's addresses: keys down the tile's rows, this warp's 16 queries along
// them). Where backward_dq_block recomputes S and dP for every tile pair (two of its three
// products and the exponentials), this reads 8 KB of dS a pair instead. The next key tile and its
// dS stream into the other stage while this one is used.
// kBias Forget: also the queries' share of the forget gate's gradient, the row sums of the bf16
// dS as read, added to the keys' share that the dK dV kernel summed from the same bf16 values
// when it stored them (flash_mma_backward.h). Any other bias is in dS already: its dQ is the
// plain one.
template <int D>
struct DqStoredSmem {
  static constexpr size_t k(int stage) { return size_t(stage) * kTileBytes<D>; }
  static constexpr size_t ds(int stage) {
    return 2 * kTileBytes<D> + size_t(stage) * kTileBytes<kMmaTile>;
  }
  static constexpr size_t bytes = ds(2);
};

template <int D, ScoreBias kBias = ScoreBias::None, class W>
TESSERA_MMA_FN void backward_dq_stored_block(W& w, uint16_t* dq, const uint16_t* k,
                                             const uint16_t* ds, const FlashParams& p, int64_t qt,
                                             int64_t bh) {
  using M = DqStoredSmem<D>;
  auto tile = [&](size_t at) { return reinterpret_cast<uint16_t*>(w.smem() + at); };
  const int warp = w.thread() / 32, lane = w.thread() % 32;
  const HeadIndex hi = head_index(bh, p);
  const int64_t T = p.T, q0 = qt * kMmaTile, r0 = q0 + warp * 16;
  const uint16_t* kh = k + p.k.row(hi.b, hi.g, 0);
  const int64_t kt0 = first_key_tile(q0, p), kt1 = last_key_tile(q0, p);
  auto fetch = [&](int64_t kt, int s) {  // key tile kt's K and dS^T into stage s
    load_tile_async<D>(w, tile(M::k(s)), kh, kt * kMmaTile, T, p.k.t);
    load_tile_async<kMmaTile>(w, tile(M::ds(s)), ds + ds_tile(bh, qt, kt, T), 0, kMmaTile,
                              kMmaTile);
    w.cp_async_commit();
  };
  fetch(kt0, 0);
  float dqa[D / 8][4];
  TESSERA_MMA_UNROLL
  for (int n = 0; n < D / 8; ++n)
    for (int e = 0; e < 4; ++e) dqa[n][e] = 0.0f;
  [[maybe_unused]] float dc[2] = {0.0f, 0.0f};  // the forget gate's, as backward_dq_block's
  for (int64_t kt = kt0; kt <= kt1; ++kt) {
    const int s = next_stage(w, kt, kt0, kt1, fetch);
    const uint16_t* Ks = tile(M::k(s));
    const uint16_t* dst = tile(M::ds(s));
    TESSERA_MMA_UNROLL
    for (int ks = 0; ks < 4; ++ks) {  // 16 keys at a time
      uint32_t af[4];
      w.ldmatrix_x4_trans(af, bt_row<kMmaTile>(dst, ks * 16, warp * 16, lane));
      if constexpr (kBias == ScoreBias::Forget) {  // af[0], af[2]: row g; af[1], af[3]: g + 8
        TESSERA_MMA_UNROLL
        for (int r = 0; r < 4; ++r) dc[r & 1] += bf16x2_sum(af[r]);
      }
      TESSERA_MMA_UNROLL
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bf[4];
        w.ldmatrix_x4_trans(bf, a_row<D>(Ks, ks * 16, dp * 16, lane));
        mma_pair(w, dqa[2 * dp], dqa[2 * dp + 1], af, bf);
      }
    }
  }
  store_rows<D, W>(dq + p.dq.row(hi.b, hi.h, 0), r0, T, p.dq.t, dqa, p.scale, p.scale, lane);
  if constexpr (kBias == ScoreBias::Forget)  // the queries' share, onto the keys'
    add_forget_rows(w, p.forget_grad + bh * T, dc, r0, T, lane);
}

}  // namespace tessera::cuda::attn::mma
