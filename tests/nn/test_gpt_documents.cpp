// The model with GPTConfig::document_separator: a row of packed documents gives every document the
// logits it gets alone (attention and learned positions restart at each separator), on each way
// the model meets attention (GPT-2's fused projection, split heads under RoPE, Llama's separate
// projections, stick-breaking, ALiBi, Forgetting Attention), with activation recompute, and
// decoding refuses or stops at the separator.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "nn/generate.h"
#include "nn/gpt.h"
#include "ops/ops.h"
#include "test_util.h"

using namespace tessera;
using nn::GPT;
using nn::GPTConfig;
using tessera::testing::max_abs_diff;

namespace {

constexpr int32_t kEnd = 10;

GPTConfig tiny(const std::string& style) {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 8, c.block_size = 12, c.vocab_size = 11;
  if (style == "gpt2 rope") c.position = nn::PositionKind::RoPE;
  if (style == "stick_breaking") c.attention.kind = ops::AttentionKind::StickBreaking;
  if (style == "alibi") c.position = nn::PositionKind::ALiBi, c.attention.alibi = true;
  if (style == "forgetting")
    c.position = nn::PositionKind::None, c.attention.kind = ops::AttentionKind::Forgetting;
  if (style == "llama" || style == "qwen3") {
    c.norm = nn::NormKind::RMSNorm, c.mlp = nn::MlpKind::SwiGLU;
    c.position = nn::PositionKind::RoPE, c.n_kv_head = 1, c.tie_embeddings = false;
    c.bias = false, c.mlp_hidden = 12;
  }
  if (style == "qwen3") c.qk_norm = true, c.explicit_head_dim = 6;
  c.document_separator = kEnd;
  return c;
}

Tensor ids(const std::vector<int32_t>& v) {
  return from_vector<int32_t>(v, {1, int64_t(v.size())});
}

}  // namespace

TEST(GPTDocuments, each_document_of_a_row_gets_the_logits_it_gets_alone) {
  // Three documents in one row of 12: [0, 3), [3, 4) the separator alone, [4, 12) opened by the
  // second. f64: the rows are the same sums in another gemm shape.
  const std::vector<int32_t> row = {3, 1, 4, kEnd, kEnd, 5, 9, 2, 6, 5, 3, 5};
  const std::vector<std::pair<int64_t, int64_t>> docs = {{0, 3}, {3, 1}, {4, 8}};
  for (const std::string style :
       {"gpt2", "gpt2 rope", "llama", "qwen3", "stick_breaking", "alibi", "forgetting"}) {
    SCOPED_TRACE(style);
    Generator g(3);
    GPT model(tiny(style), g, DType::F64);
    const Tensor packed = model.forward(ids(row), false);  // (1, 12, V)
    for (const auto& [start, L] : docs) {
      const std::vector<int32_t> alone(row.begin() + start, row.begin() + start + L);
      const Tensor ref = model.forward(ids(alone), false);
      EXPECT_LT(max_abs_diff(packed.narrow(1, start, L), ref), 1e-12) << "document at " << start;
    }
    // Without documents the later ones attend the first: their logits move.
    GPTConfig plain_cfg = tiny(style);
    plain_cfg.document_separator = -1;
    Generator g2(3);
    GPT plain(plain_cfg, g2, DType::F64);
    const Tensor crossed = plain.forward(ids(row), false);
    EXPECT_EQ(max_abs_diff(crossed.narrow(1, 0, 3), packed.narrow(1, 0, 3)), 0.0);
    EXPECT_GT(max_abs_diff(crossed.narrow(1, 4, 8), packed.narrow(1, 4, 8)), 1e-6);
  }
}

TEST(GPTDocuments, recompute_gives_the_same_gradients) {
  // The recompute closures run the blocks again in the backward, with the batch's documents.
  const std::vector<int32_t> x = {3, kEnd, 4, 1, 5, kEnd, 2, 6, 1, 1, kEnd, 7, 8, 9, 1, 2};
  const std::vector<int32_t> y = {kEnd, 4, 1, 5, kEnd, 2, 6, 1, 1, kEnd, 7, 8, 9, 1, 2, 3};
  std::vector<std::vector<Tensor>> grads;
  for (bool recompute : {false, true}) {
    GPTConfig c = tiny("gpt2");
    c.recompute = recompute;
    Generator g(5);
    GPT model(c, g, DType::F64);
    model.loss(from_vector<int32_t>(x, {2, 8}), from_vector<int32_t>(y, {2, 8})).backward();
    grads.emplace_back();
    for (const auto& [name, t] : model.parameters()) grads.back().push_back(t.grad());
  }
  for (size_t i = 0; i < grads[0].size(); ++i)
    EXPECT_LT(max_abs_diff(grads[0][i], grads[1][i]), 1e-12) << "parameter " << i;
}

TEST(GPTDocuments, decoding_refuses_the_end_id_and_generation_stops_at_it) {
  Generator g(1);
  GPT model(tiny("gpt2"), g);
  nn::KVCache cache = model.make_cache(1, 8);
  try {
    model.forward_cached(ids({1, kEnd, 2}), cache);
    ADD_FAILURE() << "a prompt holding a separator past its start was decoded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("document separator id 10 at position 1"),
              std::string::npos)
        << e.what();
  }
  // One at the start opens the document, as in training.
  nn::KVCache fresh = model.make_cache(1, 8);
  EXPECT_NO_THROW(model.forward_cached(ids({kEnd, 1, 2}), fresh));
  EXPECT_THROW(model.forward_cached(ids({kEnd}), fresh), Error);  // position 3
  // A model whose logits favour the end id by far: the final norm's output is its bias (ones)
  // plus a zero-mean part, and the tied head's row of the end id is 50s, the others 0.
  {
    NoGradGuard no_grad;
    Tensor wte = model.parameter("transformer.wte.weight");
    wte.copy_(zeros(wte.shape(), wte.dtype()));
    wte.narrow(0, kEnd, 1).copy_(ops::scale(ones({1, wte.size(1)}, wte.dtype()), 50.0));
    Tensor bias = model.parameter("transformer.ln_f.bias");
    bias.copy_(ones(bias.shape(), bias.dtype()));
  }
  nn::SampleOptions opt;
  opt.max_new_tokens = 5, opt.temperature = 0;
  Generator sg(2);
  const std::vector<int32_t> out = nn::generate(model, {1, 2}, opt, sg);
  EXPECT_EQ(out, (std::vector<int32_t>{1, 2, kEnd}));
  EXPECT_THROW(model.set_document_separator(11), Error);  // not below vocab_size
}
