// The wgmma flash kernels' building blocks (kernels/wgmma_probe.cu) against plain products: the
// shared-memory layout and its descriptors, the held A fragments and the accumulator map, each on
// its own, so that a GPU failure of the wgmma attention test can be traced to one of them. The
// operands are small integers, exact in bf16 and in every f32 sum (|sum| <= 128 x 4), so equality
// is the test. When a block disagrees, the failure says which other reading of the descriptors
// (LBO and SBO swapped for the K-major or the N-major operand) the device agrees with, if any.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda.h"

namespace tessera {
namespace {

using cuda::WgmmaBlock;

uint16_t bf16_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return uint16_t(u >> 16);  // exact: small integers
}

// Integers in [-2, 2], from a seeded linear congruential sequence.
std::vector<uint16_t> small_ints(size_t n, uint32_t seed, std::vector<double>& values) {
  std::vector<uint16_t> bits(n);
  values.resize(n);
  uint32_t x = seed;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    values[i] = double(int((x >> 24) % 5) - 2);
    bits[i] = bf16_bits(float(values[i]));
  }
  return bits;
}

struct Case {
  WgmmaBlock block;
  int D, MT;
};
const char* block_name(WgmmaBlock b) {
  return b == WgmmaBlock::Abt ? "Abt" : b == WgmmaBlock::AbtHeld ? "AbtHeld" : "Pm";
}

// The plain product the block computes, row-major.
std::vector<float> reference(const Case& c, const std::vector<double>& a,
                             const std::vector<double>& b) {
  const int rows = 64 * c.MT;
  std::vector<float> out;
  if (c.block == WgmmaBlock::Pm) {  // a (rows, 64) b (64, D)
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < c.D; ++j) {
        double s = 0;
        for (int k = 0; k < 64; ++k) s += a[i * 64 + k] * b[k * c.D + j];
        out.push_back(float(s));
      }
  } else {  // a (rows, D) b (64, D)^T
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < 64; ++j) {
        double s = 0;
        for (int k = 0; k < c.D; ++k) s += a[i * c.D + k] * b[j * c.D + k];
        out.push_back(float(s));
      }
  }
  return out;
}

// What else a block's failure points at when no reading of the descriptors matches.
const char* suspect(WgmmaBlock b) {
  return b == WgmmaBlock::Abt ? "the core-matrix offsets (core_offset, CoreTiles::load) or the "
                                "accumulators' fragment map"
         : b == WgmmaBlock::AbtHeld ? "CoreTiles::hold's ldmatrix of the A fragments (if Abt "
                                      "passes, the rest is shared with it)"
                                    : "the accumulators taken as A registers (CoreTiles::pm)";
}

// "" when got equals want, else the first mismatches.
std::string mismatches(const std::vector<float>& got, const std::vector<float>& want, int cols) {
  std::ostringstream os;
  int shown = 0, count = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (got[i] != want[i]) {
      if (shown++ < 4)
        os << " (" << i / cols << ", " << i % cols << "): " << got[i] << " not " << want[i] << ";";
      ++count;
    }
  return count
             ? std::to_string(count) + " of " + std::to_string(want.size()) + " differ:" + os.str()
             : std::string();
}

TEST(WgmmaProbe, each_building_block_of_the_wgmma_kernels_matches_a_plain_product) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  if (!cuda::flash_wgmma_available()) GTEST_SKIP() << "no sm_90a build or no 9.0 device";
  const Case cases[] = {
      {WgmmaBlock::Abt, 64, 1},     {WgmmaBlock::Abt, 128, 1},     {WgmmaBlock::AbtHeld, 64, 1},
      {WgmmaBlock::AbtHeld, 64, 2}, {WgmmaBlock::AbtHeld, 128, 1}, {WgmmaBlock::Pm, 64, 1},
      {WgmmaBlock::Pm, 64, 2},      {WgmmaBlock::Pm, 128, 1},
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(block_name(c.block)) + " D " + std::to_string(c.D) + " MT " +
                 std::to_string(c.MT));
    const int rows = 64 * c.MT, a_cols = c.block == WgmmaBlock::Pm ? 64 : c.D;
    const int out_cols = c.block == WgmmaBlock::Pm ? c.D : 64;
    std::vector<double> av, bv;
    const std::vector<uint16_t> a = small_ints(size_t(rows) * a_cols, seed++, av);
    const std::vector<uint16_t> b = small_ints(size_t(64) * c.D, seed++, bv);
    const std::vector<float> want = reference(c, av, bv);
    const std::string wrong =
        mismatches(cuda::wgmma_probe(c.block, c.D, c.MT, false, false, a, b), want, out_cols);
    // The readings the block's own operands depend on: the K-major one for the products like
    // Q K^T, the N-major one for P V.
    const bool k_major = c.block != WgmmaBlock::Pm;
    const std::string swapped =
        mismatches(cuda::wgmma_probe(c.block, c.D, c.MT, k_major, !k_major, a, b), want, out_cols);
    if (!wrong.empty()) {
      ADD_FAILURE() << wrong << " With the " << (k_major ? "K" : "N")
                    << "-major descriptor's LBO and SBO swapped (kernels/wgmma_tiles.cuh, "
                    << (k_major ? "kmajor" : "nmajor") << "): "
                    << (swapped.empty()
                            ? "it matches: swap them there"
                            : std::string("no match either: suspect ") + suspect(c.block));
      continue;
    }
    // The swapped reading must give another product, or a match above would say nothing.
    EXPECT_FALSE(swapped.empty()) << "the swapped descriptor gives the same product";
  }
}

TEST(WgmmaProbe, a_shape_it_does_not_run_is_refused) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  if (!cuda::flash_wgmma_available()) GTEST_SKIP() << "no sm_90a build or no 9.0 device";
  const std::vector<uint16_t> a(64 * 2 * 128), b(64 * 128);
  EXPECT_THROW(cuda::wgmma_probe(WgmmaBlock::AbtHeld, 128, 2, false, false, a, b), std::exception);
  EXPECT_THROW(cuda::wgmma_probe(WgmmaBlock::Abt, 64, 2, false, false, a, b), std::exception);
  EXPECT_THROW(cuda::wgmma_probe(WgmmaBlock::Pm, 64, 1, false, false, a, b), std::exception);
}

}  // namespace
}  // namespace tessera
