// gelu (tanh form), silu and swiglu: values against the formulas evaluated by hand in double,
// gradients by central differences, behaviour at large |x|, and the f32 kernels' bits against
// their scalar formulas (whatever vector width the CPU's clone runs, cpu/simd.h).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "backend/cpu/fast_exp.h"
#include "backend/kernels.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "ops/ops.h"

using namespace tessera;
using tessera::testing::gradcheck;

namespace {

void expect_near_all(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

}  // namespace

// The f32 kernels evaluate tanh / exp in float: each of the few roundings costs at most an ulp, and
// |y| <= 2 below (ulp 2.4e-7), so 1e-6 allows about four ulps.
constexpr double kValueTol = 1e-6;

TEST(Activations, f32_kernels_give_their_scalar_formulas_bits) {
  // 4099 elements: the vector loops' bodies and a tail of 3 (4099 = 512 * 8 + 3) in any width.
  // Over [-12, 12]: sigmoid from ~6e-6 to 1 - 6e-6, GELU's cubic term large.
  const int64_t n = 4099;
  Generator g(7);
  const Tensor x = ops::scale(ops::sub(rand({n}, g), full({n}, 0.5f)), 24.0),
               up = randn({n}, g), dy = randn({n}, g);
  const std::vector<float> xs = x.to_vector<float>(), us = up.to_vector<float>(),
                           gs = dy.to_vector<float>();
  using tessera::cpu::sigmoid;
  const float k = float(0.7978845608028654), a = float(0.044715);
  const size_t N = xs.size();
  std::vector<float> gelu(N), dgelu(N), silu(N), dsilu(N), swiglu(N), dgate(N), dup(N);
  for (size_t i = 0; i < N; ++i) {  // activation.cpp's formulas, one element at a time
    const float v = xs[i], s2 = sigmoid(2.0f * k * (v + a * v * v * v)), s = sigmoid(v);
    gelu[i] = v * s2;
    dgelu[i] = gs[i] * (s2 + 2.0f * v * s2 * (1.0f - s2) * k * (1.0f + 3.0f * a * v * v));
    silu[i] = v * s;
    dsilu[i] = gs[i] * s * (1.0f + v * (1.0f - s));
    swiglu[i] = v * s * us[i];
    dgate[i] = gs[i] * us[i] * s * (1.0f + v * (1.0f - s));
    dup[i] = gs[i] * v * s;
  }
  const auto out = [&] { return Tensor::empty({n}); };
  Tensor y = out(), dx = out(), dg = out(), du = out();
  TESSERA_KERNEL(x, gelu_forward)(y, x);
  EXPECT_EQ(y.to_vector<float>(), gelu) << "gelu";
  TESSERA_KERNEL(x, gelu_backward)(dx, dy, x);
  EXPECT_EQ(dx.to_vector<float>(), dgelu) << "gelu backward";
  TESSERA_KERNEL(x, silu_forward)(y, x);
  EXPECT_EQ(y.to_vector<float>(), silu) << "silu";
  TESSERA_KERNEL(x, silu_backward)(dx, dy, x);
  EXPECT_EQ(dx.to_vector<float>(), dsilu) << "silu backward";
  TESSERA_KERNEL(x, swiglu_forward)(y, x, up);
  EXPECT_EQ(y.to_vector<float>(), swiglu) << "swiglu";
  TESSERA_KERNEL(x, swiglu_backward)(dg, du, dy, x, up);
  EXPECT_EQ(dg.to_vector<float>(), dgate) << "swiglu backward, gate";
  EXPECT_EQ(du.to_vector<float>(), dup) << "swiglu backward, up";
}

TEST(GELU, value_matches_tanh_formula) {
  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) evaluated in double (Python's math.tanh), e.g.
  // x = 1: u = 0.7978845608 * 1.044715 = 0.8335625, tanh(u) = 0.6823840, y = 0.5 * 1.6823840.
  Tensor x = from_vector<float>({-3, -1, 0, 0.5f, 1, 2}, {2, 3});
  expect_near_all(ops::gelu(x).to_vector<float>(),
                  {-0.0036373920817729943, -0.15880800939172324, 0.0, 0.34571400982514394,
                   0.8411919906082768, 1.954597694087775},
                  kValueTol);
}

TEST(GELU, saturates_to_identity_and_zero_at_large_magnitude) {
  // tanh saturates to +-1 in float: gelu(x) = x for large positive x, 0 for large negative x, and
  // the cubic term must not produce inf - inf.
  Tensor x = from_vector<float>({-1000, -20, 20, 1000}, {4});
  expect_near_all(ops::gelu(x).to_vector<float>(), {0, 0, 20, 1000}, 0.0);
}

TEST(GELU, gradcheck) {
  Generator g(4);
  Tensor x = ops::scale(randn({2, 3, 4}, g), 2.0);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::gelu(in[0]); }, {x}));
}

TEST(SiLU, value_matches_x_times_sigmoid) {
  // x / (1 + exp(-x)) in double (Python's math.exp), e.g. x = 1: 1 / (1 + 0.3678794) = 0.7310586.
  Tensor x = from_vector<float>({-2, -1, 0, 1, 2}, {5});
  expect_near_all(ops::silu(x).to_vector<float>(),
                  {-0.2384058440442351, -0.2689414213699951, 0.0, 0.7310585786300049,
                   1.7615941559557646},
                  kValueTol);
}

TEST(SiLU, large_magnitude_gives_finite_values_and_gradients) {
  // exp(1000) overflows float: a sigmoid written as exp(x) / (1 + exp(x)) gives inf / inf = NaN at
  // x = 1000. silu -> x and its slope -> 1 as x -> +inf; both -> 0 as x -> -inf (at x = -100 they
  // are -100 e^-100 = -3.7e-42 and -99 e^-100, float denormals, hence the 1e-40 tolerance).
  Tensor x = from_vector<float>({-1000, -100, 100, 1000}, {4}).requires_grad_();
  Tensor y = ops::silu(x);
  expect_near_all(y.to_vector<float>(), {0, 0, 100, 1000}, 1e-40);
  ops::sum(y).backward();
  expect_near_all(x.grad().to_vector<float>(), {0, 0, 1, 1}, 1e-40);
}

TEST(SiLU, gradcheck) {
  Generator g(5);
  Tensor x = ops::scale(randn({2, 3, 4}, g), 3.0);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::silu(in[0]); }, {x}));
}

TEST(Sigmoid, value_matches_the_formula_and_saturates_without_nan) {
  // 1 / (1 + exp(-x)) in double: x = 1 gives 0.7310586, x = -2 0.1192029; at |x| = 1000 the
  // two-way softmax it is computed as gives exactly 0 and 1 (exp(-1000) underflows to 0).
  Tensor x = from_vector<float>({-1000, -2, 0, 1, 1000}, {5, 1});
  const Tensor y = ops::sigmoid(x);
  EXPECT_EQ(y.shape(), x.shape());
  expect_near_all(y.to_vector<float>(), {0, 0.11920292202211755, 0.5, 0.7310585786300049, 1},
                  kValueTol);
}

TEST(Sigmoid, gradcheck) {
  Generator g(6);
  Tensor x = ops::scale(randn({3, 4}, g), 3.0);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::sigmoid(in[0]); }, {x}));
}

TEST(SwiGLU, value_is_silu_of_gate_times_up) {
  // silu(gate) from the SiLU values above times up: silu(1) * 2, silu(-1) * 3, silu(0) * 5,
  // silu(2) * -1.
  Tensor gate = from_vector<float>({1, -1, 0, 2}, {2, 2});
  Tensor up = from_vector<float>({2, 3, 5, -1}, {2, 2});
  expect_near_all(ops::swiglu(gate, up).to_vector<float>(),
                  {1.4621171572600098, -0.8068242641099853, 0.0, -1.7615941559557646},
                  kValueTol);
}

TEST(SwiGLU, gradcheck_gate_and_up) {
  Generator g(6);
  Tensor gate = ops::scale(randn({2, 3, 4}, g), 2.0), up = randn({2, 3, 4}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::swiglu(in[0], in[1]); }, {gate, up}));
}

TEST(SwiGLU, mismatched_shapes_error_names_both) {
  try {
    ops::swiglu(zeros({2, 3}), zeros({3, 2}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("(2, 3)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(3, 2)"), std::string::npos) << msg;
  }
}
