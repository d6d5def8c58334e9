// exp and the logistic sigmoid for the CPU's elementwise loops, in a form the compiler vectorises.
//
// libm's expf and tanhf are calls the loop vectoriser cannot widen (glibc declares its vector
// variants only under -ffast-math), and at ~20 ns each GELU's forward and backward were a fifth of
// configs/tiny.yaml's CPU step. exp_f32 is straight-line code (clamp, round, a Horner chain,
// exponent bits) that g++ -O3 turns into packed SSE, no calls and no branches.
//
// exp(x) = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2 in [-ln2 / 2, ln2 / 2]: Cody and
// Waite's range reduction (ln 2 split in a high part exact in f32 times any |n| <= 128 and a low
// part), e^r by its Taylor polynomial to degree 7 (truncation error < (ln2/2)^8 / 8! < 5.2e-9,
// below f32's half ulp of 6e-8), 2^n built in the exponent bits. Over [-87, 88] (2^n a normal
// float) exp_f32 is within 2 ulp of exp (1.22 measured; tests/ops/test_fast_exp.cpp); below it
// returns 0 (the true value is under 1.7e-38), above it +inf (exact only from 88.72 on, which the
// one caller, sigmoid, does not mind: 1 / (1 + e) is then below 6e-39 either way). NaN stays NaN.
// f64 keeps libm: the double path is the reference the PyTorch twin is compared against.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace tessera::cpu {

inline float exp_f32(float x) {
  const float xc = std::min(std::max(x, -87.0f), 88.0f);
  // n = round(x / ln 2): adding 1.5 * 2^23 leaves no fraction bits (round to nearest even, the
  // default mode), and n sits in the sum's low mantissa bits, read out as integers (no float to
  // int conversion, whose NaN case is undefined).
  constexpr float kShift = 12582912.0f;
  const float t = xc * 1.44269504088896341f + kShift;
  const float n = t - kShift;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kShift);
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;  // ln 2 = 0.693359375 - 2.12e-4
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float e = p * std::bit_cast<float>((ni + 127) << 23);
  return x > 88.0f ? std::numeric_limits<float>::infinity() : x < -87.0f ? 0.0f : e;
}

// exp in T's precision: exp_f32 for float, libm for double.
template <typename T>
T fast_exp(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return exp_f32(x);
  } else {
    return std::exp(x);
  }
}

// 1 / (1 + e^-x): e^-x in [1.6e-38, 1.7e38] after the clamp, so the quotient never overflows; in
// double, exp(-x) = inf gives 1 / inf = 0, the limit.
template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + fast_exp(-x));
}

}  // namespace tessera::cpu
