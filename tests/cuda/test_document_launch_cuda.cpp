// Attention within documents in one launch (the kernel table's flash_attention_*_documents and
// stick_breaking_*_documents, kernels/doc_tiles.h) against a launch on each document's view, the
// way the op ran them before: the same blocks do the same work, so out, the row statistics (lse,
// log rem), dq, dk and dv must match bit for bit. Then when the one launch steps aside (f32, the
// wmma family, TESSERA_FLASH_DOCUMENTS=views, stick-breaking checkpoints past their budget), the
// spans it refuses, and the op taking it. Skips without a CUDA device; CI runs it on the emulator.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "attention_fixture.h"
#include "backend/kernels.h"
#include "cuda_fixture.h"
#include "ops/documents.h"
#include "ops/packed_attention.h"

using namespace tessera;
using namespace tessera::testing::attention;
using tessera::testing::kGpu;

namespace {

// Row 0 of T = 160: documents of 1, 69, 64 and 26 rows (one shorter than a tile, one crossing a
// tile edge, one a whole tile starting mid-tile); row 1: one document, whole.
std::vector<DocumentSpan> spans_of(int64_t T) {
  return {{0, 0, 1}, {0, 1, 69}, {0, 70, 64}, {0, 134, T - 134}, {1, 0, T}};
}

// The (1, n, length, ...) view of span s's rows of a (B, n, T, ...) tensor (or (B, n, T)).
Tensor rows_of(const Tensor& t, const DocumentSpan& s) {
  return t.narrow(0, s.b, 1).narrow(2, s.start, s.length);
}

std::vector<uint16_t> bits(const Tensor& t) {
  const Tensor c = t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const uint16_t*>(c.data_ptr());
  return {p, p + c.numel() * int64_t(dtype_size(c.dtype()) / 2)};
}

// Random bf16 q, dout (B, H, T, D) and k, v (B, Hkv, T, D) on the GPU.
struct Qkv {
  Tensor q, k, v, dout;
};
Qkv random_qkv(int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, uint64_t seed) {
  Generator g(seed);
  auto input = [&](int64_t heads) { return randn({B, heads, T, D}, g).to(DType::BF16).to(kGpu); };
  Qkv r;
  r.q = input(H), r.k = input(Hkv), r.v = input(Hkv), r.dout = input(H);
  return r;
}

// Which attention a pass runs: softmax with a window, or stick-breaking with its two options.
struct Attn {
  bool sb = false;
  int64_t window = 0;
  bool attend_current = false, remainder = false;
  std::string name() const {
    return sb ? std::string("stick-breaking") + (attend_current ? ", attending the current" : "") +
                    (remainder ? ", remainder" : "")
              : "softmax, window " + std::to_string(window);
  }
};

struct Pass {
  Tensor out, stats, rem, dq, dk, dv;
};

// Forward and backward over (B, H, T, D) q and (B, Hkv, T, D) k, v: in one call each, or one call
// a document on its views (each document's statistics their own tensors, copied into the batch's
// after). one_backward: the backward in one call too (else it must step aside, returning false,
// and runs a call a document).
Pass run(const Attn& a, bool one, const Tensor& q, const Tensor& k, const Tensor& v,
         const Tensor& dout, const std::vector<DocumentSpan>& spans, bool one_backward = true) {
  const Kernels& kern = kernels_for(kGpu);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2);
  const double scale = 0.125;
  Pass r{Tensor::empty(q.shape(), q.options()),
         Tensor::empty({B, H, T}, {DType::F32, kGpu}),
         a.sb ? Tensor::empty({B, H, T}, q.options()) : Tensor(),
         Tensor::empty(q.shape(), q.options()),
         Tensor::empty(k.shape(), k.options()),
         Tensor::empty(v.shape(), v.options())};
  auto forward = [&](const Tensor& out, const Tensor& st, const Tensor& rem, const Tensor& Q,
                     const Tensor& K, const Tensor& V) {
    if (a.sb)
      kern.stick_breaking_forward(out, st, rem, Q, K, V, scale, a.attend_current, a.remainder);
    else
      kern.flash_attention_forward(out, st, Q, K, V, scale, a.window);
  };
  auto backward = [&](const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dO,
                      const Tensor& Q, const Tensor& K, const Tensor& V, const Tensor& out,
                      const Tensor& st) {
    if (a.sb)
      kern.stick_breaking_backward(dq, dk, dv, dO, Q, K, V, out, st, scale, a.attend_current,
                                   a.remainder);
    else
      kern.flash_attention_backward(dq, dk, dv, dO, Q, K, V, out, st, scale, a.window);
  };
  if (one) {
    EXPECT_TRUE(a.sb ? kern.stick_breaking_forward_documents(r.out, r.stats, r.rem, q, k, v, scale,
                                                             a.attend_current, a.remainder, spans)
                     : kern.flash_attention_forward_documents(r.out, r.stats, q, k, v, scale,
                                                              a.window, spans));
    const bool ran =
        a.sb ? kern.stick_breaking_backward_documents(r.dq, r.dk, r.dv, dout, q, k, v, r.out,
                                                      r.stats, scale, a.attend_current, a.remainder,
                                                      spans)
             : kern.flash_attention_backward_documents(r.dq, r.dk, r.dv, dout, q, k, v, r.out,
                                                       r.stats, scale, a.window, spans);
    EXPECT_EQ(ran, one_backward);
    if (ran) return r;
  }
  for (const DocumentSpan& s : spans) {
    const Tensor st = one ? rows_of(r.stats, s).contiguous()
                          : Tensor::empty({1, H, s.length}, {DType::F32, kGpu});
    const Tensor rem = a.sb && !one ? Tensor::empty({1, H, s.length}, q.options()) : Tensor();
    if (!one) forward(rows_of(r.out, s), st, rem, rows_of(q, s), rows_of(k, s), rows_of(v, s));
    backward(rows_of(r.dq, s), rows_of(r.dk, s), rows_of(r.dv, s), rows_of(dout, s), rows_of(q, s),
             rows_of(k, s), rows_of(v, s), rows_of(r.out, s), st);
    if (one) continue;
    kern.copy(rows_of(r.stats, s), st);
    if (rem.defined()) kern.copy(rows_of(r.rem, s), rem);
  }
  return r;
}

void expect_same_bits(const Pass& a, const Pass& b, const std::string& what) {
  const char* names[] = {"out", "row statistics", "rem", "dq", "dk", "dv"};
  const Tensor* x[] = {&a.out, &a.stats, &a.rem, &a.dq, &a.dk, &a.dv};
  const Tensor* y[] = {&b.out, &b.stats, &b.rem, &b.dq, &b.dk, &b.dv};
  for (int i = 0; i < 6; ++i) {
    ASSERT_EQ(x[i]->defined(), y[i]->defined()) << names[i];
    if (!x[i]->defined()) continue;
    const std::vector<uint16_t> u = bits(*x[i]), w = bits(*y[i]);
    ASSERT_EQ(u.size(), w.size()) << names[i] << ", " << what;
    size_t differ = 0;
    for (size_t j = 0; j < u.size(); ++j) differ += u[j] != w[j];
    EXPECT_EQ(differ, 0u) << names[i] << ": words that differ of " << u.size() << ", " << what;
  }
}

}  // namespace

TEST(DocumentLaunchCuda, one_launch_gives_the_bits_of_a_launch_a_document) {
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, T = 160, H = 4, Hkv = 2;
  const Attn kinds[] = {{false, 0}, {false, 40}, {true, 0, false, false}, {true, 0, true, true}};
  for (int64_t D : {64, 128}) {
    for (const Attn& a : kinds) {
      const std::string what = "D " + std::to_string(D) + ", " + a.name();
      const auto [q, k, v, dout] = random_qkv(B, T, H, Hkv, D, 31 + D + a.window + a.sb);
      const cuda::FlashStats before = cuda::flash_stats();
      const Pass one = run(a, true, q, k, v, dout, spans_of(T));
      const cuda::FlashStats after = cuda::flash_stats();
      EXPECT_EQ(after.document_forwards - before.document_forwards, 1) << what;
      EXPECT_EQ(after.document_backwards - before.document_backwards, 1) << what;
      expect_same_bits(one, run(a, false, q, k, v, dout, spans_of(T)), what);
    }
  }
}

TEST(DocumentLaunchCuda, stick_breaking_checkpoints_past_their_budget_step_aside) {
  // Every document's checkpoints (4 H tiles length of 8 bytes each: 45,376 bytes here) past
  // TESSERA_SB_CKPT_BYTES: the backward returns false, and a backward a document (in passes of
  // its own) from the one launch's log rem gives the same bits.
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, T = 160, H = 2, Hkv = 1, D = 64;
  const auto [q, k, v, dout] = random_qkv(B, T, H, Hkv, D, 44);
  const Attn a{true, 0, false, true};
  const Pass views = run(a, false, q, k, v, dout, spans_of(T));
  tessera::testing::ScopedEnv env({{"TESSERA_SB_CKPT_BYTES", "30000"}});
  expect_same_bits(run(a, true, q, k, v, dout, spans_of(T), /*one_backward=*/false), views,
                   "checkpoints past their budget");
}

TEST(DocumentLaunchCuda, every_mma_family_takes_the_one_launch_and_wmma_steps_aside) {
  // The documents kernels are the 64-row mma ones whichever family is chosen (a stored dS is laid
  // out by the batch's T), their forward's K and V in two stages where the family's are, so under
  // each their bits are the default family's a document at a time, softmax's and stick-breaking's.
  // The wmma kernels have no documents launch: false, nothing written.
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, T = 160, H = 2, Hkv = 1, D = 64;
  const auto [q, k, v, dout] = random_qkv(B, T, H, Hkv, D, 8);
  for (const Attn& a : {Attn{}, Attn{true, 0, false, true}}) {
    Pass views;
    {
      UseFlashKernels use(cuda::FlashKernels::MmaNarrow);
      views = run(a, false, q, k, v, dout, spans_of(T));
    }
    for (cuda::FlashKernels f :
         {cuda::FlashKernels::Mma, cuda::FlashKernels::Mma2Stage, cuda::FlashKernels::MmaStoredDs,
          cuda::FlashKernels::Mma2StageDs, cuda::FlashKernels::Mma3Blocks}) {
      UseFlashKernels use(f);
      const std::string what = "family " + std::to_string(int(f)) + ", " + a.name();
      const int64_t before = cuda::flash_stats().two_stage_forwards;
      expect_same_bits(run(a, true, q, k, v, dout, spans_of(T)), views, what);
      EXPECT_EQ(cuda::flash_stats().two_stage_forwards - before, cuda::two_stage_forward(f) ? 1 : 0)
          << what;
    }
  }
  UseFlashKernels use(cuda::FlashKernels::Wmma);
  const Tensor out = full(q.shape(), 7.0).to(DType::BF16).to(kGpu);
  const Tensor lse = Tensor::empty({B, H, T}, {DType::F32, kGpu});
  EXPECT_FALSE(kernels_for(kGpu).flash_attention_forward_documents(out, lse, q, k, v, 0.125, 0,
                                                                   spans_of(T)));
  EXPECT_EQ(bits(out), bits(full(q.shape(), 7.0).to(DType::BF16))) << "wmma: out written";
}

TEST(DocumentLaunchCuda, f32_and_the_views_switch_step_aside_and_bad_spans_are_named) {
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, T = 160, H = 2, D = 64;
  const Kernels& kern = kernels_for(kGpu);
  Generator g(9);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor q = randn({B, H, T, D}, g).to(dt).to(kGpu);
    const Tensor out = Tensor::empty(q.shape(), q.options());
    const Tensor lse = Tensor::empty({B, H, T}, {DType::F32, kGpu});
    if (dt == DType::F32) {
      EXPECT_FALSE(
          kern.flash_attention_forward_documents(out, lse, q, q, q, 0.125, 0, spans_of(T)));
      continue;
    }
    {
      tessera::testing::ScopedEnv env({{"TESSERA_FLASH_DOCUMENTS", "views"}});
      EXPECT_FALSE(
          kern.flash_attention_forward_documents(out, lse, q, q, q, 0.125, 0, spans_of(T)));
    }
    // A gap (row 0's second document starts at 2, not 1), then a row left short.
    std::vector<DocumentSpan> gap = spans_of(T), shortfall = spans_of(T);
    gap[1].start = 2, gap[1].length = 68;
    shortfall.back().length = T - 1;
    for (const auto& [spans, expect] :
         {std::pair{gap, std::string("document 1 (row 0, start 2, length 68)")},
          std::pair{shortfall, std::string("5 documents cover 319 of the 320 positions")}}) {
      try {
        kern.flash_attention_forward_documents(out, lse, q, q, q, 0.125, 0, spans);
        ADD_FAILURE() << "no error for " << expect;
      } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
      }
    }
  }
}

TEST(DocumentLaunchCuda, the_op_runs_one_launch_and_views_give_its_bits) {
  // ops::packed_causal_attention with documents on the GPU, softmax and stick-breaking: one
  // documents launch a pass (the counters); with TESSERA_FLASH_DOCUMENTS=views (a launch a
  // document) the same output and gradient bits, and so with the switch set between the forward
  // and the backward (which then reads each document's rows of the batch's statistics).
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, T = 150, H = 2, Hkv = 1, D = 64;
  std::vector<int32_t> ids(size_t(B * T), 1);
  for (int64_t t : {int64_t(40), int64_t(41), int64_t(100), T + 77}) ids[size_t(t)] = 9;
  const ops::Documents docs = ops::Documents::at_token(ids.data(), B, T, 9);
  Generator g(12);
  const Tensor qkv = randn({B, T, (H + 2 * Hkv) * D}, g).to(DType::BF16).to(kGpu);
  const Tensor w = randn({B, T, H * D}, g).to(DType::BF16).to(kGpu);
  for (ops::AttentionKind kind : {ops::AttentionKind::Softmax, ops::AttentionKind::StickBreaking}) {
    SCOPED_TRACE(ops::attention_kind_name(kind));
    ops::AttentionSpec spec;
    spec.kind = kind;
    auto pass = [&](bool views_forward, bool views_backward, Tensor& grad) {
      Tensor x = qkv.detach();
      x.requires_grad_();
      Tensor out;
      {
        tessera::testing::ScopedEnv env(
            {{"TESSERA_FLASH_DOCUMENTS", views_forward ? "views" : "launch"}});
        out = ops::packed_causal_attention(x, H, Hkv, spec, true, &docs);
      }
      tessera::testing::ScopedEnv env(
          {{"TESSERA_FLASH_DOCUMENTS", views_backward ? "views" : "launch"}});
      ops::sum(ops::mul(out, w)).backward();
      grad = x.grad();
      return out;
    };
    Tensor grad_one, grad_views, grad_mixed;
    const cuda::FlashStats before = cuda::flash_stats();
    const Tensor one = pass(false, false, grad_one);
    const cuda::FlashStats after = cuda::flash_stats();
    EXPECT_EQ(after.document_forwards - before.document_forwards, 1);
    EXPECT_EQ(after.document_backwards - before.document_backwards, 1);
    const Tensor views_out = pass(true, true, grad_views);
    const Tensor mixed_out = pass(false, true, grad_mixed);
    const cuda::FlashStats last = cuda::flash_stats();
    EXPECT_EQ(last.document_forwards - after.document_forwards, 1) << "the mixed pass's forward";
    EXPECT_EQ(last.document_backwards, after.document_backwards);
    EXPECT_EQ(bits(one), bits(views_out)) << "out";
    EXPECT_EQ(bits(grad_one), bits(grad_views)) << "d qkv, views";
    EXPECT_EQ(bits(grad_one), bits(grad_mixed)) << "d qkv, one-launch forward, views backward";
  }
}

TEST(DocumentLaunchCuda, a_table_is_uploaded_once_a_set_of_spans) {
  // Calls with the spans of the call before (every layer of a model, forward and backward) find
  // its table on the device; other spans, even as many documents, upload theirs, and the bits
  // are still a launch a document's (a table kept for the wrong spans would put rows elsewhere).
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, T = 160, H = 2, Hkv = 1, D = 64;
  const auto [q, k, v, dout] = random_qkv(B, T, H, Hkv, D, 5);
  std::vector<DocumentSpan> moved = spans_of(T);  // one edge moved: 70 and 63 rows, not 69 and 64
  moved[1].length = 70, moved[2].start = 71, moved[2].length = 63;
  const Attn softmax{}, sb{true, 0, false, true};
  auto tables = [] { return cuda::flash_stats().document_tables; };
  run(softmax, true, q, k, v, dout, spans_of(T));
  int64_t before = tables();
  run(softmax, true, q, k, v, dout, spans_of(T));
  run(sb, true, q, k, v, dout, spans_of(T));
  EXPECT_EQ(tables() - before, 0) << "the same spans: four calls, no upload";
  for (const Attn& a : {softmax, sb}) {
    before = tables();
    const Pass one = run(a, true, q, k, v, dout, moved);
    EXPECT_EQ(tables() - before, 1) << a.name() << ": other spans, one upload for both passes";
    expect_same_bits(one, run(a, false, q, k, v, dout, moved), a.name() + ", the moved spans");
    before = tables();
    expect_same_bits(run(a, true, q, k, v, dout, spans_of(T)),
                     run(a, false, q, k, v, dout, spans_of(T)), a.name() + ", back again");
    EXPECT_EQ(tables() - before, 1) << a.name() << ": back to the first spans";
  }
}
