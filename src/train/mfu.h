// Model FLOPs utilisation: the share of a GPU's peak that a training step's model arithmetic uses,
// as llm.c and nanoGPT report it (train prints it on CUDA devices it knows the peak of).
//
//   const double per_token = training_flops_per_token(model, T);
//   const double peak = peak_bf16_flops(cuda::device_name(0));   // 0: not known
//   if (peak > 0) mfu = per_token * tokens_per_s_per_device / peak;
#pragma once

#include <cstdint>
#include <string>

#include "nn/gpt.h"

namespace tessera::train {

// N of the estimate below: every parameter but the learned positions, a mixture's experts counted
// for the expert_top_k of n_expert a token meets.
int64_t flop_parameters(const nn::GPT& model);
// The FLOPs of one token's forward and backward: 6 N + 12 L H Q T (PaLM, Chowdhery et al. 2022,
// appendix B; llm.c's and nanoGPT's estimate): N every parameter but the learned positions (the
// tied token embedding counts: it is also the output head's matmul), L layers, H heads of
// dimension Q, T the sequence length; the attention term is not halved for causal masking.
double training_flops_per_token(const nn::GPT& model, int64_t T);

// The dense (no sparsity) bf16 tensor-core peak of a GPU, in FLOP/s, from NVIDIA's datasheets, by
// the name the driver gives it; 0 for a device not listed here.
double peak_bf16_flops(const std::string& device_name);

}  // namespace tessera::train
