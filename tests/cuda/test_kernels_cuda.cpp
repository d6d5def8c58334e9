// GPU parity of the core CUDA kernels (kernels/core.cu and the files it registers, core.cuh)
// against the CPU reference kernels of the same table entries. Every test skips without a CUDA
// device; `ctest -L gpu` runs exactly these.
//
// Each test draws inputs on the CPU and rounds them to the dtype under test, runs the CUDA kernel
// on those values (stored in that dtype) and the CPU kernel in f32 on the very same values, and
// compares the CUDA result, converted to f32, with the CPU's:
//  - bit for bit where the CUDA kernel rounds exactly where the CPU does (binary, axpby, copies,
//    the embedding scatter-add, dropout and the Philox draws); for bf16 the reference is then the
//    CPU's f32 result rounded once to bf16, which is what the CUDA kernel stores;
//  - otherwise norm-wise, max |gpu - cpu| / max |cpu| over a tensor (single elements near zero
//    would make elementwise relative errors meaningless), against kF32 or kBf16
//    (core_kernels_fixture.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/cuda.h"
#include "backend/kernels.h"
#include "backend/profile.h"
#include "core/rng.h"
#include "core_kernels_fixture.h"
#include "nn/rope_scaling.h"
#include "ops/rope.h"
#include "test_util.h"

namespace tessera {
namespace {

using namespace kernel_tests;
using testing::bytes;
using testing::error_of;
using testing::values;

INSTANTIATE_TEST_SUITE_P(Dtypes, CoreKernelsCuda, ::testing::Values(DType::F32, DType::BF16),
                         param_name);

// ---- random draws and arange ------------------------------------------------------------------

TEST_P(CoreKernelsCuda, random_draws_and_arange_match_the_cpu_bit_for_bit) {
  const Shape s{3, 1000};
  const uint64_t seed = 1234, offset = 777;
  Tensor gu = gpu_empty(s, dt()), gn = gpu_empty(s, dt()), ga = gpu_empty({2999}, dt());
  Tensor cu = cpu_empty(s), cn = cpu_empty(s), ca = cpu_empty({2999});
  TESSERA_KERNEL(gu, uniform)(gu, seed, offset);
  cpu_k().uniform(cu, seed, offset);
  TESSERA_KERNEL(gn, normal)(gn, seed, offset);
  cpu_k().normal(cn, seed, offset);
  TESSERA_KERNEL(ga, arange)(ga, -3.5, 0.1);
  cpu_k().arange(ca, -3.5, 0.1);
  expect_bits(gu, cu, "uniform");
  // Box-Muller in double: CUDA's log / cos may differ from glibc's by an ulp of a double, which
  // moves the f32 result only when it lies within ~2^-29 of a rounding boundary (odds of about
  // 10^-5 for these 3000 draws).
  expect_bits(gn, cn, "normal");
  expect_bits(ga, ca, "arange");
}

TEST(CoreKernelsCudaMemory, arange_and_uniform_take_every_dtype) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  for (DType t : {DType::F64, DType::I32, DType::U8}) {
    // f64 step 0.1: start + i * step fused into one fma would round differently from the CPU.
    const double step = t == DType::F64 ? 0.1 : 0.75;
    Tensor g = Tensor::empty({300}, {t, kGpu}), c = Tensor::empty({300}, t);
    TESSERA_KERNEL(g, arange)(g, 2.0, step);
    cpu::kernels().arange(c, 2.0, step);
    EXPECT_EQ(bytes(g.to(Device::cpu())), bytes(c)) << "arange " << dtype_name(t);
  }
  Tensor g = Tensor::empty({5000}, {DType::F64, kGpu}), c = Tensor::empty({5000}, DType::F64);
  TESSERA_KERNEL(g, uniform)(g, 9, 1ull << 40);  // an offset past 32 bits of counter
  cpu::kernels().uniform(c, 9, 1ull << 40);
  EXPECT_EQ(bytes(g.to(Device::cpu())), bytes(c)) << "uniform f64";
}

TEST(CoreKernelsCudaMemory, f64_compute_is_refused_with_the_kernel_and_dtype) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Tensor x = Tensor::empty({4, 8}, {DType::F64, kGpu});
  Tensor y = Tensor::empty({4, 8}, {DType::F64, kGpu});
  const std::string msg = error_of([&] { TESSERA_KERNEL(x, gelu_forward)(y, x); });
  EXPECT_NE(msg.find("gelu_forward"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f64"), std::string::npos) << msg;
}

// Strided copies and casts (kernels/memory.cu collapses dimensions and picks 32-bit indexing):
// permutes, narrows, size-1 dimensions and a strided destination, across dtype pairs, give the CPU
// copy's bytes.
TEST(CoreKernelsCudaMemory, strided_copies_and_casts_match_the_cpu_bit_for_bit) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator g(11);
  const Tensor base = random({2, 4, 3, 5}, DType::F32, g, 8.0);
  struct View {
    const char* name;
    Tensor (*of)(const Tensor&);  // (2, 4, 3, 5) -> a (2, 3, 4, 5)-shaped view, or another
  };
  const View views[] = {
      {"permute", [](const Tensor& t) { return t.permute({0, 2, 1, 3}); }},
      {"narrow last", [](const Tensor& t) { return t.narrow(3, 1, 3); }},
      {"narrow middle", [](const Tensor& t) { return t.narrow(1, 1, 2); }},
      {"size-1 dims", [](const Tensor& t) { return t.narrow(0, 1, 1).narrow(2, 2, 1).permute({3, 1, 0, 2}); }},
      {"permute of a narrow", [](const Tensor& t) { return t.narrow(3, 2, 3).permute({3, 2, 1, 0}); }},
      {"contiguous", [](const Tensor& t) { return t; }},
  };
  const std::pair<DType, DType> pairs[] = {{DType::F32, DType::F32},  {DType::BF16, DType::BF16},
                                           {DType::F32, DType::BF16}, {DType::BF16, DType::F32},
                                           {DType::F32, DType::F64},  {DType::I32, DType::F32},
                                           {DType::F64, DType::BF16}};
  for (const auto& [from, to] : pairs) {
    const Tensor c_src = base.to(from), g_src = c_src.to(kGpu);
    for (const View& v : views) {
      const std::string what = std::string(v.name) + " " + dtype_name(from) + " -> " + dtype_name(to);
      const Tensor cv = v.of(c_src), gv = v.of(g_src);
      Tensor c_dst = Tensor::empty(cv.shape(), to), g_dst = Tensor::empty(cv.shape(), {to, kGpu});
      cpu::kernels().copy(c_dst, cv);
      TESSERA_KERNEL(g_dst, copy)(g_dst, gv);
      EXPECT_EQ(bytes(g_dst.to(Device::cpu())), bytes(c_dst)) << what;
    }
    // Into a strided destination: the columns around it keep their zeros.
    Tensor c_big = zeros({2, 3, 4, 8}, to), g_big = zeros({2, 3, 4, 8}, {to, kGpu});
    cpu::kernels().copy(c_big.narrow(3, 2, 5), c_src.permute({0, 2, 1, 3}));
    TESSERA_KERNEL(g_big, copy)(g_big.narrow(3, 2, 5), g_src.permute({0, 2, 1, 3}));
    EXPECT_EQ(bytes(g_big.to(Device::cpu())), bytes(c_big))
        << "into a narrow " << dtype_name(from) << " -> " << dtype_name(to);
  }
}

// The kernel profile (backend/profile.h) on the device: events around each call, resolved once.
TEST(CoreKernelsCudaMemory, the_profile_times_device_kernels_and_reads_count_as_waits) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Tensor a = Tensor::empty({512, 512}, {DType::BF16, kGpu}), c = Tensor::empty({512, 512}, {DType::BF16, kGpu});
  TESSERA_KERNEL(a, fill)(a, 0.5);
  profile::start();
  for (int i = 0; i < 3; ++i) TESSERA_KERNEL(c, gemm)(c, a, a, false, false, 1.0, 0.0);
  profile::stop();
  const std::vector<profile::Row> rows = profile::rows();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].kernel, "gemm");
  EXPECT_EQ(rows[0].device, "cuda:0");
  EXPECT_EQ(rows[0].calls, 3);
  EXPECT_EQ(rows[0].shapes, "bf16 (512, 512) <- (512, 512)");
  // Three 512^3 gemms: more than a microsecond of device time each, less than a second in all
  // (not in an AddressSanitizer build of the emulator, many times slower).
  EXPECT_GT(rows[0].ms, 3e-3);
#ifndef __SANITIZE_ADDRESS__
  EXPECT_LT(rows[0].ms, 1e3);
#endif
  const int64_t reads = cuda::sync_stats().copies_to_host;
  EXPECT_EQ(c.to(Device::cpu()).to_vector<bf16>().size(), size_t(512 * 512));
  EXPECT_EQ(cuda::sync_stats().copies_to_host, reads + 1);
}

// ---- elementwise ------------------------------------------------------------------------------

TEST_P(CoreKernelsCuda, binary_and_axpby_round_like_the_cpu) {
  Generator g(1);
  const Shape s{7, 130};
  Tensor a = random(s, dt(), g), b = random(s, dt(), g), row = random({130}, dt(), g);
  Tensor ga = to_gpu(a, dt()), gb = to_gpu(b, dt()), grow = to_gpu(row, dt());
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul}) {
    for (bool broadcast : {false, true}) {
      const std::string what = "binary op " + std::to_string(int(op)) + (broadcast ? " row" : "");
      Tensor go = gpu_empty(s, dt()), co = cpu_empty(s);
      TESSERA_KERNEL(ga, binary)(op, go, ga, broadcast ? grow : gb);
      cpu_k().binary(op, co, a, broadcast ? row : b);
      expect_bits(go, co, what);
    }
  }
  Tensor go = gpu_empty(s, dt()), co = cpu_empty(s);
  TESSERA_KERNEL(ga, axpby)(go, 0.7, ga, -1.3, gb);
  cpu_k().axpby(co, 0.7, a, -1.3, b);
  expect_bits(go, co, "axpby");
  TESSERA_KERNEL(ga, axpby)(go, 0.3, ga, 0.0, Tensor());
  cpu_k().axpby(co, 0.3, a, 0.0, Tensor());
  expect_bits(go, co, "axpby without y");
  // out aliasing y, as gradient accumulation calls it.
  Tensor gy = gb.clone(), cy = b.clone();
  TESSERA_KERNEL(ga, axpby)(gy, 1.0, ga, 1.0, gy);
  cpu_k().axpby(cy, 1.0, a, 1.0, cy);
  expect_bits(gy, cy, "axpby in place");
}

// More elements than one grid-stride pass covers (65536 blocks of 256 threads): the broadcast
// row's column must still be the right one on every step.
TEST(CoreKernelsCudaMemory, a_broadcast_row_past_one_grid_stride_matches_the_cpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Generator g(12);
  const Shape s{131075, 130};  // 17.04M elements > 2^24 threads
  Tensor a = rand(s, g), row = rand({130}, g);
  Tensor go = gpu_empty(s, DType::F32), co = cpu_empty(s);
  TESSERA_KERNEL(go, binary)(BinaryOp::Add, go, a.to(kGpu), row.to(kGpu));
  cpu_k().binary(BinaryOp::Add, co, a, row);
  EXPECT_TRUE(bytes(go.to(Device::cpu())) == bytes(co));
}

// The elementwise kernels move 16 bytes per access (core.cuh's ld_n / st_n) when every pointer is
// 16-byte aligned and a broadcast row holds whole groups, else one element at a time; each ends
// with the elements past the last whole group. Operands here are views starting `shift` elements
// into an allocation: 0 (aligned: groups), 1 (misaligned: the emulator fails any 16-byte access
// there, so this also checks the host's choice). The broadcast row of 64 columns is whole groups
// in f32 and bf16; n = 5 * 64 + 3 leaves a tail in both without the row.
TEST_P(CoreKernelsCuda, grouped_and_misaligned_elementwise_match_the_cpu_bit_for_bit) {
  Generator g(13);
  const int64_t C = 64, n = 5 * C + 3;
  for (int64_t shift : {0, 1}) {
    const std::string at = " at element offset " + std::to_string(shift);
    auto view = [&](const Tensor& t, int64_t count) {  // t's values at `shift` into a buffer
      Tensor buf = gpu_empty({count + shift}, dt());
      Tensor v = buf.narrow(0, shift, count);
      if (t.defined()) v.copy_(t);
      return v;
    };
    Tensor a = random({n}, dt(), g), b = random({n}, dt(), g), row = random({C}, dt(), g);
    Tensor ga = view(a, n), gb = view(b, n), grow = view(row, C), go = view(Tensor(), n);
    Tensor co = cpu_empty({n});
    TESSERA_KERNEL(ga, binary)(BinaryOp::Mul, go, ga, gb);
    cpu_k().binary(BinaryOp::Mul, co, a, b);
    expect_bits(go, co, "binary" + at);
    const int64_t m = 5 * C;  // whole rows for the broadcast
    Tensor gom = go.narrow(0, 0, m), com = cpu_empty({m});
    TESSERA_KERNEL(ga, binary)(BinaryOp::Sub, gom, ga.narrow(0, 0, m).view({5, C}), grow);
    cpu_k().binary(BinaryOp::Sub, com, a.narrow(0, 0, m).view({5, C}), row);
    expect_bits(gom, com, "binary row" + at);
    TESSERA_KERNEL(ga, axpby)(go, 0.7, ga, -1.3, gb);
    cpu_k().axpby(co, 0.7, a, -1.3, b);
    expect_bits(go, co, "axpby" + at);
    TESSERA_KERNEL(ga, dropout)(go, ga, 0.3, 7, 11);
    cpu_k().dropout(co, a, 0.3, 7, 11);
    expect_bits(go, co, "dropout" + at);
    TESSERA_KERNEL(ga, gelu_backward)(go, gb, ga);
    cpu_k().gelu_backward(co, b, a);
    expect_close(go, co, "gelu_backward" + at);
    Tensor go2 = view(Tensor(), n), co2 = cpu_empty({n});
    TESSERA_KERNEL(ga, swiglu_backward)(go, go2, gb, ga, gb);
    cpu_k().swiglu_backward(co, co2, b, a, b);
    expect_close(go, co, "swiglu_backward dgate" + at);
    expect_close(go2, co2, "swiglu_backward dup" + at);
  }
}

TEST_P(CoreKernelsCuda, sum_dim_and_expand_dim_match_the_cpu) {
  Generator g(2);
  struct Case {
    int64_t outer, n, inner;
  };
  // inner 1 (row sums), odd inner below and above the 32-column tile, a long n; the last two are
  // summed in splits of n (a bias gradient's shape, and an n no split size divides).
  for (Case c : {Case{5, 300, 1}, Case{3, 41, 7}, Case{4, 5, 70}, Case{1, 1000, 33},
                 Case{1, 4096, 96}, Case{2, 3001, 40}}) {
    const std::string what = shape_str({c.outer, c.n, c.inner});
    Tensor x = random({c.outer, c.n, c.inner}, dt(), g);
    Tensor go = gpu_empty({c.outer, c.inner}, dt()), co = cpu_empty({c.outer, c.inner});
    const Tensor gx = to_gpu(x, dt());
    TESSERA_KERNEL(go, sum_dim)(go, gx, c.outer, c.n, c.inner, false);
    cpu_k().sum_dim(co, x, c.outer, c.n, c.inner, false);
    expect_close(go, co, "sum_dim " + what);

    // Accumulating (a bias gradient onto the earlier micro-batches'): the bits of the sum alone
    // added with axpby.
    const Tensor held = random({c.outer, c.inner}, dt(), g);
    Tensor acc = to_gpu(held, dt()), sep = to_gpu(held, dt());
    TESSERA_KERNEL(acc, sum_dim)(acc, gx, c.outer, c.n, c.inner, true);
    TESSERA_KERNEL(sep, axpby)(sep, 1.0, sep, 1.0, go);
    EXPECT_EQ(bytes(acc.to(Device::cpu())), bytes(sep.to(Device::cpu()))) << "accumulated " << what;
    Tensor cacc = held.clone();
    cpu_k().sum_dim(cacc, x, c.outer, c.n, c.inner, true);
    EXPECT_LE(rel_err(acc, cacc), dt() == DType::F32 ? kF32 : 2 * kBf16) << "accumulated " << what;

    if (dt() == DType::BF16) {  // into an f32 out: the f32 sum, not rounded to bf16
      Tensor wide = gpu_empty({c.outer, c.inner}, DType::F32);
      TESSERA_KERNEL(wide, sum_dim)(wide, gx, c.outer, c.n, c.inner, false);
      EXPECT_LE(rel_err(wide, co), kF32) << "f32 out " << what;
      Tensor wacc = held.to(kGpu), wcpu = held.clone();
      TESSERA_KERNEL(wacc, sum_dim)(wacc, gx, c.outer, c.n, c.inner, true);
      cpu_k().sum_dim(wcpu, x, c.outer, c.n, c.inner, true);
      EXPECT_LE(rel_err(wacc, wcpu), kF32) << "f32 out accumulated " << what;
    }

    Tensor small = random({c.outer, c.inner}, dt(), g);
    Tensor ge = gpu_empty({c.outer, c.n, c.inner}, dt()), ce = cpu_empty({c.outer, c.n, c.inner});
    TESSERA_KERNEL(ge, expand_dim)(ge, to_gpu(small, dt()), c.outer, c.n, c.inner);
    cpu_k().expand_dim(ce, small, c.outer, c.n, c.inner);
    expect_bits(ge, ce, "expand_dim " + what);
  }
}

TEST_P(CoreKernelsCuda, activations_and_their_gradients_match_the_cpu) {
  Generator g(3);
  const Shape s{9, 517};
  // Scaled by 4 so the tails (saturated tanh, sigmoid's two branches) are exercised.
  Tensor x = random(s, dt(), g, 4.0), up = random(s, dt(), g), dy = random(s, dt(), g);
  Tensor gx = to_gpu(x, dt()), gup = to_gpu(up, dt()), gdy = to_gpu(dy, dt());
  Tensor go = gpu_empty(s, dt()), co = cpu_empty(s), go2 = gpu_empty(s, dt()), co2 = cpu_empty(s);

  TESSERA_KERNEL(gx, gelu_forward)(go, gx);
  cpu_k().gelu_forward(co, x);
  expect_close(go, co, "gelu_forward");
  TESSERA_KERNEL(gx, gelu_backward)(go, gdy, gx);
  cpu_k().gelu_backward(co, dy, x);
  expect_close(go, co, "gelu_backward");
  TESSERA_KERNEL(gx, silu_forward)(go, gx);
  cpu_k().silu_forward(co, x);
  expect_close(go, co, "silu_forward");
  TESSERA_KERNEL(gx, silu_backward)(go, gdy, gx);
  cpu_k().silu_backward(co, dy, x);
  expect_close(go, co, "silu_backward");
  TESSERA_KERNEL(gx, swiglu_forward)(go, gx, gup);
  cpu_k().swiglu_forward(co, x, up);
  expect_close(go, co, "swiglu_forward");
  TESSERA_KERNEL(gx, swiglu_backward)(go, go2, gdy, gx, gup);
  cpu_k().swiglu_backward(co, co2, dy, x, up);
  expect_close(go, co, "swiglu_backward dgate");
  expect_close(go2, co2, "swiglu_backward dup");
}

TEST_P(CoreKernelsCuda, dropout_draws_the_cpu_mask_bit_for_bit) {
  Generator g(4);
  const Shape s{13, 301};
  Tensor x = random(s, dt(), g);
  Tensor gx = to_gpu(x, dt());
  for (double p : {0.0, 0.1, 0.5}) {
    Tensor go = gpu_empty(s, dt()), co = cpu_empty(s);
    TESSERA_KERNEL(gx, dropout)(go, gx, p, 42, 1000);
    cpu_k().dropout(co, x, p, 42, 1000);
    expect_bits(go, co, "dropout p " + std::to_string(p));
  }
}

// ---- embedding --------------------------------------------------------------------------------

// Ids with many repeats (the scatter-add's hard case) and one unused row.
Tensor repeated_ids(int64_t N, int32_t V) {
  std::vector<int32_t> ids(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) ids[size_t(n)] = int32_t((n * 7 + n / 5) % (V - 1));
  return from_vector(ids, {N});
}

TEST_P(CoreKernelsCuda, embedding_forward_and_backward_match_the_cpu_bit_for_bit) {
  Generator g(5);
  const int32_t V = 50;
  const int64_t N = 333, C = 300;  // C beyond one 256-thread block of columns
  Tensor table = random({V, C}, dt(), g), dout = random({N, C}, dt(), g);
  Tensor acc = random({V, C}, dt(), g);  // what dtable already holds
  Tensor ids = repeated_ids(N, V), gids = ids.to(kGpu);

  Tensor go = gpu_empty({N, C}, dt()), co = cpu_empty({N, C});
  TESSERA_KERNEL(go, embedding_forward)(go, to_gpu(table, dt()), gids);
  cpu_k().embedding_forward(co, table, ids);
  expect_bits(go, co, "embedding_forward");

  // Both add each id's rows in position order, starting from acc, in f32.
  Tensor gd = to_gpu(acc, dt()), cd = acc.clone();
  TESSERA_KERNEL(gd, embedding_backward)(gd, to_gpu(dout, dt()), gids);
  cpu_k().embedding_backward(cd, dout, ids);
  expect_bits(gd, cd, "embedding_backward");

  if (dt() == DType::BF16) {
    // bf16 rows into an f32 gradient (a bf16 table's flat buffer): the CPU's f32 sums, unrounded.
    Tensor gw = acc.to(kGpu);
    TESSERA_KERNEL(gw, embedding_backward)(gw, to_gpu(dout, dt()), gids);
    EXPECT_EQ(gw.dtype(), DType::F32);
    EXPECT_EQ(bytes(gw.to(Device::cpu())), bytes(cd)) << "f32 table under bf16 rows";
    const Tensor host = gw.to(Device::cpu());
    EXPECT_NE(values(host), values(host.to(DType::BF16).to(DType::F32))) << "sums kept in f32";
    // No other pair of dtypes, and not in the forward.
    std::string e = error_of(
        [&] { TESSERA_KERNEL(gw, embedding_forward)(gpu_empty({N, C}, DType::BF16), gw, gids); });
    EXPECT_NE(e.find("rows must be a contiguous f32 tensor"), std::string::npos) << e;
    e = error_of([&] {
      Tensor t = gpu_empty({V, C}, DType::BF16);
      TESSERA_KERNEL(t, embedding_backward)(t, to_gpu(dout, DType::F32), gids);
    });
    EXPECT_NE(e.find("rows must be a contiguous bf16 tensor"), std::string::npos) << e;
  }
}

TEST_P(CoreKernelsCuda, embedding_backward_is_deterministic) {
  Generator g(6);
  const int32_t V = 17;
  const int64_t N = 4096, C = 96;  // ~240 positions per id
  Tensor dout = to_gpu(random({N, C}, dt(), g), dt()), ids = repeated_ids(N, V).to(kGpu);
  Tensor first = gpu_empty({V, C}, dt()), second = gpu_empty({V, C}, dt());
  first.fill_(0.0);
  second.fill_(0.0);
  TESSERA_KERNEL(first, embedding_backward)(first, dout, ids);
  TESSERA_KERNEL(second, embedding_backward)(second, dout, ids);
  EXPECT_EQ(bytes(first.to(Device::cpu())), bytes(second.to(Device::cpu())));
}

// ---- softmax family ---------------------------------------------------------------------------

TEST_P(CoreKernelsCuda, softmax_and_log_softmax_match_the_cpu) {
  Generator g(9);
  for (const Shape& s : {Shape{3, 11, 300}, Shape{3, 11, 296}}) {
    SCOPED_TRACE(shape_str(s));
    Tensor x = random(s, dt(), g, 4.0), dy = random(s, dt(), g);
    Tensor gx = to_gpu(x, dt()), gdy = to_gpu(dy, dt());
    for (bool log : {false, true}) {
      const std::string name = log ? "log_softmax" : "softmax";
      Tensor gy = gpu_empty(s, dt()), cy = cpu_empty(s);
      if (log) {
        TESSERA_KERNEL(gx, log_softmax_forward)(gy, gx);
        cpu_k().log_softmax_forward(cy, x);
      } else {
        TESSERA_KERNEL(gx, softmax_forward)(gy, gx);
        cpu_k().softmax_forward(cy, x);
      }
      expect_close(gy, cy, name + " forward");

      const Tensor y = cy.to(dt()).to(DType::F32);  // the same saved output on both sides
      Tensor gdx = gpu_empty(s, dt()), cdx = cpu_empty(s);
      if (log) {
        TESSERA_KERNEL(gx, log_softmax_backward)(gdx, gdy, to_gpu(y, dt()));
        cpu_k().log_softmax_backward(cdx, dy, y);
      } else {
        TESSERA_KERNEL(gx, softmax_backward)(gdx, gdy, to_gpu(y, dt()));
        cpu_k().softmax_backward(cdx, dy, y);
      }
      expect_close(gdx, cdx, name + " backward");
    }
  }
}

TEST_P(CoreKernelsCuda, cross_entropy_matches_the_cpu) {
  // Every column a class, then the last 13 columns padding (a padded vocabulary: excluded from
  // the softmax, gradient exactly 0). 20000 columns: the forward's held-row kernel.
  const int64_t N = 37, ignore = -100;
  for (const int64_t V : {int64_t(1000), int64_t(20000)})
    for (const int64_t classes : {V, V - 13}) {
      SCOPED_TRACE("V " + std::to_string(V) + ", classes " + std::to_string(classes));
      Generator g(10);
      Tensor logits = random({N, V}, dt(), g, 3.0), dl = random({N}, dt(), g);
      std::vector<int32_t> t(static_cast<size_t>(N));
      for (int64_t n = 0; n < N; ++n)
        t[size_t(n)] = n % 6 == 5 ? int32_t(ignore) : int32_t(n * 97 % classes);
      Tensor targets = from_vector(t, {N}), gt = targets.to(kGpu), gl = to_gpu(logits, dt());

      Tensor gloss = gpu_empty({N}, dt()), glse = gpu_empty({N}, dt());
      Tensor closs = cpu_empty({N}), clse = cpu_empty({N});
      TESSERA_KERNEL(gl, cross_entropy_forward)(gloss, glse, gl, gt, ignore, classes);
      cpu_k().cross_entropy_forward(closs, clse, logits, targets, ignore, classes);
      expect_close(gloss, closs, "losses");
      expect_close(glse, clse, "lse");
      for (int64_t n = 5; n < N; n += 6)  // ignored rows: exactly 0
        EXPECT_EQ(values(gloss.to(Device::cpu()))[size_t(n)], 0.0) << "row " << n;

      const Tensor lse = clse.to(dt()).to(DType::F32);
      Tensor gd = gpu_empty({N, V}, dt()), cd = cpu_empty({N, V});
      TESSERA_KERNEL(gl, cross_entropy_backward)
      (gd, to_gpu(dl, dt()), gl, to_gpu(lse, dt()), gt, ignore, classes);
      cpu_k().cross_entropy_backward(cd, dl, logits, lse, targets, ignore, classes);
      expect_close(gd, cd, "dlogits");
      // Written over the logits (the op's in-place backward): the same bits.
      Tensor over = gl.clone();
      TESSERA_KERNEL(gl, cross_entropy_backward)
      (over, to_gpu(dl, dt()), over, to_gpu(lse, dt()), gt, ignore, classes);
      EXPECT_EQ(values(over.to(Device::cpu())), values(gd.to(Device::cpu()))) << "in place";
      const std::vector<double> pad = values(gd.to(Device::cpu()).narrow(1, classes, V - classes));
      EXPECT_EQ(std::count(pad.begin(), pad.end(), 0.0), int64_t(pad.size())) << "padding columns";

      if (dt() == DType::BF16) {  // per-row tensors in f32 for bf16 logits
        Tensor gloss32 = gpu_empty({N}, DType::F32), glse32 = gpu_empty({N}, DType::F32);
        TESSERA_KERNEL(gl, cross_entropy_forward)(gloss32, glse32, gl, gt, ignore, classes);
        EXPECT_LE(rel_err(gloss32, closs), kF32) << "f32 losses";
        EXPECT_LE(rel_err(glse32, clse), kF32) << "f32 lse";
        TESSERA_KERNEL(gl, cross_entropy_backward)
        (gd, to_gpu(dl, DType::F32), gl, glse32, gt, ignore, classes);
        cpu_k().cross_entropy_backward(cd, dl, logits, clse, targets, ignore, classes);
        expect_close(gd, cd, "dlogits from f32 lse");
      }
    }
}

// The GPU's lse is one pass over the row (a running max per thread, rescaling its sum of exps), or
// for a wide row held in registers the max first, as the CPU's. Both must agree on rows a model can
// produce: -inf entries (masked classes), an all -inf row (lse -inf), a +inf logit or a NaN (lse
// NaN on both).
TEST_P(CoreKernelsCuda, cross_entropy_lse_handles_infinities_and_nan_like_the_cpu) {
  // Whole 16-byte groups in f32 and bf16; 20000 columns take the held-row kernel (more groups
  // than its 1024 threads), 48 the streaming one.
  for (const int64_t V : {int64_t(48), int64_t(20000)}) {
    SCOPED_TRACE("V " + std::to_string(V));
    const int64_t N = 6;
    Generator g(14);
    Tensor logits = random({N, V}, dt(), g, 3.0);
    float* p = logits.data<float>();
    for (int64_t c = 0; c < V; c += 3) p[1 * V + c] = -INFINITY;  // a third of row 1 masked
    for (int64_t c = 0; c < V; ++c) p[2 * V + c] = -INFINITY;     // row 2 all masked
    p[3 * V + 17] = INFINITY;
    p[4 * V + 40] = NAN;
    p[5 * V + 0] = 80.0f;  // a max far above the rest, first: every later exp is rescaled to it
    std::vector<int32_t> t(static_cast<size_t>(N), 5);
    Tensor targets = from_vector(t, {N});
    Tensor gloss = gpu_empty({N}, DType::F32), glse = gpu_empty({N}, DType::F32);
    Tensor closs = cpu_empty({N}), clse = cpu_empty({N});
    TESSERA_KERNEL(gloss, cross_entropy_forward)
    (gloss, glse, to_gpu(logits, dt()), targets.to(kGpu), -100, V);
    cpu_k().cross_entropy_forward(closs, clse, logits, targets, -100, V);
    const std::vector<double> gv = values(glse.to(Device::cpu())), cv = values(clse);
    for (size_t n = 0; n < size_t(N); ++n) {
      SCOPED_TRACE("row " + std::to_string(n));
      EXPECT_EQ(std::isnan(gv[n]), std::isnan(cv[n])) << gv[n] << " vs " << cv[n];
      if (std::isnan(cv[n])) continue;
      EXPECT_EQ(std::isinf(gv[n]), std::isinf(cv[n])) << gv[n] << " vs " << cv[n];
      if (std::isfinite(cv[n]))
        EXPECT_NEAR(gv[n], cv[n], 1e-5 * std::max(1.0, std::abs(cv[n])));
      else
        EXPECT_EQ(gv[n], cv[n]);
    }
    EXPECT_TRUE(std::isinf(cv[2]) && cv[2] < 0) << "the all -inf row";
    EXPECT_TRUE(std::isnan(cv[3]) && std::isnan(cv[4])) << "the +inf and NaN rows";
  }
}

// ---- rope and attention -----------------------------------------------------------------------

TEST_P(CoreKernelsCuda, rope_and_its_inverse_match_the_cpu) {
  Generator g(11);
  const Shape s{2, 3, 17, 64};
  Tensor x = random(s, dt(), g);
  Tensor gx = to_gpu(x, dt());
  const std::vector<double> plain = ops::rope_freqs(64, 10000.0).inv_freq;
  // A scaled table (YaRN, factor 8: some pairs divided, cos and sin times 1.208) as a second case.
  nn::RopeScaling yarn;
  yarn.type = nn::RopeScalingType::Yarn, yarn.factor = 8;
  const ops::RopeFreqs scaled = nn::rope_scaled_freqs(yarn, 64, 10000.0, 128, 1024);
  for (bool inverse : {false, true}) {
    Tensor gy = gpu_empty(s, dt()), cy = cpu_empty(s);
    // pos_offset 5000: high positions, where an f32 angle would be visibly wrong.
    TESSERA_KERNEL(gx, rope)(gy, gx, plain, 1.0, 5000, inverse);
    cpu_k().rope(cy, x, plain, 1.0, 5000, inverse);
    expect_close(gy, cy, inverse ? "rope inverse" : "rope");
    TESSERA_KERNEL(gx, rope)(gy, gx, scaled.inv_freq, scaled.scale, 700, inverse);
    cpu_k().rope(cy, x, scaled.inv_freq, scaled.scale, 700, inverse);
    expect_close(gy, cy, inverse ? "scaled rope inverse" : "scaled rope");
  }
  Tensor gin = gx.clone(), cy = cpu_empty(s);  // y aliasing x
  const std::vector<double> wide = ops::rope_freqs(64, 500000.0).inv_freq;
  TESSERA_KERNEL(gin, rope)(gin, gin, wide, 1.0, 3, false);
  cpu_k().rope(cy, x, wide, 1.0, 3, false);
  expect_close(gin, cy, "rope in place");
}

TEST_P(CoreKernelsCuda, forget_gate_sums_and_their_backward_match_the_cpu) {
  // Forgetting Attention's gate: T 100 spreads over the 32 threads' runs unevenly, T 5 leaves most
  // of them none; the sums (f32 in both dtypes) with and without a cache's start.
  Generator g(13);
  for (const Shape& s : {Shape{2, 100, 3}, Shape{1, 5, 4}}) {
    const int64_t B = s[0], T = s[1], H = s[2];
    const std::string what = shape_str(s);
    const Tensor logits = random(s, dt(), g, 3.0), dc = random({B, H, T}, DType::F32, g);
    const Tensor start = random({B, H}, DType::F32, g, 10.0);
    const Tensor glogits = to_gpu(logits, dt());
    for (bool with_start : {false, true}) {
      Tensor gc = gpu_empty({B, H, T}, DType::F32), cc = cpu_empty({B, H, T});
      TESSERA_KERNEL(glogits, forget_gate_forward)
      (gc, glogits, with_start ? start.to(kGpu) : Tensor());
      cpu_k().forget_gate_forward(cc, logits, with_start ? start : Tensor());
      expect_close(gc, cc, "forget gate sums " + what + (with_start ? " from a start" : ""));
    }
    Tensor gdg = gpu_empty(s, dt()), cdg = cpu_empty(s);
    TESSERA_KERNEL(glogits, forget_gate_backward)(gdg, dc.to(kGpu), glogits);
    cpu_k().forget_gate_backward(cdg, dc, logits);
    expect_close(gdg, cdg, "forget gate backward " + what);
  }
}

TEST_P(CoreKernelsCuda, attention_forward_and_backward_match_the_cpu) {
  struct Case {
    int64_t B, H, Hkv, T, D;
  };
  Generator g(12);
  // Grouped-query heads with an odd D; then T beyond one 256-thread block, multi-head.
  for (Case c : {Case{2, 4, 2, 37, 24}, Case{1, 2, 2, 300, 64}, Case{1, 3, 1, 20, 8}}) {
    // q (B, H, T, D), k (B, Hkv, T, D)
    const std::string what = shape_str({c.B, c.H, c.T, c.D}) + " kv heads " + std::to_string(c.Hkv);
    const Shape qs{c.B, c.H, c.T, c.D}, ks{c.B, c.Hkv, c.T, c.D}, ps{c.B, c.H, c.T, c.T};
    const double scale = 1.0 / std::sqrt(double(c.D));
    Tensor q = random(qs, dt(), g), k = random(ks, dt(), g), v = random(ks, dt(), g),
           dout = random(qs, dt(), g);
    Tensor gq = to_gpu(q, dt()), gk = to_gpu(k, dt()), gv = to_gpu(v, dt());

    Tensor go = gpu_empty(qs, dt()), gp = gpu_empty(ps, dt()), co = cpu_empty(qs),
           cp = cpu_empty(ps);
    TESSERA_KERNEL(gq, attention_forward)(go, gp, gq, gk, gv, scale);
    cpu_k().attention_forward(co, cp, q, k, v, scale);
    expect_close(go, co, "attention out " + what);
    expect_close(gp, cp, "attention probs " + what);

    const Tensor p = cp.to(dt()).to(DType::F32);  // the same saved probabilities on both sides
    Tensor gdq = gpu_empty(qs, dt()), gdk = gpu_empty(ks, dt()), gdv = gpu_empty(ks, dt());
    Tensor cdq = cpu_empty(qs), cdk = cpu_empty(ks), cdv = cpu_empty(ks);
    TESSERA_KERNEL(gq, attention_backward)(gdq, gdk, gdv, to_gpu(dout, dt()), gq, gk, gv,
                                           to_gpu(p, dt()), scale);
    cpu_k().attention_backward(cdq, cdk, cdv, dout, q, k, v, p, scale);
    expect_close(gdq, cdq, "attention dq " + what);
    expect_close(gdk, cdk, "attention dk " + what);
    expect_close(gdv, cdv, "attention dv " + what);
  }
}

}  // namespace
}  // namespace tessera
