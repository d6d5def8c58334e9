// A byte-level GPT whose greedy continuation is known by construction, for the exact-match
// answer tests (train/answers.h): the next id depends on the last one alone, and 'a' is followed
// by "b!" and the end of text.
#pragma once

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "nn/gpt.h"
#include "train/trainer.h"  // model_config

namespace tessera::testing {

// One block, an untied head, no biases in the way: 16 channels, context 16, byte vocabulary.
inline Config chain_model_config() {
  Config c;
  c.model.n_layer = 1, c.model.n_head = 2, c.model.n_embd = 16, c.model.block_size = 16;
  c.model.tie_embeddings = false;
  return c;
}

// The block's projections into the residual stream and the position table are zero, so the final
// norm sees wte[x] of the last id x alone; the head's rows of 'b', '!' and the end of text (256)
// are 100 times the normed rows of 'a', 'b' and '!', so those three ids follow them (each row's
// dot product with its own normed vector is 100 C, with another's less), the other rows random
// and small. `chain` gives other pairs (from, to): each `to` once.
using Chain = std::vector<std::pair<int, int>>;
inline nn::GPT chain_model(const Config& c, uint64_t seed = 3,
                           const Chain& chain = {{'a', 'b'}, {'b', '!'}, {'!', 256}}) {
  Generator g(seed);
  nn::GPT model(train::model_config(c.model, c.train), g);
  const int64_t C = c.model.n_embd;
  std::vector<float> wte;
  Tensor head;
  for (const auto& [name, p] : model.parameters()) {
    if (name.find("c_proj") != std::string::npos || name == "transformer.wpe.weight")
      Tensor(p).copy_(zeros(p.shape(), p.dtype()));
    if (name == "transformer.wte.weight") wte = p.to_vector<float>();
    if (name == "lm_head.weight") head = p;
  }
  auto normed = [&](int id) {  // layernorm of wte[id], weight 1, bias 0, eps 1e-5
    double mean = 0, var = 0;
    for (int64_t k = 0; k < C; ++k) mean += wte[size_t(id * C + k)];
    mean /= double(C);
    for (int64_t k = 0; k < C; ++k) var += std::pow(wte[size_t(id * C + k)] - mean, 2);
    var /= double(C);
    std::vector<float> v(static_cast<size_t>(C));
    for (int64_t k = 0; k < C; ++k)
      v[size_t(k)] = float((wte[size_t(id * C + k)] - mean) / std::sqrt(var + 1e-5));
    return v;
  };
  std::vector<float> rows = head.to_vector<float>();
  for (const auto& [from, to] : chain) {
    const std::vector<float> v = normed(from);
    for (int64_t k = 0; k < C; ++k) rows[size_t(to * C + k)] = 100.0f * v[size_t(k)];
  }
  Tensor(head).copy_(from_vector<float>(rows, head.shape()));
  return model;
}

}  // namespace tessera::testing
