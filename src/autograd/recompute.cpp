// Activation checkpointing: forward without keeping activations, recompute them in backward.
#include "autograd/autograd.h"

namespace tessera {

Tensor recompute(const RecomputeFn& fn, const std::vector<Tensor>& inputs) {
  Generator& gen = default_generator();
  const RngState rng_before = gen.state();
  Tensor out;
  std::vector<Tensor> params;
  {
    LeafCollector collector;  // finds the parameters fn reads without receiving them
    NoGradGuard no_grad;      // nothing inside fn is kept
    std::vector<Tensor> xs;
    for (const Tensor& in : inputs) xs.push_back(in.detach());
    out = fn(xs);
    params = collector.leaves();
  }
  TESSERA_CHECK(out.defined(), "recompute: the function returned an undefined tensor");

  std::vector<Tensor> edges = inputs;
  edges.insert(edges.end(), params.begin(), params.end());
  const size_t n_in = inputs.size();
  return record("recompute", out, edges,
                [fn, inputs, params, rng_before, n_in](const Tensor& dy, GradSink& sink) {
                  // Fresh leaves stand in for the inputs; the parameters are used as they are.
                  std::vector<Tensor> xs;
                  for (const Tensor& in : inputs) {
                    Tensor x = in.detach();
                    if (in.requires_grad()) x.requires_grad_();
                    xs.push_back(x);
                  }
                  // Replay the random stream of the forward (dropout masks), then restore ours.
                  Generator& g = default_generator();
                  const RngState now = g.state();
                  g.set_state(rng_before);
                  Tensor y;
                  {
                    EnableGradGuard grad_on;
                    y = fn(xs);
                  }
                  g.set_state(now);
                  if (!y.requires_grad()) return;
                  std::unordered_map<AutogradMeta*, Tensor> captured;
                  backward_captured(y, dy, captured);
                  auto take = [&](const Tensor& t, size_t idx) {
                    if (!t.requires_grad()) return;
                    auto it = captured.find(t.impl().autograd.get());
                    if (it != captured.end()) sink.add(idx, it->second);
                  };
                  for (size_t i = 0; i < xs.size(); ++i) take(xs[i], i);
                  for (size_t j = 0; j < params.size(); ++j) take(params[j], n_in + j);
                });
}

}  // namespace tessera
