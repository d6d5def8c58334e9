// The GPT shape flags the benchmarks share, each benchmark with its own defaults:
//
//   add_gpt_shape_flags(options, {.n_layer = 12, .n_embd = 768, .n_head = 12, .vocab = 50257,
//                                 .seq = 1024});
//   nn::GPTConfig cfg = gpt_shape(args);   // --n-layer --n-embd --n-head --vocab --seq
#pragma once

#include <cstdint>
#include <cxxopts.hpp>
#include <string>

#include "nn/gpt.h"

namespace tessera {

struct GptShape {
  int64_t n_layer = 0, n_embd = 0, n_head = 0, vocab = 0, seq = 0;
};

inline void add_gpt_shape_flags(cxxopts::Options& options, const GptShape& d) {
  auto value = [](int64_t v) {
    return cxxopts::value<int64_t>()->default_value(std::to_string(v));
  };
  options.add_options()("n-layer", "transformer blocks", value(d.n_layer), "N")(
      "n-embd", "channels", value(d.n_embd), "C")("n-head", "attention heads", value(d.n_head),
                                                  "H")("vocab", "vocabulary size", value(d.vocab),
                                                       "V")(
      "seq", "sequence length T (also the block size: learned positions)", value(d.seq), "T");
}

// The model of those flags, GPT-2 style otherwise (nn::GPTConfig's defaults).
inline nn::GPTConfig gpt_shape(const cxxopts::ParseResult& args) {
  nn::GPTConfig cfg;
  cfg.n_layer = args["n-layer"].as<int64_t>();
  cfg.n_embd = args["n-embd"].as<int64_t>();
  cfg.n_head = args["n-head"].as<int64_t>();
  cfg.vocab_size = args["vocab"].as<int64_t>();
  cfg.block_size = args["seq"].as<int64_t>();
  return cfg;
}

}  // namespace tessera
