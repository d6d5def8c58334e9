// The 16 NormalFloat-4 levels of QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of
// Quantized LLMs", appendix E; the values bitsandbytes ships): quantiles of N(0, 1) normalised to
// [-1, 1], with an exact zero. Code i (0..15) means kNF4[i] * absmax of the weight's block of 64.
// Plain C++ with no CUDA in sight, so the CPU kernels, the CUDA kernels and the quantiser
// (peft/nf4.cpp) read one table and check one layout.
#pragma once

#include "core/tensor.h"

namespace tessera {

inline constexpr float kNF4[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

inline constexpr int kNF4Block = 64;         // weights per absmax (QLoRA's block size)
inline constexpr int kNF4AbsmaxBlock = 256;  // absmax constants per second-level scale

// Throws unless codes (u8) and absmax (f32) are contiguous and sized for a weight of numel elements
// (the layout of backend/kernels.h); the error names the kernel and both tensors.
inline void check_nf4_layout(const char* kernel, const Tensor& codes, const Tensor& absmax,
                             int64_t numel) {
  TESSERA_CHECK(codes.dtype() == DType::U8 && codes.is_contiguous() &&
                    codes.numel() == (numel + 1) / 2 && absmax.dtype() == DType::F32 &&
                    absmax.is_contiguous() &&
                    absmax.numel() == (numel + kNF4Block - 1) / kNF4Block,
                kernel, ": expected codes u8 (", (numel + 1) / 2, ") and absmax f32 (",
                (numel + kNF4Block - 1) / kNF4Block, ") for ", numel, " weights, got ",
                codes.str(), " and ", absmax.str());
}

// The arguments of the nf4_matmul entry (backend/kernels.h) for a (rows, cols) weight: the layout
// above, and contiguous a (N, in) and c (N, out) of one dtype. Returns N.
inline int64_t check_nf4_matmul(const Tensor& c, const Tensor& a, const Tensor& codes,
                                const Tensor& absmax, int64_t rows, int64_t cols, bool trans_w) {
  check_nf4_layout("nf4_matmul", codes, absmax, rows * cols);
  const int64_t in = trans_w ? cols : rows, out = trans_w ? rows : cols;
  TESSERA_CHECK(a.dim() == 2 && c.dim() == 2 && a.size(1) == in && c.size(1) == out &&
                    a.size(0) == c.size(0) && a.is_contiguous() && c.is_contiguous() &&
                    a.dtype() == c.dtype(),
                "nf4_matmul: expected contiguous a (N, ", in, ") and c (N, ", out,
                ") of one dtype for a (", rows, ", ", cols, ") weight", trans_w ? "^T" : "",
                ", got a ", a.str(), " and c ", c.str());
  return a.size(0);
}

}  // namespace tessera
