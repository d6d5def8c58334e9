// NF4: a frozen weight in 4-bit NormalFloat (QLoRA, Dettmers et al. 2023), optionally with double
// quantisation of its block constants.
//
//   NF4Tensor q = nf4_quantize(w, /*double_quant=*/true);   // w (R, K) f32, any device
//   Tensor y = nf4_linear(x, q, bias);                       // x (..., K) -> (..., R); dx flows
//   Tensor back = nf4_dequantize(q, DType::F32);             // the weight the codes stand for
//
// Layout. The weight is flattened row-major and cut into blocks of 64; each block keeps its absmax
// a_b = max |w| and every element the index c of the NF4 level nearest to w / a_b (two indices per
// byte, the even element in the low nibble), so w ~ kNF4[c] * a_b (backend/nf4_codebook.h).
// Double quantisation (QLoRA section 3): the absmax constants minus their mean m are cut into blocks
// of 256, each with its own scale s = max |a - m|, and stored as int8 round(127 (a - m) / s); a is
// recovered as int8 / 127 * s + m. Storage per weight: 4 bits + 32 / 64 = 4.5 bits (nf4), or
// 4 + 8 / 64 + 32 / (64 * 256) = 4.127 bits (nf4-dq). The second level is symmetric linear int8;
// QLoRA used 8-bit floats there, and both meet the paper's 0.127-bit figure.
//
// Error bounds (what the tests check): with exact absmax, |w - w^| <= a_b * g(w / a_b) / 2, g the gap
// between the two levels around w / a_b (at most (1 - 0.6961928) / 2 * a_b = 0.1519 a_b, the gap
// between kNF4[0] = -1 and kNF4[1]). Double
// quantisation adds at most |kNF4[c]| * s / 254 <= s / 254 per weight (half an int8 step of its
// absmax). The codes are chosen against the exact absmax, as bitsandbytes does.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tessera::peft {

struct NF4Tensor {
  Shape shape;          // the weight's shape, (R, K)
  Tensor codes;         // u8 (ceil(R K / 2))
  Tensor absmax;        // f32 (ceil(R K / 64)); undefined when double-quantised
  Tensor qabsmax;       // u8 (ceil(R K / 64)): int8 codes of absmax - absmax_mean (nf4-dq)
  Tensor absmax_scale;  // f32 (ceil(ceil(R K / 64) / 256)) (nf4-dq)
  double absmax_mean = 0;

  bool double_quantized() const { return qabsmax.defined(); }
  int64_t rows() const { return shape[0]; }
  int64_t cols() const { return shape[1]; }
  int64_t nbytes() const;  // everything stored: codes and block constants
  Device device() const { return codes.device(); }
  // The f32 block constants: absmax itself, or a fresh tensor dequantised from the int8 codes.
  Tensor block_absmax() const;
  // The same codes and constants on device (this one when already there): a QLoRA base goes to
  // the GPU as codes, never as a dequantised weight.
  NF4Tensor to(Device device) const;
};

// w: a 2-D floating tensor (any device; quantised on the host, stored on w's device).
NF4Tensor nf4_quantize(const Tensor& w, bool double_quant);
// The weight as `dtype` (f32, f64 or bf16) on q's device.
Tensor nf4_dequantize(const NF4Tensor& q, DType dtype = DType::F32);
// y = x W^T + bias with W read from NF4 a tile at a time (kernel nf4_matmul). Differentiable in x
// and bias; W is frozen (no gradient exists for it).
Tensor nf4_linear(const Tensor& x, const NF4Tensor& w, const Tensor& bias = {});

}  // namespace tessera::peft
