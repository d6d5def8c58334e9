// gelu (tanh form), silu and swiglu: values against the formulas evaluated by hand in double,
// gradients by central differences, and behaviour at large |x|.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

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
