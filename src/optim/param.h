// A parameter as the optimizer and gradient clipping see it: the tensor and its checkpoint name.
//
//   std::vector<NamedParam> params = named_params(model.parameters());   // from nn::GPT
//   AdamW opt(params, {.lr = 6e-4});
//   double norm = clip_grad_norm(params, 1.0);
//
// The name is the key of the parameter's optimizer state in a checkpoint
// (/optimizer/<name>/{m,v,master}, checkpoint/checkpoint.h), so it must be unique within one optimizer.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tessera {

struct NamedParam {
  std::string name;
  Tensor param;  // a leaf; its .grad() is what step() and clip_grad_norm() read
};

// nn::GPT::parameters() hands out (name, tensor) pairs; this is the same list as NamedParams.
inline std::vector<NamedParam> named_params(
    const std::vector<std::pair<std::string, Tensor>>& pairs) {
  std::vector<NamedParam> out;
  out.reserve(pairs.size());
  for (const auto& [name, t] : pairs) out.push_back({name, t});
  return out;
}

}  // namespace tessera
