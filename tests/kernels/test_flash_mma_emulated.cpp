// The register-tile flash-attention bodies of kernels/flash_mma.h and flash_mma_backward.h, run on
// the CPU by the warp emulator (warp_emulator.h: one thread per lane, the PTX fragment layouts
// written down from the ISA), against the CPU reference flash kernels in f64 on the same
// bf16-rounded inputs. This checks the bodies' tiling, fragment indexing, masks, online softmax,
// head mapping and strides before a GPU runs them; the GPU parity tests
// (tests/cuda/test_attention_cuda.cpp, both kernel families) check the hardware.
//
// Tolerances are those of the GPU tests, for the same reasons: P and dS are rounded to bf16 before
// their products (relative 2^-9 per term) and outputs to bf16, with f32 accumulation, so errors sit
// near 4e-3 of a tensor's scale; 2e-2 (outputs) and 4e-2 (gradients, which also subtract rowsum(dO
// O) of the bf16 output) leave a 5x margin, while a wrong fragment, mask or head is off by O(1).
// Every output starts as NaN, so an element no lane writes fails the comparison.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "backend/kernels.h"
#include "kernels/flash_mma.h"
#include "kernels/flash_mma_backward.h"
#include "ops/ops.h"
#include "test_util.h"
#include "warp_emulator.h"

using namespace tessera;
using tessera::cuda::attn::BlockOrder;
using tessera::cuda::attn::BlockWork;
using tessera::cuda::attn::FlashParams;
using tessera::testing::rel_err;
using tessera::testing::values;
namespace mma = tessera::cuda::attn::mma;

namespace {

constexpr double kFwd = 2e-2, kBwd = 4e-2, kLse = 1e-3;

double max_abs_diff(const Tensor& got, const Tensor& ref) {
  const std::vector<double> g = values(got), r = values(ref);
  double err = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isfinite(g[i])) return INFINITY;
    err = std::max(err, std::abs(g[i] - r[i]));
  }
  return err;
}

uint16_t* bits(const Tensor& t) { return static_cast<uint16_t*>(t.data_ptr()); }
Tensor nan_bf16(const Shape& s) {
  Tensor t = Tensor::empty(s, {DType::BF16, Device::cpu()});
  std::fill(bits(t), bits(t) + t.numel(), uint16_t(0x7fc0));  // a quiet NaN
  return t;
}

struct Case {
  int64_t B, H, Hkv, T;
  int D;
  int64_t window;
  bool packed;  // q, k, v strided out of one (B, T, (H + 2 Hkv) D) projection
  double scale_mul = 1.0;   // the softmax scale is scale_mul / sqrt(D)
  double key_growth = 0.0;  // key t is scaled by 1 + key_growth t / T (scores rise along a row)
  std::string str() const {
    return "B " + std::to_string(B) + " H " + std::to_string(H) + "/" + std::to_string(Hkv) +
           " T " + std::to_string(T) + " D " + std::to_string(D) + " window " +
           std::to_string(window) + (packed ? " packed" : "") + " scale x " +
           std::to_string(scale_mul) + " key growth " + std::to_string(key_growth);
  }
};

template <int D>
void run_case(const Case& c, uint64_t seed) {
  SCOPED_TRACE(c.str());
  Generator g(seed);
  const Shape qs{c.B, c.H, c.T, D}, ks{c.B, c.Hkv, c.T, D}, rows{c.B, c.H, c.T};
  Tensor q, k, v;
  if (c.packed) {
    const Tensor qkv =
        randn({c.B, c.T, (c.H + 2 * c.Hkv) * D}, g).to(DType::BF16).view({c.B, c.T, -1, D});
    q = qkv.narrow(2, 0, c.H).transpose(1, 2);
    k = qkv.narrow(2, c.H, c.Hkv).transpose(1, 2);
    v = qkv.narrow(2, c.H + c.Hkv, c.Hkv).transpose(1, 2);
  } else {
    q = randn(qs, g).to(DType::BF16);
    k = randn(ks, g).to(DType::BF16);
    v = randn(ks, g).to(DType::BF16);
  }
  if (c.key_growth != 0.0) k = tessera::testing::rows_growing(k, c.key_growth).to(DType::BF16);
  const Tensor dout = randn(qs, g).to(DType::BF16);
  const double scale = c.scale_mul / std::sqrt(double(D));

  FlashParams p{};
  p.T = p.Tk = c.T, p.H = int(c.H), p.Hkv = int(c.Hkv), p.scale = float(scale);
  p.window = c.window;
  p.q = head_strides(q), p.k = head_strides(k), p.v = head_strides(v);
  Tensor out = nan_bf16(qs), lse = Tensor::empty(rows, {DType::F32, Device::cpu()});
  Tensor dq = nan_bf16(qs), dk = nan_bf16(ks), dv = nan_bf16(ks);
  p.o = head_strides(out), p.dq = head_strides(dq), p.dk = head_strides(dk);
  p.dv = head_strides(dv), p.dout = head_strides(dout);
  float* lp = static_cast<float*>(lse.data_ptr());
  const int64_t tiles = (c.T + cuda::attn::kMmaTile - 1) / cuda::attn::kMmaTile;

  // The forward at MT = 1 (64-row blocks) must give the bits of MT = 2 (128-row blocks): the
  // same products in the same order, only more rows per warp.
  Tensor out_narrow = nan_bf16(qs), lse_narrow = Tensor::empty(rows, lse.options());
  const int64_t wide_tiles = (c.T + 2 * cuda::attn::kMmaTile - 1) / (2 * cuda::attn::kMmaTile);
  // Every other block with its cp.async copies landing at issue (see the backward's below).
  for (int64_t bh = 0; bh < c.B * c.H; ++bh) {
    for (int64_t qt = 0; qt < wide_tiles; ++qt)
      emu::run_block(
          cuda::attn::kMmaThreads, mma::ForwardSmem<D, 2>::bytes,
          [&](auto& w) {
            mma::forward_block<D, 2>(w, bits(out), lp, bits(q), bits(k), bits(v), p, qt, bh);
          },
          (qt + bh) % 2 == 1);
    for (int64_t qt = 0; qt < tiles; ++qt)
      emu::run_block(
          cuda::attn::kMmaThreads, mma::ForwardSmem<D, 1>::bytes,
          [&](auto& w) {
            mma::forward_block<D, 1>(w, bits(out_narrow),
                                     static_cast<float*>(lse_narrow.data_ptr()), bits(q), bits(k),
                                     bits(v), p, qt, bh);
          },
          (qt + bh) % 2 == 0);
  }
  EXPECT_TRUE(tessera::testing::bytes(out) == tessera::testing::bytes(out_narrow));
  EXPECT_TRUE(tessera::testing::bytes(lse) == tessera::testing::bytes(lse_narrow));
  // K and V in two stages (FlashKernels::Mma2Stage) change when the copies land, not what is
  // computed: MT 1's bits again. With copies landing at issue in every other block, a refill of
  // the other stage that no barrier orders after the warps' last reads of it shows here.
  Tensor out_staged = nan_bf16(qs), lse_staged = Tensor::empty(rows, lse.options());
  for (int64_t bh = 0; bh < c.B * c.H; ++bh)
    for (int64_t qt = 0; qt < tiles; ++qt)
      emu::run_block(
          cuda::attn::kMmaThreads, mma::ForwardSmem<D, 1, mma::RowTiles, 2>::bytes,
          [&](auto& w) {
            mma::forward_block<D, 1, mma::RowTiles, 2>(w, bits(out_staged),
                                                       static_cast<float*>(lse_staged.data_ptr()),
                                                       bits(q), bits(k), bits(v), p, qt, bh);
          },
          (qt + bh) % 2 == 1);
  EXPECT_TRUE(tessera::testing::bytes(out_staged) == tessera::testing::bytes(out_narrow));
  EXPECT_TRUE(tessera::testing::bytes(lse_staged) == tessera::testing::bytes(lse_narrow));

  // drow = rowsum(dout * out) over the bf16 output, as flash_attention_backward's rowdot.
  Tensor drow = ops::sum(ops::mul(dout.to(DType::F32), out.to(DType::F32)), -1).contiguous();
  const float* dr = static_cast<const float*>(drow.data_ptr());
  // The backward blocks refill their streamed tiles while they use the other stage: every other
  // block runs with cp.async copies landing at issue, so a refill that is not behind a barrier
  // changes a tile some warp still reads (and the others land at their waits, as before).
  for (int64_t bkv = 0; bkv < c.B * c.Hkv; ++bkv)
    for (int64_t kt = 0; kt < tiles; ++kt)
      emu::run_block(
          cuda::attn::kMmaThreads, mma::BackwardSmem<D>::bytes,
          [&](auto& w) {
            mma::backward_dkdv_block<D>(w, bits(dk), bits(dv), bits(q), bits(k), bits(v),
                                        bits(dout), lp, dr, p, kt, bkv);
          },
          (kt + bkv) % 2 == 1);
  for (int64_t bh = 0; bh < c.B * c.H; ++bh)
    for (int64_t qt = 0; qt < tiles; ++qt)
      emu::run_block(
          cuda::attn::kMmaThreads, mma::BackwardSmem<D>::bytes,
          [&](auto& w) {
            mma::backward_dq_block<D>(w, bits(dq), bits(q), bits(k), bits(v), bits(dout), lp, dr,
                                      p, qt, bh);
          },
          (qt + bh) % 2 == 1);

  // The reference: the CPU flash kernels in f64 on the same rounded values.
  const Tensor q64 = q.to(DType::F64), k64 = k.to(DType::F64), v64 = v.to(DType::F64),
               do64 = dout.to(DType::F64);
  Tensor rout = Tensor::empty(qs, {DType::F64, Device::cpu()});
  Tensor rlse = Tensor::empty(rows, rout.options());
  TESSERA_KERNEL(rout, flash_attention_forward)(rout, rlse, q64, k64, v64, scale, c.window);
  Tensor rdq = Tensor::empty(qs, rout.options()), rdk = Tensor::empty(ks, rout.options()),
         rdv = Tensor::empty(ks, rout.options());
  TESSERA_KERNEL(rout, flash_attention_backward)(rdq, rdk, rdv, do64, q64, k64, v64, rout, rlse,
                                                 scale, c.window);

  EXPECT_LT(rel_err(out, rout), kFwd) << "out";
  EXPECT_LT(max_abs_diff(lse, rlse), kLse) << "lse";
  EXPECT_LT(rel_err(dq, rdq), kBwd) << "dq";
  EXPECT_LT(rel_err(dk, rdk), kBwd) << "dk";
  EXPECT_LT(rel_err(dv, rdv), kBwd) << "dv";
}

}  // namespace

// T not a multiple of the 64-row tiles exercises the zero-filled edge rows and the masks; H > Hkv
// the grouped-query mapping (the dK dV blocks loop over a group's query heads).
TEST(FlashMmaEmulated, head_dim_64_matches_the_cpu_reference) {
  run_case<64>({1, 2, 1, 130, 64, 0, false}, 11);
}

TEST(FlashMmaEmulated, head_dim_128_matches_the_cpu_reference) {
  run_case<128>({1, 1, 1, 80, 128, 0, false}, 12);
}

// Four query heads per kv head (the dK dV blocks sum over the group) and two batches.
TEST(FlashMmaEmulated, grouped_query_heads_over_two_batches_match_the_cpu_reference) {
  run_case<64>({2, 4, 1, 40, 64, 0, false}, 15);
}

// The heads read strided out of a fused projection, under a window that starts inside a tile
// (key tiles whose rows are partly masked, and query rows that see nothing of a visited tile).
TEST(FlashMmaEmulated, packed_heads_under_a_sliding_window_match_the_cpu_reference) {
  run_case<64>({2, 2, 1, 150, 64, 40, true}, 13);
}

// Window 2: each query sees itself and the key before it; all but two scores of every row of
// every tile are masked. (Window 1 would make dq and dk exactly zero, a pure cancellation
// residual against which no relative bound means anything.)
TEST(FlashMmaEmulated, a_window_of_two_matches_the_cpu_reference) {
  run_case<64>({1, 1, 1, 70, 64, 2, false}, 14);
}

// The forward folds a positive scale into its exponent (online_softmax); a scale of 0 (every
// visible key weighted alike: the masked scores' -inf must not meet the 0) or below multiplies
// the scores first.
TEST(FlashMmaEmulated, a_zero_or_negative_scale_matches_the_cpu_reference) {
  run_case<64>({1, 1, 1, 100, 64, 0, false, 0.0}, 16);
  run_case<64>({1, 1, 1, 100, 64, 30, false, -1.0}, 17);
}

// Keys up to 41 times larger along the sequence: a row's maximum keeps rising from tile to tile,
// far past 2^127 times its first tile's, so the forward's lazy rescaling must move m and rescale
// O in later tiles, after tiles where it did not (a forward that kept its first m overflows
// here: checked; one that moved m without rescaling O fails the other cases too).
TEST(FlashMmaEmulated, scores_rising_along_the_row_match_the_cpu_reference) {
  run_case<64>({1, 2, 1, 300, 64, 0, false, 1.0, 40.0}, 18);
  run_case<128>({1, 1, 1, 200, 128, 0, false, 1.0, 40.0}, 19);
}

// The flash kernels' block order: each (head, tile rank) exactly once; groups of heads one after
// another; inside a group the ranks never decrease (every head's longest tile first).
TEST(FlashMmaOrder, every_head_and_tile_once_longest_first_within_a_group) {
  const BlockOrder orders[] = {{1, 1, 1}, {96, 8, 64}, {96, 8, 96}, {7, 5, 3},
                               {5, 16, 1}, {12, 3, 5}, {4, 4, 4}};
  for (const BlockOrder& o : orders) {
    std::set<std::pair<int64_t, int64_t>> seen;
    int64_t last_group = 0, last_rank = 0;
    for (int64_t block = 0; block < o.heads * o.tiles; ++block) {
      const BlockWork w = cuda::attn::block_work(block, o);
      const std::string at = "heads " + std::to_string(o.heads) + " tiles " +
                             std::to_string(o.tiles) + " group " + std::to_string(o.group) +
                             " block " + std::to_string(block);
      ASSERT_TRUE(w.head >= 0 && w.head < o.heads && w.rank >= 0 && w.rank < o.tiles) << at;
      EXPECT_TRUE(seen.insert({w.head, w.rank}).second) << at;
      const int64_t group = w.head / o.group;
      EXPECT_GE(group, last_group) << at;
      if (group == last_group) {
        EXPECT_GE(w.rank, last_rank) << at;
      }
      last_group = group, last_rank = w.rank;
    }
    EXPECT_EQ(int64_t(seen.size()), o.heads * o.tiles);
  }
  // 16 MiB of shared operands per group.
  EXPECT_EQ(cuda::attn::heads_per_group(96, 1024 * 64 * 4), 64);  // GPT-2's K and V at T 1024
  EXPECT_EQ(cuda::attn::heads_per_group(32, 16384 * 64 * 4), 4);
  EXPECT_EQ(cuda::attn::heads_per_group(3, int64_t(1) << 30), 1);
  EXPECT_EQ(cuda::attn::heads_per_group(10, 1), 10);
}

