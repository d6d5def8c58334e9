// Host-side emulator of one CUDA thread block, so that a kernel body written as a template over a
// context type W runs on the CPU: one std::thread per CUDA thread, lane t % 32 of warp t / 32.
// It exists to test flash-attention bodies built on mma.sync.m16n8k16 (bf16 in, f32 accumulate),
// ldmatrix and cp.async before they ever meet a GPU.
//
// The fragment layouts of ldmatrix and mma are kernels/emu/ptx_fragments.h's, written down from
// the PTX ISA documentation; cp.async follows its "Data Movement and Conversion Instructions:
// cp.async" (cp-size 16, src-size 0 zero-fills). A layout bug shared by the emulator and a kernel
// passes both, so the GPU parity tests (tests/cuda) remain the final word.
//
// Collectives (ldmatrix*, mma, shfl_xor, any) go through a per-warp exchange area and std::barrier:
// every lane deposits its operands, waits, computes its own results from all 32 deposits, waits.
// Misuse aborts with a message on stderr (death tests catch it): bad or misaligned addresses, a
// collective that not all 32 lanes reach (some returned from the body), lanes of one warp in
// different collectives, sync_block reached by only part of the block, an exception out of the
// body. Not detectable without a timeout, hence a hang: lanes of one warp waiting in a collective
// while their warp-mates wait in sync_block (undefined behaviour on hardware too).
//
// Shared-memory races between cp.async and ldmatrix abort too, whatever order the threads happen
// to run in (ptx::SmemRaces, the CUDA emulator's check too, over generations of sync_block): a
// cp.async into bytes another warp has read since the last sync_block (the copy may land at
// issue, before that read), and an ldmatrix of bytes a cp.async wrote unless the writer waited
// for it and a sync_block came after the wait. Plain loads and stores are not seen.
#pragma once

#include <array>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "core/dtype.h"
#include "kernels/emu/ptx_fragments.h"

namespace tessera::emu {

[[noreturn]] inline void fail(const std::string& msg) {
  static std::mutex m;  // one message; a second failing thread blocks here until abort
  m.lock();
  std::fprintf(stderr, "tessera::emu: %s\n", msg.c_str());
  std::fflush(stderr);
  std::abort();
}


class HostWarpCtx;

namespace detail {
enum Op : int { kNone, kLdmatrix, kLdmatrixTrans, kMma, kShfl, kVote };
struct Slot {  // one lane's deposit for the collective in flight
  int op = kNone;
  const uint16_t* row = nullptr;
  uint32_t a[4] = {}, b[2] = {};
  float f = 0;
};
// Counts arrivals that came through a collective (or sync_block) rather than through a thread's
// exit; a phase completed by a mix of both means part of the warp (block) skipped the call.
struct Uneven {
  std::atomic<int>* arrived;
  int expected, warp;                   // warp < 0: the block barrier
  std::atomic<int64_t>* gen = nullptr;  // the block barrier's phases, counted
  void operator()() noexcept {
    if (gen) gen->fetch_add(1);
    const int n = arrived->exchange(0);
    if (n == 0 || n == expected) return;
    fail(warp < 0
             ? "sync_block reached by " + std::to_string(n) + " of " + std::to_string(expected) +
                   " threads; the others returned from the body (uneven __syncthreads)"
             : "warp " + std::to_string(warp) + ": " + std::to_string(n) +
                   " of 32 lanes reached a collective; the others returned from the body");
  }
};
struct Warp {
  std::array<Slot, 32> slot;
  std::atomic<int> arrived{0};
  std::barrier<Uneven> bar;
  explicit Warp(int w) : bar(32, Uneven{&arrived, 32, w}) {}
};
struct Block {
  int threads;
  size_t smem_bytes;
  unsigned char* smem;
  std::atomic<int> arrived{0};
  std::atomic<int64_t> gen{0};
  std::barrier<Uneven> bar;
  std::vector<std::unique_ptr<Warp>> warps;
  std::mutex races_mu;
  ptx::SmemRaces races;  // under races_mu
  Block(int t, size_t bytes, unsigned char* s)
      : threads(t), smem_bytes(bytes), smem(s), bar(t, Uneven{&arrived, t, -1, &gen}) {
    for (int w = 0; w < t / 32; ++w) warps.push_back(std::make_unique<Warp>(w));
    races.reset(bytes);
  }
};
}  // namespace detail

class HostWarpCtx {
 public:
  HostWarpCtx(detail::Block& b, int t, bool copies_early)
      : b_(b), t_(t), warp_(*b.warps[size_t(t / 32)]) {
    copies_.early = copies_early;
  }

  int thread() const { return t_; }
  unsigned char* smem() const { return b_.smem; }
  void sync_block() {
    b_.arrived.fetch_add(1);
    b_.bar.arrive_and_wait();
  }

  // PTX "ldmatrix" (layout: ptx::ldmatrix_x4); each row address must be 16-aligned in shared memory.
  void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* row) { ldmatrix(r, row, false); }
  void ldmatrix_x4_trans(uint32_t (&r)[4], const uint16_t* row) { ldmatrix(r, row, true); }

  // mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, d = a * b + d (ptx::mma_bf16_16816).
  void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    detail::Slot& s = mine(detail::kMma);
    std::memcpy(s.a, a, sizeof s.a);
    s.b[0] = b0;
    s.b[1] = b1;
    exchange(detail::kMma);
    ptx::mma_bf16_16816(d, t_ % 32, [&](int l) { return warp_.slot[size_t(l)].a; },
                        [&](int l) { return warp_.slot[size_t(l)].b; });
    warp_.arrived.fetch_add(1);
    warp_.bar.arrive_and_wait();
  }

  float shfl_xor(float v, int lane_mask) {
    if (lane_mask < 0 || lane_mask > 31)
      fail("shfl_xor: lane_mask " + std::to_string(lane_mask) + " outside [0, 31]");
    mine(detail::kShfl).f = v;
    exchange(detail::kShfl);
    const float r = warp_.slot[size_t((t_ % 32) ^ lane_mask)].f;
    warp_.arrived.fetch_add(1);
    warp_.bar.arrive_and_wait();
    return r;
  }

  // __any_sync over the whole warp: whether p holds in any lane.
  bool any(bool p) {
    mine(detail::kVote).f = p ? 1.0f : 0.0f;
    exchange(detail::kVote);
    bool r = false;
    for (const detail::Slot& s : warp_.slot) r = r || s.f != 0.0f;
    warp_.arrived.fetch_add(1);
    warp_.bar.arrive_and_wait();
    return r;
  }

  // cp.async.cg.shared.global, cp-size 16; src-size 0 (valid == false) writes 16 zero bytes. The
  // addresses are checked at issue; the copy happens at the next cp_async_wait_all after its
  // cp_async_commit (the latest moment hardware may complete it; never if the thread returns
  // first), so a missing commit or wait shows up as data that never arrived; or, in a block run
  // with copies_early, at issue (the earliest), so a refill of a tile another thread still reads
  // shows up too (ptx::CpAsyncQueue).
  void cp_async16(void* smem_dst, const void* gmem_src, bool valid) {
    check_smem16("cp_async16 destination", smem_dst);
    if (gmem_src && reinterpret_cast<uintptr_t>(gmem_src) % 16)
      fail("cp_async16: global source " + ptr(gmem_src) + " is not 16-byte aligned" + who());
    if (valid && !gmem_src) fail("cp_async16: null global source with valid = true" + who());
    note_copy(smem_dst);
    copies_.push(smem_dst, valid ? gmem_src : nullptr);
  }
  void cp_async_commit() { copies_.commit(); }
  void cp_async_wait_all() {
    const int64_t g = b_.gen.load();
    std::lock_guard<std::mutex> lock(b_.races_mu);
    copies_.wait_group(0, [&](const void* dst) { b_.races.waited(offset(dst), t_, g); });
  }

  static uint32_t pack_bf16x2(float lo, float hi) {
    return uint32_t(bf16::from_float(lo)) | (uint32_t(bf16::from_float(hi)) << 16);
  }
  static float exp2(float x) { return std::exp2(x); }
  static float log(float x) { return std::log(x); }
  static float log2(float x) { return std::log2(x); }
  static float rcp(float x) { return 1.0f / x; }

 private:
  detail::Block& b_;
  int t_;
  detail::Warp& warp_;
  ptx::CpAsyncQueue copies_;

  size_t offset(const void* p) const {
    return size_t(static_cast<const unsigned char*>(p) - b_.smem);
  }
  // The race checks (ptx::SmemRaces).
  void note_copy(const void* dst) {
    const int64_t g = b_.gen.load();
    std::lock_guard<std::mutex> lock(b_.races_mu);
    const std::string e = b_.races.copy(offset(dst), t_, t_ / 32, g);
    if (!e.empty()) fail(e + who());
  }
  void note_read(const void* row) {
    const int64_t g = b_.gen.load();
    std::lock_guard<std::mutex> lock(b_.races_mu);
    const std::string e = b_.races.read(offset(row), t_ / 32, g);
    if (!e.empty()) fail(e + who());
  }
  static std::string ptr(const void* p) {
    char s[32];
    std::snprintf(s, sizeof s, "%p", p);
    return s;
  }
  std::string who() const { return " (thread " + std::to_string(t_) + ")"; }
  void check_smem16(const char* what, const void* p) const {
    const auto* c = static_cast<const unsigned char*>(p);
    if (c < b_.smem || c + 16 > b_.smem + b_.smem_bytes)
      fail(std::string(what) + " " + ptr(p) + " is not 16 bytes inside shared memory [" +
           ptr(b_.smem) + ", +" + std::to_string(b_.smem_bytes) + ")" + who());
    if (reinterpret_cast<uintptr_t>(p) % 16)
      fail(std::string(what) + " " + ptr(p) + " is not 16-byte aligned" + who());
  }
  detail::Slot& mine(int op) {
    detail::Slot& s = warp_.slot[size_t(t_ % 32)];
    s.op = op;
    return s;
  }
  // First half of a collective: all deposits are in; every lane must be in the same collective.
  void exchange(int op) {
    warp_.arrived.fetch_add(1);
    warp_.bar.arrive_and_wait();
    for (int l = 0; l < 32; ++l)
      if (warp_.slot[size_t(l)].op != op)
        fail("warp " + std::to_string(t_ / 32) + ": lanes " + std::to_string(t_ % 32) + " and " +
             std::to_string(l) + " are in different collectives");
  }
  void ldmatrix(uint32_t (&r)[4], const uint16_t* row, bool trans) {
    check_smem16(trans ? "ldmatrix_x4_trans row address" : "ldmatrix_x4 row address", row);
    note_read(row);
    const int op = trans ? detail::kLdmatrixTrans : detail::kLdmatrix;
    mine(op).row = row;
    exchange(op);
    ptx::ldmatrix_x4(r, t_ % 32, trans, [&](int l) { return warp_.slot[size_t(l)].row; });
    warp_.arrived.fetch_add(1);
    warp_.bar.arrive_and_wait();
  }
};

// Runs body(W&) on `threads` std::threads (a multiple of 32, at most 1024) forming one block, with
// a zeroed, 128-byte aligned shared-memory buffer of smem_bytes that every W sees via w.smem().
// copies_early: cp.async copies land at issue instead of at their wait (see cp_async16).
template <class Body>
void run_block(int threads, size_t smem_bytes, Body&& body, bool copies_early = false) {
  if (threads <= 0 || threads % 32 || threads > 1024)
    fail("run_block: " + std::to_string(threads) + " threads; need a multiple of 32 in [32, 1024]");
  const size_t bytes = (smem_bytes + 127) / 128 * 128 + 128;  // never zero-sized
  std::unique_ptr<unsigned char, void (*)(unsigned char*)> smem(
      static_cast<unsigned char*>(::operator new (bytes, std::align_val_t{128})),
      [](unsigned char* p) { ::operator delete (p, std::align_val_t{128}); });
  std::memset(smem.get(), 0, bytes);
  detail::Block block(threads, smem_bytes, smem.get());
  std::vector<std::thread> pool;
  pool.reserve(size_t(threads));
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&block, &body, t, copies_early] {
      HostWarpCtx w(block, t, copies_early);
      try {
        body(w);
      } catch (const std::exception& e) {
        fail("kernel body threw on thread " + std::to_string(t) + ": " + e.what());
      } catch (...) {
        fail("kernel body threw a non-std exception on thread " + std::to_string(t));
      }
      // A returned thread leaves both barriers; a phase then completed by a mix of exits and
      // waiters is reported by detail::Uneven instead of hanging.
      block.warps[size_t(t / 32)]->bar.arrive_and_drop();
      block.bar.arrive_and_drop();
    });
  for (auto& th : pool) th.join();
}

}  // namespace tessera::emu
