// Direct Preference Optimization (Rafailov et al. 2023, "Direct Preference Optimization: Your
// Language Model is Secretly a Reward Model"): train.objective dpo. Each pair of examples shares
// a prompt; the chosen response should become likelier than the rejected one, relative to a frozen
// reference model:
//
//   z = beta ((log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected)))
//   loss = (1 - e) softplus(-z) + e softplus(z)        (= -log sigmoid(z) when e = 0)
//
// log pi(y) is the sum of the log-probabilities of the response's scored tokens (a loss mask's
// 1s: the response and its end of turn, never the prompt). e, train.dpo_label_smoothing, takes a
// share of the pairs as mislabelled (the "conservative DPO" of Mitchell 2023, as TRL's sigmoid
// loss computes it). beta (train.dpo_beta) sets how far from the reference the policy may go.
// train.dpo_nll_weight a > 0 adds a (-log pi(chosen) / n) to each pair's loss, n the chosen
// response's scored tokens: its negative log-likelihood a token, as Pang et al. 2024 ("Iterative
// Reasoning Preference Optimization", DPO+NLL; TRL's rpo_alpha) add it, so that the chosen
// response stays likely while the margin grows (DPO alone may lower both responses' likelihood).
// train.dpo_loss ipo takes IPO's loss instead (Azar et al. 2023, "A General Theoretical Paradigm
// to Understand Learning from Human Preferences", eq. 17, beta their tau): (h - 1 / (2 beta))^2
// with h the difference above without beta, over log-probabilities averaged a scored token (as
// TRL computes it): a target margin in place of an ever larger one.
// train.dpo_loss simpo takes SimPO's (Meng et al. 2024, "SimPO: Simple Preference Optimization
// with a Reference-Free Reward", eq. 6): no reference, log ref = 0, the log-probabilities averaged
// a scored token, and a target reward margin gamma (train.simpo_gamma) inside the sigmoid:
//   z = beta (log pi(chosen) / n_c - log pi(rejected) / n_r) - gamma,  the loss as DPO's of z
// (label smoothing as in TRL's CPO trainer; the NLL term then makes it CPO, Xu et al. 2024).
// train.dpo_loss orpo takes ORPO's (Hong et al. 2024, "ORPO: Monolithic Preference Optimization
// without Reference Model", eq. 6-8): no reference, and with p = exp(the mean log-probability a
// scored token), the log odds lo = log(p / (1 - p)) of each response compared:
//   loss = -log p(chosen) / n_c + beta softplus(-(lo(chosen) - lo(rejected)))
// (beta their lambda, TRL's ORPO beta; the NLL term always there with weight 1: supervised
// fine-tuning and preference in one stage).
// The rewards logged are beta (log pi - log ref) of each response (SimPO, ORPO: beta log pi / n):
// accuracy, the share of pairs whose chosen reward is above the rejected one; margin, their mean
// difference. With the policy equal to the reference (the first step, dropout off) z = 0 and the
// loss is ln 2.
//
//   Dpo dpo(cfg, model, lora.get());                // the reference: checkpoint.init, or the base
//   PairSums sums;
//   Tensor loss = dpo.loss(b.inputs, b.targets, &sums);  // rows [0, P) chosen, [P, 2P) rejected
//   loss.backward();
//
// Batches are the loader's under data.windows: pairs (data/loader.h): 2P rows, row i and P + i
// one pair. The reference is the weights of checkpoint.init in a second model of the policy's
// architecture, device and dtype (read again on resume: the policy then holds trained weights);
// under LoRA (lora.rank > 0) it is the policy itself with its adapters off (the frozen base,
// NF4-quantised under QLoRA as the policy sees it), at no memory cost. SimPO and ORPO have none:
// no second model and no reference forward.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/tensor.h"
#include "nn/gpt.h"

namespace tessera::dist {
class Communicator;
}

namespace tessera::train {

enum class PairLoss { Sigmoid, Ipo, Simpo, Orpo };  // train.dpo_loss

struct DpoOptions {
  double beta = 0.1;
  double label_smoothing = 0;
  double nll_weight = 0;
  PairLoss loss = PairLoss::Sigmoid;
  double gamma = 0.5;  // SimPO's target margin
  // IPO, SimPO and ORPO compare mean log-probabilities a scored token.
  bool per_token() const { return loss != PairLoss::Sigmoid; }
  bool reference_free() const { return loss == PairLoss::Simpo || loss == PairLoss::Orpo; }
};

// A batch's statistics as sums over its pairs, so that batches and ranks add up; means() divides.
struct PairSums {
  double loss = 0;      // the DPO loss, summed over pairs
  double chosen = 0;    // beta (log pi - log ref) of the chosen responses, summed
  double rejected = 0;  // the same of the rejected ones
  double correct = 0;   // pairs whose chosen reward is above the rejected one
  double pairs = 0;
  PairSums& operator+=(const PairSums& o);
  std::vector<double> values() const;  // {loss, chosen, rejected, correct, pairs}
  static PairSums from_values(const std::vector<double>& v, size_t at = 0);
};

// Each row's log-probability of its scored targets, summed over the row: (R) of the per-position
// losses' dtype (f32 for a bf16 model), differentiable. penalty: GPT::token_losses's.
Tensor sequence_log_probs(const nn::GPT& model, const Tensor& inputs, const Tensor& targets,
                          bool training, nn::RouterLosses* router = nullptr,
                          Tensor* penalty = nullptr);

// The loss above, the mean over P pairs, of policy's log-probabilities (2P: chosen [0, P), rejected
// [P, 2P)) against reference's (2P, no gradient taken; undefined under SimPO and ORPO). The
// 2P numbers are read to the host and the loss computed in f64 (softplus in its stable form); the
// result is a scalar on policy's device in its dtype, differentiable in policy. row_tokens: each
// row's scored tokens (2P of them; needed by the NLL term, IPO, SimPO and ORPO). sums non-null:
// this batch's.
Tensor dpo_loss(const Tensor& policy, const Tensor& reference, const DpoOptions& o,
                PairSums* sums = nullptr, const std::vector<int64_t>& row_tokens = {});
// The scored targets (not the ignore index) of each of the first `rows` rows of targets (R, T).
std::vector<int64_t> scored_per_row(const Tensor& targets, int64_t rows);

class Dpo {
 public:
  // lora non-null (the policy's hook, lora.rank > 0): the reference is the policy with it off.
  // Else a model of cfg's architecture with the weights of cfg.checkpoint.init (errors name it),
  // placed as the policy is.
  Dpo(const Config& cfg, nn::GPT& policy, const nn::LinearHook* lora);
  ~Dpo();
  Dpo(const Dpo&) = delete;
  Dpo& operator=(const Dpo&) = delete;

  // A training micro-batch of pairs (the model's loss() batch, 2P rows): the mean DPO loss, with a
  // mixture's router losses joined to its gradient and not its value (as GPT::loss joins them).
  Tensor loss(const Tensor& inputs, const Tensor& targets, PairSums* sums,
              nn::RouterLosses* router = nullptr) const;
  // Evaluation: the same without gradients, dropout or router losses; the batch's sums.
  PairSums score(const Tensor& inputs, const Tensor& targets) const;
  // What the reference is, for the log: "the adapters off", the checkpoint read, or none.
  const std::string& reference() const { return described_; }
  bool has_reference() const { return !opt_.reference_free(); }
  const DpoOptions& options() const { return opt_; }

 private:
  Tensor reference_log_probs(const Tensor& inputs, const Tensor& targets) const;
  // scored_per_row of every row, when the NLL term or a per-token loss wants them (else empty).
  std::vector<int64_t> row_tokens(const Tensor& targets) const;

  DpoOptions opt_;
  nn::GPT& policy_;
  const nn::LinearHook* lora_;
  std::unique_ptr<nn::GPT> frozen_;  // full fine-tuning's reference
  std::string described_;
};

// Validation under train.objective dpo: the sums over the first `pairs` pairs of the files
// `pattern` matches (data.windows: pairs), train.batch_size pairs a batch, batch i on rank i mod
// world; the same sums on every rank, whatever the batch and world sizes (to f32 rounding).
PairSums evaluate_pairs(const Dpo& dpo, const Config& cfg, const std::string& pattern,
                        int64_t pairs, dist::Communicator* comm = nullptr);

}  // namespace tessera::train
