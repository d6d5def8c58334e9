// CPU NF4 kernels: dequantisation, and the matmul that dequantises a tile of weight rows at a time
// into a small buffer and multiplies it with OpenBLAS, so the whole f32 weight never exists.
#include <algorithm>

#include "backend/cpu/cpu.h"
#include "backend/nf4_codebook.h"
#include "core/dtype.h"

namespace tessera::cpu {
namespace {

constexpr int64_t kTileRows = 64;  // weight rows dequantised per gemm

// Elements [begin, end) of the flattened weight, dequantised into out[0 .. end - begin): one block
// (one absmax) at a time, two codes per byte read.
template <typename T>
void dequantize_range(T* out, const uint8_t* codes, const float* absmax, int64_t begin,
                      int64_t end) {
  for (int64_t b0 = begin; b0 < end;) {
    const int64_t b1 = std::min(end, (b0 / kNF4Block + 1) * kNF4Block);
    const float a = absmax[b0 / kNF4Block];
    int64_t e = b0;
    if (e % 2 == 1) out[e - begin] = T(kNF4[codes[e / 2] >> 4] * a), ++e;
    for (; e + 1 < b1; e += 2) {
      const uint8_t byte = codes[e / 2];
      out[e - begin] = T(kNF4[byte & 0x0F] * a);
      out[e + 1 - begin] = T(kNF4[byte >> 4] * a);
    }
    if (e < b1) out[e - begin] = T(kNF4[codes[e / 2] & 0x0F] * a);
    b0 = b1;
  }
}

}  // namespace

void nf4_dequantize(const Tensor& out, const Tensor& codes, const Tensor& absmax) {
  TESSERA_CHECK(out.is_contiguous(), "nf4_dequantize: out ", out.str(), " is not contiguous");
  check_nf4_layout("nf4_dequantize", codes, absmax, out.numel());
  const auto* cp = codes.data<uint8_t>();
  const auto* ap = absmax.data<float>();
  const int64_t n = out.numel();
  if (out.dtype() == DType::BF16) {
    auto* op = static_cast<uint16_t*>(out.data_ptr());
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < (n + kNF4Block - 1) / kNF4Block; ++b) {
      float tmp[kNF4Block];
      const int64_t e0 = b * kNF4Block, e1 = std::min(n, e0 + kNF4Block);
      dequantize_range(tmp, cp, ap, e0, e1);
      for (int64_t e = e0; e < e1; ++e) op[e] = bf16(tmp[e - e0]).bits;
    }
    return;
  }
  dispatch_float("nf4_dequantize", out.dtype(), [&](auto z) {
    using T = decltype(z);
    T* op = static_cast<T*>(out.data_ptr());
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < (n + kNF4Block - 1) / kNF4Block; ++b) {
      const int64_t e0 = b * kNF4Block;
      dequantize_range(op + e0, cp, ap, e0, std::min(n, e0 + kNF4Block));
    }
  });
}

void nf4_matmul(const Tensor& c, const Tensor& a, const Tensor& codes, const Tensor& absmax,
                int64_t rows, int64_t cols, bool trans_w) {
  const int64_t N = check_nf4_matmul(c, a, codes, absmax, rows, cols, trans_w);
  const auto* cp = codes.data<uint8_t>();
  const auto* ap = absmax.data<float>();
  const int64_t tiles = (rows + kTileRows - 1) / kTileRows;
  dispatch_float("nf4_matmul", c.dtype(), [&](auto z) {
    using T = decltype(z);
    if (trans_w) {
      // c[:, tile] = a @ tile^T: the tiles write disjoint column blocks of c, so threads take
      // tiles independently (each with its own buffer; gemm called inside the team runs on the
      // calling thread). An exception must not leave the team (std::terminate): the first is
      // kept and thrown after it; no barrier inside (nowait), so a thread that threw waits for
      // nobody.
      std::string error;
#pragma omp parallel
      try {
        const Tensor tile = Tensor::empty({std::min(rows, kTileRows), cols}, c.options());
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < tiles; ++i) {
          const int64_t r0 = i * kTileRows, rt = std::min(kTileRows, rows - r0);
          dequantize_range(tile.data<T>(), cp, ap, r0 * cols, (r0 + rt) * cols);
          Tensor part = Tensor::empty({N, rt}, c.options());
          gemm(part, a, tile.narrow(0, 0, rt), false, true, 1.0, 0.0);
          copy(c.narrow(1, r0, rt), part);
        }
      } catch (const std::exception& e) {
#pragma omp critical(tessera_nf4_matmul_error)
        if (error.empty()) error = e.what();
      }
      TESSERA_CHECK(error.empty(), error);
      return;
    }
    // c = sum over tiles of a[:, tile] @ tile: one accumulator, tiles in order (deterministic).
    const Tensor tile = Tensor::empty({std::min(rows, kTileRows), cols}, c.options());
    for (int64_t i = 0; i < tiles; ++i) {
      const int64_t r0 = i * kTileRows, rt = std::min(kTileRows, rows - r0);
      dequantize_range(tile.data<T>(), cp, ap, r0 * cols, (r0 + rt) * cols);
      Tensor a_part = Tensor::empty({N, rt}, a.options());
      copy(a_part, a.narrow(1, r0, rt));
      gemm(c, a_part, tile.narrow(0, 0, rt), false, false, 1.0, r0 == 0 ? 0.0 : 1.0);
    }
  });
}

void nf4_absmax_dequantize(const Tensor& absmax, const Tensor& qabsmax, const Tensor& scales,
                           double mean) {
  const int64_t n = absmax.numel();
  TESSERA_CHECK(absmax.dtype() == DType::F32 && qabsmax.dtype() == DType::U8 &&
                    scales.dtype() == DType::F32 && qabsmax.numel() == n &&
                    scales.numel() == (n + kNF4AbsmaxBlock - 1) / kNF4AbsmaxBlock,
                "nf4_absmax_dequantize: expected absmax f32 (n), qabsmax u8 (n), scales f32 "
                "(ceil(n / 256)); got ", absmax.str(), ", ", qabsmax.str(), ", ", scales.str());
  float* out = absmax.data<float>();
  const auto* q = qabsmax.data<uint8_t>();
  const float* s = scales.data<float>();
  for (int64_t i = 0; i < n; ++i)
    out[i] = float(int8_t(q[i])) / 127.0f * s[i / kNF4AbsmaxBlock] + float(mean);
}

}  // namespace tessera::cpu
