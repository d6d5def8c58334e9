// A mixture of experts in place of a block's MLP (GPTConfig::n_expert): a router scores every
// token against E expert MLPs, each token goes to its top k, and its output is the sum of those
// experts' outputs weighted by their router probabilities (Shazeer et al. 2017; Mixtral, Jiang et
// al. 2024: k 2 of 8, the k probabilities renormalised to sum to 1). Dropless: every expert takes
// all the tokens routed to it, however many.
//
//   Routing r = route_top_k(probs, N, E, k);     // host: which tokens each expert takes
//   RouterLosses losses;
//   Tensor y = mixture(x, logits, {E, k, true}, expert, &losses);
//
// The choice is made on the host from the router's probabilities read back (on CUDA one wait per
// layer): each expert's share of the batch is then a slice of known size, and the experts run as
// ordinary Linears on it. Ties go to the lower expert index.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace tessera::nn {

struct Routing {
  // The N k (token, expert) pairs grouped by expert, expert 0's first, each group in token order:
  // rows[i] the token, slots[i] its slot n k + j in the (N, k) choice (j-th largest probability).
  std::vector<int32_t> rows, slots;
  std::vector<int64_t> counts;  // (E): tokens per expert, the groups' sizes
  std::vector<int32_t> chosen;  // (N k): the expert of slot n k + j
};

// probs (N, E) row-major: each token's k most probable experts.
Routing route_top_k(const std::vector<float>& probs, int64_t N, int64_t E, int64_t k);

struct MixtureOptions {
  int64_t experts = 0, top_k = 2;
  bool renormalize = true;  // the k weights divided by their sum (Mixtral, Qwen3-MoE); else the
                            // probabilities as they are (OLMoE, Qwen2-MoE)
};

// expert(e, xe): expert e's output (Me, C) for its tokens' rows xe (Me, C); called for the
// experts that take at least one token, in order.
using ExpertFn = std::function<Tensor(int64_t e, const Tensor& xe)>;

// A block's router losses, scalars differentiable through the router's logits:
//   balance  the load-balancing loss of the routing (Switch Transformer, Fedus et al. 2022, eq. 4,
//            for k experts a token as Megatron-LM counts them), E / (N k) sum_e count_e P_e,
//            count_e the tokens routed to e and P_e the mean probability of e over the N tokens:
//            1 when the load and the probabilities are uniform, differentiable through P;
//   z        the router z-loss (ST-MoE, Zoph et al. 2022, eq. 5), the mean over the tokens of
//            logsumexp(logits)^2: small logits, which keep the router's softmax stable.
struct RouterLosses {
  Tensor balance, z;
};

// x (N, C), logits (N, E) the router's scores of x -> (N, C): each token's experts' outputs times
// their weights, summed; losses non-null: set to this routing's. An expert that takes no token is
// not called: its parameters get no gradient from this batch.
Tensor mixture(const Tensor& x, const Tensor& logits, const MixtureOptions& o,
               const ExpertFn& expert, RouterLosses* losses = nullptr);

}  // namespace tessera::nn
