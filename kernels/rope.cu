// CUDA rotary position embedding: the twin of src/backend/cpu/rope.cpp (layout and formula there).
//
// x, y (B, H, T, D), D even, any views whose rows are contiguous (HeadStrides, as on the CPU); row
// (b, h, t) is at position pos_offset + t; dimension
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

#include "backend/attention_shapes.h"
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
__global__ void rope_kernel(T* y, const T* x, HeadStrides ys, HeadStrides xs, Freqs freqs,
                            int64_t pairs, int64_t H, int64_t T_, int64_t half, int64_t pos_offset,
                            double sign, double scale) {
  for (int64_t p = global_index(); p < pairs; p += grid_stride()) {
    const int64_t r = p / half, i = p % half;
    const int64_t t = r % T_, h = (r / T_) % H, b = r / (T_ * H);
    // The position as an integer first, so offset k at row t matches row t + k bit for bit.
    const double angle = double(pos_offset + t) * freqs.f[i];
    double s, c;
    sincos(angle, &s, &c);
    s *= sign * scale;  // (sign * scale) is exact: sign is +-1
    c *= scale;
    const int64_t ex = xs.row(b, h, t) + i, ey = ys.row(b, h, t) + i;
    const double u = ld(x, ex), v = ld(x, ex + half);
    st(y, ey, float(u * c - v * s));
    st(y, ey + half, float(u * s + v * c));
  }
}

void rope(const Tensor& y, const Tensor& x, const std::vector<double>& inv_freq, double scale,
          int64_t pos_offset, bool inverse) {
  check_rope_views("cuda kernel rope", y, x);
  core::check_args("rope", x.dtype(), {{"x", x}, {"y", y}}, /*contiguous=*/false);
  const int64_t H = x.size(1), T = x.size(2), D = x.size(3), half = D / 2;
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
    rope_kernel<F><<<grid_for(pairs), kThreads>>>(
        static_cast<F*>(y.data_ptr()), static_cast<const F*>(x.data_ptr()), head_strides(y),
        head_strides(x), freqs, pairs, H, T, half, pos_offset, inverse ? -1.0 : 1.0, scale);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void add_rope_kernels(Kernels& k) { k.rope = rope; }

}  // namespace tessera::cuda
