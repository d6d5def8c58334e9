// CPU rotary position embedding (RoPE; Su et al. 2021, "RoFormer", arXiv:2104.09864).
//
// x, y (B, H, T, D), D even: any views whose rows (the B * H * T vectors of length D) are
// contiguous (backend/attention_shapes.h's HeadStrides), so q and k can be rotated straight out of
// a projection's (B, T, H D) output and gradients written back into that layout; row (b, h, t) is
// at position pos_offset + t.
//
// Half-split layout, as in GPT-NeoX and Hugging Face Llama: dimension i < D/2 is paired with
// i + D/2 (not with its neighbour 2i + 1 as in the paper's interleaved form). Pair i turns by
//   angle = (pos_offset + t) * inv_freq[i]      (unscaled: inv_freq[i] = theta^(-2i/D))
//   (a, b) -> m (a cos - b sin, a sin + b cos)  (m = scale: 1, or YaRN's attention factor)
// The rotation is orthogonal, so m times its transpose (rotation by -angle, inverse = true) is the
// backward. With m = 1 the multiplications by m are exact: unscaled results are unchanged.
// Angles, cos and sin are computed in double whatever the dtype: an f32 angle near position 1e4 is
// only good to about 5e-4 rad, a visible error at the highest frequency.
// y may alias x: each pair is read in full before it is written.
#include <cmath>
#include <vector>

#include "backend/attention_shapes.h"
#include "backend/cpu/cpu.h"

namespace tessera::cpu {

void rope(const Tensor& y, const Tensor& x, const std::vector<double>& freq, double scale,
          int64_t pos_offset, bool inverse) {
  check_rope_views("rope", y, x);
  const int64_t H = x.size(1), T = x.size(2), D = x.size(3), half = D / 2;
  TESSERA_CHECK(int64_t(freq.size()) == half, "rope: ", freq.size(),
                " inverse frequencies for head dimension ", D, ", x ", shape_str(x.shape()));
  if (x.numel() == 0) return;
  const int64_t B = x.size(0);
  const double sign = inverse ? -1.0 : 1.0;
  const HeadStrides xs = head_strides(x), ys = head_strides(y);

  dispatch_float("rope", x.dtype(), [&](auto z) {
    using F = decltype(z);
    const F* xp = static_cast<const F*>(x.data_ptr());
    F* yp = static_cast<F*>(y.data_ptr());
    // By position: a position's cos and sin once, then every (b, h) row at it.
#pragma omp parallel if (x.numel() > 65536)
    {
      std::vector<double> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
#pragma omp for
      for (int64_t t = 0; t < T; ++t) {
        // The position is formed as an integer first, so offset k at row t and row t + k of a
        // longer sequence get bit-identical angles (what a KV cache relies on).
        const double pos = double(pos_offset + t);
        for (int64_t i = 0; i < half; ++i) {
          const double angle = pos * freq[size_t(i)];
          cs[size_t(i)] = scale * std::cos(angle);
          sn[size_t(i)] = scale * (sign * std::sin(angle));
        }
        for (int64_t bh = 0; bh < B * H; ++bh) {
          const F* xr = xp + xs.row(bh / H, bh % H, t);
          F* yr = yp + ys.row(bh / H, bh % H, t);
          for (int64_t i = 0; i < half; ++i) {
            const double c = cs[size_t(i)], s = sn[size_t(i)];
            const double a = double(xr[i]), b = double(xr[i + half]);
            yr[i] = F(a * c - b * s);
            yr[i + half] = F(a * s + b * c);
          }
        }
      }
    }
  });
}

}  // namespace tessera::cpu
