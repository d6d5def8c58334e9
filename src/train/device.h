// Where a training run computes, and in what precision: train.device and the mixed-precision
// policy of a CUDA run.
//
//   Placement where = placement(cfg);               // errors early: no CUDA build, no device, ...
//   nn::GPT model(model_config(...), gen);          // built on the CPU in f32 (same init
//   everywhere) place_model(model, where.device, where.dtype);  // cuda: bf16 working weights on
//   cuda:0
//
// Mixed precision on CUDA (what the kernels and ops do with a bf16 model):
//   parameters and their gradients  bf16 (the working copy the forward reads)
//   AdamW master weights, m and v    f32 (optim/adamw.h; the bf16 weights are the rounded master)
//   LOMO / AdaLomo                   f32 masters of the bf16 weights; AdaLomo's R, C, v f32
//                                    (optim/lomo.h; the updates run through kernel entries)
//   LoRA / QLoRA                     frozen base bf16, or NF4 codes (u8) + f32 block constants;
//                                    adapters and their m, v f32, cast to bf16 for their matmuls
//                                    (peft/lora.h says why)
//   activations                      bf16; matmuls accumulate in f32 (cuBLASLt COMPUTE_32F)
//   norm statistics (mean, rstd)     f32 (ops/norm.cpp), computed in f32 inside the kernels
//   softmax, attention statistics    f32 arithmetic inside the kernels; lse saved in f32
//   cross-entropy: lse, losses, loss f32 (ops/softmax.cpp): the loss is reported in f32
//   gradient norm                    accumulated in double (optim/clip.h)
// On the CPU everything stays f32 (the reference backend computes in f32/f64 only).
#pragma once

#include <string>

#include "config/config.h"
#include "core/tensor.h"
#include "nn/gpt.h"

namespace tessera::train {

struct Placement {
  Device device = Device::cpu();
  DType dtype = DType::F32;  // the parameters' and activations' dtype
};

// train.device cpu -> (cpu, f32); cuda -> (cuda:<local_rank>, bf16). Throws a clear error when CUDA is asked
// for but this build has no CUDA backend or no device is visible. Every training mode (AdamW,
// LOMO/AdaLomo, LoRA/QLoRA) runs on CUDA.
Placement placement(const Config& cfg, int local_rank = 0);

// Moves every parameter of the model to device as dtype: fresh leaves with the same names that
// require gradients when the originals did (a LoRA base stays frozen); nothing happens when they
// are there already.
void place_model(nn::GPT& model, Device device, DType dtype);

// The device of the model's parameters (the CPU for a model without any).
Device model_device(const nn::GPT& model);

// "12.3 MiB allocated now, 45.6 MiB peak; 64.0 MiB reserved (peak 80.0 MiB), 12 cudaMalloc calls"
// for a CUDA device: the tensor counters (core/storage.h) and the caching allocator's
// (backend/cuda.h).
std::string device_memory_summary(Device d);

// "peak 12.34 MiB allocated = 5.00 MiB held between steps + 7.34 MiB of activations, gradients and
// temporaries": the peak on device split at `held`, what was allocated before the first step.
std::string peak_memory_summary(Device d, int64_t held);

// With TESSERA_GEMM_TUNE (kernels/blas.cu) once it has timed a gemm: "TESSERA_GEMM_TUNE: 13 gemm
// plans timed, 9 of them kept another algorithm than the heuristic's first, 0 untimed (no memory
// for a scratch D); 60 ms spent timing". Empty otherwise.
std::string gemm_tuning_summary();

}  // namespace tessera::train
