// exp and the logistic sigmoid for the CPU's elementwise loops, in a form the compiler vectorises;
// a double exp and log1p for the stick-breaking scan.
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

// Double-precision exp and log1p in the same straight-line form, for the stick-breaking scan of
// f32 attention (cpu/stick_breaking.cpp), whose sums of softplus terms over thousands of keys need
// double but whose libm calls (exp, log1p, exp per score) were a third of an sb-small step: its
// per-key passes vectorise with them. Both within 1 ulp of libm's, measured
// (tests/ops/test_fast_exp.cpp); the f64 kernels keep libm (exp_in and log1p_in below). Scalar,
// they are no faster than libm's (the softmax rows, whose sums are serial, keep libm).
//
// exp_f64(x): Cody-Waite reduction with fdlibm's ln 2 split (the high part's last 32
// bits zero, so n * hi is exact for |n| < 2^20), e^r by its Taylor polynomial to degree 13 on
// |r| <= ln2 / 2 (truncation < 4e-18, under a tenth of double's half ulp), 2^n in the exponent
// bits. Below -708 it returns 0 (the true value is under 3.3e-308, subnormal), above 709 +inf
// (exact only from 709.79 on); NaN stays NaN.
inline double exp_f64(double x) {
  const double xc = std::min(std::max(x, -708.0), 709.0);
  constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52
  const double t = xc * 1.4426950408889634 + kShift;
  const double n = t - kShift;
  const int64_t ni = std::bit_cast<int64_t>(t) - std::bit_cast<int64_t>(kShift);
  const double r = (xc - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1 / 13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const double e = p * std::bit_cast<double>((ni + 1023) << 52);
  return x > 709.0 ? std::numeric_limits<double>::infinity() : x < -708.0 ? 0.0 : e;
}

// log1p_f64(x) for x in [0, 1] (the scan's e^-|z|): log(1 + x) = k ln 2 + log m with m = 1 + x,
// or (1 + x) / 2 past sqrt(2) - 1 (k = 1), m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s) =
// 2 (s + s^3 / 3 + ... + s^21 / 21) with s = (m - 1) / (m + 1), formed from x without rounding
// 1 + x first: x / (x + 2), or (x - 1) / (x + 3) (x - 1 exact), |s| < 0.1716 (truncation < 1e-18
// relative). Tiny x gives x, 0 gives 0, NaN stays NaN.
inline double log1p_f64(double x) {
  const bool halve = x > 0.41421356237309503;
  const double s = halve ? (x - 1.0) / (x + 3.0) : x / (x + 2.0), s2 = s * s;
  double p = 1.0 / 21.0;
  p = p * s2 + 1.0 / 19.0;
  p = p * s2 + 1.0 / 17.0;
  p = p * s2 + 1.0 / 15.0;
  p = p * s2 + 1.0 / 13.0;
  p = p * s2 + 1.0 / 11.0;
  p = p * s2 + 1.0 / 9.0;
  p = p * s2 + 1.0 / 7.0;
  p = p * s2 + 1.0 / 5.0;
  p = p * s2 + 1.0 / 3.0;
  const double log_m = 2.0 * s + 2.0 * s * (s2 * p);
  return halve ? 6.93147180369123816490e-01 + (log_m + 1.90821492927058770002e-10) : log_m;
}

// The double exp and log1p of a kernel on T's data: exp_f64 and log1p_f64 for float, libm's for
// double (the f64 kernels are the reference the PyTorch twin is checked against).
template <typename T>
double exp_in(double x) {
  if constexpr (std::is_same_v<T, float>) {
    return exp_f64(x);
  } else {
    return std::exp(x);
  }
}

template <typename T>
double log1p_in(double x) {
  if constexpr (std::is_same_v<T, float>) {
    return log1p_f64(x);
  } else {
    return std::log1p(x);
  }
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
