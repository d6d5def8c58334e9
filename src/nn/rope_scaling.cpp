// The inverse frequencies of each RoPE scaling type. Formulas: Hugging Face transformers,
// `modeling_rope_utils` (_compute_linear_scaling_rope_parameters, _compute_dynamic_ntk_parameters,
// _compute_yarn_parameters, _compute_llama3_parameters); written from those definitions, in double.
// With inv_i = b^(-2i/d), i in [0, d/2):
//
//   linear  (position interpolation, Chen et al. 2023):   inv_i / s
//   dynamic (NTK-aware, dynamic):  with L = max(seq_len, L0), b' = b (s L / L0 - (s - 1))^(d / (d - 2)),
//           inv_i = b'^(-2i/d). L <= L0 gives the unscaled table exactly (b' = b).
//   yarn    (Peng et al. 2023): corr_dim(r) = d ln(L0 / (2 pi r)) / (2 ln b), the pair index at which
//           a frequency makes r full turns over L0;
//             low = max(floor(corr_dim(beta_fast)), 0),  high = min(ceil(corr_dim(beta_slow)), d - 1)
//             (high += 0.001 when equal, as there), ramp_i = clamp((i - low) / (high - low), 0, 1),
//             inv_i' = (inv_i / s) ramp_i + inv_i (1 - ramp_i).
//           Orientation: small i (high frequency, many turns within L0) has ramp 0 and keeps inv_i
//           (extrapolation); large i (low frequency, under one turn) has ramp 1 and is divided by s
//           (interpolation). HF writes the same as interpolation (1 - e) + extrapolation e with
//           e = 1 - ramp. cos and sin are multiplied by attention_factor, default 0.1 ln s + 1
//           (1 when s <= 1).
//   llama3: wavelen_i = 2 pi / inv_i; wavelen > L0 / low_freq_factor -> inv_i / s; wavelen <
//           L0 / high_freq_factor -> inv_i; in between, t = (L0 / wavelen - low_freq_factor) /
//           (high_freq_factor - low_freq_factor) and inv_i' = (1 - t) inv_i / s + t inv_i.
#include "nn/rope_scaling.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <sstream>

#include "core/error.h"
#include "nn/gpt.h"

namespace tessera::nn {

namespace {

constexpr RopeScalingType kTypes[] = {RopeScalingType::None, RopeScalingType::Linear,
                                      RopeScalingType::Dynamic, RopeScalingType::Yarn,
                                      RopeScalingType::Llama3};

}  // namespace

const char* rope_scaling_name(RopeScalingType t) {
  switch (t) {
    case RopeScalingType::None: return "none";
    case RopeScalingType::Linear: return "linear";
    case RopeScalingType::Dynamic: return "dynamic";
    case RopeScalingType::Yarn: return "yarn";
    case RopeScalingType::Llama3: return "llama3";
  }
  return "?";
}

RopeScalingType parse_rope_scaling_type(const std::string& name, const std::string& what) {
  for (RopeScalingType t : kTypes)
    if (name == rope_scaling_name(t)) return t;
  TESSERA_FAIL(what, ": unknown RoPE scaling type '", name,
               "' (valid: none, linear, dynamic, yarn, llama3)");
}

std::string rope_scaling_problem(const RopeScaling& s, const std::string& prefix) {
  std::ostringstream out;
  auto add = [&](const std::string& sentence) { out << (out.tellp() > 0 ? "; " : "") << sentence; };
  const std::string p = prefix.empty() ? "" : prefix + ".";
  if (s.type == RopeScalingType::None) return "";
  auto num = [](double v) {
    std::ostringstream o;
    o << v;
    return o.str();
  };
  if (!(std::isfinite(s.factor) && s.factor >= 1))
    add(p + "factor must be >= 1 (the new length over the trained one), got " + num(s.factor));
  if (s.original_max_position < 0)
    add(p + "original_max_position must be >= 0 (0 = model.block_size), got " +
        std::to_string(s.original_max_position));
  if (s.type == RopeScalingType::Yarn) {
    if (!(s.beta_slow > 0 && s.beta_fast > s.beta_slow))
      add(p + "beta_fast (" + num(s.beta_fast) + ") must exceed beta_slow (" + num(s.beta_slow) +
          ") > 0");
    if (!(std::isfinite(s.attention_factor) && s.attention_factor >= 0))
      add(p + "attention_factor must be >= 0 (0 = 0.1 ln factor + 1), got " +
          num(s.attention_factor));
    else if (s.attention_factor > kMaxAttentionFactor)
      add(p + "attention_factor must be at most " + num(kMaxAttentionFactor) +
          " (it scales every attention logit by its square), got " + num(s.attention_factor));
  }
  if (s.type == RopeScalingType::Llama3 &&
      !(s.low_freq_factor > 0 && s.high_freq_factor > s.low_freq_factor))
    add(p + "high_freq_factor (" + num(s.high_freq_factor) + ") must exceed low_freq_factor (" +
        num(s.low_freq_factor) + ") > 0");
  return out.str();
}

ops::RopeFreqs rope_scaled_freqs(const RopeScaling& s, int64_t head_dim, double theta,
                                 int64_t original_max_position, int64_t seq_len) {
  const std::string problem = rope_scaling_problem(s, "rope_scaling");
  TESSERA_CHECK(problem.empty(), problem);
  TESSERA_CHECK(original_max_position > 0, "rope_scaling: the original length must be positive, "
                "got ", original_max_position);
  ops::RopeFreqs f = ops::rope_freqs(head_dim, theta);
  const double d = double(head_dim), b = theta, L0 = double(original_max_position);
  const double sf = s.factor;
  const size_t half = f.inv_freq.size();
  switch (s.type) {
    case RopeScalingType::None: break;
    case RopeScalingType::Linear:
      for (double& v : f.inv_freq) v /= sf;
      break;
    case RopeScalingType::Dynamic: {
      if (seq_len <= original_max_position) break;  // b' = b: the unscaled table
      TESSERA_CHECK(head_dim > 2, "rope_scaling dynamic: needs a head dimension > 2, got ",
                    head_dim);
      const double L = double(seq_len);
      const double base = b * std::pow(sf * L / L0 - (sf - 1), d / (d - 2));
      f = ops::rope_freqs(head_dim, base);
      break;
    }
    case RopeScalingType::Yarn: {
      auto corr_dim = [&](double rotations) {
        return d * std::log(L0 / (2 * std::numbers::pi * rotations)) / (2 * std::log(b));
      };
      const double low = std::max(std::floor(corr_dim(s.beta_fast)), 0.0);
      double high = std::min(std::ceil(corr_dim(s.beta_slow)), d - 1);
      if (low == high) high += 0.001;  // as there: no division by zero
      for (size_t i = 0; i < half; ++i) {
        const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
        const double inv = f.inv_freq[i];
        f.inv_freq[i] = inv / sf * ramp + inv * (1 - ramp);
      }
      f.scale = s.attention_factor > 0 ? s.attention_factor
                : sf <= 1              ? 1.0
                                       : 0.1 * std::log(sf) + 1.0;
      break;
    }
    case RopeScalingType::Llama3: {
      const double low_wavelen = L0 / s.low_freq_factor, high_wavelen = L0 / s.high_freq_factor;
      for (double& inv : f.inv_freq) {
        const double wavelen = 2 * std::numbers::pi / inv;
        if (wavelen > low_wavelen) {
          inv /= sf;
        } else if (wavelen >= high_wavelen) {
          const double t =
              (L0 / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
          inv = (1 - t) * inv / sf + t * inv;
        }
      }
      break;
    }
  }
  return f;
}

ops::RopeFreqs rope_freqs_for(const GPTConfig& cfg, int64_t seq_len) {
  const int64_t L0 = cfg.rope_scaling.original_max_position > 0
                         ? cfg.rope_scaling.original_max_position
                         : cfg.block_size;
  return rope_scaled_freqs(cfg.rope_scaling, cfg.head_dim(), cfg.rope_theta, L0, seq_len);
}

}  // namespace tessera::nn
