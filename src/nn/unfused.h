#pragma once
// The model without its fusions, for a before-and-after and for a check on a GPU: a LinearHook
// that computes every Linear as a matmul, then the bias added apart, and says it adapts every
// projection while adapting none. GPT then takes its unfused paths: attention on split heads (no
// q, k, v read off the fused projection), unpadded logits, c_fc and GELU apart, residuals added
// after the gemms. The same model and values through the earlier kernels
// (tests/nn/test_unfused.cpp).
//
//   model.set_hook(&nn::unfused_linears());   // bench_gpu --unfused
//   TESSERA_UNFUSED=1 build/train ...         // train installs it (not beside LoRA's hook)
//                                             // and computes the loss's gradient in its backward
#include "nn/gpt.h"

namespace tessera::nn {

const LinearHook& unfused_linears();

// TESSERA_UNFUSED in the environment: "1" true; unset, empty or "0" false; anything else an
// error naming the variable.
bool unfused_requested();

}  // namespace tessera::nn
