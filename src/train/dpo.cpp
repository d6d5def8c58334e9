// Direct Preference Optimization: see dpo.h.
#include "train/dpo.h"

#include <algorithm>
#include <cmath>

#include "autograd/autograd.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/loader.h"  // kIgnoreTarget
#include "distributed/communicator.h"
#include "ops/ops.h"
#include "train/device.h"
#include "train/init_weights.h"
#include "train/options.h"
#include "train/trainer.h"  // for_each_rank_batch

namespace tessera::train {

PairSums& PairSums::operator+=(const PairSums& o) {
  loss += o.loss, chosen += o.chosen, rejected += o.rejected, correct += o.correct;
  pairs += o.pairs;
  return *this;
}

std::vector<double> PairSums::values() const { return {loss, chosen, rejected, correct, pairs}; }

PairSums PairSums::from_values(const std::vector<double>& v, size_t at) {
  TESSERA_CHECK(v.size() >= at + 5, "PairSums: ", v.size(), " values hold no sums at ", at);
  return {v[at], v[at + 1], v[at + 2], v[at + 3], v[at + 4]};
}

Tensor sequence_log_probs(const nn::GPT& model, const Tensor& inputs, const Tensor& targets,
                          bool training, nn::RouterLosses* router, Tensor* penalty) {
  const Tensor losses = model.token_losses(inputs, targets, training, router, penalty);
  return ops::scale(ops::sum(losses, 1), -1.0);
}

namespace {

// softplus(x) = log(1 + e^x), without overflow for large |x|.
double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }
double sigmoid(double x) {
  return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x));
}

std::vector<double> host_values(const Tensor& t) {
  return t.detach().to(DType::F64).to(Device::cpu()).to_vector<double>();
}

}  // namespace

std::vector<int64_t> scored_per_row(const Tensor& targets, int64_t rows) {
  TESSERA_CHECK(targets.dim() == 2 && rows <= targets.size(0), "scored_per_row: ", rows,
                " rows of targets ", targets.str());
  const int64_t T = targets.size(1);
  const std::vector<int32_t> t = targets.to(Device::cpu()).contiguous().to_vector<int32_t>();
  std::vector<int64_t> n(size_t(rows), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < T; ++i) n[size_t(r)] += t[size_t(r * T + i)] != data::kIgnoreTarget;
  return n;
}

Tensor dpo_loss(const Tensor& policy, const Tensor& reference, const DpoOptions& o, PairSums* sums,
                const std::vector<int64_t>& row_tokens) {
  TESSERA_CHECK(policy.dim() == 1 && policy.numel() % 2 == 0 && policy.numel() > 0,
                "dpo_loss: the policy's log-probabilities must be (2P) for P pairs, got ",
                policy.str());
  const bool free = o.reference_free(), simpo = o.loss == PairLoss::Simpo;
  const bool orpo = o.loss == PairLoss::Orpo;
  const char* name = simpo ? "SimPO's" : orpo ? "ORPO's" : "IPO's";
  TESSERA_CHECK(reference.defined() != free, "dpo_loss: ",
                free ? std::string(name) + " loss takes no reference"
                     : std::string("the loss needs the reference's"));
  TESSERA_CHECK(free || reference.shape() == policy.shape(), "dpo_loss: the reference's ",
                reference.str(), " and the policy's ", policy.str(), " differ in shape");
  const std::vector<double> sum = host_values(policy);  // each row's summed log-probability
  std::vector<double> pi = sum,
                      ref = free ? std::vector<double>(sum.size()) : host_values(reference);
  const size_t R = pi.size(), P = R / 2;
  const double beta = o.beta, e = o.label_smoothing, a = o.nll_weight;
  TESSERA_CHECK((a == 0 && !o.per_token()) || row_tokens.size() == R, "dpo_loss: ", P, " pairs (",
                R, " rows) but the scored tokens of ", row_tokens.size(), " rows");
  // Each row's summed log-probability, or under IPO, SimPO and ORPO its mean a scored token (as
  // TRL averages each completion's), d(pi) / d(sum) = 1 / n.
  std::vector<double> per(R, 1.0);
  if (o.per_token())
    for (size_t r = 0; r < R; ++r) {
      TESSERA_CHECK(row_tokens[r] > 0, "dpo_loss: row ", r, " of ", R, " scores no token: ", name,
                    " mean log-probability a token needs one");
      per[r] = 1.0 / double(row_tokens[r]);
      pi[r] *= per[r], ref[r] *= per[r];
    }
  // What the loss compares: pi, or under ORPO the log odds of p = e^pi, log(p / (1 - p)) =
  // pi - log(-expm1(pi)), d/dpi = -1 / expm1(pi). A response whose every scored token has
  // probability 1 (pi = 0, infinite odds) is held at pi = -1e-12 (odds of 1e12), its gradient 0.
  std::vector<double> cmp = pi, dcmp(R, 1.0);
  if (orpo)
    for (size_t r = 0; r < R; ++r) {
      const double p = std::min(pi[r], -1e-12);
      cmp[r] = p - std::log(-std::expm1(p));
      dcmp[r] = pi[r] < -1e-12 ? -1 / std::expm1(p) : 0.0;
    }
  PairSums s;
  std::vector<double> grad(R);  // d loss / d policy
  for (size_t i = 0; i < P; ++i) {
    const double h = (cmp[i] - ref[i]) - (cmp[P + i] - ref[P + i]);
    TESSERA_CHECK(std::isfinite(h), "dpo_loss: pair ", i, " of ", P,
                  " has a non-finite log-probability (policy ", sum[i], ", ", sum[P + i],
                  "; reference ", ref[i], ", ", ref[P + i], ")");
    double dh = 0;  // d (the pair's loss) / d h
    if (o.loss == PairLoss::Ipo) {  // (h - 1 / (2 beta))^2 (Azar et al. 2023, eq. 17; beta: tau)
      const double gap = h - 1 / (2 * beta);
      s.loss += gap * gap;
      dh = 2 * gap;
    } else if (orpo) {  // beta (their lambda) x -log sigmoid(h), h the log odds ratio (eq. 7)
      s.loss += beta * softplus(-h);
      dh = -beta * sigmoid(-h);
    } else {  // z = beta h (- gamma: SimPO); d/dz of (1 - e) softplus(-z) + e softplus(z)
      const double z = beta * h - (simpo ? o.gamma : 0.0);
      s.loss += (1 - e) * softplus(-z) + e * softplus(z);
      dh = beta * (-(1 - e) * sigmoid(-z) + e * sigmoid(z));
    }
    const double chosen = beta * (pi[i] - ref[i]), rejected = beta * (pi[P + i] - ref[P + i]);
    s.chosen += chosen, s.rejected += rejected, s.correct += chosen > rejected ? 1 : 0;
    grad[i] = dh * dcmp[i] * per[i] / double(P);
    grad[P + i] = -dh * dcmp[P + i] * per[P + i] / double(P);
    if (a > 0 && row_tokens[i] > 0) {  // + a (-log pi(chosen) / n), n its scored tokens (ORPO: 1)
      const double n = double(row_tokens[i]);
      s.loss += a * -sum[i] / n;
      grad[i] += -a / (n * double(P));
    }
  }
  s.pairs = double(P);
  if (sums) *sums = s;
  const Options where(policy.dtype(), policy.device());
  const Tensor out = from_vector(std::vector<double>{s.loss / double(P)}, {}, where);
  return record("dpo_loss", out, {policy},
                [grad = std::move(grad), where](const Tensor& dy, GradSink& g) {
                  const double d = dy.item();  // one number, read back
                  std::vector<double> scaled = grad;
                  for (double& x : scaled) x *= d;
                  g.add(0, from_vector(scaled, {int64_t(scaled.size())}, where));
                });
}

namespace {

// The policy's hook with the adapters off: its base Linears (NF4 codes under QLoRA) alone.
class AdaptersOff final : public nn::LinearHook {
 public:
  explicit AdaptersOff(const nn::LinearHook& hook) : hook_(hook) {}
  Tensor base(const std::string& weight, const Tensor& x, const Tensor& w,
              const Tensor& b) const override {
    return hook_.base(weight, x, w, b);
  }
  Tensor adapt(nn::Proj, int64_t, const Tensor&, const Tensor& y, bool) const override { return y; }
  bool adapts(nn::Proj, int64_t) const override { return false; }

 private:
  const nn::LinearHook& hook_;
};

// Installs a hook on the model for its scope, the one it had back at the end.
class HookSwap {
 public:
  HookSwap(nn::GPT& model, const nn::LinearHook* hook) : model_(model), old_(model.hook()) {
    model_.set_hook(hook);
  }
  ~HookSwap() { model_.set_hook(old_); }
  HookSwap(const HookSwap&) = delete;
  HookSwap& operator=(const HookSwap&) = delete;

 private:
  nn::GPT& model_;
  const nn::LinearHook* old_;
};

}  // namespace

Dpo::Dpo(const Config& cfg, nn::GPT& policy, const nn::LinearHook* lora)
    : opt_{cfg.train.dpo_beta, cfg.train.dpo_label_smoothing, cfg.train.dpo_nll_weight,
           cfg.train.dpo_loss == "ipo"     ? PairLoss::Ipo
           : cfg.train.dpo_loss == "simpo" ? PairLoss::Simpo
           : cfg.train.dpo_loss == "orpo"  ? PairLoss::Orpo
                                           : PairLoss::Sigmoid,
           cfg.train.simpo_gamma},
      policy_(policy),
      lora_(lora) {
  if (opt_.loss == PairLoss::Orpo) opt_.nll_weight = 1;  // ORPO's loss holds the chosen NLL
  if (!has_reference()) {
    described_ = opt_.loss == PairLoss::Orpo ? "none (ORPO is reference-free)"
                                             : "none (SimPO is reference-free)";
    return;
  }
  if (lora_) {
    described_ = "the policy with its adapters off (the frozen base)";
    return;
  }
  Generator gen(uint64_t(cfg.train.seed));  // weights replaced by checkpoint.init's below
  frozen_ = std::make_unique<nn::GPT>(model_config(cfg), gen);
  described_ = load_init_weights(cfg, frozen_->parameters());
  const Device device = model_device(policy_);
  if (device.is_cuda()) place_model(*frozen_, device, policy_.parameters()[0].second.dtype());
}

Dpo::~Dpo() = default;

Tensor Dpo::reference_log_probs(const Tensor& inputs, const Tensor& targets) const {
  if (!has_reference()) return {};
  NoGradGuard no_grad;
  if (frozen_) return sequence_log_probs(*frozen_, inputs, targets, false);
  AdaptersOff off(*lora_);
  HookSwap swap(policy_, &off);
  return sequence_log_probs(policy_, inputs, targets, false);
}

Tensor Dpo::loss(const Tensor& inputs, const Tensor& targets, PairSums* sums,
                 nn::RouterLosses* router) const {
  const Tensor reference = reference_log_probs(inputs, targets);
  Tensor penalty;
  const Tensor policy = sequence_log_probs(policy_, inputs, targets, true, router, &penalty);
  const Tensor loss = dpo_loss(policy, reference, opt_, sums, row_tokens(targets));
  if (!penalty.defined()) return loss;
  // Joined to the gradient, not the value: GPT::loss's p - detach(p).
  return ops::add(loss, ops::sub(penalty, penalty.detach()).to(loss.dtype()));
}

PairSums Dpo::score(const Tensor& inputs, const Tensor& targets) const {
  NoGradGuard no_grad;
  PairSums sums;
  dpo_loss(sequence_log_probs(policy_, inputs, targets, false),
           reference_log_probs(inputs, targets), opt_, &sums, row_tokens(targets));
  return sums;
}

std::vector<int64_t> Dpo::row_tokens(const Tensor& targets) const {
  if (opt_.nll_weight == 0 && !opt_.per_token()) return {};
  return scored_per_row(targets, targets.size(0));
}

PairSums evaluate_pairs(const Dpo& dpo, const Config& cfg, const std::string& pattern,
                        int64_t pairs, dist::Communicator* comm) {
  data::DataLoader loader(window_loader_options(cfg, pattern));  // a pair a next()
  TESSERA_CHECK(loader.options().windows == data::WindowMode::Pairs, pattern,
                ": evaluate_pairs reads preference pairs (data.windows: pairs)");
  const int64_t n = std::min(pairs, loader.windows_per_epoch());
  TESSERA_CHECK(n > 0, pattern, ": holds no preference pair to evaluate");
  const int64_t T = loader.options().seq_len;
  PairSums sums;
  std::vector<int32_t> chosen_in, chosen_tg, rejected_in, rejected_tg;
  for_each_rank_batch(loader, cfg.train.batch_size, n, comm, [&](int64_t rows) {
    chosen_in.clear(), chosen_tg.clear(), rejected_in.clear(), rejected_tg.clear();
    for (int64_t r = 0; r < rows; ++r) {
      const data::Batch w = loader.next();  // (2, T): the chosen row, then the rejected one
      const int32_t* in = w.inputs.data<int32_t>();
      const int32_t* tg = w.targets.data<int32_t>();
      chosen_in.insert(chosen_in.end(), in, in + T);
      chosen_tg.insert(chosen_tg.end(), tg, tg + T);
      rejected_in.insert(rejected_in.end(), in + T, in + 2 * T);
      rejected_tg.insert(rejected_tg.end(), tg + T, tg + 2 * T);
    }
    chosen_in.insert(chosen_in.end(), rejected_in.begin(), rejected_in.end());
    chosen_tg.insert(chosen_tg.end(), rejected_tg.begin(), rejected_tg.end());
    sums += dpo.score(from_vector(chosen_in, {2 * rows, T}), from_vector(chosen_tg, {2 * rows, T}));
  });
  if (comm && comm->world() > 1)
    sums = PairSums::from_values(comm->all_reduce_host(sums.values(), dist::ReduceOp::Sum));
  return sums;
}

}  // namespace tessera::train
