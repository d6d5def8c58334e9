// Counter-based random numbers: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel Random Numbers:
// As Easy as 1, 2, 3", SC 2011). Element i of a draw is a pure function of (seed, offset + i), so
//  - the state of a generator is two integers and can be saved and restored exactly,
//  - CPU and CUDA kernels produce the same stream without sharing state,
//  - dropout can regenerate its mask in backward instead of storing it.
//
//   Generator g(1234);
//   Tensor x = randn({4, 8}, g);         // uses counters [0, 32)
//   RngState s = g.state();              // {seed 1234, offset 32}
//   Tensor y = rand({3}, g);  g.set_state(s);  Tensor y2 = rand({3}, g);  // y2 == y bit for bit
#pragma once

#include <cmath>
#include <cstdint>

#include "core/host_device.h"

namespace tessera {

struct Philox4 {
  uint32_t v[4];
};

// Philox4x32 with 10 rounds; the 128-bit counter is (counter, stream), the 64-bit key is the seed.
TESSERA_HD Philox4 philox4x32_10(uint64_t counter, uint64_t seed, uint64_t stream = 0) {
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32);
  uint32_t c2 = uint32_t(stream), c3 = uint32_t(stream >> 32);
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
    uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float).
TESSERA_HD float philox_uniform(uint64_t counter, uint64_t seed) {
  return float(philox4x32_10(counter, seed).v[0] >> 8) * (1.0f / 16777216.0f);
}

// Uniform in [0, 1) with 53 random bits, for f64 draws.
TESSERA_HD double philox_uniform_f64(uint64_t counter, uint64_t seed) {
  Philox4 r = philox4x32_10(counter, seed);
  uint64_t bits = (uint64_t(r.v[0]) << 21) ^ uint64_t(r.v[1] >> 11);
  return double(bits & ((uint64_t(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

// Standard normal by Box-Muller from the first two words; u1 in (0, 1] so log(u1) is finite.
TESSERA_HD double philox_normal(uint64_t counter, uint64_t seed) {
  Philox4 r = philox4x32_10(counter, seed);
  double u1 = (double(r.v[0]) + 1.0) * (1.0 / 4294967296.0);
  double u2 = double(r.v[1]) * (1.0 / 4294967296.0);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

struct RngState {
  uint64_t seed = 0;
  uint64_t offset = 0;
  bool operator==(const RngState&) const = default;
};

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : state_{seed, 0} {}
  RngState state() const { return state_; }
  void set_state(RngState s) { state_ = s; }
  uint64_t seed() const { return state_.seed; }
  // Reserves n counters and returns the first; the next draw starts after them.
  uint64_t reserve(uint64_t n) {
    uint64_t first = state_.offset;
    state_.offset += n;
    return first;
  }

 private:
  RngState state_;
};

// The process-wide generator used when an op is not given one (dropout, init).
Generator& default_generator();
void manual_seed(uint64_t seed);  // resets the default generator to (seed, 0)

}  // namespace tessera
