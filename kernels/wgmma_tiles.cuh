// Hopper's warpgroup matrix instructions for the flash kernels: WgmmaCtx (DeviceCtx with
// wgmma.mma_async, its fence, commit and wait) and CoreTiles, flash_mma.h's tile policy on them.
// flash_wgmma.cu runs the attention bodies over them; wgmma_probe.cu runs each building block
// alone, for a GPU test to check the layouts below against a plain product.
//
// Shared-memory layout (wgmma's canonical no-swizzle layout, PTX ISA "Shared Memory Matrix
// Layout"; kernels/emu/wgmma.h writes the forms down): a 64 x D bf16 tile as 8 x 8 core matrices
// of 128 contiguous bytes (8 rows of 16 bytes), element (r, c) at byte
//   ((r / 8) (D / 8) + c / 8) 128 + (r % 8) 16 + (c % 8) 2.
// Read K-major (the product's k runs along a row: Q, K, V, dO as the right operand of S, S^T, dP,
// dP^T) the core matrices along k are 128 bytes apart (LBO) and along rows 16 D (SBO); read
// N-major (k runs down the rows, n along them: V, dO, Q, K as the right operand of P V, P^T dO,
// dS^T Q, dS K) the same bytes are a layout whose core matrices along k (8 rows) are 16 D apart
// (LBO) and along n 128 (SBO).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "flash_mma.h"
#include "mma_device.cuh"

// The wgmma bodies exist for sm_90a (and the CUDA emulator); compiled for anything else, a kernel
// traps, and flash_wgmma_forward refuses to launch it (TESSERA_WGMMA_SM90A says which build).
#if defined(TESSERA_CUDA_EMULATED) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define TESSERA_WGMMA_BODY 1
#else
#define TESSERA_WGMMA_BODY 0
#endif

namespace tessera::cuda::attn::wgmma {

// Byte offset of row r's 16-byte chunk c8 (columns 8 c8 .. 8 c8 + 7) in a core-matrix tile.
template <int D>
__device__ __forceinline__ uint32_t core_offset(int r, int c8) {
  return uint32_t(((r / 8) * (D / 8) + c8) * 128 + (r % 8) * 16);
}

// A shared-memory matrix descriptor, no swizzle, base offset 0: start address, LBO, SBO in bytes.
__device__ __forceinline__ uint64_t descriptor(const void* start, uint32_t lbo, uint32_t sbo) {
  const uint32_t a = uint32_t(__cvta_generic_to_shared(start));
  return uint64_t((a & 0x3ffff) >> 4) | uint64_t((lbo & 0x3ffff) >> 4) << 16 |
         uint64_t((sbo & 0x3ffff) >> 4) << 32;
}

// DeviceCtx with the warpgroup instructions. cp_async_wait_all also orders the landed tiles for
// wgmma: cp.async writes shared memory through the generic proxy, wgmma reads it through the
// async proxy, so each writing thread fences the proxies before the barrier that publishes them
// (PTX ISA "Memory Consistency Model": proxies).
struct WgmmaCtx : DeviceCtx {
  __device__ void cp_async_wait_all() {
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
#if TESSERA_WGMMA_BODY  // sm_90 and later: a build for others never launches these kernels
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
  }
  __device__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
  __device__ void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  }
  __device__ void wgmma_wait_all() {
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  }
  // Every group but the newest has landed.
  __device__ void wgmma_wait_prior() {
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
  }
  // The products issue() makes into the accumulators acc... (arrays [MT][N][4], one chain for
  // each [N][4]), issued as one group and waited for: fenced after every earlier access of the
  // registers and waited for before the next (a wgmma body only exists for sm_90a).
  template <class Issue, class... Acc>
  __device__ void chain_all(Issue&& issue, Acc&... acc) {
#if TESSERA_WGMMA_BODY
    (pin(acc), ...);
    wgmma_fence();
    issue();
    wgmma_commit();
    wgmma_wait_all();
    (pin(acc), ...);
#else
    __trap();
#endif
  }
  template <int MT, int N, class Issue>
  __device__ void chain(float (&d)[MT][N][4], Issue&& issue) {
    chain_all(issue, d);
  }
  // Keeps the compiler from moving an accumulator's reads or writes across an asynchronous
  // product's issue or wait: each register is an operand of an (empty) asm statement there.
  template <int MT, int N>
  __device__ void pin(float (&d)[MT][N][4]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < N; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[mt][n][e])::"memory");
  }
  // d (+)= A B, m64n64k16: A (64 x 16) and B (16 x 64) K-major in shared memory.
  __device__ void mma_ss(float (&d)[8][4], uint64_t desc_a, uint64_t desc_b, uint32_t accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
          "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
          "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
          "+f"(d[7][2]), "+f"(d[7][3])
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
  }
  // d += A B, m64n64k16: A (this warp's 16 rows) in registers, B (16 x 64) N-major.
  __device__ void mma_rs(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
          "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
          "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
          "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1u));
  }
  // d (+)= A B, m64n64k16: A (this warp's 16 rows) in registers, B (16 x 64) K-major.
  __device__ void mma_rs_k(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc_b,
                           uint32_t accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
          "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
          "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
          "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));
  }
  // d += A B, m64n128k16: A (this warp's 16 rows) in registers, B (16 x 128) N-major.
  __device__ void mma_rs(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
          "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
          "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
          "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
          "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]),
          "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]),
          "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]),
          "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]),
          "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1u));
  }
};

// flash_mma.h's tile policy on wgmma (its RowTiles is the mma.sync one). The descriptors give
// LBO and SBO the roles the layout comment above reads from the PTX ISA; kSwapK and kSwapN swap
// them for the K-major and the N-major operands, the other readings that wgmma_probe.cu tries
// when a product disagrees with the plain one (the kernels use CoreTiles, neither swapped).
template <bool kSwapK = false, bool kSwapN = false>
struct CoreTilesT {
  // Operands whose k runs along the tile's rows, and whose k runs down them: start, then the
  // strides between core matrices along k and along the rows (K-major) or columns (N-major).
  template <int D>
  __device__ static uint64_t kmajor(const unsigned char* start) {
    return kSwapK ? descriptor(start, 16 * D, 128) : descriptor(start, 128, 16 * D);
  }
  template <int D>
  __device__ static uint64_t nmajor(const unsigned char* start) {
    return kSwapN ? descriptor(start, 128, 16 * D) : descriptor(start, 16 * D, 128);
  }

  template <int D>
  static constexpr size_t bytes = size_t(kMmaTile) * D * 2;

  // Rows [row0, row0 + R) of a (rows_total, D) matrix, rows ld apart, 16 bytes per cp.async:
  // eight consecutive threads take one chunk of eight consecutive rows, so a warp writes 512
  // contiguous bytes of shared memory and reads 64 bytes of each of 8 rows.
  template <int D, int R, class W>
  __device__ static void load(W& w, uint16_t* dst, const uint16_t* src, int64_t row0,
                              int64_t rows_total, int64_t ld) {
    constexpr int kChunks = D / 8;
    unsigned char* base = reinterpret_cast<unsigned char*>(dst);
#pragma unroll 1
    for (int idx = w.thread(); idx < R * kChunks; idx += kMmaThreads) {
      const int r = (idx / (8 * kChunks)) * 8 + idx % 8, c8 = (idx / 8) % kChunks;
      const bool valid = row0 + r < rows_total;
      w.cp_async16(base + core_offset<D>(r, c8), valid ? src + (row0 + r) * ld + c8 * 8 : src,
                   valid);
    }
  }

  // acc = Q K^T for the 64 rows of tile a and the 64 keys of tile b: D / 16 products m64n64k16,
  // both operands K-major; warp w gets rows 16 w .. 16 w + 15. issue_abt issues them only: the
  // fence before and the commit and wait after are its caller's.
  template <int D, class W>
  __device__ static void issue_abt(W& w, float (&acc)[1][8][4], const uint16_t* a,
                                   const uint16_t* b) {
    const unsigned char* qa = reinterpret_cast<const unsigned char*>(a);
    const unsigned char* kb = reinterpret_cast<const unsigned char*>(b);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)  // 16 columns: two core matrices, 256 bytes on
      w.mma_ss(acc[0], kmajor<D>(qa + 256 * kk), kmajor<D>(kb + 256 * kk), kk > 0);
  }
  template <int D, int MT, class W>
  __device__ static void abt(W& w, float (&acc)[MT][8][4], const uint16_t* a, int,
                             const uint16_t* b, int) {
    static_assert(MT == 1, "an A operand read from shared memory is the tile's 64 rows");
    w.chain(acc, [&] { issue_abt<D>(w, acc, a, b); });
  }
  // Two of them (the backward's S and dP) issued as one group: one wait for both.
  template <int D, class W>
  __device__ static void abt2(W& w, float (&acc1)[1][8][4], const uint16_t* a1,
                              const uint16_t* b1, float (&acc2)[1][8][4], const uint16_t* a2,
                              const uint16_t* b2, int, int) {
    w.chain_all(
        [&] {
          issue_abt<D>(w, acc1, a1, b1);
          issue_abt<D>(w, acc2, a2, b2);
        },
        acc1, acc2);
  }

  // The left operand of abt kept in registers: each of this warp's MT groups of 16 rows of the
  // tile (rows r0 + 16 mt ..) as the A fragments of its D / 16 k-steps (ldmatrix of the core
  // matrices: rows 0-7 and 8-15 of columns 16 kk .. + 7, then of + 8 .. + 15, the order of
  // mma.m16n8k16's and m64nNk16's A registers). The products then read only B from shared memory:
  // half the bytes of abt's. Since A comes from each warp's registers, the 64 rows of product mt
  // need not be contiguous in the tile: warp w supplies (and gets back) rows r0 + 16 mt .. + 15 of
  // its own r0, so a block of MT warpgroup-products covers 64 MT queries with one K and V tile.
  template <int D, int MT>
  struct Held {
    uint32_t a[MT][D / 16][4];
  };
  template <int D, int MT, class W>
  __device__ static void hold(W& w, Held<D, MT>& h, const uint16_t* tile, int r0, int lane) {
    const unsigned char* t = reinterpret_cast<const unsigned char*>(tile);
    const int m = lane / 8;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int row = r0 + 16 * mt + (m & 1) * 8 + lane % 8;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        w.ldmatrix_x4(h.a[mt][kk], reinterpret_cast<const uint16_t*>(
                                       t + core_offset<D>(row, 2 * kk + (m >> 1))));
    }
  }
  // acc[mt] = (this warp's rows r0 + 16 mt .. of the held operand) K^T for the 64 keys of tile b:
  // MT chains of D / 16 products m64n64k16 (B K-major), issued together. issue_abt_held issues
  // them only: the fence before and the commit and wait after are its caller's.
  template <int D, int MT, class W>
  __device__ static void issue_abt_held(W& w, float (&acc)[MT][8][4], const Held<D, MT>& h,
                                        const uint16_t* b) {
    const unsigned char* kb = reinterpret_cast<const unsigned char*>(b);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        w.mma_rs_k(acc[mt], h.a[mt][kk], kmajor<D>(kb + 256 * kk), kk > 0);
  }
  template <int D, int MT, class W>
  __device__ static void abt_held(W& w, float (&acc)[MT][8][4], const Held<D, MT>& h,
                                  const uint16_t*, int, const uint16_t* b, int) {
    w.chain(acc, [&] { issue_abt_held<D, MT>(w, acc, h, b); });
  }
  template <int D, class W>
  __device__ static void abt_held2(W& w, float (&acc1)[1][8][4], const Held<D, 1>& h1,
                                   const uint16_t*, const uint16_t* b1, float (&acc2)[1][8][4],
                                   const Held<D, 1>& h2, const uint16_t*, const uint16_t* b2, int,
                                   int) {
    w.chain_all(
        [&] {
          issue_abt_held<D, 1>(w, acc1, h1, b1);
          issue_abt_held<D, 1>(w, acc2, h2, b2);
        },
        acc1, acc2);
  }

  // P (this warp's rows of each group against a tile's 64 keys, as accumulators) rounded to bf16
  // as the A registers of four k-steps of 16 keys: the same elements in the same lanes.
  template <class W, int MT>
  __device__ static void pack(uint32_t (&pa)[MT][4][4], const float (&p)[MT][8][4]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        pa[mt][ks][0] = W::pack_bf16x2(p[mt][2 * ks][0], p[mt][2 * ks][1]);
        pa[mt][ks][1] = W::pack_bf16x2(p[mt][2 * ks][2], p[mt][2 * ks][3]);
        pa[mt][ks][2] = W::pack_bf16x2(p[mt][2 * ks + 1][0], p[mt][2 * ks + 1][1]);
        pa[mt][ks][3] = W::pack_bf16x2(p[mt][2 * ks + 1][2], p[mt][2 * ks + 1][3]);
      }
  }
  // acc[mt] += P[mt] V: four products m64nDk16 a group with A from pa and V N-major, the MT
  // chains issued together; issue_pm issues them only (as issue_abt_held).
  template <int D, int MT, class W>
  __device__ static void issue_pm(W& w, float (&acc)[MT][D / 8][4], const uint32_t (&pa)[MT][4][4],
                                  const uint16_t* m) {
    const unsigned char* vb = reinterpret_cast<const unsigned char*>(m);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ks = 0; ks < 4; ++ks)  // 16 keys: two core matrices down, 32 D bytes on
        w.mma_rs(acc[mt], pa[mt][ks], nmajor<D>(vb + 32 * D * ks));
  }
  template <int D, int MT, class W>
  __device__ static void pm(W& w, float (&acc)[MT][D / 8][4], const float (&p)[MT][8][4],
                            const uint16_t* m, int) {
    uint32_t pa[MT][4][4];
    pack<W>(pa, p);
    w.chain(acc, [&] { issue_pm<D, MT>(w, acc, pa, m); });
  }
  // Two of them (the backward's dV += P^T dO and dK += dS^T Q) issued as one group.
  template <int D, class W>
  __device__ static void pm2(W& w, float (&acc1)[1][D / 8][4], const float (&p1)[1][8][4],
                             const uint16_t* m1, float (&acc2)[1][D / 8][4],
                             const float (&p2)[1][8][4], const uint16_t* m2, int) {
    uint32_t pa1[1][4][4], pa2[1][4][4];
    pack<W>(pa1, p1);
    pack<W>(pa2, p2);
    w.chain_all(
        [&] {
          issue_pm<D, 1>(w, acc1, pa1, m1);
          issue_pm<D, 1>(w, acc2, pa2, m2);
        },
        acc1, acc2);
  }
};

using CoreTiles = CoreTilesT<>;

}  // namespace tessera::cuda::attn::wgmma
