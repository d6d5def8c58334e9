// Top-k routing and the weighted mixture of expert outputs (moe.h).
#include "nn/moe.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "ops/ops.h"

namespace tessera::nn {

Routing route_top_k(const std::vector<float>& probs, int64_t N, int64_t E, int64_t k) {
  TESSERA_CHECK(E > 0 && k > 0 && k <= E && int64_t(probs.size()) == N * E,
                "route_top_k: ", probs.size(), " probabilities for ", N, " tokens x ", E,
                " experts, top ", k);
  Routing r;
  r.chosen.resize(size_t(N * k));
  r.counts.assign(size_t(E), 0);
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int64_t n = 0; n < N; ++n) {
    const float* p = probs.data() + n * E;
    std::iota(order.begin(), order.end(), 0);
    // Largest first; equal probabilities keep the lower index first. A NaN (a diverged router)
    // compares false both ways and would break the order's rules: refused by name.
    for (int64_t e = 0; e < E; ++e)
      TESSERA_CHECK(p[e] == p[e], "route_top_k: token ", n, "'s probability of expert ", e,
                    " is NaN");
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [p](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    for (int64_t j = 0; j < k; ++j) {
      r.chosen[size_t(n * k + j)] = order[size_t(j)];
      ++r.counts[size_t(order[size_t(j)])];
    }
  }
  // Grouped by expert: a counting sort over the slots, which visits tokens in order.
  std::vector<int64_t> next(size_t(E), 0);
  for (int64_t e = 1; e < E; ++e) next[size_t(e)] = next[size_t(e - 1)] + r.counts[size_t(e - 1)];
  r.rows.resize(size_t(N * k));
  r.slots.resize(size_t(N * k));
  for (int64_t s = 0; s < N * k; ++s) {
    const int64_t at = next[size_t(r.chosen[size_t(s)])]++;
    r.rows[size_t(at)] = int32_t(s / k);
    r.slots[size_t(at)] = int32_t(s);
  }
  return r;
}

Tensor mixture(const Tensor& x, const Tensor& logits, const MixtureOptions& o,
               const ExpertFn& expert, RouterLosses* losses) {
  const int64_t E = o.experts, k = o.top_k;
  TESSERA_CHECK(
      x.dim() == 2 && logits.dim() == 2 && logits.size(0) == x.size(0) && logits.size(1) == E,
      "mixture: x must be (N, C) and logits (N, ", E, "), got ", shape_str(x.shape()), " and ",
      shape_str(logits.shape()));
  const int64_t N = x.size(0), C = x.size(1);
  TESSERA_CHECK(N > 0, "mixture: no tokens to route");
  // The router's softmax in f32 at least, as transformers' Mixtral and Qwen3-MoE take it: bf16
  // logits' probabilities rounded to 8 bits would tie and reorder experts that f32 tells apart.
  const Tensor scores = logits.dtype() == DType::BF16 ? logits.to(DType::F32) : logits;
  const Tensor probs = ops::softmax(scores);  // (N, E)
  const Routing r =
      route_top_k(probs.detach().to(DType::F32).to(Device::cpu()).to_vector<float>(), N, E, k);
  // Each slot's weight (N, k): the chosen probabilities, or (renormalised) the softmax over the
  // chosen logits, which is the same as dividing the probabilities by their sum.
  std::vector<int32_t> flat(size_t(N * k));
  for (int64_t s = 0; s < N * k; ++s) flat[size_t(s)] = int32_t(s / k * E + r.chosen[size_t(s)]);
  const Tensor weights =
      o.renormalize ? ops::softmax(ops::gather_rows(scores.reshape({N * E, 1}), flat).view({N, k}))
                    : ops::gather_rows(probs.reshape({N * E, 1}), flat).view({N, k});
  // Every expert's tokens as one gather, each expert run on its slice of rows.
  const Tensor xs = ops::gather_rows(x, r.rows);  // (N k, C)
  std::vector<Tensor> ys;
  int64_t at = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = r.counts[size_t(e)];
    if (n == 0) continue;
    Tensor y = expert(e, xs.narrow(0, at, n));
    TESSERA_CHECK(y.dim() == 2 && y.size(0) == n && y.size(1) == C, "mixture: expert ", e,
                  " returned ", shape_str(y.shape()), " for (", n, ", ", C, ")");
    ys.push_back(std::move(y));
    at += n;
  }
  const Tensor y = ys.size() == 1 ? ys[0] : ops::concat(ys, 0);
  const Tensor w = ops::gather_rows(weights.reshape({N * k, 1}), r.slots).to(y.dtype());
  const Tensor out = ops::scatter_add_rows(ops::mul(y, ops::expand(w, 1, C)), r.rows, N);
  if (losses) {
    std::vector<double> f(static_cast<size_t>(E));  // rounded once, to the probabilities' dtype
    for (int64_t e = 0; e < E; ++e)
      f[size_t(e)] = double(r.counts[size_t(e)]) * double(E) / double(N * k);
    const Tensor load = from_vector(f, {E}).to(probs.dtype()).to(probs.device());
    losses->balance = ops::sum(ops::mul(ops::mean(probs, 0), load));
    // logsumexp of each row: any column's logit less its log-probability.
    const Tensor lse = ops::sub(scores.narrow(1, 0, 1), ops::log_softmax(scores).narrow(1, 0, 1));
    losses->z = ops::mean(ops::mul(lse, lse));
  }
  return out;
}

}  // namespace tessera::nn
