// Tests of the host warp emulator (warp_emulator.h). The expected fragment positions are restated
// here from the PTX ISA text ("Matrix Fragments for mma.m16n8k16 with floating point type";
// "Warp-level matrix load instruction: ldmatrix") in the form "thread 4 * r + j holds ...", not
// taken from the emulator's own layout functions, so a wrong layout there fails here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "warp_emulator.h"

namespace {

using tessera::emu::HostWarpCtx;
using tessera::emu::run_block;

uint16_t bf(float x) { return tessera::bf16(x).bits; }
uint32_t pack(float lo, float hi) { return uint32_t(bf(lo)) | uint32_t(bf(hi)) << 16; }

// Four 8x8 matrices of raw 16-bit codes whose rows are scattered through shared memory (row stride
// 48 bytes, matrices interleaved in the order 2, 0, 3, 1): ldmatrix rows need not be contiguous.
constexpr int kStride = 24;  // uint16 elements per smem row
int row_offset(int mat, int r) {
  static const int order[4] = {2, 0, 3, 1};
  return (r * 4 + order[mat]) * kStride;
}
uint16_t code(int mat, int r, int c) { return uint16_t(1 + mat * 64 + r * 8 + c); }

std::vector<uint32_t> load_four(bool trans, int threads) {
  std::vector<uint32_t> out(size_t(threads) * 4);
  run_block(threads, 32 * kStride * 2, [&](HostWarpCtx& w) {
    auto* s = reinterpret_cast<uint16_t*>(w.smem());
    if (w.thread() == 0)
      for (int m = 0; m < 4; ++m)
        for (int r = 0; r < 8; ++r)
          for (int c = 0; c < 8; ++c) s[row_offset(m, r) + c] = code(m, r, c);
    w.sync_block();
    const int lane = w.thread() % 32;
    uint32_t r[4];
    const uint16_t* row = s + row_offset(lane / 8, lane % 8);  // lane l: row l % 8 of matrix l / 8
    if (trans)
      w.ldmatrix_x4_trans(r, row);
    else
      w.ldmatrix_x4(r, row);
    for (int i = 0; i < 4; ++i) out[size_t(w.thread()) * 4 + size_t(i)] = r[i];
  });
  return out;
}

TEST(WarpEmulator, LdmatrixX4FollowsDocumentedFragmentLayout) {
  const auto out = load_four(false, 64);
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32;
    for (int i = 0; i < 4; ++i) {
      // Four consecutive threads hold one row: thread 4r + j gets columns 2j, 2j + 1 of row r.
      const int r = lane / 4, j = lane % 4;
      const uint32_t want = uint32_t(code(i, r, 2 * j)) | uint32_t(code(i, r, 2 * j + 1)) << 16;
      EXPECT_EQ(out[size_t(t) * 4 + size_t(i)], want) << "thread " << t << " matrix " << i;
    }
  }
}

TEST(WarpEmulator, LdmatrixX4TransFollowsDocumentedFragmentLayout) {
  const auto out = load_four(true, 32);
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      // Column-major load: thread 4r + j gets rows 2j, 2j + 1 of column r of the stored matrix.
      const int r = lane / 4, j = lane % 4;
      const uint32_t want = uint32_t(code(i, 2 * j, r)) | uint32_t(code(i, 2 * j + 1, r)) << 16;
      EXPECT_EQ(out[size_t(lane) * 4 + size_t(i)], want) << "lane " << lane << " matrix " << i;
    }
}

// C/D of m16n8k16, f32: thread 4g + t holds c0, c1 = (g, 2t), (g, 2t + 1) and c2, c3 = (g + 8, 2t),
// (g + 8, 2t + 1).
int c_m(int lane, int i) { return lane / 4 + (i >= 2 ? 8 : 0); }
int c_n(int lane, int i) { return 2 * (lane % 4) + i % 2; }

// Tile values: distinct integers in [-128, 127] (exact in bf16), a different cyclic shift per warp;
// products and sums stay far below 2^24, so every result is exact in f32.
float a_val(int w, int m, int k) { return float((m * 16 + k + 37 * w) % 256 - 128); }
float b_val(int w, int k, int n) { return float((k * 16 + n + 91 * w) % 256 - 128); }
float c_val(int w, int m, int n) { return float(m * 100 - n * 7 + w); }

// A (16x16) by ldmatrix_x4, B (16 k x 16 n) by ldmatrix_x4 from an (n, k) copy or ldmatrix_x4_trans
// from a (k, n) copy, two m16n8k16 mmas (n 0..7, 8..15) on top of C; each warp its own tiles.
void mma_via_ldmatrix(bool b_trans) {
  constexpr int kWarps = 4, kLd = 24;  // padded row stride (48 bytes)
  constexpr int kTile = 16 * kLd;      // one 16x16 tile in smem
  std::vector<float> out(kWarps * 256, -1.f);
  run_block(32 * kWarps, kWarps * 2 * kTile * 2, [&](HostWarpCtx& w) {
    const int wid = w.thread() / 32, lane = w.thread() % 32;
    auto* s = reinterpret_cast<uint16_t*>(w.smem());
    uint16_t* sa = s + wid * 2 * kTile;  // A, row-major (m, k)
    uint16_t* sb = sa + kTile;           // B as (n, k) or as (k, n)
    for (int e = lane; e < 256; e += 32) {
      const int x = e / 16, y = e % 16;
      sa[x * kLd + y] = bf(a_val(wid, x, y));
      sb[x * kLd + y] =
          bf(b_trans ? b_val(wid, x, y) : b_val(wid, y, x));  // row x: k if trans, else n
    }
    w.sync_block();
    const int q = lane / 8, rr = lane % 8;
    uint32_t a[4], b[4];
    // a0a1 rows 0-7 k 0-7, a2a3 rows 8-15 k 0-7, a4a5 rows 0-7 k 8-15, a6a7 rows 8-15 k 8-15.
    w.ldmatrix_x4(a, sa + (rr + 8 * (q % 2)) * kLd + 8 * (q / 2));
    if (b_trans)  // matrices: (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15)
      w.ldmatrix_x4_trans(b, sb + (rr + 8 * (q % 2)) * kLd + 8 * (q / 2));
    else  // rows are n: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
      w.ldmatrix_x4(b, sb + (rr + 8 * (q / 2)) * kLd + 8 * (q % 2));
    for (int nb = 0; nb < 2; ++nb) {
      float d[4];
      for (int i = 0; i < 4; ++i) d[i] = c_val(wid, c_m(lane, i), 8 * nb + c_n(lane, i));
      w.mma_bf16_16816(d, a, b[2 * nb], b[2 * nb + 1]);
      for (int i = 0; i < 4; ++i)
        out[size_t(wid * 256 + c_m(lane, i) * 16 + 8 * nb + c_n(lane, i))] = d[i];
    }
  });
  for (int wid = 0; wid < kWarps; ++wid)
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n) {
        int64_t ref = int64_t(c_val(wid, m, n));
        for (int k = 0; k < 16; ++k) ref += int64_t(a_val(wid, m, k)) * int64_t(b_val(wid, k, n));
        ASSERT_EQ(out[size_t(wid * 256 + m * 16 + n)], float(ref))
            << "warp " << wid << " m " << m << " n " << n;
      }
}

TEST(WarpEmulator, MmaWithLdmatrixAAndBFromNKStore) { mma_via_ldmatrix(false); }
TEST(WarpEmulator, MmaWithLdmatrixAAndTransBFromKNStore) { mma_via_ldmatrix(true); }

// Fragments packed by hand from the documented A and B layouts, no ldmatrix involved.
TEST(WarpEmulator, MmaWithHandPackedFragments) {
  std::vector<float> out(16 * 8, -1.f);
  run_block(32, 0, [&](HostWarpCtx& w) {
    const int lane = w.thread(), g = lane / 4, t = lane % 4;
    // A: a0a1 (g, 2t..2t+1), a2a3 (g+8, 2t..), a4a5 (g, 2t+8..), a6a7 (g+8, 2t+8..).
    const uint32_t a[4] = {pack(a_val(0, g, 2 * t), a_val(0, g, 2 * t + 1)),
                           pack(a_val(0, g + 8, 2 * t), a_val(0, g + 8, 2 * t + 1)),
                           pack(a_val(0, g, 2 * t + 8), a_val(0, g, 2 * t + 9)),
                           pack(a_val(0, g + 8, 2 * t + 8), a_val(0, g + 8, 2 * t + 9))};
    // B: b0b1 (k 2t..2t+1, n g), b2b3 (k 2t+8..2t+9, n g).
    const uint32_t b0 = pack(b_val(0, 2 * t, g), b_val(0, 2 * t + 1, g));
    const uint32_t b1 = pack(b_val(0, 2 * t + 8, g), b_val(0, 2 * t + 9, g));
    float d[4] = {0, 0, 0, 0};
    w.mma_bf16_16816(d, a, b0, b1);
    for (int i = 0; i < 4; ++i) out[size_t(c_m(lane, i) * 8 + c_n(lane, i))] = d[i];
  });
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      int64_t ref = 0;
      for (int k = 0; k < 16; ++k) ref += int64_t(a_val(0, m, k)) * int64_t(b_val(0, k, n));
      EXPECT_EQ(out[size_t(m * 8 + n)], float(ref)) << "m " << m << " n " << n;
    }
}

// The flash-attention register reuse: the C fragments of S = Q K^T (two n-blocks of 8 keys), packed
// to bf16, are the A fragment of P for O = P V (C of block 0 -> a0..a3, block 1 -> a4..a7).
TEST(WarpEmulator, AccumulatorFragmentsReusedAsAFragment) {
  auto val = [](int salt, int r, int c) {
    return float((r * 7 + c * 3 + salt * 5 + r * c) % 5 - 2);
  };
  constexpr int kLd = 16;
  std::vector<float> out(256, -1.f);
  run_block(32, 3 * 256 * 2, [&](HostWarpCtx& w) {
    const int lane = w.thread(), q = lane / 8, rr = lane % 8;
    auto* s = reinterpret_cast<uint16_t*>(w.smem());
    uint16_t *sq = s, *sk = s + 256, *sv = s + 512;  // Q (m, d), K (key, d), V (key, d)
    for (int e = lane; e < 256; e += 32) {
      sq[e] = bf(val(0, e / 16, e % 16));
      sk[e] = bf(val(1, e / 16, e % 16));
      sv[e] = bf(val(2, e / 16, e % 16));
    }
    w.sync_block();
    uint32_t qa[4], kb[4], vb[4];
    w.ldmatrix_x4(qa, sq + (rr + 8 * (q % 2)) * kLd + 8 * (q / 2));
    w.ldmatrix_x4(kb, sk + (rr + 8 * (q / 2)) * kLd + 8 * (q % 2));        // K is B stored (n, k)
    w.ldmatrix_x4_trans(vb, sv + (rr + 8 * (q % 2)) * kLd + 8 * (q / 2));  // V is B stored (k, n)
    float s0[4] = {0, 0, 0, 0}, s1[4] = {0, 0, 0, 0};
    w.mma_bf16_16816(s0, qa, kb[0], kb[1]);
    w.mma_bf16_16816(s1, qa, kb[2], kb[3]);
    const uint32_t pa[4] = {
        HostWarpCtx::pack_bf16x2(s0[0], s0[1]), HostWarpCtx::pack_bf16x2(s0[2], s0[3]),
        HostWarpCtx::pack_bf16x2(s1[0], s1[1]), HostWarpCtx::pack_bf16x2(s1[2], s1[3])};
    for (int nb = 0; nb < 2; ++nb) {
      float o[4] = {0, 0, 0, 0};
      w.mma_bf16_16816(o, pa, vb[2 * nb], vb[2 * nb + 1]);
      for (int i = 0; i < 4; ++i) out[size_t(c_m(lane, i) * 16 + 8 * nb + c_n(lane, i))] = o[i];
    }
  });
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      double ref = 0;  // |S| <= 64: exact in bf16; every sum is an exact integer
      for (int key = 0; key < 16; ++key) {
        double sc = 0;
        for (int d = 0; d < 16; ++d) sc += double(val(0, m, d)) * val(1, key, d);
        ref += sc * val(2, key, n);
      }
      EXPECT_EQ(out[size_t(m * 16 + n)], float(ref)) << "m " << m << " n " << n;
    }
}

TEST(WarpEmulator, ShflXorExchangesWithinEachWarp) {
  std::vector<float> got(64 * 6, -1.f);
  run_block(64, 0, [&](HostWarpCtx& w) {
    const int t = w.thread();
    const float v = float((t / 32) * 100 + t % 32);
    for (int b = 0; b < 5; ++b) got[size_t(t * 6 + b)] = w.shfl_xor(v, 1 << b);
    float mx = v;  // max over the 4 lanes of a quad, as a row max over a C fragment
    mx = std::max(mx, w.shfl_xor(mx, 1));
    mx = std::max(mx, w.shfl_xor(mx, 2));
    got[size_t(t * 6 + 5)] = mx;
  });
  for (int t = 0; t < 64; ++t) {
    const int base = (t / 32) * 100, lane = t % 32;
    for (int b = 0; b < 5; ++b) EXPECT_EQ(got[size_t(t * 6 + b)], float(base + (lane ^ (1 << b))));
    EXPECT_EQ(got[size_t(t * 6 + 5)], float(base + (lane | 3)));
  }
}

TEST(WarpEmulator, SyncBlockPublishesSharedWritesAcrossWarps) {
  std::vector<int> seen(32 * 20, -1);
  run_block(128, 32 * sizeof(int), [&](HostWarpCtx& w) {
    auto* s = reinterpret_cast<int*>(w.smem());
    const int wid = w.thread() / 32, lane = w.thread() % 32;
    for (int round = 0; round < 20; ++round) {
      if (wid == 0) s[lane] = round * 1000 + lane;
      w.sync_block();
      if (wid == 3) seen[size_t(round * 32 + (31 - lane))] = s[31 - lane];
      w.sync_block();
    }
  });
  for (int round = 0; round < 20; ++round)
    for (int l = 0; l < 32; ++l) EXPECT_EQ(seen[size_t(round * 32 + l)], round * 1000 + l);
}

TEST(WarpEmulator, CpAsyncCopiesOrZeroFillsAtWait) {
  alignas(16) static unsigned char gmem[32 * 16];
  for (int i = 0; i < 32 * 16; ++i) gmem[i] = static_cast<unsigned char>(i * 7 + 3);
  std::vector<int> before(32, 0);
  std::vector<unsigned char> after(32 * 16, 0xee);
  run_block(32, 32 * 16, [&](HostWarpCtx& w) {
    const int t = w.thread();
    unsigned char* dst = w.smem() + 16 * t;
    std::memset(dst, 0xab, 16);
    const bool valid = t % 2 == 0;
    w.cp_async16(dst, valid ? gmem + 16 * t : (t % 4 == 1 ? nullptr : gmem), valid);
    before[size_t(t)] = dst[0];  // not landed before commit + wait
    w.cp_async_commit();
    w.cp_async_wait_all();
    std::memcpy(after.data() + 16 * t, dst, 16);
  });
  for (int t = 0; t < 32; ++t) {
    EXPECT_EQ(before[size_t(t)], 0xab);
    for (int b = 0; b < 16; ++b)
      EXPECT_EQ(after[size_t(16 * t + b)], t % 2 == 0 ? gmem[16 * t + b] : 0)
          << "thread " << t << " byte " << b;
  }
}

TEST(WarpEmulator, SharedMemoryIsZeroedAnd128ByteAligned) {
  bool ok = true;
  run_block(32, 1000, [&](HostWarpCtx& w) {
    if (w.thread() != 0) return;
    ok = reinterpret_cast<uintptr_t>(w.smem()) % 128 == 0;
    for (int i = 0; i < 1000; ++i) ok = ok && w.smem()[i] == 0;
  });
  EXPECT_TRUE(ok);
}

TEST(WarpEmulator, PackBf16x2RoundsToNearestEven) {
  const float one_up_half = 1.0f + 0x1p-8f;  // halfway between 0x3f80 and 0x3f81: to even 0x3f80
  const float three_halves =
      1.0f + 3 * 0x1p-8f;  // halfway between 0x3f81 and 0x3f82: to even 0x3f82
  const float above_half = 1.0f + 0x1p-8f + 0x1p-20f;  // above halfway: up to 0x3f81
  EXPECT_EQ(HostWarpCtx::pack_bf16x2(one_up_half, three_halves), 0x3f823f80u);
  EXPECT_EQ(HostWarpCtx::pack_bf16x2(-one_up_half, above_half), 0x3f81bf80u);
  EXPECT_EQ(HostWarpCtx::pack_bf16x2(1.0f, 2.0f), 0x40003f80u);  // lo in the low 16 bits
  EXPECT_EQ(HostWarpCtx::exp2(3.0f), 8.0f);
  EXPECT_FLOAT_EQ(HostWarpCtx::log(std::exp(2.0f)), 2.0f);
}

// Misuse aborts with a message. "threadsafe" death tests re-run the binary for the child, so no
// fork happens in a process that has threads.
class WarpEmulatorDeathTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(WarpEmulatorDeathTest, CpAsyncMisalignedSharedDestination) {
  alignas(16) static unsigned char gmem[16];
  EXPECT_DEATH(run_block(32, 64, [](HostWarpCtx& w) { w.cp_async16(w.smem() + 8, gmem, true); }),
               "cp_async16 destination .* is not 16-byte aligned");
}

TEST_F(WarpEmulatorDeathTest, CpAsyncMisalignedGlobalSource) {
  alignas(16) static unsigned char gmem[32];
  EXPECT_DEATH(
      run_block(32, 64, [](HostWarpCtx& w) { w.cp_async16(w.smem(), gmem + 4, w.thread() != 3); }),
      "global source .* is not 16-byte aligned");
}

TEST_F(WarpEmulatorDeathTest, CpAsyncOutsideSharedMemory) {
  alignas(16) static unsigned char gmem[16];
  EXPECT_DEATH(run_block(32, 64, [](HostWarpCtx& w) { w.cp_async16(w.smem() + 64, gmem, true); }),
               "not 16 bytes inside shared memory");
}

TEST_F(WarpEmulatorDeathTest, LdmatrixMisalignedRow) {
  EXPECT_DEATH(run_block(32, 1024,
                         [](HostWarpCtx& w) {
                           uint32_t r[4];
                           auto* s = reinterpret_cast<const uint16_t*>(w.smem());
                           w.ldmatrix_x4(r, s + 8 * w.thread() + (w.thread() == 5 ? 4 : 0));
                         }),
               "ldmatrix_x4 row address .* is not 16-byte aligned");
}

TEST_F(WarpEmulatorDeathTest, LdmatrixTransRowOutsideSharedMemory) {
  alignas(16) static uint16_t host[8];
  EXPECT_DEATH(
      run_block(32, 1024,
                [](HostWarpCtx& w) {
                  uint32_t r[4];
                  w.ldmatrix_x4_trans(
                      r, w.thread() == 9 ? host : reinterpret_cast<const uint16_t*>(w.smem()));
                }),
      "ldmatrix_x4_trans row address .* not 16 bytes inside shared memory");
}

// The race checks: a tile refilled while another warp may still read it, and a tile read before
// the barrier that orders its copies, abort whichever order the threads run in. The message names
// the access that came second: warp 1's copy into bytes warp 0 read, or (warp 1 first) warp 0's
// read of bytes a copy wrote with no wait between.
TEST_F(WarpEmulatorDeathTest, CpAsyncRefillOfBytesAnotherWarpReadBeforeABarrier) {
  alignas(16) static unsigned char gmem[64 * 16];
  EXPECT_DEATH(run_block(64, 1024,
                         [](HostWarpCtx& w) {
                           auto* s = reinterpret_cast<const uint16_t*>(w.smem());
                           uint32_t r[4];
                           w.ldmatrix_x4(r, s + 8 * (w.thread() % 32));  // both warps read
                           w.sync_block();
                           w.ldmatrix_x4(r, s + 8 * (w.thread() % 32));  // and read again
                           if (w.thread() >= 32)  // warp 1 refills what warp 0 just read
                             w.cp_async16(w.smem() + 16 * (w.thread() % 32), gmem, true);
                           w.cp_async_commit();
                           w.cp_async_wait_all();
                           w.sync_block();
                         }),
               "shared-memory race: (cp.async into bytes .* that warp 0 read since the last "
               "barrier|a read of bytes .* that thread [0-9]+'s cp.async wrote with no cp.async "
               "wait between)");
}

TEST_F(WarpEmulatorDeathTest, LdmatrixOfCopiesNotOrderedByABarrier) {
  alignas(16) static unsigned char gmem[32 * 16];
  for (bool wait : {false, true})
    EXPECT_DEATH(run_block(32, 1024,
                           [wait](HostWarpCtx& w) {
                             w.cp_async16(w.smem() + 16 * w.thread(), gmem + 16 * w.thread(), true);
                             w.cp_async_commit();
                             if (wait) w.cp_async_wait_all();  // its own copy, not the others'
                             uint32_t r[4];
                             w.ldmatrix_x4(
                                 r, reinterpret_cast<const uint16_t*>(w.smem()) + 8 * w.thread());
                           }),
                 wait ? "no barrier after its wait between" : "no cp.async wait between");
}

TEST(WarpEmulator, CopiesAfterABarrierAndReadsAfterTheNextAreNoRace) {
  // The pattern of the flash bodies' streams: wait, barrier, refill the other stage, read this one.
  alignas(16) static unsigned char gmem[2 * 64 * 16];
  for (int i = 0; i < 2 * 64 * 16; ++i) gmem[i] = static_cast<unsigned char>(i);
  std::vector<uint32_t> seen(64 * 4);
  run_block(64, 2 * 64 * 16, [&](HostWarpCtx& w) {
    const int t = w.thread();
    auto* s = reinterpret_cast<const uint16_t*>(w.smem());
    w.cp_async16(w.smem() + 16 * t, gmem + 16 * t, true);  // stage 0
    w.cp_async_commit();
    for (int it = 0; it < 2; ++it) {
      w.cp_async_wait_all();
      w.sync_block();
      if (it == 0) {  // stage 1, read by no one yet
        w.cp_async16(w.smem() + 64 * 16 + 16 * t, gmem + 64 * 16 + 16 * t, true);
        w.cp_async_commit();
      }
      uint32_t r[4];
      w.ldmatrix_x4(r, s + 8 * (64 * it + 32 * (t / 32) + t % 32));
      if (it == 1) std::memcpy(&seen[size_t(4 * t)], r, sizeof r);
    }
  });
  // Lane 0's first register: row 0 of its warp's first matrix in stage 1, elements 0 and 1.
  uint32_t want;
  std::memcpy(&want, gmem + 64 * 16, 4);
  EXPECT_EQ(seen[0], want);
}

TEST_F(WarpEmulatorDeathTest, SyncBlockSkippedByAWarp) {
  EXPECT_DEATH(run_block(64, 0,
                         [](HostWarpCtx& w) {
                           if (w.thread() >= 32) return;
                           w.sync_block();
                         }),
               "sync_block reached by 32 of 64 threads");
}

TEST_F(WarpEmulatorDeathTest, CollectiveSkippedByALane) {
  EXPECT_DEATH(run_block(32, 0,
                         [](HostWarpCtx& w) {
                           if (w.thread() == 31) return;
                           (void)w.shfl_xor(1.0f, 1);
                         }),
               "warp 0: 31 of 32 lanes reached a collective");
}

TEST_F(WarpEmulatorDeathTest, LanesInDifferentCollectives) {
  EXPECT_DEATH(run_block(32, 1024,
                         [](HostWarpCtx& w) {
                           if (w.thread() < 16) {
                             (void)w.shfl_xor(1.0f, 1);
                           } else {
                             uint32_t r[4];
                             w.ldmatrix_x4(r, reinterpret_cast<const uint16_t*>(w.smem()));
                           }
                         }),
               "are in different collectives");
}

TEST_F(WarpEmulatorDeathTest, ThreadCountNotAMultipleOf32) {
  EXPECT_DEATH(run_block(48, 0, [](HostWarpCtx&) {}), "48 threads; need a multiple of 32");
}

TEST_F(WarpEmulatorDeathTest, ExceptionInBody) {
  EXPECT_DEATH(run_block(64, 0,
                         [](HostWarpCtx& w) {
                           if (w.thread() == 7) throw std::runtime_error("boom");
                           w.sync_block();
                         }),
               "kernel body threw on thread 7: boom");
}

}  // namespace
