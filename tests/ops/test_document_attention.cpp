// Attention within documents (ops/documents.h): Documents found after an end token, and every
// attention entry point given documents (causal_attention on split heads, packed_causal_attention,
// projected_causal_attention with RoPE) equal to attending each document's rows on their own,
// forward and backward, for softmax (the CPU's materialised and flash kernels) and stick-breaking.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "gradcheck.h"
#include "ops/causal_attention.h"
#include "ops/documents.h"
#include "ops/ops.h"
#include "ops/packed_attention.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::ops;
using tessera::testing::max_abs_diff;

namespace {

constexpr int32_t kEnd = 9;

// Rows of T ids (T = 13) whose separators open documents of these lengths: row 0 holds four (one
// of a single token), row 1 one (a separator at t = 0 opens the row's own), row 2 two, the second
// at the last position.
std::vector<int32_t> batch_ids(int64_t T) {
  std::vector<int32_t> ids(size_t(3 * T), 1);
  for (int64_t t : {2, 3, 8}) ids[size_t(t)] = kEnd;  // row 0: documents [0,2) [2,3) [3,8) [8,13)
  ids[size_t(T)] = kEnd;                              // row 1: [0,13)
  ids[size_t(2 * T + T - 1)] = kEnd;                  // row 2: [0,12) [12,13)
  return ids;
}

AttentionSpec softmax() { return {}; }
AttentionSpec windowed(int64_t w) {
  AttentionSpec s;
  s.window = w;
  return s;
}
AttentionSpec stick_breaking(bool current, bool remainder) {
  AttentionSpec s;
  s.kind = AttentionKind::StickBreaking;
  s.attend_current = current, s.sb_remainder = remainder;
  return s;
}
std::string describe(const AttentionSpec& s) {
  return std::string(attention_kind_name(s.kind)) + " window " + std::to_string(s.window) +
         (s.attend_current ? " attend_current" : "") + (s.sb_remainder ? " remainder" : "");
}

// The (1, n, L, D) rows of document (b, start, L) of a (B, n, T, D) tensor, through autograd.
Tensor rows(const Tensor& t, int64_t b, int64_t start, int64_t L) {
  return t.narrow(0, b, 1).narrow(2, start, L);
}

struct Grads {
  Tensor out, dq, dk, dv;
};

// out and the gradients of sum(out * w) for q, k, v (B, *, T, D) through attend(q, k, v).
template <typename F>
Grads run(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& w, F&& attend) {
  Tensor q = q0.detach(), k = k0.detach(), v = v0.detach();
  for (Tensor* t : {&q, &k, &v}) t->requires_grad_();
  Tensor out = attend(q, k, v);
  ops::sum(ops::mul(out, w)).backward();
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

}  // namespace

TEST(Documents, start_at_each_separator_and_count_positions_from_there) {
  const int64_t T = 13;
  const std::vector<int32_t> ids = batch_ids(T);
  const Documents d = Documents::at_token(ids.data(), 3, T, kEnd);
  std::vector<std::vector<int64_t>> seen;
  d.for_each([&](int64_t b, int64_t start, int64_t L) { seen.push_back({b, start, L}); });
  const std::vector<std::vector<int64_t>> want = {{0, 0, 2},  {0, 2, 1},  {0, 3, 5}, {0, 8, 5},
                                                  {1, 0, 13}, {2, 0, 12}, {2, 12, 1}};
  EXPECT_EQ(seen, want);
  EXPECT_EQ(d.count(), 7);
  EXPECT_FALSE(d.whole_rows());
  const std::vector<int32_t> pos = d.positions();
  const std::vector<int32_t> row0(pos.begin(), pos.begin() + T);
  EXPECT_EQ(row0, (std::vector<int32_t>{0, 1, 0, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4}));
  EXPECT_EQ(pos[size_t(T + 12)], 12);
  EXPECT_EQ(pos[size_t(2 * T + 12)], 0);

  // A separator at a row's first position opens the row's own document: one a row.
  const std::vector<int32_t> one = {1, 2, kEnd, 4, 5, kEnd};
  EXPECT_FALSE(Documents::at_token(one.data(), 1, 6, kEnd).whole_rows());
  EXPECT_TRUE(Documents::at_token(one.data() + 2, 1, 3, kEnd).whole_rows());
  EXPECT_THROW(Documents::at_token(one.data(), 0, 6, kEnd), Error);
}

TEST(DocumentAttention, equals_each_document_attended_alone_forward_and_backward) {
  // The same kernels over the same values in the same order, on views of the batch instead of
  // copies of each document: only rounding of a differently blocked BLAS call may differ (f64).
  const int64_t B = 3, T = 13, D = 4, H = 4, Hkv = 2;
  const std::vector<int32_t> ids = batch_ids(T);
  const Documents docs = Documents::at_token(ids.data(), B, T, kEnd);
  Generator g(7);
  const Tensor q = randn({B, H, T, D}, g, DType::F64), k = randn({B, Hkv, T, D}, g, DType::F64),
               v = randn({B, Hkv, T, D}, g, DType::F64), w = randn({B, H, T, D}, g, DType::F64);
  for (const AttentionSpec& spec :
       {softmax(), windowed(2), stick_breaking(false, false), stick_breaking(true, true)}) {
    SCOPED_TRACE(describe(spec));
    const Grads got = run(q, k, v, w, [&](const Tensor& a, const Tensor& b, const Tensor& c) {
      return causal_attention(a, b, c, spec, true, &docs);
    });
    // Reference: each document's rows copied out and attended as a sequence of their own.
    const Grads ref = run(q, k, v, w, [&](const Tensor& a, const Tensor& b, const Tensor& c) {
      std::vector<Tensor> parts;
      docs.for_each([&](int64_t r, int64_t start, int64_t L) {
        const Tensor y =
            causal_attention(rows(a, r, start, L).contiguous(), rows(b, r, start, L).contiguous(),
                             rows(c, r, start, L).contiguous(), spec, true);
        parts.push_back(y);
      });
      // Reassemble along positions, row by row.
      std::vector<Tensor> row_parts[3];
      size_t i = 0;
      docs.for_each([&](int64_t r, int64_t, int64_t) { row_parts[r].push_back(parts[i++]); });
      std::vector<Tensor> rows_out;
      for (auto& rp : row_parts) rows_out.push_back(ops::concat(rp, 2));
      return ops::concat(rows_out, 0);
    });
    EXPECT_LT(max_abs_diff(got.out, ref.out), 1e-13);
    EXPECT_LT(max_abs_diff(got.dq, ref.dq), 1e-13);
    EXPECT_LT(max_abs_diff(got.dk, ref.dk), 1e-13);
    EXPECT_LT(max_abs_diff(got.dv, ref.dv), 1e-13);
    // And it is not plain causal attention: row 0's later documents would see the earlier ones.
    const Tensor plain = causal_attention(q, k, v, spec, false);
    EXPECT_GT(max_abs_diff(plain, got.out), 1e-3);
  }
}

TEST(DocumentAttention, the_packed_projection_equals_the_split_heads) {
  const int64_t B = 3, T = 13, D = 4, H = 4, Hkv = 2;
  const std::vector<int32_t> ids = batch_ids(T);
  const Documents docs = Documents::at_token(ids.data(), B, T, kEnd);
  Generator g(9);
  const Tensor qkv = randn({B, T, (H + 2 * Hkv) * D}, g, DType::F64);
  const Tensor w = randn({B, T, H * D}, g, DType::F64);
  auto heads = [&](const Tensor& x, int64_t first, int64_t n) {
    return x.narrow(2, first * D, n * D).reshape({B, T, n, D}).permute({0, 2, 1, 3}).contiguous();
  };
  auto merge = [&](const Tensor& y) { return y.permute({0, 2, 1, 3}).reshape({B, T, H * D}); };
  for (const AttentionSpec& spec : {softmax(), windowed(3), stick_breaking(false, true)}) {
    SCOPED_TRACE(describe(spec));
    auto grad_of = [&](auto&& attend) {
      Tensor x = qkv.detach();
      x.requires_grad_();
      Tensor out = attend(x);
      ops::sum(ops::mul(out, w)).backward();
      return std::make_pair(out.detach(), x.grad());
    };
    const auto packed = grad_of(
        [&](const Tensor& x) { return packed_causal_attention(x, H, Hkv, spec, true, &docs); });
    const auto split = grad_of([&](const Tensor& x) {
      return merge(causal_attention(heads(x, 0, H), heads(x, H, Hkv), heads(x, H + Hkv, Hkv), spec,
                                    true, &docs));
    });
    EXPECT_LT(max_abs_diff(packed.first, split.first), 1e-13);
    EXPECT_LT(max_abs_diff(packed.second, split.second), 1e-13);
  }
}

TEST(DocumentAttention, rope_rotated_over_the_row_equals_positions_restarting_at_each_document) {
  // RoPE makes a score depend on the difference of positions alone, so rotating every position of
  // the row and attending within documents equals each document rotated from position 0.
  const int64_t B = 3, T = 13, D = 4, H = 2, Hkv = 1;
  const std::vector<int32_t> ids = batch_ids(T);
  const Documents docs = Documents::at_token(ids.data(), B, T, kEnd);
  Generator g(13);
  const Tensor q = randn({B, T, H * D}, g, DType::F64), k = randn({B, T, Hkv * D}, g, DType::F64),
               v = randn({B, T, Hkv * D}, g, DType::F64);
  const RopeFreqs freqs = rope_freqs(D, 10000.0);
  const AttentionSpec spec = softmax();
  const Tensor got = projected_causal_attention(q, k, v, H, Hkv, spec, false, &freqs, &docs);
  docs.for_each([&](int64_t b, int64_t start, int64_t L) {
    auto part = [&](const Tensor& t) { return t.narrow(0, b, 1).narrow(1, start, L).contiguous(); };
    const Tensor alone =
        projected_causal_attention(part(q), part(k), part(v), H, Hkv, spec, false, &freqs);
    EXPECT_LT(max_abs_diff(part(got), alone), 1e-12) << "row " << b << " start " << start;
  });
}

TEST(DocumentAttention, gradcheck_against_finite_differences) {
  const int64_t T = 6;
  const std::vector<int32_t> ids = {1, kEnd, 2, 3, kEnd, 4};
  const Documents docs = Documents::at_token(ids.data(), 1, T, kEnd);
  Generator g(5);
  const Tensor qkv = randn({1, T, (2 + 2 * 1) * 3}, g, DType::F64);
  for (const AttentionSpec& spec : {softmax(), windowed(2), stick_breaking(false, true)}) {
    SCOPED_TRACE(describe(spec));
    EXPECT_TRUE(tessera::testing::gradcheck(
        [&](const std::vector<Tensor>& p) {
          return ops::sum(ops::mul(packed_causal_attention(p[0], 2, 1, spec, true, &docs),
                                   ops::gelu(p[0].narrow(2, 0, 2 * 3))));
        },
        {qkv}));
  }
}

TEST(DocumentAttention, refuses_documents_of_another_batch_and_decoding_offsets) {
  const std::vector<int32_t> ids = {1, kEnd, 2, 3};
  const Documents docs = Documents::at_token(ids.data(), 1, 4, kEnd);
  Generator g(3);
  const Tensor qkv = randn({1, 5, 3 * 2}, g, DType::F64);
  try {
    packed_causal_attention(qkv, 1, 1, softmax(), true, &docs);
    ADD_FAILURE() << "documents of a (1, 4) batch attended a (1, 5, 6) projection";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(1, 4) batch"), std::string::npos) << e.what();
  }
  const Tensor q = randn({1, 1, 2, 2}, g, DType::F64), kv = randn({1, 1, 4, 2}, g, DType::F64);
  EXPECT_THROW(causal_attention(q, kv, kv, softmax(), false, &docs), Error);
  AttentionSpec s2;
  s2.s2_attn = true;
  const Tensor q4 = randn({1, 2, 4, 2}, g, DType::F64), k4 = randn({1, 2, 4, 2}, g, DType::F64);
  EXPECT_THROW(causal_attention(q4, k4, k4, s2, true, &docs), Error);
  const std::string e =
      tessera::testing::error_of([&] { document_attention(q4, k4, k4, s2, docs, true); });
  EXPECT_NE(e.find("document_attention: attention within documents runs the kernels that read "
                   "strided heads, which softmax attention with S^2-Attn lacks"),
            std::string::npos)
      << e;
}
