// The register-tile stick-breaking bodies of kernels/stick_mma.h, run on the CPU by the warp
// emulator (warp_emulator.h), against the CPU reference stick-breaking kernels in f64 on the same
// bf16-rounded inputs: the permuted key order, the row scans across lanes and tiles, the masks, the
// checkpoints between the two backward passes and the head mapping, before a GPU runs them. The
// GPU parity tests (tests/cuda/test_attention_cuda.cpp) check the hardware.
//
// Tolerances are the GPU tests' (same reasons): A and dz are rounded to bf16 before their products
// and outputs to bf16, with f32 sums: out within 2e-2 of its scale; dk, dv within 4e-2; dq within
// 1e-1 (it sums dz of both signs over every earlier key, so the rounding grows with the row's
// length). log rem is a sum of f32 logs: 1e-4 of its largest magnitude. A wrong lane, key order,
// carry or mask is off by O(1). Every output starts as NaN, so an element nobody writes fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/kernels.h"
#include "kernels/stick_mma.h"
#include "ops/ops.h"
#include "test_util.h"
#include "warp_emulator.h"

using namespace tessera;
using tessera::cuda::attn::mma::StickCkpt;
using tessera::cuda::attn::StickParams;
using tessera::testing::rel_err;
using tessera::testing::values;
namespace mma = tessera::cuda::attn::mma;

namespace {

constexpr double kFwd = 2e-2, kDkv = 4e-2, kDq = 1e-1, kLogRem = 1e-4;


uint16_t* bits(const Tensor& t) { return static_cast<uint16_t*>(t.data_ptr()); }
float* f32(const Tensor& t) { return static_cast<float*>(t.data_ptr()); }
Tensor nan_tensor(const Shape& s, DType dt) {
  Tensor t = Tensor::empty(s, {dt, Device::cpu()});
  if (dt == DType::BF16)
    std::fill(bits(t), bits(t) + t.numel(), uint16_t(0x7fc0));
  else
    std::fill(f32(t), f32(t) + t.numel(), NAN);
  return t;
}

struct Case {
  int64_t B, H, Hkv, T;
  bool current, remainder;
  double spread;  // q and k are N(0, spread^2): 1 gives ordinary scores, 3 scores near +-10
  bool packed = false;  // q, k, v strided out of one (B, T, (H + 2 Hkv) D) projection; out,
                        // dq, dk, dv into (B, T, heads, D) buffers
  std::string str() const {
    return "B " + std::to_string(B) + " H " + std::to_string(H) + "/" + std::to_string(Hkv) +
           " T " + std::to_string(T) + (current ? " attend_current" : "") +
           (remainder ? " remainder" : "") + " spread " + std::to_string(spread) +
           (packed ? " packed" : "");
  }
};

// A (B, n, T, D) bf16 tensor of NaNs: contiguous, or the heads of a (B, T, n, D) buffer.
Tensor nan_heads(int64_t B, int64_t n, int64_t T, int64_t D, bool packed) {
  if (!packed) return nan_tensor({B, n, T, D}, DType::BF16);
  return nan_tensor({B, T, n, D}, DType::BF16).transpose(1, 2);
}

template <int D>
void run_case(const Case& c, uint64_t seed) {
  SCOPED_TRACE(c.str() + " D " + std::to_string(D));
  Generator g(seed);
  const Shape qs{c.B, c.H, c.T, D}, ks{c.B, c.Hkv, c.T, D}, rows{c.B, c.H, c.T};
  Tensor q, k, v;
  if (c.packed) {
    const Tensor qkv = ops::scale(randn({c.B, c.T, (c.H + 2 * c.Hkv) * D}, g), c.spread)
                           .to(DType::BF16)
                           .view({c.B, c.T, -1, D});
    q = qkv.narrow(2, 0, c.H).transpose(1, 2);
    k = qkv.narrow(2, c.H, c.Hkv).transpose(1, 2);
    v = qkv.narrow(2, c.H + c.Hkv, c.Hkv).transpose(1, 2);
  } else {
    q = ops::scale(randn(qs, g), c.spread).to(DType::BF16);
    k = ops::scale(randn(ks, g), c.spread).to(DType::BF16);
    v = randn(ks, g).to(DType::BF16);
  }
  const Tensor dout = c.packed ? randn({c.B, c.T, c.H, D}, g).to(DType::BF16).transpose(1, 2)
                               : randn(qs, g).to(DType::BF16);
  const double scale = 1.0 / std::sqrt(double(D));
  StickParams p{};
  p.T = p.Tk = c.T, p.H = int(c.H), p.Hkv = int(c.Hkv), p.scale = float(scale);
  p.attend_current = c.current, p.add_remainder = c.remainder;
  p.q = head_strides(q), p.k = head_strides(k), p.v = head_strides(v);
  p.dout = head_strides(dout);
  constexpr int64_t kTile = cuda::attn::kMmaTile;
  const int64_t tiles = (c.T + kTile - 1) / kTile;

  // The forward at MT = 1 and MT = 2 (64- and 128-row blocks) must agree bit for bit: the same
  // arithmetic per row, only more rows per warp. Every other block lands its cp.async copies at
  // issue, so a tile refilled while a warp still reads it shows.
  Tensor out = nan_heads(c.B, c.H, c.T, D, c.packed), lr = nan_tensor(rows, DType::F32),
         rem = nan_tensor(rows, DType::BF16);
  Tensor out1 = nan_heads(c.B, c.H, c.T, D, c.packed), lr1 = nan_tensor(rows, DType::F32);
  p.o = head_strides(out);
  for (int64_t bh = 0; bh < c.B * c.H; ++bh) {
    for (int64_t qt = 0; qt < (c.T + 2 * kTile - 1) / (2 * kTile); ++qt)
      emu::run_block(
          cuda::attn::kMmaThreads, mma::ForwardSmem<D, 2>::bytes,
          [&](auto& w) {
            mma::stick_forward_block<D, 2>(w, bits(out), f32(lr), bits(rem), bits(q), bits(k),
                                           bits(v), p, qt, bh);
          },
          (qt + bh) % 2 == 1);
    for (int64_t qt = 0; qt < tiles; ++qt)
      emu::run_block(
          cuda::attn::kMmaThreads, mma::ForwardSmem<D, 1>::bytes,
          [&](auto& w) {
            mma::stick_forward_block<D, 1>(w, bits(out1), f32(lr1), nullptr, bits(q), bits(k),
                                           bits(v), p, qt, bh);
          },
          (qt + bh) % 2 == 0);
  }
  EXPECT_TRUE(tessera::testing::bytes(out) == tessera::testing::bytes(out1));
  EXPECT_TRUE(tessera::testing::bytes(lr) == tessera::testing::bytes(lr1));
  // K and V in two stages (FlashKernels::Mma2Stage): MT 1's bits again, the copies landing at
  // issue in the other half of the blocks.
  Tensor out2 = nan_heads(c.B, c.H, c.T, D, c.packed), lr2 = nan_tensor(rows, DType::F32);
  for (int64_t bh = 0; bh < c.B * c.H; ++bh)
    for (int64_t qt = 0; qt < tiles; ++qt)
      emu::run_block(
          cuda::attn::kMmaThreads, mma::ForwardSmem<D, 1, mma::RowTiles, 2>::bytes,
          [&](auto& w) {
            mma::stick_forward_block<D, 1, 2>(w, bits(out2), f32(lr2), nullptr, bits(q), bits(k),
                                              bits(v), p, qt, bh);
          },
          (qt + bh) % 2 == 1);
  EXPECT_TRUE(tessera::testing::bytes(out2) == tessera::testing::bytes(out1));
  EXPECT_TRUE(tessera::testing::bytes(lr2) == tessera::testing::bytes(lr1));

  // W = rowsum(dout * out) over the bf16 output, as stick_breaking_backward's rowdot.
  const Tensor wrow = ops::sum(ops::mul(dout.to(DType::F32), out.to(DType::F32)), -1).contiguous();
  std::vector<StickCkpt> ckpt(size_t(c.B * c.H * tiles * c.T * 4), StickCkpt{NAN, NAN});
  Tensor dq = nan_heads(c.B, c.H, c.T, D, c.packed), dk = nan_heads(c.B, c.Hkv, c.T, D, c.packed),
         dv = nan_heads(c.B, c.Hkv, c.T, D, c.packed),
         dk1 = nan_heads(c.B, c.Hkv, c.T, D, c.packed),
         dv1 = nan_heads(c.B, c.Hkv, c.T, D, c.packed);
  p.dq = head_strides(dq), p.dk = head_strides(dk), p.dv = head_strides(dv);
  for (int64_t bh = 0; bh < c.B * c.H; ++bh)
    for (int64_t qt = 0; qt < tiles; ++qt)
      emu::run_block(
          cuda::attn::kMmaThreads, mma::BackwardSmem<D>::bytes,
          [&](auto& w) {
            mma::stick_backward_dq_block<D>(w, bits(dq), ckpt.data(), bits(q), bits(k), bits(v),
                                            bits(dout), f32(wrow), p, qt, bh);
          },
          (qt + bh) % 2 == 1);
  // The dK dV pass with the next item streaming in (2 stages) and loading after (1 stage): the
  // same arithmetic, so the same bits.
  for (int64_t bkv = 0; bkv < c.B * c.Hkv; ++bkv)
    for (int64_t kt = 0; kt < tiles; ++kt) {
      emu::run_block(
          cuda::attn::kMmaThreads, mma::StickDkdvSmem<D, 2>::bytes,
          [&](auto& w) {
            mma::stick_backward_dkdv_block<D, 2>(w, bits(dk), bits(dv), ckpt.data(), bits(q),
                                                 bits(k), bits(v), bits(dout), f32(wrow), f32(lr),
                                                 p, kt, bkv);
          },
          (kt + bkv) % 2 == 1);
      emu::run_block(
          cuda::attn::kMmaThreads, mma::StickDkdvSmem<D, 1>::bytes,
          [&](auto& w) {
            mma::stick_backward_dkdv_block<D, 1>(w, bits(dk1), bits(dv1), ckpt.data(), bits(q),
                                                 bits(k), bits(v), bits(dout), f32(wrow), f32(lr),
                                                 p, kt, bkv);
          },
          (kt + bkv) % 2 == 0);
    }
  EXPECT_TRUE(tessera::testing::bytes(dk) == tessera::testing::bytes(dk1));
  EXPECT_TRUE(tessera::testing::bytes(dv) == tessera::testing::bytes(dv1));

  // The reference: the CPU kernels in f64 on the same rounded values.
  const Tensor q64 = q.to(DType::F64), k64 = k.to(DType::F64), v64 = v.to(DType::F64),
               do64 = dout.to(DType::F64);
  Tensor rout = Tensor::empty(qs, {DType::F64, Device::cpu()});
  Tensor rlr = Tensor::empty(rows, rout.options()), rrem = Tensor::empty(rows, rout.options());
  TESSERA_KERNEL(rout, stick_breaking_forward)(rout, rlr, rrem, q64, k64, v64, scale, c.current,
                                               c.remainder);
  Tensor rdq = Tensor::empty(qs, rout.options()), rdk = Tensor::empty(ks, rout.options()),
         rdv = Tensor::empty(ks, rout.options());
  TESSERA_KERNEL(rout, stick_breaking_backward)(rdq, rdk, rdv, do64, q64, k64, v64, rout, rlr,
                                                scale, c.current, c.remainder);

  EXPECT_LT(rel_err(out, rout), kFwd) << "out";
  EXPECT_LT(rel_err(lr, rlr), kLogRem) << "log_rem";
  EXPECT_LT(rel_err(rem, rrem), kFwd) << "rem";
  EXPECT_LT(rel_err(dq, rdq), kDq) << "dq";
  EXPECT_LT(rel_err(dk, rdk), kDkv) << "dk";
  EXPECT_LT(rel_err(dv, rdv), kDkv) << "dv";
}

}  // namespace

// T not a multiple of 64: zero-filled edge rows and the masks; H > Hkv: the dK dV blocks loop over
// a group's query heads.
TEST(StickMmaEmulated, head_dim_64_matches_the_cpu_reference) {
  run_case<64>({1, 2, 1, 130, false, false, 1.0}, 21);
}

TEST(StickMmaEmulated, head_dim_128_attending_itself_with_the_remainder_matches) {
  run_case<128>({1, 1, 1, 80, true, true, 1.0}, 22);
}

TEST(StickMmaEmulated, grouped_query_heads_over_two_batches_match_the_cpu_reference) {
  run_case<64>({2, 4, 2, 40, false, true, 1.0}, 23);
}

// The heads read strided out of a fused projection and written into (B, T, heads, D) buffers.
TEST(StickMmaEmulated, packed_heads_match_the_cpu_reference) {
  run_case<64>({2, 2, 1, 70, false, true, 1.0, true}, 25);
}

// Scores near +-10: 1 - beta down to 1e-5, so a lane's product of 16 sticks leaves f32's range
// and the weights past it are zero, while log rem (hundreds below zero) must stay exact: the
// 16-row groups where a product underflows take stick_exact_log2, the others log2 of their
// products (about a third of the groups take the exact logs at D 64, half at D 128). Without the
// exact logs log rem is -inf (checked), and with the diagonal's masked keys counted in them out is
// wrong too.
TEST(StickMmaEmulated, scores_whose_stick_products_underflow_keep_log_rem_exact) {
  run_case<64>({1, 1, 1, 150, true, false, 3.0}, 24);
  run_case<128>({1, 2, 1, 100, false, true, 3.0}, 26);
}
