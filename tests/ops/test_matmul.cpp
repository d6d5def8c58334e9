// matmul and linear: values against hand-computed products, gradients by central differences.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "backend/kernels.h"
#include "gradcheck.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::gradcheck;

namespace {

// y = f(inputs), each input a fresh leaf, then the backward of sum(y * dy): y and every input's
// gradient (those that got one) as f64 values, what a fused op is compared to its parts by.
using Params = std::vector<Tensor>;
std::vector<std::vector<double>> values_and_grads(const Params& inputs, const Tensor& dy,
                                                  const std::function<Tensor(const Params&)>& f) {
  Params p;
  for (const Tensor& t : inputs) p.push_back(t.detach().requires_grad_());
  const Tensor y = f(p);
  ops::sum(ops::mul(y, dy)).backward();
  std::vector<std::vector<double>> out{y.to(DType::F64).to_vector<double>()};
  for (const Tensor& t : p)
    if (t.grad().defined()) out.push_back(t.grad().to(DType::F64).to_vector<double>());
  return out;
}

}  // namespace

TEST(Matmul, value_matches_hand_computed_product) {
  Tensor a = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector<float>({7, 8, 9, 10, 11, 12}, {3, 2});
  std::vector<float> c = ops::matmul(a, b).to_vector<float>();
  // [1 2 3; 4 5 6] @ [7 8; 9 10; 11 12] = [58 64; 139 154]
  EXPECT_EQ(c, (std::vector<float>{58, 64, 139, 154}));
  // a^T (3, 2) @ a (2, 3) with trans_a, and a @ a^T with trans_b
  EXPECT_EQ(ops::matmul(a, a, false, true).to_vector<float>(), (std::vector<float>{14, 32, 32, 77}));
  EXPECT_EQ(ops::matmul(a, a, true, false).to_vector<float>(),
            (std::vector<float>{17, 22, 27, 22, 29, 36, 27, 36, 45}));
}

TEST(Matmul, batched_value_uses_each_batch) {
  Tensor a = from_vector<float>({1, 0, 0, 1, 2, 0, 0, 2}, {2, 2, 2});  // I, 2I
  Tensor b = from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  EXPECT_EQ(ops::matmul(a, b).to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 10, 12, 14, 16}));
}

TEST(Matmul, shape_error_names_both_shapes) {
  Tensor a = zeros({2, 3}), b = zeros({4, 5});
  try {
    ops::matmul(a, b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("(2, 3)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(4, 5)"), std::string::npos) << msg;
  }
}

class MatmulGrad : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(MatmulGrad, gradcheck_batched) {
  auto [ta, tb] = GetParam();
  Generator g(1);
  Tensor a = randn(ta ? Shape{2, 4, 3} : Shape{2, 3, 4}, g);
  Tensor b = randn(tb ? Shape{2, 5, 4} : Shape{2, 4, 5}, g);
  EXPECT_TRUE(gradcheck([=](const std::vector<Tensor>& x) { return ops::matmul(x[0], x[1], ta, tb); },
                        {a, b}));
}

TEST_P(MatmulGrad, gradcheck_shared_rhs) {
  auto [ta, tb] = GetParam();
  Generator g(2);
  Tensor a = randn(ta ? Shape{3, 4, 2} : Shape{3, 2, 4}, g);
  Tensor b = randn(tb ? Shape{5, 4} : Shape{4, 5}, g);
  EXPECT_TRUE(gradcheck([=](const std::vector<Tensor>& x) { return ops::matmul(x[0], x[1], ta, tb); },
                        {a, b}));
}

INSTANTIATE_TEST_SUITE_P(Matmul, MatmulGrad,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()));

TEST(Linear, gradcheck_with_bias) {
  Generator g(3);
  Tensor x = randn({2, 3, 4}, g), w = randn({5, 4}, g), b = randn({5}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::linear(in[0], in[1], in[2]); }, {x, w, b}));
}

TEST(LinearGelu, gradcheck) {
  Generator g(5);
  Tensor x = randn({2, 3, 4}, g), w = randn({5, 4}, g), b = randn({5}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::linear_gelu(in[0], in[1], in[2]); },
      {x, w, b}));
}

TEST(LinearGelu, equals_gelu_of_linear_bit_for_bit_with_the_same_gradients) {
  // The CPU kernel is linear_forward then gelu_forward, and the graph the two ops' nodes.
  for (DType dt : {DType::F32, DType::F64}) {
    Generator g(6);
    const Tensor x0 = randn({3, 2, 8}, g).to(dt), w0 = randn({12, 8}, g).to(dt),
                 b0 = randn({12}, g).to(dt), dy = randn({3, 2, 12}, g).to(dt);
    const auto fused = values_and_grads({x0, w0, b0}, dy, [](const Params& p) {
      return ops::linear_gelu(p[0], p[1], p[2]);
    });
    const auto parts = values_and_grads({x0, w0, b0}, dy, [](const Params& p) {
      return ops::gelu(ops::linear(p[0], p[1], p[2]));
    });
    EXPECT_EQ(fused, parts) << dtype_name(dt);
  }
}

TEST(LinearGelu, requires_a_bias_and_matching_shapes) {
  Generator g(7);
  const Tensor x = randn({2, 4}, g), w = randn({5, 4}, g);
  EXPECT_THROW(ops::linear_gelu(x, w, Tensor()), Error);
  try {
    ops::linear_gelu(x, randn({5, 3}, g), randn({5}, g));
    FAIL() << "a weight of the wrong width was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linear_gelu"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(5, 3)"), std::string::npos) << e.what();
  }
}

TEST(MlpGelu, gradcheck) {
  Generator g(8);
  Tensor x = randn({2, 3, 4}, g), w1 = randn({6, 4}, g), b1 = randn({6}, g),
         w2 = randn({5, 6}, g), b2 = randn({5}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return ops::mlp_gelu(in[0], in[1], in[2], in[3], in[4]);
      },
      {x, w1, b1, w2, b2}));
}

TEST(MlpGelu, equals_the_three_ops_bit_for_bit_with_the_same_gradients) {
  // The second Linear's input gradient goes through GELU in one kernel (linear_dgelu_backward),
  // which on the CPU is the gemm then gelu_backward: the bits of linear, gelu, linear.
  for (DType dt : {DType::F32, DType::F64}) {
    Generator g(9);
    const Tensor x0 = randn({3, 2, 8}, g).to(dt), w10 = randn({12, 8}, g).to(dt),
                 b10 = randn({12}, g).to(dt), w20 = randn({7, 12}, g).to(dt),
                 b20 = randn({7}, g).to(dt), dy = randn({3, 2, 7}, g).to(dt);
    const Params in{x0, w10, b10, w20, b20};
    const auto fused = values_and_grads(in, dy, [](const Params& p) {
      return ops::mlp_gelu(p[0], p[1], p[2], p[3], p[4]);
    });
    const auto parts = values_and_grads(in, dy, [](const Params& p) {
      return ops::linear(ops::gelu(ops::linear(p[0], p[1], p[2])), p[3], p[4]);
    });
    EXPECT_EQ(fused, parts) << dtype_name(dt);
  }
}

TEST(MlpGelu, requires_both_biases_and_matching_shapes) {
  Generator g(10);
  const Tensor x = randn({2, 4}, g), w1 = randn({6, 4}, g), b1 = randn({6}, g),
               w2 = randn({5, 6}, g), b2 = randn({5}, g);
  EXPECT_THROW(ops::mlp_gelu(x, w1, b1, w2, Tensor()), Error);
  EXPECT_THROW(ops::mlp_gelu(x, w1, Tensor(), w2, b2), Error);
  try {
    ops::mlp_gelu(x, w1, b1, randn({5, 7}, g), b2);
    FAIL() << "a second weight of the wrong width was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mlp_gelu"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(5, 7)"), std::string::npos) << e.what();
  }
}

TEST(LinearAdd, gradcheck_with_and_without_the_bias) {
  Generator g(11);
  Tensor x = randn({2, 3, 4}, g), w = randn({5, 4}, g), b = randn({5}, g), r = randn({2, 3, 5}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::linear_add(in[0], in[1], in[2], in[3]); },
      {x, w, b, r}));
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::linear_add(in[0], in[1], Tensor(), in[2]); },
      {x, w, r}));
}

TEST(LinearAdd, equals_add_of_linear_bit_for_bit_with_the_same_gradients) {
  // The CPU kernel rounds as the product, the bias add and the residual add do, and the graph is
  // linear's nodes then add's. The residual also feeds a second consumer (as a block's stream
  // feeds its norm), so its gradient sums two contributions. x is 2-D: without a bias ops::linear
  // is matmul, whose x gradient runs one gemm per leading index of a 3-D x (other bits from
  // OpenBLAS for fewer rows), where linear_add's runs one over all rows.
  for (DType dt : {DType::F32, DType::F64}) {
    for (const bool with_bias : {true, false}) {
      Generator g(12);
      const Tensor x0 = randn({6, 8}, g).to(dt), w0 = randn({12, 8}, g).to(dt),
                   b0 = randn({12}, g).to(dt), r0 = randn({6, 12}, g).to(dt),
                   dy = randn({6, 12}, g).to(dt);
      auto run = [&](bool fused) {
        return values_and_grads({x0, w0, b0, r0}, dy, [&](const Params& p) {
          const Tensor b = with_bias ? p[2] : Tensor();
          const Tensor r = ops::scale(p[3], 0.5);  // an intermediate, as a block's stream is
          const Tensor y =
              fused ? ops::linear_add(p[0], p[1], b, r) : ops::add(r, ops::linear(p[0], p[1], b));
          return ops::add(y, ops::mul(r, r));  // r's second consumer
        });
      };
      EXPECT_EQ(run(true), run(false)) << dtype_name(dt) << (with_bias ? "" : " without the bias");
    }
  }
}

TEST(LinearAdd, refuses_a_residual_of_another_shape_by_name) {
  Generator g(13);
  const Tensor x = randn({2, 4}, g), w = randn({5, 4}, g), b = randn({5}, g);
  try {
    ops::linear_add(x, w, b, randn({2, 6}, g));
    FAIL() << "a residual of the wrong shape was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linear_add"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(2, 6)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(2, 5)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::linear_add(x, w, b, randn({2, 5}, g).to(DType::F64)), Error);
  EXPECT_THROW(ops::mlp_gelu(x, randn({6, 4}, g), randn({6}, g), randn({5, 6}, g), randn({5}, g),
                             randn({5}, g)),
               Error);
}

TEST(MlpGelu, with_a_residual_equals_its_add_bit_for_bit_with_the_same_gradients) {
  for (DType dt : {DType::F32, DType::F64}) {
    Generator g(14);
    const Tensor x0 = randn({3, 2, 8}, g).to(dt), w10 = randn({12, 8}, g).to(dt),
                 b10 = randn({12}, g).to(dt), w20 = randn({7, 12}, g).to(dt),
                 b20 = randn({7}, g).to(dt), r0 = randn({3, 2, 7}, g).to(dt),
                 dy = randn({3, 2, 7}, g).to(dt);
    const Params in{x0, w10, b10, w20, b20, r0};
    const auto fused = values_and_grads(in, dy, [](const Params& p) {
      return ops::mlp_gelu(p[0], p[1], p[2], p[3], p[4], p[5]);
    });
    const auto parts = values_and_grads(in, dy, [](const Params& p) {
      return ops::add(p[5], ops::mlp_gelu(p[0], p[1], p[2], p[3], p[4]));
    });
    EXPECT_EQ(fused, parts) << dtype_name(dt);
  }
}

TEST(Gemm, row_strided_operands_give_the_bits_of_their_dense_copies) {
  // The CPU gemm hands a 2-D view's row stride to BLAS as its leading dimension; the columns past
  // c's view keep their values.
  for (DType dt : {DType::F32, DType::F64})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        Generator g(15);
        const int64_t M = 7, N = 5, K = 6, pad = 3;
        const Tensor a = randn(ta ? Shape{K, M} : Shape{M, K}, g).to(dt);
        const Tensor b = randn(tb ? Shape{N, K} : Shape{K, N}, g).to(dt);
        const Tensor c0 = randn({M, N}, g).to(dt);
        auto wide = [&](const Tensor& t) {
          Tensor buf = full({t.size(0), t.size(1) + pad}, 7.0, dt);
          buf.narrow(1, 0, t.size(1)).copy_(t);
          return buf;
        };
        Tensor want = c0.clone();
        cpu::kernels().gemm(want, a, b, ta, tb, 1.5, 0.5);
        Tensor aw = wide(a), bw = wide(b), cw = wide(c0);
        cpu::kernels().gemm(cw.narrow(1, 0, N), aw.narrow(1, 0, a.size(1)),
                            bw.narrow(1, 0, b.size(1)), ta, tb, 1.5, 0.5);
        EXPECT_EQ(cw.narrow(1, 0, N).contiguous().to(DType::F64).to_vector<double>(),
                  want.to(DType::F64).to_vector<double>())
            << dtype_name(dt) << (ta ? " a^T" : "") << (tb ? " b^T" : "");
        EXPECT_EQ(cw.narrow(1, N, pad).contiguous().to(DType::F64).to_vector<double>(),
                  std::vector<double>(M * pad, 7.0));
      }
}

TEST(Gemm, large_products_are_right_and_the_same_bits_on_any_thread_count) {
  // Above ~1M multiply-adds the CPU gemm splits c's rows into blocks, one BLAS call each, over the
  // OpenMP team (cpu/matmul.cpp row_block_size). M = 200 gives blocks of 80, 80 and 40 rows; every
  // transpose, a 2-D operand with a row stride, and a batch of 3 (a shared b). The blocks depend
  // on the shape alone: OpenBLAS's bits for a row change with the block it is in, so a split by
  // thread count would fail the equality below (measured: 2 vs 3 blocks differ). The values are
  // checked against a double-accumulated product: each f32 output sums K = 90 products, whose
  // roundings stay far below 1e-4 of the sum's scale.
  const int saved = omp_get_max_threads();
  for (DType dt : {DType::F32, DType::F64})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (int64_t batch : {1, 3}) {
          Generator g(18);
          const int64_t M = 200, N = 70, K = 90;
          auto operand = [&](int64_t r, int64_t c) {
            if (batch > 1) return randn({batch, r, c}, g).to(dt);
            return randn({r, c + 5}, g).to(dt).narrow(1, 0, c);  // row stride c + 5
          };
          const Tensor a = operand(ta ? K : M, ta ? M : K);
          const Tensor b = randn(tb ? Shape{N, K} : Shape{K, N}, g).to(dt);
          const std::string what = std::string(dtype_name(dt)) + (ta ? " a^T" : "") +
                                   (tb ? " b^T" : "") + " batch " + std::to_string(batch);
          std::vector<double> first;
          for (int threads : {1, 2, 3}) {
            omp_set_num_threads(threads);
            Tensor c = batch > 1 ? Tensor::empty({batch, M, N}, dt) : Tensor::empty({M, N}, dt);
            cpu::kernels().gemm(c, a, b, ta, tb, 1.0, 0.0);
            const std::vector<double> got = c.to(DType::F64).to_vector<double>();
            if (threads == 1) {
              first = got;
              const std::vector<double> av = a.contiguous().to(DType::F64).to_vector<double>(),
                                        bv = b.to(DType::F64).to_vector<double>();
              double worst = 0;
              for (int64_t i = 0; i < batch; ++i)
                for (int64_t r = 0; r < M; ++r)
                  for (int64_t j = 0; j < N; ++j) {
                    double want = 0;
                    for (int64_t k = 0; k < K; ++k)
                      want += av[size_t(i * M * K + (ta ? k * M + r : r * K + k))] *
                              bv[size_t(tb ? j * K + k : k * N + j)];
                    worst = std::max(worst, std::abs(got[size_t((i * M + r) * N + j)] - want));
                  }
              EXPECT_LT(worst, 1e-4) << what;
            } else {
              EXPECT_EQ(got, first) << what << ", " << threads << " threads";
            }
          }
        }
  omp_set_num_threads(saved);
}

TEST(Gemm, an_empty_inner_dimension_gives_beta_times_c) {
  // K = 0: no products, so c = beta c, and beta 0 clears whatever c held (NaN included), which
  // BLAS itself may skip.
  for (double beta : {0.0, 0.5}) {
    Tensor c = full({3, 4}, beta == 0 ? std::nan("") : 6.0);
    cpu::kernels().gemm(c, Tensor::empty({3, 0}), Tensor::empty({0, 4}), false, false, 1.0, beta);
    EXPECT_EQ(c.to_vector<float>(), std::vector<float>(12, beta == 0 ? 0.0f : 3.0f)) << beta;
  }
}

TEST(Gemm, refuses_views_whose_rows_are_not_contiguous) {
  Generator g(16);
  const Tensor a = randn({6, 4}, g), b = randn({4, 3}, g);
  Tensor c = Tensor::empty({6, 3});
  const std::string bad = error_of([&] {
    cpu::kernels().gemm(c, randn({4, 6}, g).transpose(0, 1), b, false, false, 1.0, 0.0);
  });
  EXPECT_NE(bad.find("contiguous rows"), std::string::npos) << bad;
}

TEST(LinearPadded, gradcheck) {
  Generator g(17);
  Tensor x = randn({2, 3, 4}, g), w = randn({5, 4}, g);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return ops::linear_padded(in[0], in[1], 8); }, {x, w}));
}

TEST(LinearPadded, is_linear_then_zero_columns_with_linears_gradients_bit_for_bit) {
  for (DType dt : {DType::F32, DType::F64}) {
    Generator g(18);
    const int64_t R = 6, K = 8, V = 13, Vp = 16;
    const Tensor x0 = randn({R, K}, g).to(dt), w0 = randn({V, K}, g).to(dt),
                 dy = randn({R, Vp}, g).to(dt);
    // The padding's gradient is dropped: dy's last columns must not matter.
    const auto padded = values_and_grads(
        {x0, w0}, dy, [Vp](const Params& p) { return ops::linear_padded(p[0], p[1], Vp); });
    const auto plain = values_and_grads({x0, w0}, dy.narrow(1, 0, V).contiguous(),
                                        [](const Params& p) { return ops::linear(p[0], p[1]); });
    std::vector<double> y_cols;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < Vp; ++c) {
        const double v = padded[0][size_t(r * Vp + c)];
        if (c < V)
          y_cols.push_back(v);
        else
          EXPECT_EQ(v, 0.0) << "padding at row " << r << " column " << c;
      }
    EXPECT_EQ(y_cols, plain[0]) << dtype_name(dt);
    EXPECT_EQ(padded[1], plain[1]) << dtype_name(dt) << " dx";
    EXPECT_EQ(padded[2], plain[2]) << dtype_name(dt) << " dw";
  }
  Generator g(19);
  EXPECT_THROW(ops::linear_padded(randn({2, 4}, g), randn({5, 4}, g), 4), Error);
}

TEST(Linear, value_matches_x_wT_plus_b) {
  Tensor x = from_vector<float>({1, 2}, {1, 2});
  Tensor w = from_vector<float>({1, 0, 0, 1, 1, 1}, {3, 2});
  Tensor b = from_vector<float>({10, 20, 30}, {3});
  EXPECT_EQ(ops::linear(x, w, b).to_vector<float>(), (std::vector<float>{11, 22, 33}));
}
