// The emulator's warpgroup matrix instructions (kernels/emu/wgmma.h, ptx.cpp): wgmma.mma_async on
// bf16 operands in the no-swizzle shared-memory layout, with A in shared memory or in registers,
// B K-major or N-major, through the calls translate.py makes of asm statements. The products are
// of small integers over powers of two, exact in bf16 and in every f32 sum, so equality is the
// test. The layouts are the PTX ISA's as wgmma.h writes them down; a GPU run of the wgmma flash
// kernel (kernels/flash_wgmma.cu) is what checks that reading.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "emu/cuda_emu.h"
#include "emu/ptx_fragments.h"
#include "emu/wgmma.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;

template <class F>
void launch(dim3 block, size_t smem, F body) {
  emu::launch("test_kernel", emu::config(1, block, smem), nullptr, body)();
}

uint16_t bf16_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return uint16_t(u >> 16);  // the values here are exact in bf16
}
uint32_t shared_addr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

// A descriptor of the no-swizzle layout: start, LBO and SBO in bytes.
uint64_t descriptor(uint32_t start, uint32_t lbo, uint32_t sbo) {
  return uint64_t(start >> 4) | uint64_t(lbo >> 4) << 16 | uint64_t(sbo >> 4) << 32;
}

// Element (mn, k) of a 64 x 16 (K-major) or 16 x 64 (MN-major) operand into shared memory at the
// canonical no-swizzle offsets: core matrices of 8 x 16 bytes, sbo apart along M/N, lbo along K.
void put(uint16_t* base, bool mn_major, int mn, int k, uint32_t lbo, uint32_t sbo, float v) {
  const size_t byte = mn_major ? (mn % 8) * 2 + (mn / 8) * sbo + (k % 8) * 16 + (k / 8) * lbo
                               : (mn % 8) * 16 + (mn / 8) * sbo + (k % 8) * 2 + (k / 8) * lbo;
  base[byte / 2] = bf16_bits(v);
}

// The immediates (imm-trans-a, imm-trans-b) are part of the text, as "n" operands are for nvcc.
#define TESSERA_WG_D32                                                                          \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
constexpr const char* kMmaSS[2] = {
    "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
    "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " TESSERA_WG_D32
    ", %32, %33, p, 1, 1, 0, 0;\n}",
    "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
    "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " TESSERA_WG_D32
    ", %32, %33, p, 1, 1, 0, 1;\n}"};
constexpr const char* kMmaRS =
    "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
    "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " TESSERA_WG_D32
    ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}";

void wg_asm(const char* text, const std::vector<emu::PtxOperand>& ops) {
  emu::ptx_asm(text, ops.data(), ops.size());
}
std::vector<emu::PtxOperand> accumulators(float (&d)[32]) {
  std::vector<emu::PtxOperand> ops;
  for (float& x : d) ops.push_back(emu::ptx_inout("+f", x));
  return ops;
}
// d (+)= A B with A 64 x 16 at desc_a (K-major) and B 16 x 64 at desc_b.
void mma_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b, bool accumulate, bool b_mn_major) {
  std::vector<emu::PtxOperand> ops = accumulators(d);
  ops.push_back(emu::ptx_in("l", desc_a));
  ops.push_back(emu::ptx_in("l", desc_b));
  ops.push_back(emu::ptx_in("r", uint32_t(accumulate)));
  wg_asm(kMmaSS[b_mn_major], ops);
}
// d += A B with A in registers (this warp's rows, mma.m16n8k16's A fragment) and B N-major.
void mma_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b) {
  std::vector<emu::PtxOperand> ops = accumulators(d);
  for (const uint32_t& r : a) ops.push_back(emu::ptx_in("r", r));
  ops.push_back(emu::ptx_in("l", desc_b));
  ops.push_back(emu::ptx_in("r", 1u));
  wg_asm(kMmaRS, ops);
}
void fence() { emu::ptx_asm("wgmma.fence.sync.aligned;", {}); }
void commit() { emu::ptx_asm("wgmma.commit_group.sync.aligned;", {}); }
void wait0() { emu::ptx_asm("wgmma.wait_group.sync.aligned 0;", {}); }

float a_value(int m, int k) { return float((m * 7 + k * 3) % 13 - 6) / 4; }
float b_value(int k, int n) { return float((k * 5 + n * 11) % 11 - 5) / 8; }
float want(int m, int n, float c) {
  float s = c;
  for (int k = 0; k < 16; ++k) s += a_value(m, k) * b_value(k, n);
  return s;
}
// Shared memory of the tests: A (64 x 16, K-major; core matrices along K 128 bytes apart, along M
// 256), B K-major (64 n-rows x 16 k: the same strides) and B N-major (core matrices of 8 k-rows of
// 8 n each: along N 128 bytes apart, along K 1024).
constexpr uint32_t kA = 0, kBk = 2048, kBn = 4096, kSmem = 6144;
void fill_operands(uint16_t* s, int t) {
  for (int i = t; i < 64 * 16; i += 128) {
    const int mn = i / 16, k = i % 16;
    put(s + kA / 2, false, mn, k, 128, 256, a_value(mn, k));
    put(s + kBk / 2, false, mn, k, 128, 256, b_value(k, mn));
    put(s + kBn / 2, true, mn, k, 1024, 128, b_value(k, mn));
  }
}
// Every accumulator of this thread against want(row, col) * times.
int mismatches(const float (&d)[32], float times) {
  const int t = int(threadIdx.x), warp = t / 32, lane = t % 32;
  int bad = 0;
  for (int i = 0; i < 32; ++i)
    bad += d[i] != times * want(ptx::wg_d_row(warp, lane, i), ptx::wg_d_col(lane, i), 0.0f);
  return bad;
}

// body(s) in each of a warpgroup's threads, s the shared memory with fill_operands' A and Bs in.
template <class Body>
void with_operands(Body&& body) {
  launch(128, kSmem, [&] {
    auto* s = static_cast<uint16_t*>(emu::dynamic_shared());
    fill_operands(s, int(threadIdx.x));
    __syncthreads();
    body(s);
  });
}
uint64_t desc_a(uint16_t* s) { return descriptor(shared_addr(s) + kA, 128, 256); }
uint64_t desc_bk(uint16_t* s) { return descriptor(shared_addr(s) + kBk, 128, 256); }
uint64_t desc_bn(uint16_t* s) { return descriptor(shared_addr(s) + kBn, 1024, 128); }

TEST(WgmmaEmu, a_product_from_shared_memory_with_b_k_major_or_n_major) {
  std::atomic<int> bad{0}, nan_before_wait{0};
  with_operands([&](uint16_t* s) {
    for (int major = 0; major < 2; ++major) {
      float d[32];
      for (float& x : d) x = 5.0f;  // scale-d 0: ignored
      fence();
      mma_ss(d, desc_a(s), major ? desc_bn(s) : desc_bk(s), false, major);
      commit();
      nan_before_wait += std::isnan(d[0]) ? 0 : 1;  // not yet written: NaN until the wait
      wait0();
      bad += mismatches(d, 1.0f);
    }
  });
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(nan_before_wait.load(), 0);
}

TEST(WgmmaEmu, products_on_the_same_accumulators_chain_before_one_wait) {
  std::atomic<int> bad{0};
  with_operands([&](uint16_t* s) {
    float d[32];
    const uint64_t da = desc_a(s), db = desc_bk(s);
    fence();
    mma_ss(d, da, db, false, false);
    mma_ss(d, da, db, true, false);
    commit();
    mma_ss(d, da, db, true, false);  // a second group
    commit();
    emu::ptx_asm("wgmma.wait_group.sync.aligned 1;", {});  // the first group's two have landed
    bad += std::isnan(d[0]) ? 0 : 1000;  // but d is the third's pending output: NaN
    wait0();
    bad += mismatches(d, 3.0f);
  });
  EXPECT_EQ(bad.load(), 0);
}

TEST(WgmmaEmu, a_from_registers_times_an_n_major_b) {
  std::atomic<int> bad{0};
  with_operands([&](uint16_t* s) {
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    uint32_t a[4];
    for (int r = 0; r < 4; ++r) {
      const int e = 2 * r, row = 16 * warp + ptx::a_row(lane, e);
      a[r] = uint32_t(bf16_bits(a_value(row, ptx::a_col(lane, e)))) |
             uint32_t(bf16_bits(a_value(row, ptx::a_col(lane, e + 1)))) << 16;
    }
    float d[32];
    for (float& x : d) x = 0.0f;
    fence();
    mma_rs(d, a, desc_bn(s));
    commit();
    wait0();
    bad += mismatches(d, 1.0f);
  });
  EXPECT_EQ(bad.load(), 0);
}

// The operands are read at the wait, the latest moment: B rewritten (doubled) between the issue
// and the wait shows in the product, as a tile refilled too early would on a GPU.
TEST(WgmmaEmu, shared_memory_is_read_at_the_wait_so_an_early_refill_shows) {
  std::atomic<int> bad{0};
  with_operands([&](uint16_t* s) {
    float d[32];
    fence();
    mma_ss(d, desc_a(s), desc_bk(s), false, false);
    commit();
    __syncthreads();
    for (int i = int(threadIdx.x); i < 64 * 16; i += 128)
      put(s + kBk / 2, false, i / 16, i % 16, 128, 256, 2 * b_value(i % 16, i / 16));
    __syncthreads();
    wait0();
    bad += mismatches(d, 2.0f);
  });
  EXPECT_EQ(bad.load(), 0);
}

TEST(WgmmaEmu, misuses_are_errors_that_name_them) {
  // A block that is not whole warpgroups.
  std::string msg =
      error_of([] { launch(96, kSmem, [] { emu::ptx_asm("wgmma.fence.sync.aligned;", {}); }); });
  EXPECT_NE(msg.find("not whole warpgroups"), std::string::npos) << msg;
  // A thread that exits with a product in flight.
  msg = error_of([] {
    launch(128, kSmem, [] {
      auto* s = static_cast<uint16_t*>(emu::dynamic_shared());
      float d[32];
      fence();
      mma_ss(d, descriptor(shared_addr(s), 128, 256), descriptor(shared_addr(s), 128, 256), false,
             false);
      commit();
    });
  });
  EXPECT_NE(msg.find("no wgmma.wait_group waited for"), std::string::npos) << msg;
  // A swizzled layout (128-byte swizzle, mode 1), which the emulator does not model.
  msg = error_of([] {
    launch(128, kSmem, [] {
      auto* s = static_cast<uint16_t*>(emu::dynamic_shared());
      float d[32];
      const uint64_t swizzled = descriptor(shared_addr(s), 128, 1024) | uint64_t(1) << 62;
      fence();
      mma_ss(d, descriptor(shared_addr(s), 128, 256), swizzled, false, false);
      commit();
      wait0();
    });
  });
  EXPECT_NE(msg.find("swizzled"), std::string::npos) << msg;
  // scale-d from a predicate the statement never set.
  msg = error_of([] {
    launch(128, kSmem, [] {
      float d[32];
      std::vector<emu::PtxOperand> ops = accumulators(d);
      ops.push_back(emu::ptx_in("l", uint64_t(0)));
      ops.push_back(emu::ptx_in("l", uint64_t(0)));
      emu::ptx_asm(
          "{\n.reg .pred p;\nwgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " TESSERA_WG_D32
          ", %32, %33, p, 1, 1, 0, 0;\n}",
          ops.data(), ops.size());
    });
  });
  EXPECT_NE(msg.find("has not set"), std::string::npos) << msg;
}

// wgmma.fence orders a thread's register accesses before the mma_async after it: required before
// the first, and between a wait returning results and an mma_async reading them again (scale-d, or
// as A registers), except along one chain of mma_async on the same accumulators.
TEST(WgmmaEmu, an_mma_reading_registers_a_wait_returned_needs_a_fence_between) {
  auto kernel = [](bool fence_first, bool fence_again, bool as_a) {
    return [=] {
      with_operands([=](uint16_t* s) {
        const uint64_t da = desc_a(s), db = desc_bk(s);
        float d[32], o[32] = {};  // o outlives the wait that writes it
        if (fence_first) fence();
        mma_ss(d, da, db, false, false);
        mma_ss(d, da, db, true, false);  // chained: no fence needed
        commit();
        wait0();
        for (float& x : d) x *= 0.5f;  // the thread uses what the wait returned
        if (fence_again) fence();
        if (as_a) {
          const uint32_t a[4] = {0, 0, 0, 0};
          mma_rs(o, a, desc_bn(s));
        } else {
          mma_ss(d, da, db, true, false);
        }
        commit();
        wait0();
      });
    };
  };
  const std::string first = error_of(kernel(false, true, false));
  EXPECT_NE(first.find("first wgmma.mma_async has no wgmma.fence"), std::string::npos) << first;
  const std::string acc = error_of(kernel(true, false, false));
  EXPECT_NE(acc.find("an accumulator a wgmma.wait_group returned is read"), std::string::npos)
      << acc;
  const std::string a = error_of(kernel(true, false, true));
  EXPECT_NE(a.find("A registers issued after a wgmma.wait_group returned"), std::string::npos) << a;
  EXPECT_NO_THROW(kernel(true, true, false)());
  EXPECT_NO_THROW(kernel(true, true, true)());
}

}  // namespace
}  // namespace tessera
