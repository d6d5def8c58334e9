// The argument contract of the adamw_step_flat kernels (backend/kernels.h): master, m, v, grad and
// param 1-D contiguous tensors of one length on one device, grad in master's dtype, param master
// itself or bf16 over an f32 master, decay_ranges i32 {begin, end} pairs, grad_scale (the
// clipping coefficient) finite and positive. Plain C++, shared by the
// CPU kernel and the CUDA one (the CPU one also checks the ranges' values; the CUDA one cannot
// without a device-to-host copy every step).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace tessera {

struct AdamwFlatArgs {
  int64_t n = 0;            // elements
  DType state = DType::F32;  // master, m, v and grad
  bool bf16_param = false;   // param is a separate bf16 copy of master
};

// Throws, naming the kernel ("cpu kernel adamw_step_flat") and the offending tensor, unless the
// arguments keep the contract and master lives on a device of the kernel's kind.
inline AdamwFlatArgs check_adamw_flat_args(const char* kernel, bool cuda, const Tensor& param,
                                           const Tensor& master, const Tensor& m, const Tensor& v,
                                           const Tensor& grad, const Tensor& decay_ranges,
                                           double grad_scale) {
  auto describe = [](const Tensor& t) {
    return t.defined() ? t.str() : std::string("an undefined tensor");
  };
  const char* kind = cuda ? "CUDA" : "CPU";
  TESSERA_CHECK(master.defined() && master.device().is_cuda() == cuda && master.dim() == 1 &&
                    master.is_contiguous() &&
                    (master.dtype() == DType::F32 || master.dtype() == DType::F64),
                kernel, ": master must be a 1-D contiguous f32 or f64 ", kind, " tensor, got ",
                describe(master));
  AdamwFlatArgs a{master.numel(), master.dtype(), param.defined() && param.dtype() == DType::BF16};
  auto check_flat = [&](const char* name, const Tensor& t, DType want) {
    TESSERA_CHECK(t.defined() && t.device() == master.device() && t.dim() == 1 &&
                      t.is_contiguous() && t.dtype() == want && t.numel() == a.n,
                  kernel, ": ", name, " must be a 1-D contiguous ", dtype_name(want), " tensor of ",
                  a.n, " elements on ", master.device().str(), " (master ", master.str(),
                  "), got ", describe(t));
  };
  check_flat("m", m, a.state);
  check_flat("v", v, a.state);
  check_flat("grad", grad, a.state);
  TESSERA_CHECK(param.defined() && (param.dtype() == a.state || a.bf16_param), kernel,
                ": param must be ", dtype_name(a.state), " (master itself) or bf16, got ",
                describe(param), " for master ", master.str());
  check_flat("param", param, param.dtype());
  TESSERA_CHECK(a.bf16_param || param.data_ptr() == master.data_ptr(), kernel, ": an ",
                dtype_name(a.state), " param must be its own master (the same storage), got param ",
                param.str(), " and master ", master.str());
  TESSERA_CHECK(!a.bf16_param || a.state == DType::F32, kernel,
                ": a bf16 param needs an f32 master, got ", master.str());
  TESSERA_CHECK(decay_ranges.defined() && decay_ranges.device() == master.device() &&
                    decay_ranges.dim() == 1 && decay_ranges.is_contiguous() &&
                    decay_ranges.dtype() == DType::I32 && decay_ranges.numel() % 2 == 0,
                kernel, ": decay_ranges must be a 1-D contiguous i32 tensor of 2K elements "
                "({begin, end} pairs) on ", master.device().str(), ", got ",
                describe(decay_ranges));
  TESSERA_CHECK(std::isfinite(grad_scale) && grad_scale > 0, kernel,
                ": grad_scale must be finite and positive, got ", grad_scale);
  return a;
}

}  // namespace tessera
