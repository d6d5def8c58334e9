// Small GPT configs in both styles and the whole-model gradient check, shared by the model's tests.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "gradcheck.h"
#include "nn/gpt.h"

namespace tessera::testing {

inline nn::GPTConfig tiny_gpt2() {
  nn::GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 8, c.block_size = 4, c.vocab_size = 11;
  return c;
}

inline nn::GPTConfig tiny_llama() {
  nn::GPTConfig c = tiny_gpt2();
  c.norm = nn::NormKind::RMSNorm, c.mlp = nn::MlpKind::SwiGLU, c.position = nn::PositionKind::RoPE;
  c.n_kv_head = 1, c.tie_embeddings = false, c.bias = false, c.mlp_hidden = 12;
  return c;
}

inline Tensor ids(const std::vector<int32_t>& v, Shape s) { return from_vector<int32_t>(v, s); }

// gradcheck of the f64 model's loss on a fixed (2, 4) batch as a function of every parameter.
inline ::testing::AssertionResult model_gradcheck(const nn::GPTConfig& cfg) {
  Generator g(7);
  nn::GPT model(cfg, g, DType::F64);
  Tensor x = ids({1, 5, 9, 2, 0, 10, 3, 3}, {2, 4}), y = ids({5, 9, 2, 7, 10, 3, 3, 4}, {2, 4});
  std::vector<Tensor> params;
  for (const auto& [name, t] : model.parameters()) params.push_back(t);
  return gradcheck(
      [&](const std::vector<Tensor>& p) {
        model.replace_parameters(p);
        return model.loss(x, y);
      },
      params);
}

}  // namespace tessera::testing
