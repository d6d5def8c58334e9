// CUDA rotary position embedding: the twin of src/backend/cpu/rope.cpp (layout and formula there).
//
// x, y (B, H, T, D), D even; row r (of B * H * T) is at position pos_offset + r % T; dimension
// i < D/2 pairs with i + D/2 and turns by angle = (pos_offset + t) * inv_freq[i]; cos and sin are
// multiplied by scale (1, or YaRN's attention factor; nn/rope_scaling.h makes the table).
//
// As on the CPU, angles, cos and sin are double whatever the dtype (an f32 angle near position 1e4
// is only good to ~5e-4 rad). The frequencies are the host table the CPU kernel gets, passed by
// value, so every angle is the CPU's bit for bit; only CUDA's double sin/cos (1-2 ulp of
// a double) differ, far below an f32 ulp of the result. One thread per pair reads both elements
// before writing them, so y may alias x.
#include <cmath>
#include <cstdint>
#include <vector>

#include "backend/kernels.h"
#include "common.cuh"
#include "core.cuh"

namespace tessera::cuda {
namespace {

using core::global_index;
using core::grid_for;
using core::grid_stride;
using core::kThreads;
using core::ld;
using core::st;

constexpr int64_t kMaxHalf = 256;  // D <= 512: the table is a 2 KiB kernel parameter
struct Freqs {
  double f[kMaxHalf];
};

template <typename T>
__global__ void rope_kernel(T* y, const T* x, Freqs freqs, int64_t pairs, int64_t T_, int64_t half,
                            int64_t pos_offset, double sign, double scale) {
  for (int64_t p = global_index(); p < pairs; p += grid_stride()) {
    const int64_t r = p / half, i = p % half;
    // The position as an integer first, so offset k at row t matches row t + k bit for bit.
    const double angle = double(pos_offset + r % T_) * freqs.f[i];
    double s, c;
    sincos(angle, &s, &c);
    s *= sign * scale;  // (sign * scale) is exact: sign is +-1
    c *= scale;
    const int64_t e = r * 2 * half + i;
    const double a = ld(x, e), b = ld(x, e + half);
    st(y, e, float(a * c - b * s));
    st(y, e + half, float(a * s + b * c));
  }
}

void rope(const Tensor& y, const Tensor& x, const std::vector<double>& inv_freq, double scale,
          int64_t pos_offset, bool inverse) {
  TESSERA_CHECK(x.dim() == 4 && y.shape() == x.shape() && x.size(3) % 2 == 0,
                "cuda kernel rope: x must be (B, H, T, D) with D even and y the same shape, got x ",
                shape_str(x.shape()), ", y ", shape_str(y.shape()));
  core::check_args("rope", x.dtype(), {{"x", x}, {"y", y}});
  const int64_t T = x.size(2), D = x.size(3), half = D / 2;
  TESSERA_CHECK(half <= kMaxHalf, "cuda kernel rope: head dim ", D, " exceeds ", 2 * kMaxHalf,
                ", x ", shape_str(x.shape()));
  TESSERA_CHECK(int64_t(inv_freq.size()) == half, "cuda kernel rope: ", inv_freq.size(),
                " inverse frequencies for head dimension ", D, ", x ", shape_str(x.shape()));
  if (x.numel() == 0) return;
  Freqs freqs{};
  for (int64_t i = 0; i < half; ++i) freqs.f[i] = inv_freq[size_t(i)];
  const int64_t pairs = x.numel() / 2;
  DeviceGuard guard(x.device().index);
  core::dispatch("rope", x.dtype(), [&](auto z) {
    using F = decltype(z);
    rope_kernel<F><<<grid_for(pairs), kThreads>>>(static_cast<F*>(y.data_ptr()),
                                                  static_cast<const F*>(x.data_ptr()), freqs,
                                                  pairs, T, half, pos_offset,
                                                  inverse ? -1.0 : 1.0, scale);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void add_rope_kernels(Kernels& k) { k.rope = rope; }

}  // namespace tessera::cuda
