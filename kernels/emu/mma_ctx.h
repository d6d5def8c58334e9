// The context kernels/flash_mma.h's bodies run with under the CUDA emulator (cuda_emu.h): the
// instructions flash_mma.cu's DeviceCtx issues as inline PTX, done as warp collectives of the
// emulator's fibers with the layouts of ptx_fragments.h.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda_emu.h"
#include "ptx_fragments.h"

namespace tessera::emu {

class MmaCtx {
 public:
  explicit MmaCtx(unsigned char* smem) : base(smem) {}

  int thread() const { return int(threadIdx.x); }
  unsigned char* smem() const { return base; }
  void sync_block() { __syncthreads(); }

  void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* row) { ldmatrix(r, row, false); }
  void ldmatrix_x4_trans(uint32_t (&r)[4], const uint16_t* row) { ldmatrix(r, row, true); }

  // The first lane to read computes the warp's whole D into the collective's scratch; each lane
  // then takes its four outputs.
  void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    const Regs mine{{a[0], a[1], a[2], a[3]}, {b0, b1}, {d[0], d[1], d[2], d[3]}};
    static_assert(sizeof(Regs) <= kMaxDeposit && sizeof(float[16][8]) <= kScratch);
    warp_collective(kFull, &mine, sizeof mine, [&](const Collective& c) {
      auto regs = [&](int l) { return reinterpret_cast<const Regs*>(c.slot[l]); };
      auto& D = *static_cast<float(*)[16][8]>(c.scratch);
      if (!*c.scratch_ready) {
        ptx::mma_bf16_16816_warp(D, [&](int l) { return regs(l)->a; },
                                 [&](int l) { return regs(l)->b; },
                                 [&](int l) { return regs(l)->c; });
        *c.scratch_ready = true;
      }
      const int lane = lane_id();
      for (int i = 0; i < 4; ++i) d[i] = D[ptx::c_row(lane, i)][ptx::c_col(lane, i)];
    });
  }

  float shfl_xor(float v, int lane_mask) { return __shfl_xor_sync(kFull, v, lane_mask); }

  // cp.async.cg, 16 bytes (ptx::CpAsyncQueue: valid == false zero-fills; lands at the wait).
  void cp_async16(void* dst, const void* src, bool valid) {
    if (reinterpret_cast<uintptr_t>(dst) % 16 || (valid && reinterpret_cast<uintptr_t>(src) % 16))
      fail("cp.async with an address that is not 16-byte aligned");
    copies_.push(dst, valid ? src : nullptr);
  }
  void cp_async_commit() { copies_.commit(); }
  void cp_async_wait_all() { copies_.wait_all(); }

  static uint32_t pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    return u;
  }
  static float exp2(float x) { return exp2f(x); }
  static float log(float x) { return logf(x); }

 private:
  unsigned char* base;
  static constexpr unsigned kFull = 0xffffffffu;
  struct Regs {
    uint32_t a[4], b[2];
    float c[4];
  };
  ptx::CpAsyncQueue copies_;

  void ldmatrix(uint32_t (&r)[4], const uint16_t* row, bool trans) {
    if (reinterpret_cast<uintptr_t>(row) % 16) fail("ldmatrix row address not 16-byte aligned");
    warp_collective(kFull, &row, sizeof row, [&](const Collective& c) {
      ptx::ldmatrix_x4(r, lane_id(), trans, [&](int l) {
        const uint16_t* p;
        std::memcpy(&p, c.slot[l], sizeof p);
        return p;
      });
    });
  }
};

}  // namespace tessera::emu
