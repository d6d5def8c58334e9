// RoPE scaling: the inverse frequencies (and cos/sin multiplier) of every rotary scaling type, in
// one place. The formulas are the ones of Hugging Face transformers' `modeling_rope_utils`
// (`rope_scaling` types linear, dynamic, yarn and llama3); rope_scaling.cpp states each.
//
//   RopeScaling s{.type = RopeScalingType::Yarn, .factor = 8};
//   ops::RopeFreqs f = rope_scaled_freqs(s, /*head_dim*/ 32, /*theta*/ 1e4, /*L0*/ 128, /*len*/ 1024);
//   Tensor q2 = ops::rope(q, f, pos0);                  // q (B, H, T, 32)
//
// d = head dimension, b = theta, s = factor, L0 = the length the model trained at.
#pragma once

#include <cstdint>
#include <string>

#include "ops/rope.h"

namespace tessera::nn {

struct GPTConfig;

enum class RopeScalingType { None, Linear, Dynamic, Yarn, Llama3 };

// YaRN's default attention factor is 1.1 at factor 2.7, 1.7 at 1000: a larger one (its square
// scales the attention logits) is a typo, not a setting (1e20 made the first loss NaN).
constexpr double kMaxAttentionFactor = 10;

struct RopeScaling {
  RopeScalingType type = RopeScalingType::None;
  double factor = 1.0;                // s >= 1
  int64_t original_max_position = 0;  // L0; 0 = the model's block_size (rope_freqs_for)
  double beta_fast = 32;              // yarn: rotations that bound the extrapolated band
  double beta_slow = 1;               // yarn: rotations that bound the interpolated band
  double attention_factor = 0;        // yarn: cos/sin multiplier; 0 = 0.1 ln s + 1
  double low_freq_factor = 1;         // llama3: wavelengths above L0 / low are divided by s
  double high_freq_factor = 4;        // llama3: wavelengths below L0 / high are kept
};

// "yarn" -> Yarn; an unknown name is an error naming `what` and the valid names.
RopeScalingType parse_rope_scaling_type(const std::string& name, const std::string& what);
const char* rope_scaling_name(RopeScalingType t);  // "none", "linear", ...

// Every rule the settings break, one sentence each naming `prefix`.key ("" when valid).
std::string rope_scaling_problem(const RopeScaling& s, const std::string& prefix);

// The table for head dimension head_dim and base theta, the original length L0 > 0, and the total
// length seq_len of the sequence being processed (positions 0 .. seq_len - 1; only dynamic reads it).
ops::RopeFreqs rope_scaled_freqs(const RopeScaling& s, int64_t head_dim, double theta,
                                 int64_t original_max_position, int64_t seq_len);

// The model's table for a forward over positions [0, seq_len): L0 resolved to block_size when 0.
ops::RopeFreqs rope_freqs_for(const GPTConfig& cfg, int64_t seq_len);

}  // namespace tessera::nn
