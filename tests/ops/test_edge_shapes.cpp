// Backward passes at edge shapes: size-1 dimensions, broadcasting against them, non-contiguous
// views as inputs, reductions over every dimension, one tensor feeding an op twice (gradient
// accumulation into one node), ignored cross-entropy rows and empty tensors.
//
// Tolerance: every check is gradcheck's default (h = 1e-6 in f64, atol 1e-6, rtol 1e-5; see
// tests/gradcheck.h) unless a test says otherwise. gradcheck hands f contiguous f64 copies, so the
// views whose backward is under test are made inside f. An empty input has no element to perturb:
// there the checks are that backward runs and leaves a gradient of the input's shape.
#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "gradcheck.h"
#include "ops/ops.h"
#include "ops/packed_attention.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::gradcheck;
using In = std::vector<Tensor>;

// gradcheck of the expression `body` in in[0], in[1], ... (the lambda captures by reference:
// gradcheck calls it only before it returns).
#define EXPECT_GRADCHECK(body, ...) \
  EXPECT_TRUE(gradcheck([&](const In& in) -> Tensor { return body; }, In{__VA_ARGS__}))
// expect_empty_grad (below) of the expression `body` in x, for x of shape (...).
#define EXPECT_EMPTY_GRAD(body, ...) \
  expect_empty_grad([&](const Tensor& x) -> Tensor { return body; }, Shape{__VA_ARGS__})

namespace {

Tensor ids_of(const std::vector<int32_t>& v, const Shape& s) {
  return from_vector<int32_t>(v, s, DType::I32);
}

Tensor rnd(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return randn(s, g, DType::F64);
}

Tensor ones64(const Shape& s) { return ones(s, DType::F64); }

// Backward of f(x) for an x with a zero-size dimension: it must run and leave x a gradient of x's
// shape.
void expect_empty_grad(const std::function<Tensor(const Tensor&)>& f, const Shape& shape) {
  Tensor x = zeros(shape, DType::F64).requires_grad_();
  Tensor y = f(x);
  backward(y, zeros(y.shape(), DType::F64));
  ASSERT_TRUE(x.grad().defined()) << shape_str(shape);
  EXPECT_EQ(x.grad().shape(), shape);
}

}  // namespace

// ---- elementwise ----

TEST(EdgeShapes, elementwise_broadcast_against_size_one) {
  for (auto op : {ops::add, ops::sub, ops::mul}) {
    EXPECT_GRADCHECK(op(in[0], in[1]), rnd({4, 1}, 1), rnd({1}, 2));  // a bias of one column
    EXPECT_GRADCHECK(op(in[0], in[1]), rnd({1, 5}, 3), rnd({5}, 4));  // one row, bias-sized
  }
}

TEST(EdgeShapes, elementwise_non_contiguous_operands) {
  // a transposed or permuted, b a narrowed (strided) column or bias; mul saves dense copies.
  for (auto op : {ops::add, ops::sub, ops::mul}) {
    EXPECT_GRADCHECK(op(in[0].transpose(0, 1), in[1].narrow(1, 1, 3)), rnd({3, 4}, 5),
                     rnd({4, 5}, 6));
    EXPECT_GRADCHECK(op(in[0].permute({2, 0, 1}), in[1].narrow(0, 1, 3)), rnd({2, 3, 4}, 7),
                     rnd({5}, 8));
  }
  EXPECT_GRADCHECK(ops::scale(in[0].transpose(0, 1), -2.5), rnd({3, 2}, 9));
}

TEST(EdgeShapes, elementwise_same_tensor_twice) {
  // x * x, x + x^T: both contributions accumulate into one node.
  EXPECT_GRADCHECK(ops::mul(in[0], in[0]), rnd({3, 4}, 10));
  EXPECT_GRADCHECK(ops::add(in[0], in[0].transpose(0, 1)), rnd({3, 3}, 12));
  // An intermediate used twice, then one of its rows as the bias.
  Tensor h;
  EXPECT_GRADCHECK(
      (h = ops::scale(in[0], 1.5), ops::mul(ops::mul(h, h), h.narrow(0, 1, 1).view({4}))),
      rnd({3, 4}, 13));
}

TEST(EdgeShapes, add_rows_single_position_views_and_one_table_twice) {
  EXPECT_GRADCHECK(ops::add_rows(in[0], in[1], 2), rnd({1, 1, 3}, 14), rnd({4, 3}, 15));
  // x a permuted (B, T, C) view; the table a narrow of a wider one.
  EXPECT_GRADCHECK(ops::add_rows(in[0].permute({1, 0, 2}), in[1].narrow(0, 1, 4), 1),
                   rnd({2, 2, 3}, 16), rnd({6, 3}, 17));
  // Overlapping and disjoint row ranges of one intermediate table, which also feeds a mul.
  for (int64_t second : {1, 2}) {
    Tensor tab;
    EXPECT_GRADCHECK((tab = ops::scale(in[1], 2.0),
                      ops::mul(ops::add_rows(ops::add_rows(in[0], tab, 0), tab, second),
                               tab.narrow(0, 0, 2).view({1, 2, 2}))),
                     rnd({1, 2, 2}, 18), rnd({4, 2}, 19));
  }
}

// ---- reductions ----

TEST(EdgeShapes, reductions_over_every_dim_of_a_view) {
  for (int64_t d = -3; d < 3; ++d)
    for (bool keep : {false, true}) {
      SCOPED_TRACE(std::to_string(d) + (keep ? " keepdim" : ""));
      EXPECT_GRADCHECK(ops::sum(in[0].permute({2, 0, 1}), d, keep), rnd({2, 3, 4}, 20));
      EXPECT_GRADCHECK(ops::mean(in[0].transpose(0, 2), d, keep), rnd({2, 3, 4}, 21));
    }
  EXPECT_GRADCHECK(ops::sum(in[0].transpose(0, 1)), rnd({3, 2}, 22));
  EXPECT_GRADCHECK(ops::mean(in[0].narrow(1, 1, 2)), rnd({3, 4}, 23));
}

TEST(EdgeShapes, reductions_over_a_dim_of_size_one) {
  for (int64_t d : {0, 1, 2, -1})
    for (bool keep : {false, true}) {
      EXPECT_GRADCHECK(ops::sum(in[0], d, keep), rnd({1, 3, 1}, 24)) << d << keep;
      EXPECT_GRADCHECK(ops::mean(in[0], d, keep), rnd({1, 3, 1}, 25)) << d << keep;
    }
  EXPECT_GRADCHECK(ops::sum(in[0], 0), rnd({1}, 26));  // one element to a scalar
  EXPECT_GRADCHECK(ops::mean(in[0]), rnd({}, 27));     // a 0-D tensor
}

// ---- matmul and linear ----

TEST(EdgeShapes, matmul_size_one_dimensions) {
  // M, K, N each 1 in turn, every combination of trans flags (operands stored as they say).
  const std::vector<std::array<int64_t, 3>> mkn = {{1, 3, 4}, {3, 1, 4}, {3, 4, 1}, {1, 1, 1}};
  for (auto [M, K, N] : mkn)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        EXPECT_GRADCHECK(ops::matmul(in[0], in[1], ta, tb), rnd(ta ? Shape{K, M} : Shape{M, K}, 30),
                         rnd(tb ? Shape{N, K} : Shape{K, N}, 31))
            << M << "x" << K << "x" << N << " ta " << ta << " tb " << tb;
}

TEST(EdgeShapes, matmul_batched_shared_and_non_contiguous) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      // Batch 2 x 1 with one row (M = 1); b shared (2-D) or per batch.
      SCOPED_TRACE(std::string(ta ? "a^T" : "a") + (tb ? " b^T" : " b"));
      Tensor a = rnd(ta ? Shape{2, 1, 3, 1} : Shape{2, 1, 1, 3}, 32);
      EXPECT_GRADCHECK(ops::matmul(in[0], in[1], ta, tb), a,
                       rnd(tb ? Shape{4, 3} : Shape{3, 4}, 33));
      EXPECT_GRADCHECK(ops::matmul(in[0], in[1], ta, tb), a,
                       rnd(tb ? Shape{2, 1, 4, 3} : Shape{2, 1, 3, 4}, 34));
    }
  // (B, T, H, D) views permuted to (B, H, T, D), as attention heads are: q @ k^T.
  EXPECT_GRADCHECK(
      ops::matmul(in[0].permute({0, 2, 1, 3}), in[1].permute({0, 2, 1, 3}), false, true),
      rnd({1, 3, 2, 2}, 36), rnd({1, 3, 2, 2}, 37));
  // A transposed 2-D weight shared over a batch.
  EXPECT_GRADCHECK(ops::matmul(in[0], in[1].transpose(0, 1)), rnd({2, 3, 4}, 38), rnd({5, 4}, 39));
}

TEST(EdgeShapes, matmul_same_tensor_both_operands) {
  // x x^T, x^T x, x x: two gradients into one leaf (the shared-b one through add_into).
  EXPECT_GRADCHECK(ops::matmul(in[0], in[0], false, true), rnd({3, 4}, 40));
  EXPECT_GRADCHECK(ops::matmul(in[0], in[0], true, false), rnd({3, 4}, 41));
  EXPECT_GRADCHECK(ops::matmul(in[0], in[0]), rnd({3, 3}, 42));
  EXPECT_GRADCHECK(ops::matmul(in[0], in[0], false, true), rnd({2, 3, 4}, 43));
  Tensor h;  // an intermediate as both operands
  EXPECT_GRADCHECK((h = ops::scale(in[0], 0.5), ops::matmul(h, h.transpose(0, 1))),
                   rnd({3, 2}, 44));
}

TEST(EdgeShapes, linear_single_row_feature_and_vector_input) {
  // x 1-D, x (1, 1, in) with one output feature; with and without the bias.
  EXPECT_GRADCHECK(ops::linear(in[0], in[1], in[2]), rnd({3}, 50), rnd({2, 3}, 51), rnd({2}, 52));
  EXPECT_GRADCHECK(ops::linear(in[0], in[1]), rnd({3}, 53), rnd({2, 3}, 54));
  EXPECT_GRADCHECK(ops::linear(in[0], in[1], in[2]), rnd({1, 1, 3}, 55), rnd({1, 3}, 56),
                   rnd({1}, 57));
  // A transposed input and a narrowed weight.
  EXPECT_GRADCHECK(ops::linear(in[0].transpose(0, 1), in[1].narrow(0, 1, 2), in[2]),
                   rnd({3, 2}, 61), rnd({4, 3}, 62), rnd({2}, 63));
  // linear_add and mlp_gelu with x itself as the residual; linear_gelu at one row.
  EXPECT_GRADCHECK(ops::linear_add(in[0], in[1], in[2], in[0]), rnd({2, 3}, 64), rnd({3, 3}, 65),
                   rnd({3}, 66));
  EXPECT_GRADCHECK(ops::linear_gelu(in[0], in[1], in[2]), rnd({1, 2}, 67), rnd({1, 2}, 68),
                   rnd({1}, 69));
  EXPECT_GRADCHECK(ops::mlp_gelu(in[0], in[1], in[2], in[3], in[4], in[0]), rnd({1, 2}, 70),
                   rnd({1, 2}, 71), rnd({1}, 72), rnd({2, 1}, 73), rnd({2}, 74));
}

// ---- norms ----

TEST(EdgeShapes, norms_with_one_or_two_channels_and_views) {
  // C = 1: layernorm's output is the bias alone (x - mean = 0), so x's gradient is 0.
  for (int64_t C : {1, 2}) {
    SCOPED_TRACE(C);
    EXPECT_GRADCHECK(ops::layernorm(in[0], in[1], in[2]), rnd({3, C}, 80), rnd({C}, 81),
                     rnd({C}, 82));
    EXPECT_GRADCHECK(ops::rmsnorm(in[0], in[1]), rnd({3, C}, 83), rnd({C}, 84));
  }
  EXPECT_GRADCHECK(ops::rmsnorm(in[0], in[1]), rnd({4}, 85), rnd({4}, 86));  // one row, 1-D
  EXPECT_GRADCHECK(ops::layernorm(in[0].transpose(0, 1), in[1], in[2]), rnd({4, 3}, 87),
                   rnd({4}, 88), rnd({4}, 89));
  EXPECT_GRADCHECK(ops::rmsnorm(in[0].permute({1, 2, 0}), in[1].narrow(0, 1, 2)),
                   rnd({2, 3, 2}, 90), rnd({4}, 91));
}

TEST(EdgeShapes, norms_with_one_tensor_in_two_roles) {
  // weight and bias one tensor; x and weight one (1-D) tensor; x also in a residual add.
  EXPECT_GRADCHECK(ops::layernorm(in[0], in[1], in[1]), rnd({3, 4}, 92), rnd({4}, 93));
  EXPECT_GRADCHECK(ops::rmsnorm(in[0], in[0]), rnd({4}, 94));
  EXPECT_GRADCHECK(ops::layernorm(in[0], in[0], in[0]), rnd({4}, 95));
  Tensor h;
  EXPECT_GRADCHECK((h = ops::scale(in[0], 2.0), ops::add(h, ops::rmsnorm(h, in[1]))),
                   rnd({2, 3}, 96), rnd({3}, 97));
  // The norms made before a mul of the same h: the mul's backward runs first and leaves h a
  // pending gradient of its own, which the norms' kernels then add dx onto (NormAccumulate::dx).
  for (int64_t C : {1, 2})
    EXPECT_GRADCHECK((h = ops::scale(in[0], 2.0),
                      ops::add(ops::add(ops::layernorm(h, in[1], in[2]), ops::rmsnorm(h, in[1])),
                               ops::mul(h, h))),
                     rnd({3, C}, 98), rnd({C}, 99), rnd({C}, 100));
}

// ---- softmax and cross-entropy ----

TEST(EdgeShapes, softmax_of_length_one_and_views) {
  // Length 1 (and 0-D): softmax is 1 and log_softmax 0 whatever x is: zero gradient.
  for (auto op : {ops::softmax, ops::log_softmax}) {
    EXPECT_GRADCHECK(op(in[0]), rnd({3, 1}, 101));
    EXPECT_GRADCHECK(op(in[0]), rnd({1}, 102));
    EXPECT_GRADCHECK(op(in[0]), rnd({}, 103));
    EXPECT_GRADCHECK(op(in[0].transpose(0, 1)), rnd({4, 3}, 104));
    EXPECT_GRADCHECK(op(in[0].narrow(1, 1, 2)), rnd({3, 4}, 105));
    EXPECT_GRADCHECK(ops::mul(op(in[0]), in[0]), rnd({2, 3}, 106));  // x reaches the loss twice
  }
}

TEST(EdgeShapes, cross_entropy_ignored_one_class_one_row) {
  EXPECT_GRADCHECK(ops::cross_entropy(in[0], in[1]), rnd({4, 3}, 110),
                   ids_of({2, -100, 0, -100}, {4}));
  // Every row ignored: the loss is 0 and so is every gradient.
  EXPECT_GRADCHECK(ops::cross_entropy(in[0], in[1]), rnd({2, 3}, 111), ids_of({-100, -100}, {2}));
  // ignore_index -1, (B, T, V) logits with B = 1.
  EXPECT_GRADCHECK(ops::cross_entropy(in[0], in[1], -1), rnd({1, 3, 2}, 112),
                   ids_of({1, -1, 0}, {1, 3}));
  // V = 1 (the loss is 0 for every logit); 1-D logits with a 0-D target.
  EXPECT_GRADCHECK(ops::cross_entropy(in[0], in[1]), rnd({3, 1}, 113), ids_of({0, 0, -100}, {3}));
  EXPECT_GRADCHECK(ops::cross_entropy(in[0], in[1]), rnd({5}, 114), ids_of({3}, {}));
  // Transposed logits (copied, so the in-place backward may take them) over 2 of 3 classes.
  EXPECT_GRADCHECK(ops::cross_entropy(in[0].transpose(0, 1), in[1], -100, {}, 2), rnd({3, 2}, 115),
                   ids_of({1, -100}, {2}));
}

TEST(EdgeShapes, cross_entropy_fused_and_transposed_targets) {
  // The fused classifier (an intermediate's logits, fused_dy > 0): gradcheck's upstream gradient
  // differs from fused_dy, so the rescale runs; with every row ignored it stays 0.
  for (const Tensor& t : {ids_of({1, -100, 2}, {3}), ids_of({-100, -100, -100}, {3})})
    EXPECT_GRADCHECK(ops::cross_entropy(ops::scale(in[0], 1.0), in[1], -100, {}, 0, 1.0),
                     rnd({3, 4}, 116), t);
  // Targets (B, T) given as a transposed (T, B) tensor: ignored rows found in the logical order.
  const Tensor t = ids_of({1, -100, -100, 0, 2, -100}, {3, 2});
  for (double fused : {0.0, 1.0})
    EXPECT_GRADCHECK(
        ops::cross_entropy(ops::scale(in[0], 1.0), in[1].transpose(0, 1), -100, {}, 0, fused),
        rnd({2, 3, 3}, 117), t);
  // linear_padded's logits (V = 1 or 2 real of 3 columns) into cross-entropy over `classes`.
  for (int64_t V : {1, 2})
    for (double fused : {0.0, 1.0})
      EXPECT_GRADCHECK(ops::cross_entropy(ops::linear_padded(in[0].transpose(0, 1), in[1], 3),
                                          in[2], -100, {}, V, fused),
                       rnd({2, 2}, 118), rnd({V, 2}, 119), ids_of({int32_t(V - 1), -100}, {2}))
          << "V " << V << " fused " << fused;
}

TEST(EdgeShapes, cross_entropy_retained_graph_backward_twice) {
  // A retained graph runs each closure twice: the in-place and fused paths must leave what the
  // second run reads intact. Tolerance 1e-12 on O(1) f64 values: the runs differ by at most the
  // rounding of the rescale (a few ulps), a corrupted second run by O(1).
  for (double fused : {0.0, 1.0}) {
    Tensor x = rnd({3, 4}, 120).requires_grad_(), dy = full({}, 0.7, DType::F64);
    auto loss = [&] {
      return ops::cross_entropy(ops::scale(x.transpose(0, 1), 1.0).transpose(0, 1),
                                ids_of({1, -100, 3}, {3}), -100, {}, 0, fused);
    };
    backward(loss(), dy);
    const std::vector<double> once = x.grad().to_vector<double>();
    Tensor l = loss();
    backward(l, dy, {.retain_graph = true});
    backward(l, dy);
    const std::vector<double> all = x.grad().to_vector<double>();  // three backwards' worth
    for (size_t i = 0; i < once.size(); ++i) EXPECT_NEAR(all[i], 3 * once[i], 1e-12) << i;
  }
}

// ---- embedding, rope, activations, dropout ----

TEST(EdgeShapes, embedding_repeated_ids_and_shapes) {
  EXPECT_GRADCHECK(ops::embedding(in[0], in[1]), rnd({3, 2}, 121), ids_of({1, 1, 1, 0, 1}, {5}));
  EXPECT_GRADCHECK(ops::embedding(in[0], in[1]), rnd({2, 1}, 122), ids_of({1, 1, 0, 1}, {2, 2}));
  EXPECT_GRADCHECK(ops::embedding(in[0], in[1]), rnd({4, 3}, 123), ids_of({2}, {}));
  // A transposed table; transposed ids; a tied table that is also a matmul operand.
  EXPECT_GRADCHECK(ops::embedding(in[0].transpose(0, 1), in[1]), rnd({3, 4}, 124),
                   ids_of({3, 0, 3}, {3}));
  EXPECT_GRADCHECK(ops::embedding(in[0], in[1].transpose(0, 1)), rnd({4, 2}, 125),
                   ids_of({3, 0, 3, 1, 2, 3}, {3, 2}));
  EXPECT_GRADCHECK(ops::matmul(ops::embedding(in[0], in[1]), in[0], false, true), rnd({3, 2}, 126),
                   ids_of({2, 2}, {2}));
}

TEST(EdgeShapes, rope_single_position_head_and_pair) {
  EXPECT_GRADCHECK(ops::rope(in[0], 10000.0, 5), rnd({1, 1, 1, 2}, 130));
  ops::RopeFreqs f = ops::rope_freqs(4, 50.0);
  f.scale = 1.3;  // YaRN's attention factor
  EXPECT_GRADCHECK(ops::rope(in[0], f, 2), rnd({2, 1, 2, 4}, 131));
  // (B, T, H, D) permuted to (B, H, T, D), as a projection's heads are.
  EXPECT_GRADCHECK(ops::rope(in[0].permute({0, 2, 1, 3}), 100.0, 1), rnd({2, 3, 2, 4}, 132));
}

TEST(EdgeShapes, activations_and_dropout_of_views_and_shared_inputs) {
  for (auto op : {ops::gelu, ops::silu})
    EXPECT_GRADCHECK(op(in[0].transpose(0, 1)), rnd({3, 2}, 133));
  EXPECT_GRADCHECK(ops::swiglu(in[0], in[0]), rnd({2, 3}, 134));
  EXPECT_GRADCHECK(ops::swiglu(in[0].narrow(1, 0, 2), in[0].narrow(1, 1, 2)), rnd({3, 3}, 135));
  // A fresh generator per evaluation replays the mask, so dropout is a fixed linear map.
  Generator g(9);
  EXPECT_GRADCHECK((g = Generator(9), ops::dropout(in[0].transpose(0, 1), 0.5, true, g)),
                   rnd({4, 3}, 136));
}

// ---- attention ----

TEST(EdgeShapes, attention_single_token_head_and_channel) {
  for (int64_t T : {1, 3}) {
    SCOPED_TRACE("T " + std::to_string(T));
    EXPECT_GRADCHECK(ops::attention(in[0], in[1], in[2]), rnd({1, 1, T, 1}, 140),
                     rnd({1, 1, T, 1}, 141), rnd({1, 1, T, 1}, 142));
    EXPECT_GRADCHECK(ops::flash_attention(in[0], in[1], in[2]), rnd({1, 2, T, 2}, 143),
                     rnd({1, 1, T, 2}, 144), rnd({1, 1, T, 2}, 145));
  }
  // Sliding window 1 (each query sees itself only) and wider than T.
  for (int64_t window : {1, 5})
    EXPECT_GRADCHECK(ops::flash_attention(in[0], in[1], in[2], 0.0, window), rnd({1, 2, 3, 2}, 146),
                     rnd({1, 1, 3, 2}, 147), rnd({1, 1, 3, 2}, 148));
  // Stick-breaking at T = 1 and 2 (query 0 has no earlier key unless attend_current).
  for (int64_t T : {1, 2})
    for (bool current : {false, true})
      for (auto rem : {ops::StickBreakingRemainder::None, ops::StickBreakingRemainder::Current})
        EXPECT_GRADCHECK(ops::stick_breaking_attention(in[0], in[1], in[2], {current, rem}),
                         rnd({1, 2, T, 2}, 149), rnd({1, 1, T, 2}, 150), rnd({1, 1, T, 2}, 151))
            << "T " << T << " current " << current;
  EXPECT_GRADCHECK(ops::causal_attention(in[0], in[1], in[2], {}, true), rnd({1, 1, 1, 3}, 152),
                   rnd({1, 1, 1, 3}, 153), rnd({1, 1, 1, 3}, 154));
}

TEST(EdgeShapes, attention_views_and_self_attention_of_one_tensor) {
  // q, k, v heads of (B, T, H, D) projections, and q = k = v = x.
  auto heads = [](const Tensor& t) { return t.permute({0, 2, 1, 3}); };
  for (bool flash : {false, true}) {
    EXPECT_GRADCHECK(flash ? ops::flash_attention(heads(in[0]), heads(in[1]), heads(in[2]))
                           : ops::attention(heads(in[0]), heads(in[1]), heads(in[2])),
                     rnd({1, 3, 2, 2}, 155), rnd({1, 3, 1, 2}, 156), rnd({1, 3, 1, 2}, 157));
    EXPECT_GRADCHECK(
        flash ? ops::flash_attention(in[0], in[0], in[0]) : ops::attention(in[0], in[0], in[0]),
        rnd({1, 2, 3, 2}, 158));
  }
}

TEST(EdgeShapes, shifted_sparse_attention_group_sizes) {
  // One group spanning T = 2, shifted; unshifted groups of one token (each query sees itself).
  EXPECT_GRADCHECK(ops::shifted_sparse_attention(in[0], in[1], in[2], 2), rnd({1, 2, 2, 2}, 159),
                   rnd({1, 2, 2, 2}, 160), rnd({1, 2, 2, 2}, 161));
  EXPECT_GRADCHECK(ops::shifted_sparse_attention(in[0], in[1], in[2], 1, {}, false),
                   rnd({1, 2, 3, 2}, 162), rnd({1, 1, 3, 2}, 163), rnd({1, 1, 3, 2}, 164));
  // Shifting by half a group needs an even group: 3 and 1 must be a clear error (3 lost a token
  // and failed inside concat; 1 divided by zero in to_groups).
  Tensor q = rnd({1, 2, 6, 2}, 165);
  for (int64_t group : {3, 1})
    EXPECT_NE(error_of([&] { ops::shifted_sparse_attention(q, q, q, group); }).find("even group"),
              std::string::npos);
  // causal_attention's S^2-Attn takes groups of T / 4: T = 4 gives groups of one.
  const Tensor q4 = rnd({1, 2, 4, 2}, 166);
  EXPECT_THROW(ops::causal_attention(q4, q4, q4, {.s2_attn = true}, true), Error);
}

TEST(EdgeShapes, packed_and_projected_attention_single_head_and_token) {
  const ops::RopeFreqs f = ops::rope_freqs(2, 100.0);
  for (const ops::AttentionSpec& spec :
       {ops::AttentionSpec{}, {.kind = ops::AttentionKind::StickBreaking}, {.window = 1}})
    for (int64_t T : {1, 3}) {
      SCOPED_TRACE(std::string(ops::attention_kind_name(spec.kind)) + " T " + std::to_string(T));
      // H = Hkv = 1, D = 2: qkv (B, T, 6); and a transposed (T, B, 8) buffer with H = 2, Hkv = 1.
      EXPECT_GRADCHECK(ops::packed_causal_attention(in[0], 1, 1, spec, true), rnd({1, T, 6}, 167));
      EXPECT_GRADCHECK(ops::packed_causal_attention(in[0].transpose(0, 1), 2, 1, spec, true),
                       rnd({T, 2, 8}, 168));
      // q = k = v one tensor (H = Hkv = 2), with RoPE: three gradients into one leaf.
      EXPECT_GRADCHECK(ops::projected_causal_attention(in[0], in[0], in[0], 2, 2, spec, true, &f),
                       rnd({2, T, 4}, 169));
    }
}

// ---- shape chains ----

TEST(EdgeShapes, concat_split_narrow_chains_on_one_tensor) {
  // concat of x with itself; of two overlapping narrows; of split pieces reordered and repeated.
  EXPECT_GRADCHECK(ops::concat({in[0], in[0]}, 0), rnd({2, 3}, 180));
  EXPECT_GRADCHECK(ops::concat({in[0].narrow(1, 0, 2), in[0].narrow(1, 1, 2)}, -1),
                   rnd({2, 3}, 181));
  std::vector<Tensor> p;
  EXPECT_GRADCHECK(
      (p = ops::split(in[0], std::vector<int64_t>{1, 2}, 1), ops::concat({p[1], p[0], p[1]}, 1)),
      rnd({2, 3}, 182));
  // Narrows of an intermediate: disjoint, overlapping, and along the other dim.
  Tensor h;
  EXPECT_GRADCHECK(
      (h = ops::scale(in[0], 3.0),
       ops::concat(
           {ops::mul(ops::add(h.narrow(0, 0, 2), h.narrow(0, 2, 2)), h.narrow(0, 1, 2)).view({6}),
            h.narrow(1, 1, 2).reshape({8})},
           0)),
      rnd({4, 3}, 183));
  // view -> transpose -> reshape (a copy) -> narrow, then multiplied with x's own narrow.
  EXPECT_GRADCHECK(ops::mul(in[0].view({3, 2}).transpose(0, 1).reshape({6}).narrow(0, 1, 3),
                            in[0].narrow(0, 0, 3)),
                   rnd({6}, 184));
  EXPECT_GRADCHECK(  // a size-0 narrow among the pieces
      ops::concat({in[0].narrow(0, 1, 0), in[0], in[0].narrow(0, 0, 1)}, 0), rnd({2, 2}, 185));
}

TEST(EdgeShapes, one_tensor_through_two_dtypes) {
  // x reaches the output directly (f64) and through a transposed f32 detour: two gradients of two
  // dtypes into one leaf. Linear, so no truncation error; h = 1e-2 keeps the f32 rounding of L
  // (~1e-7 |L| / h) and of dy near 1e-5: atol = rtol = 1e-3. A lost contribution is off by O(1).
  EXPECT_TRUE(gradcheck(
      [](const In& in) {
        Tensor y = ops::scale(in[0].transpose(0, 1).to(DType::F32), 2.0).to(DType::F64);
        return ops::add(in[0], y.transpose(0, 1));
      },
      {rnd({2, 3}, 186)}, {.h = 1e-2, .atol = 1e-3, .rtol = 1e-3}));
}

// ---- empty tensors ----

TEST(EdgeShapes, empty_elementwise_reductions_and_row_ops) {
  EXPECT_EMPTY_GRAD(ops::mul(x, x), 0, 3);
  EXPECT_EMPTY_GRAD(ops::sum(x), 2, 0);
  EXPECT_EMPTY_GRAD(ops::sum(x, 1, true), 2, 0);
  EXPECT_EMPTY_GRAD(ops::sum(x, 0), 0, 3);
  EXPECT_EMPTY_GRAD(ops::mean(x, 1), 0, 3);
  EXPECT_EMPTY_GRAD(ops::add(x, ones64({3})), 0, 3);
  // A bias row of no columns, x as a and as the bias b (whose gradient sums no rows).
  EXPECT_EMPTY_GRAD(ops::add(x, zeros({0}, DType::F64)), 2, 0);
  for (auto op : {ops::add, ops::sub, ops::mul}) EXPECT_EMPTY_GRAD(op(ones64({2, 0}), x), 0);
  EXPECT_EMPTY_GRAD(ops::softmax(x), 0, 4);
  EXPECT_EMPTY_GRAD(ops::log_softmax(x), 2, 0);
  EXPECT_EMPTY_GRAD(ops::gelu(x.transpose(0, 1)), 3, 0);
  EXPECT_EMPTY_GRAD(ops::swiglu(x, x), 0, 3);
  EXPECT_EMPTY_GRAD(ops::dropout(x, 0.5), 0, 3);
  EXPECT_EMPTY_GRAD(ops::layernorm(x, ones64({4}), ones64({4})), 0, 4);
  EXPECT_EMPTY_GRAD(ops::rmsnorm(x, ones64({4})), 0, 4);
  EXPECT_EMPTY_GRAD(ops::embedding(x, ids_of({}, {0})), 3, 2);
  EXPECT_EMPTY_GRAD(ops::embedding(x, ids_of({1, 2}, {2})), 3, 0);
  EXPECT_EMPTY_GRAD(ops::add_rows(x, ones64({4, 2}), 1), 0, 3, 2);
  // No rows at all: the mean over no valid rows is 0.
  EXPECT_EMPTY_GRAD(ops::cross_entropy(x, ids_of({}, {0})), 0, 3);
}

TEST(EdgeShapes, empty_matmul_and_linear) {
  // M = 0, N = 0, K = 0, and no batches: the product is zeros of (M, N).
  EXPECT_EMPTY_GRAD(ops::matmul(x, ones64({3, 4})), 0, 3);
  EXPECT_EMPTY_GRAD(ops::matmul(ones64({2, 3}), x), 3, 0);
  EXPECT_EMPTY_GRAD(ops::matmul(x, x, true, false), 0, 3);
  EXPECT_EMPTY_GRAD(ops::matmul(x, x, false, true), 2, 0);
  EXPECT_EMPTY_GRAD(ops::matmul(x, ones64({3, 4})), 0, 2, 3);
  EXPECT_EMPTY_GRAD(ops::matmul(x, x, false, true), 0, 2, 3);
  EXPECT_EMPTY_GRAD(ops::matmul(x, x, true, false), 2, 0, 3);
  EXPECT_EMPTY_GRAD(ops::linear(x, ones64({4, 3})), 0, 3);
  EXPECT_EMPTY_GRAD(ops::linear(x, ones64({4, 3}), ones64({4})), 0, 3);
  // K = 0 in-features with a bias (and the fused forms): y is the bias on every row; x's gradient
  // is empty, the weight's (4, 0) empty and the bias's the column sums of dy.
  const Tensor w = zeros({4, 0}, DType::F64), b = ones64({4});
  EXPECT_EMPTY_GRAD(ops::linear(x, w, b), 2, 0);
  EXPECT_EMPTY_GRAD(ops::linear_gelu(x, w, b), 2, 0);
  EXPECT_EMPTY_GRAD(ops::linear_padded(x, w, 5), 2, 0);
  EXPECT_EMPTY_GRAD(ops::linear_add(x, w, b, zeros({2, 4}, DType::F64)), 2, 0);
  EXPECT_TRUE(gradcheck([](const In& in) { return ops::linear(in[0], in[1], in[2]); },
                        {rnd({3, 0}, 75), rnd({2, 0}, 76), rnd({2}, 77)},
                        {.check = {false, false, true}}));
}

TEST(EdgeShapes, empty_attention) {
  // T = 0 positions, B = 0 sequences.
  for (const Shape& shape : {Shape{1, 2, 0, 2}, Shape{0, 2, 3, 2}}) {
    EXPECT_EMPTY_GRAD(ops::attention(x, x, x), shape);
    EXPECT_EMPTY_GRAD(ops::flash_attention(x, x, x), shape);
    EXPECT_EMPTY_GRAD(ops::stick_breaking_attention(x, x, x), shape);
    EXPECT_EMPTY_GRAD(ops::rope(x), shape);
  }
  EXPECT_EMPTY_GRAD(ops::packed_causal_attention(x, 1, 1, {}, true), 1, 0, 6);
}
