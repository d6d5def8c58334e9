#pragma once

#include "core/tensor.h"

namespace tessera::ops {

Tensor softmax(const Tensor& x);      // over the last dimension
Tensor log_softmax(const Tensor& x);  // over the last dimension

// Mean cross-entropy of logits (..., V) against targets i32 (...), fused with log-softmax; rows
// whose target equals ignore_index count neither in the sum nor in the mean. Targets outside
// [0, V) (other than ignore_index) are an error naming the target and V. All rows ignored -> 0.
// The targets are checked and counted on the host: from host_targets, the same targets on the CPU,
// when the caller has them, else read back from their device (on CUDA, a wait).
// classes > 0: only the first `classes` of the V columns are classes, the rest padding (a
// vocabulary rounded up so the classifier's gemms run on aligned rows): the padding takes no part
// in the softmax and its gradient is 0; targets must lie in [0, classes). 0: all V columns.
// fused_dy > 0 (the fused classifier): the caller will send this dy back and gives the logits up.
// Where their gradient is wanted, the forward writes it over the logits in the same pass
// (cross_entropy_fused: the logits read once instead of twice), and the backward only compares
// dy with fused_dy on the device, scaling the gradient where they differ. The logits hold the
// gradient after the call; where anything else holds their memory (a view, a saved tensor), the
// unfused path runs.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     const Tensor& host_targets = {}, int64_t classes = 0, double fused_dy = 0);

// Each row's cross-entropy, unreduced: a tensor of the targets' shape holding
// -log softmax(logits)[target] (f32 for bf16 logits, else the logits' dtype), 0 where the target
// is ignore_index; the checks, host_targets and classes of cross_entropy. What scoring reads
// back instead of the whole log-softmax: (..., ) values, not (..., V). Differentiable:
// dlogits[n] = dy[n] * (softmax(logits[n]) - onehot(t[n])), 0 on ignored rows.
Tensor token_losses(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                    const Tensor& host_targets = {}, int64_t classes = 0);

}  // namespace tessera::ops
