// Hopper's warpgroup matrix instructions (wgmma, sm_90a) as the PTX ISA defines them (NVIDIA,
// "Parallel Thread Execution ISA", "Asynchronous Warpgroup Level Matrix Multiply-Accumulate
// Instructions": "Register Fragments", "Shared Memory Matrix Layout", "Matrix Descriptor Format"),
// for the CUDA emulator's PTX interpreter (ptx.cpp), which keeps one WgmmaQueue per emulated
// thread. Written down from that documentation, not from any kernel in this repository:
//   * wgmma.mma_async.m64nNk16 over bf16: a warpgroup (4 consecutive warps) computes a 64 x N
//     D = A (64 x 16) B (16 x N) (+ D). Warp w of the warpgroup holds rows 16 w .. 16 w + 15 of A
//     (when A is in registers) and of D, in mma.m16n8k16's fragment layout repeated along N:
//     accumulator i of lane l is (row 16 w + l / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (l % 4)
//     + i % 2); A's four registers are mma.m16n8k16's A fragment. So each warp's rows of D depend
//     on its own rows of A only, and the emulator runs the product per warp.
//   * A matrix descriptor (64 bits): start address (bits 0-13), leading dimension byte offset
//     (LBO, 16-29), stride dimension byte offset (SBO, 32-45), each the byte value >> 4; base
//     offset (49-51); swizzle mode (62-63; 0 = none). Only the no-swizzle ("interleave") layout is
//     emulated, whose canonical forms (in elements, T = 8 for 16-bit types) are
//       K-major:  ((8, m), (T, 2k)) : ((T, SBO), (1, LBO))
//       MN-major: ((T, 1, m), (8, k)) : ((1, T, SBO), (T, LBO)),
//     i.e. 8 x 8 "core matrices" of 128 contiguous bytes (8 rows of 16 bytes: 8 elements along K
//     for K-major, along M or N for MN-major), SBO apart along M/N and LBO apart along K.
//   * Asynchrony: mma_async reads its operands and writes D at some moment before the
//     wgmma.wait_group that covers the group wgmma.commit_group closed it in. The emulator computes
//     each product at that wait, the latest moment (shared memory is read then, so a tile refilled
//     before the wait shows), and writes NaN into D's registers at issue, so a register read
//     before the wait shows too. A later mma_async on the same registers before the wait chains on
//     the pending result, as the hardware's accumulation does.
//   * wgmma.fence: a thread's first mma_async needs one before it, and so does an mma_async whose
//     inputs (accumulators read with scale-d, or A registers) a wait returned to the thread since
//     its last fence (WgmmaQueue::issue says what is an error).
// Not modelled: that all four warps of the warpgroup issue the same instruction (each warp's lanes
// are checked to, ptx.cpp's aligned_collective), A registers changed between the issue and the
// wait (they are read at the issue), and the async proxy (fence.proxy.async is accepted and does
// nothing: shared memory written by cp.async is seen at once).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace tessera::ptx {

struct SmemDescriptor {
  uint32_t start = 0, lbo = 0, sbo = 0;  // bytes
  int base_offset = 0, swizzle = 0;
};
inline SmemDescriptor decode_descriptor(uint64_t d) {
  SmemDescriptor s;
  s.start = uint32_t(d & 0x3fff) << 4;
  s.lbo = uint32_t((d >> 16) & 0x3fff) << 4;
  s.sbo = uint32_t((d >> 32) & 0x3fff) << 4;
  s.base_offset = int((d >> 49) & 0x7);
  s.swizzle = int(d >> 62);
  return s;
}
// The shared address of element (mn, k) (row or column mn of M or N, index k along K) of a 16-bit
// operand in the no-swizzle canonical layout.
inline uint64_t operand_address(const SmemDescriptor& d, bool mn_major, int mn, int k) {
  return mn_major ? d.start + uint64_t(mn % 8) * 2 + uint64_t(mn / 8) * d.sbo +
                        uint64_t(k % 8) * 16 + uint64_t(k / 8) * d.lbo
                  : d.start + uint64_t(mn % 8) * 16 + uint64_t(mn / 8) * d.sbo +
                        uint64_t(k % 8) * 2 + uint64_t(k / 8) * d.lbo;
}
// Accumulator i of lane `lane` of warp `warp` (in its warpgroup) in m64nNk16's D.
inline int wg_d_row(int warp, int lane, int i) { return 16 * warp + lane / 4 + 8 * ((i / 2) % 2); }
inline int wg_d_col(int lane, int i) { return 8 * (i / 4) + 2 * (lane % 4) + i % 2; }

// One thread's wgmma.mma_async operations in flight.
class WgmmaQueue {
 public:
  struct Op {
    int n = 0;     // N of m64nNk16
    int warp = 0;  // in its warpgroup
    int lane = 0;
    bool a_in_registers = false;
    float a[16][16] = {};  // A in registers: this warp's 16 rows, from every lane's fragment
    uint64_t desc_a = 0, desc_b = 0;
    bool trans_a = false, trans_b = false, scale_d = true;
    std::vector<float*> d;      // the N / 2 accumulator registers
    std::vector<float> d_in;    // their values at issue
    std::vector<char> chained;  // an earlier pending op's output: d_in comes from it
    int64_t group = -1;         // -1: not yet committed
    std::string text;           // the instruction, for errors
  };

  // wgmma.fence: register accesses before it are ordered before the mma_async after it.
  void fence() { last_fence_ = ++clock_; }

  // Records op (its d_in read by the caller) and writes NaN into its registers. bad(why) reports an
  // input register that a thread may have accessed since a wait returned it without a wgmma.fence
  // in between (the PTX ISA requires one; only accumulators chained from one mma_async to the next
  // are ordered without it): an accumulator read with scale-d that a wait wrote after the last
  // fence, or A registers issued after any wait that returned values since that fence.
  template <class Bad>
  void issue(Op op, Bad&& bad) {
    if (last_fence_ == 0) bad("the thread's first wgmma.mma_async has no wgmma.fence before it");
    op.chained.assign(op.d.size(), 0);
    for (size_t i = 0; i < op.d.size(); ++i)
      for (const Op& p : pending_)
        for (float* r : p.d)
          if (r == op.d[i]) op.chained[i] = 1;
    if (op.a_in_registers && last_landing_ > last_fence_)
      bad("A registers issued after a wgmma.wait_group returned results, with no wgmma.fence "
          "since");
    for (size_t i = 0; i < op.d.size() && op.scale_d; ++i)
      for (const auto& [r, at] : landed_)
        if (!op.chained[i] && r == op.d[i] && at > last_fence_)
          bad("an accumulator a wgmma.wait_group returned is read (scale-d) with no wgmma.fence "
              "since");
    for (float* r : op.d) *r = std::numeric_limits<float>::quiet_NaN();
    pending_.push_back(std::move(op));
  }
  void commit() {
    for (Op& p : pending_)
      if (p.group < 0) p.group = groups_;
    ++groups_;
  }
  bool empty() const { return pending_.empty(); }
  // wgmma.wait_group n: every op in a group older than the newest n lands, in issue order.
  // smem(address, bytes) is the shared memory at a shared address; bad(why) reports an error.
  template <class Smem, class Bad>
  void wait_group(int newest_left, Smem&& smem, Bad&& bad) {
    const int64_t last = groups_ - newest_left;
    std::vector<Op> kept;
    for (size_t o = 0; o < pending_.size(); ++o) {
      Op& p = pending_[o];
      if (p.group < 0 || p.group >= last) {
        kept.push_back(std::move(p));
        continue;
      }
      const std::vector<float> out = product(p, smem, bad);
      for (size_t i = 0; i < out.size(); ++i) {
        // A later op on this register takes the value as its input; the register stays NaN.
        bool passed = false;
        for (size_t q = o + 1; q < pending_.size() && !passed; ++q)
          for (size_t j = 0; j < pending_[q].d.size() && !passed; ++j)
            if (pending_[q].d[j] == p.d[i] && pending_[q].chained[j]) {
              pending_[q].d_in[j] = out[i];
              pending_[q].chained[j] = 0;
              passed = true;
            }
        if (!passed) {
          *p.d[i] = out[i];
          returned(p.d[i]);
        }
      }
    }
    pending_ = std::move(kept);
  }

 private:
  template <class Smem>
  static float element(const SmemDescriptor& d, bool mn_major, int mn, int k, Smem& smem) {
    uint16_t bits;
    std::memcpy(&bits, smem(operand_address(d, mn_major, mn, k), 2), 2);
    return std::bit_cast<float>(uint32_t(bits) << 16);
  }
  template <class Smem, class Bad>
  static std::vector<float> product(const Op& p, Smem& smem, Bad& bad) {
    const SmemDescriptor db = decode_descriptor(p.desc_b), da = decode_descriptor(p.desc_a);
    for (const SmemDescriptor* d : {&db, p.a_in_registers ? nullptr : &da}) {
      if (d && d->swizzle != 0)
        bad("a swizzled shared-memory layout (only the no-swizzle one is emulated)");
      if (d && d->base_offset != 0) bad("a matrix base offset in a no-swizzle descriptor");
    }
    // Only what this lane's accumulators need: rows g and g + 8 of the warp's A, and the N / 4
    // columns 8 j + 2 (lane % 4) + {0, 1} of B.
    const int g = p.lane / 4;
    float A[2][16], B[256][16];
    for (int h = 0; h < 2; ++h)
      for (int k = 0; k < 16; ++k)
        A[h][k] = p.a_in_registers ? p.a[g + 8 * h][k]
                                   : element(da, p.trans_a, 16 * p.warp + g + 8 * h, k, smem);
    for (int j = 0; j < p.n / 8; ++j)
      for (int e = 0; e < 2; ++e)
        for (int k = 0; k < 16; ++k) {
          const int n = 8 * j + 2 * (p.lane % 4) + e;
          B[n][k] = element(db, p.trans_b, n, k, smem);
        }
    std::vector<float> out(p.d.size());
    for (size_t i = 0; i < p.d.size(); ++i) {
      const int row = wg_d_row(p.warp, p.lane, int(i)) - 16 * p.warp,
                col = wg_d_col(p.lane, int(i));
      // As mma_output (ptx_fragments.h): bf16 products are exact in double, one rounding to f32.
      double acc = p.scale_d ? double(p.d_in[i]) : 0.0;
      for (int k = 0; k < 16; ++k) acc += double(A[row / 8][k]) * double(B[col][k]);
      out[i] = float(acc);
    }
    return out;
  }
  void returned(float* r) {  // a wait wrote r: the thread may access it from here on
    last_landing_ = ++clock_;
    for (auto& [reg, at] : landed_)
      if (reg == r) {
        at = last_landing_;
        return;
      }
    landed_.emplace_back(r, last_landing_);
  }
  std::vector<Op> pending_;
  int64_t groups_ = 0;
  int64_t clock_ = 0, last_fence_ = 0, last_landing_ = 0;
  std::vector<std::pair<float*, int64_t>> landed_;  // register, when a wait last returned it
};

}  // namespace tessera::ptx
