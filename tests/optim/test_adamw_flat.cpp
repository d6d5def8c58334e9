// adamw_step_flat (backend/kernels.h) on the CPU: one call over a flat buffer holding several
// parameters, weight decay on some sub-ranges only, must leave exactly the bits that adamw_step
// leaves when called on each parameter's slice with its own weight decay; then empty, full,
// adjacent and empty ranges, and the argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/kernels.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::bytes;
using testing::error_of;

constexpr double kB1 = 0.9, kB2 = 0.95, kEps = 1e-8, kWd = 0.1;

DType state_dtype(DType pt) { return pt == DType::F64 ? DType::F64 : DType::F32; }

// A parameter's place in the flat buffer.
struct Slice {
  int64_t offset, length;
  bool decay;
};

// The optimizer's flat buffers: an f32/f64 parameter is its own master, a bf16 one has an f32 one.
struct FlatState {
  Tensor param, master, m, v;
  explicit FlatState(const Tensor& init) : param(init.clone()) {
    const DType st = state_dtype(init.dtype());
    master = init.dtype() == DType::BF16 ? init.to(st) : param;
    m = zeros(init.shape(), st);
    v = zeros(init.shape(), st);
  }
};

Tensor ranges(const std::vector<int32_t>& bounds) {
  return from_vector(bounds, {int64_t(bounds.size())});
}

Tensor decay_ranges_of(const std::vector<Slice>& slices) {
  std::vector<int32_t> bounds;
  for (const Slice& s : slices) {
    if (!s.decay) continue;
    bounds.push_back(int32_t(s.offset));
    bounds.push_back(int32_t(s.offset + s.length));
  }
  return ranges(bounds);
}

// The gradient of step t in the parameter's dtype, over several magnitudes so that both the
// moment ratio and the decay move the weights.
Tensor gradient(int64_t n, DType pt, int t, Generator& gen) {
  return ops::scale(randn({n}, gen), std::pow(10.0, -t)).to(pt);
}

void flat_step(const FlatState& s, const Tensor& g, const Tensor& decay_ranges, double lr, int t,
               double grad_scale = 1.0) {
  // The flat buffers accumulate bf16 gradients in f32: here, the exact f32 values of g.
  cpu::kernels().adamw_step_flat(s.param, s.master, s.m, s.v, g.to(state_dtype(g.dtype())),
                                 decay_ranges, lr, kB1, kB2, kEps, kWd, 1.0 - std::pow(kB1, t),
                                 1.0 - std::pow(kB2, t), grad_scale);
}

void slice_step(const FlatState& s, const Tensor& g, const Slice& sl, double lr, int t) {
  auto cut = [&](const Tensor& x) { return x.narrow(0, sl.offset, sl.length); };
  cpu::kernels().adamw_step(cut(s.param), cut(s.master), cut(s.m), cut(s.v), cut(g), lr, kB1, kB2,
                            kEps, sl.decay ? kWd : 0.0, 1.0 - std::pow(kB1, t),
                            1.0 - std::pow(kB2, t));
}

void expect_same_bits(const FlatState& got, const FlatState& want, const std::string& what) {
  EXPECT_EQ(bytes(got.m), bytes(want.m)) << what << ": m";
  EXPECT_EQ(bytes(got.v), bytes(want.v)) << what << ": v";
  EXPECT_EQ(bytes(got.master), bytes(want.master)) << what << ": master";
  EXPECT_EQ(bytes(got.param), bytes(want.param)) << what << ": param";
}

TEST(AdamWFlat, one_call_over_a_flat_buffer_gives_the_bits_of_adamw_step_on_each_slice) {
  // A matrix (7, 13) decayed, a vector (29) not, a matrix (257, 259) decayed: ragged offsets, and
  // the last slice is past the 65536 elements where the CPU loop goes parallel.
  const std::vector<Slice> slices = {{0, 91, true}, {91, 29, false}, {120, 66563, true}};
  const int64_t n = 120 + 66563;
  const Tensor decay_ranges = decay_ranges_of(slices);
  for (DType pt : {DType::F32, DType::BF16, DType::F64}) {
    Generator gen(31);
    const Tensor init = randn({n}, gen).to(pt);
    FlatState flat(init), ref(init);
    for (int t = 1; t <= 4; ++t) {
      const double lr = 1e-2 * t;  // varies, as under a schedule
      const Tensor g = gradient(n, pt, t, gen);
      flat_step(flat, g, decay_ranges, lr, t);
      for (const Slice& sl : slices) slice_step(ref, g, sl, lr, t);
      expect_same_bits(flat, ref, std::string(dtype_name(pt)) + " step " + std::to_string(t));
    }
    EXPECT_NE(bytes(flat.param), bytes(init)) << dtype_name(pt) << ": the weights moved";
  }
}

TEST(AdamWFlat, no_ranges_decay_nothing_and_one_full_range_decays_everything) {
  const int64_t n = 1003;
  Generator gen(32);
  const Tensor init = randn({n}, gen);
  const Tensor g = gradient(n, DType::F32, 1, gen);
  FlatState none(init), none_ref(init), all(init), all_ref(init);
  flat_step(none, g, ranges({}), 1e-2, 1);
  slice_step(none_ref, g, {0, n, false}, 1e-2, 1);
  flat_step(all, g, ranges({0, int32_t(n)}), 1e-2, 1);
  slice_step(all_ref, g, {0, n, true}, 1e-2, 1);
  expect_same_bits(none, none_ref, "no ranges");
  expect_same_bits(all, all_ref, "one full range");
  // Decay changes the bits, so the two checks above tell decayed from undecayed elements.
  EXPECT_NE(bytes(none.master), bytes(all.master));
}

// Clipping rides the update: grad_scale s gives the bits of the step on the gradient multiplied by s
// in the state type beforehand (one rounding), and s != 1 changes them (it is not ignored).
TEST(AdamWFlat, grad_scale_gives_the_bits_of_the_step_on_the_scaled_gradient) {
  const int64_t n = 70001;  // past the CPU loop's parallel threshold
  const Tensor decay_ranges = ranges({0, 30000, 50000, 70001});
  for (DType pt : {DType::F32, DType::BF16, DType::F64}) {
    const DType st = state_dtype(pt);
    Generator gen(35);
    const Tensor init = randn({n}, gen).to(pt);
    FlatState fused(init), ref(init), unscaled(init);
    for (int t = 1; t <= 3; ++t) {
      const double s = 0.3 + 0.17 * t;  // not a power of two: the product rounds
      const Tensor g = gradient(n, pt, t, gen).to(st);
      Tensor scaled = g.clone();
      if (st == DType::F32) {
        float* p = scaled.data<float>();
        for (int64_t i = 0; i < n; ++i) p[i] = p[i] * float(s);
      } else {
        double* p = scaled.data<double>();
        for (int64_t i = 0; i < n; ++i) p[i] = p[i] * s;
      }
      flat_step(fused, g, decay_ranges, 1e-2, t, s);
      flat_step(ref, scaled, decay_ranges, 1e-2, t);
      flat_step(unscaled, g, decay_ranges, 1e-2, t);
      expect_same_bits(fused, ref, std::string(dtype_name(pt)) + " step " + std::to_string(t));
    }
    EXPECT_NE(bytes(fused.m), bytes(unscaled.m)) << dtype_name(pt);
  }
}

TEST(AdamWFlat, adjacent_and_empty_ranges_act_as_their_union) {
  const int64_t n = 100;
  Generator gen(33);
  const Tensor init = randn({n}, gen);
  const Tensor g = gradient(n, DType::F32, 1, gen);
  FlatState pieces(init), whole(init);
  flat_step(pieces, g, ranges({0, 10, 10, 10, 10, 40, 40, 40, 60, 60, 100, 100}), 1e-2, 1);
  flat_step(whole, g, ranges({0, 40}), 1e-2, 1);
  expect_same_bits(pieces, whole, "[0, 10) [10, 10) [10, 40) [40, 40) [60, 60) [100, 100)");
}

TEST(AdamWFlat, bad_arguments_are_errors_naming_the_problem_and_change_nothing) {
  const int64_t n = 285;
  Generator gen(34);
  const FlatState s(randn({n}, gen));
  const Tensor g = randn({n}, gen);
  const Tensor ok = ranges({0, 91, 120, 285});
  auto step = [&](const Tensor& param, const Tensor& master, const Tensor& m, const Tensor& grad,
                  const Tensor& decay_ranges) {
    return error_of([&] {
      cpu::kernels().adamw_step_flat(param, master, m, s.v, grad, decay_ranges, 1e-2, kB1, kB2,
                                     kEps, kWd, 0.1, 0.05, 1.0);
    });
  };
  auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos;
  };
  const std::vector<unsigned char> before = bytes(s.master);

  std::string e = step(s.param, s.master, zeros({n - 1}), g, ok);
  EXPECT_TRUE(has(e, "m must be a 1-D contiguous f32 tensor of 285 elements on cpu")) << e;
  EXPECT_TRUE(has(e, "(284,)")) << e;
  e = step(s.param, s.master, s.m, randn({n + 1}, gen), ok);
  EXPECT_TRUE(has(e, "grad must be")) << e;

  e = step(s.param, s.master, s.m, g, ranges({120, 285, 0, 91}));
  EXPECT_TRUE(has(e, "decay range 1 = [0, 91) begins before range 0 = [120, 285) ends")) << e;
  EXPECT_TRUE(has(e, "sorted and disjoint")) << e;
  e = step(s.param, s.master, s.m, g, ranges({0, 100, 91, 120}));  // overlapping
  EXPECT_TRUE(has(e, "decay range 1 = [91, 120) begins before range 0 = [0, 100) ends")) << e;
  e = step(s.param, s.master, s.m, g, ranges({0, 91, 120, 286}));
  EXPECT_TRUE(has(e, "decay range 1 = [120, 286) is out of bounds for tensors of 285")) << e;
  e = step(s.param, s.master, s.m, g, ranges({-1, 91}));
  EXPECT_TRUE(has(e, "decay range 0 = [-1, 91) is out of bounds")) << e;
  e = step(s.param, s.master, s.m, g, ranges({91, 0}));
  EXPECT_TRUE(has(e, "decay range 0 = [91, 0) ends before it begins")) << e;
  e = step(s.param, s.master, s.m, g, ranges({0, 91, 120}));
  EXPECT_TRUE(has(e, "decay_ranges must be a 1-D contiguous i32 tensor of 2K elements")) << e;
  e = step(s.param, s.master, s.m, g, from_vector<float>({0, 91}, {2}));
  EXPECT_TRUE(has(e, "decay_ranges must be")) << e;

  // An f32 parameter apart from its master; a bf16 one given bf16 gradients instead of f32.
  e = step(s.param.clone(), s.master, s.m, g, ok);
  EXPECT_TRUE(has(e, "param must be its own master")) << e;
  const Tensor pb = s.param.to(DType::BF16);
  e = step(pb, s.master, s.m, g.to(DType::BF16), ok);
  EXPECT_TRUE(has(e, "grad must be a 1-D contiguous f32 tensor of 285")) << e;

  for (const double bad : {0.0, -0.5, std::nan("")}) {
    e = error_of([&] {
      cpu::kernels().adamw_step_flat(s.param, s.master, s.m, s.v, g, ok, 1e-2, kB1, kB2, kEps, kWd,
                                     0.1, 0.05, bad);
    });
    EXPECT_TRUE(has(e, "grad_scale must be finite and positive")) << bad << ": " << e;
  }

  // Every check runs before the first write.
  EXPECT_EQ(bytes(s.master), before);
}

}  // namespace
}  // namespace tessera
