// NF4 quantisation (host) and the NF4 linear op (kernel table). See nf4.h for the format.
#include "peft/nf4.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/kernels.h"
#include "backend/nf4_codebook.h"
#include "ops/elementwise.h"
#include "ops/util.h"

namespace tessera::peft {

namespace {

int64_t blocks_of(int64_t n, int64_t block) { return (n + block - 1) / block; }

// Index of the NF4 level nearest to v in [-1, 1] (the midpoints between neighbours decide).
uint8_t nearest_code(float v) {
  uint8_t c = 0;
  while (c < 15 && v > 0.5f * (kNF4[c] + kNF4[c + 1])) ++c;
  return c;
}

}  // namespace

int64_t NF4Tensor::nbytes() const {
  int64_t n = int64_t(codes.nbytes());
  if (absmax.defined()) n += int64_t(absmax.nbytes());
  if (qabsmax.defined()) n += int64_t(qabsmax.nbytes() + absmax_scale.nbytes()) + 4;  // + mean
  return n;
}

Tensor NF4Tensor::block_absmax() const {
  if (!double_quantized()) return absmax;
  Tensor out = Tensor::empty({qabsmax.numel()}, {DType::F32, device()});
  TESSERA_KERNEL(out, nf4_absmax_dequantize)(out, qabsmax, absmax_scale, absmax_mean);
  return out;
}

NF4Tensor NF4Tensor::to(Device device) const {
  NF4Tensor q = *this;
  if (device == this->device()) return q;
  q.codes = codes.detach().to(device);
  if (absmax.defined()) q.absmax = absmax.detach().to(device);
  if (qabsmax.defined()) q.qabsmax = qabsmax.detach().to(device);
  if (absmax_scale.defined()) q.absmax_scale = absmax_scale.detach().to(device);
  return q;
}

NF4Tensor nf4_quantize(const Tensor& w, bool double_quant) {
  TESSERA_CHECK(w.dim() == 2, "nf4_quantize: the weight must be 2-D (out, in), got ",
                shape_str(w.shape()));
  const std::vector<float> v = w.detach().to(DType::F32).to(Device::cpu()).to_vector<float>();
  const int64_t n = int64_t(v.size()), nb = blocks_of(n, kNF4Block);
  std::vector<float> absmax(size_t(nb), 0.0f);
  std::vector<uint8_t> codes(size_t((n + 1) / 2), 0);
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t e0 = b * kNF4Block, e1 = std::min(n, e0 + kNF4Block);
    float a = 0;
    for (int64_t e = e0; e < e1; ++e) {
      // Each element, not the maximum: std::max passes over a NaN, which would then take code 0
      // (-absmax) without a word.
      const float m = std::fabs(v[size_t(e)]);
      TESSERA_CHECK(std::isfinite(m), "nf4_quantize: weight ", shape_str(w.shape()), " has ",
                    v[size_t(e)], " at element ", e, " (block ", b, ")");
      a = std::max(a, m);
    }
    absmax[size_t(b)] = a;
    for (int64_t e = e0; e < e1; ++e) {
      const uint8_t c = a > 0 ? nearest_code(v[size_t(e)] / a) : uint8_t(7);  // kNF4[7] == 0
      codes[size_t(e / 2)] |= uint8_t(e % 2 == 0 ? c : c << 4);
    }
  }
  NF4Tensor q;
  q.shape = w.shape();
  const Device dev = w.device();
  q.codes = from_vector(codes, {int64_t(codes.size())}, {DType::U8, dev});
  if (!double_quant) {
    q.absmax = from_vector(absmax, {nb}, {DType::F32, dev});
    return q;
  }
  double mean = 0;
  for (float a : absmax) mean += a;
  mean /= double(nb);
  const int64_t ns = blocks_of(nb, kNF4AbsmaxBlock);
  std::vector<float> scale(size_t(ns), 0.0f);
  std::vector<uint8_t> qa(size_t(nb), 0);
  for (int64_t s = 0; s < ns; ++s) {
    const int64_t i0 = s * kNF4AbsmaxBlock, i1 = std::min(nb, i0 + kNF4AbsmaxBlock);
    float m = 0;
    for (int64_t i = i0; i < i1; ++i) m = std::max(m, std::fabs(float(absmax[size_t(i)] - mean)));
    scale[size_t(s)] = m;
    for (int64_t i = i0; i < i1; ++i) {
      const float r = m > 0 ? std::nearbyint(127.0f * float(absmax[size_t(i)] - mean) / m) : 0.0f;
      qa[size_t(i)] = uint8_t(int8_t(std::clamp(r, -127.0f, 127.0f)));
    }
  }
  q.qabsmax = from_vector(qa, {nb}, {DType::U8, dev});
  q.absmax_scale = from_vector(scale, {ns}, {DType::F32, dev});
  q.absmax_mean = float(mean);  // stored as f32 (4 bytes) like the scales
  return q;
}

Tensor nf4_dequantize(const NF4Tensor& q, DType dtype) {
  Tensor out = Tensor::empty(q.shape, {dtype, q.device()});
  TESSERA_KERNEL(out, nf4_dequantize)(out, q.codes, q.block_absmax());
  return out;
}

Tensor nf4_linear(const Tensor& x, const NF4Tensor& w, const Tensor& bias) {
  TESSERA_CHECK(x.dim() >= 1 && x.size(-1) == w.cols(), "nf4_linear: input ",
                shape_str(x.shape()), " does not end in the weight's in-features ", w.cols(),
                " (weight ", shape_str(w.shape), ")");
  check_same_device("nf4_linear", {&x, &w.codes});
  const int64_t K = w.cols(), R = w.rows(), N = x.numel() / K;
  Shape out_shape = x.shape();
  out_shape.back() = R;
  Tensor y = Tensor::empty(out_shape, x.options());
  TESSERA_KERNEL(x, nf4_matmul)(y.view({N, R}), ops::detail::dense(x).view({N, K}), w.codes,
                                w.block_absmax(), R, K, true);
  // The codes and constants are captured by value: tensors share storage, nothing is copied.
  y = record("nf4_linear", y, {x}, [w, N, K, R, shape = x.shape()](const Tensor& dy, GradSink& g) {
    Tensor dx = Tensor::empty(shape, dy.options());
    TESSERA_KERNEL(dy, nf4_matmul)(dx.view({N, K}), ops::detail::dense(dy).view({N, R}), w.codes,
                                   w.block_absmax(), R, K, false);
    g.add(0, dx);
  });
  if (!bias.defined()) return y;
  TESSERA_CHECK(bias.dim() == 1 && bias.size(0) == R, "nf4_linear: bias ",
                shape_str(bias.shape()), " does not match out-features of weight ",
                shape_str(w.shape));
  return ops::add(y, bias);
}

}  // namespace tessera::peft
