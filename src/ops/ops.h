// Differentiable operations. Each op computes its output through the kernel table of its input's
// device and records its backward right beside it (record() in autograd/autograd.h).
//
//   using namespace tessera;
//   Tensor h = ops::linear(x, w, b);                    // x (N, in), w (out, in), b (out)
//   Tensor y = ops::gelu(h);
//   Tensor loss = ops::cross_entropy(logits, targets);  // mean over non-ignored rows
//   loss.backward();
#pragma once

#include "autograd/autograd.h"
#include "core/tensor.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/causal_attention.h"
#include "ops/dropout.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/forget_gate.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "ops/rope.h"
#include "ops/shape.h"
#include "ops/softmax.h"
#include "ops/sparse_attention.h"
#include "ops/stick_breaking.h"
