// The fine-tuning rules of Config::validate (validate.cpp): the lora section's, and
// train.objective's with what goes with dpo.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "config/schema.h"
#include "config/validate_rules.h"
#include "core/text.h"

namespace tessera::config_rules {

namespace {

// lora.trainable: comma-separated embed | norm, full tensors trained beside the adapters. Its items
// and lora.targets' are split as peft splits them (split_list), so what passes here parses there.
void check_lora_trainable(const LoraConfig& l, Problems& p) {
  for (const std::string& item : split_list(l.trainable))
    if (!item.empty() && item != "embed" && item != "norm")  // peft skips an empty item
      p.add("lora.trainable: unknown kind '", item, "' in '", l.trainable,
            "' (valid: embed, norm)");
  if (l.rank == 0 && !l.trainable.empty())
    p.add("lora.trainable '", l.trainable,
          "' needs lora.rank > 0 (without LoRA every tensor "
          "trains already)");
}

// B A, the update of an (out x in) matrix, has rank <= min(in, out): a larger lora.rank adds
// parameters, not capacity (and at 10^5 allocates gigabytes of them). Checked against the smallest
// adapted projection, in the config's terms (peft/lora.cpp checks each layer again).
void check_lora_rank(const Config& c, Problems& p) {
  const ModelConfig& m = c.model;
  // Sizes the model rules accept (reported by check_model otherwise): their products fit.
  if (!head_dim_valid(m) || m.n_kv_head < 0 || m.mlp_hidden < 0 || m.vocab_size <= 0 ||
      m.n_embd > (int64_t(1) << 40) || m.n_head > (int64_t(1) << 20))
    return;
  const int64_t C = m.n_embd, q = m.n_head * m.head_dim(), kv = m.kv_heads() * m.head_dim();
  const int64_t F = m.hidden();
  std::string smallest;  // "q (128 x 128)": the projection with the smallest min(in, out)
  int64_t limit = 0;
  auto consider = [&](const std::string& name, int64_t in, int64_t out) {
    if (smallest.empty() || std::min(in, out) < limit) {
      limit = std::min(in, out);
      smallest = name + " (" + std::to_string(in) + " x " + std::to_string(out) + ")";
    }
  };
  for (const std::string& item : split_list(c.lora.targets)) {
    const bool all = item == "all";
    if (all || item == "q") consider("q", C, q);
    if (all || item == "k") consider("k", C, kv);
    if (all || item == "v") consider("v", C, kv);
    if (all || item == "o") consider("o", q, C);
    if ((all && m.mlp == "swiglu") || item == "gate") consider("gate", C, F);
    if (all || item == "up") consider("up", C, F);
    if (all || item == "down") consider("down", F, C);
    if (item == "head") consider("head", C, m.vocab_size);
  }
  if (!smallest.empty() && c.lora.rank > limit)
    p.add("lora.rank (", c.lora.rank, ") exceeds min(in, out) = ", limit,
          " of the adapted projection ", smallest, " (lora.targets '", c.lora.targets,
          "'): an update B A has rank <= ", limit,
          " there, so a larger rank adds parameters, not capacity");
}

}  // namespace

void check_lora(const Config& c, Problems& p) {
  const LoraConfig& l = c.lora;
  p.non_negative("lora.rank", l.rank);
  if (l.rank < 0) return;  // the rules below are for a rank of 0 or one of adapters
  p.one_of("lora.quantize", l.quantize, {"none", "nf4", "nf4-dq"});
  check_lora_trainable(l, p);
  if (l.rank == 0) {
    if (l.quantize != "none")
      p.add("lora.quantize '", l.quantize,
            "' needs lora.rank > 0: a quantised base is frozen, so "
            "only adapters could train (QLoRA)");
    // The adapters' settings without adapters would change nothing: the run would be a full
    // fine-tune while its config reads as LoRA (quantize and trainable have their own sentences).
    const std::string d =
        config_schema::first_difference(l, LoraConfig{}, {"quantize", "trainable"});
    if (!d.empty())
      p.add("lora.", d,
            " (the default): that key is set but lora.rank is 0 (no adapters: every weight "
            "trains); give lora.rank > 0 (--lora.rank) or drop the key");
    return;
  }
  p.positive("lora.alpha", l.alpha);
  if (!(l.dropout >= 0 && l.dropout < 1)) p.add("lora.dropout must be in [0, 1), got ", l.dropout);
  const std::vector<std::string> targets = split_list(l.targets);
  if (targets.empty())
    p.add("lora.targets names no projection (q, k, v, o, gate, up, down, head, all), got '",
          l.targets, "'");
  for (const std::string& item : targets) {
    static const std::vector<std::string> valid = {"q",  "k",    "v",    "o",  "gate",
                                                   "up", "down", "head", "all"};
    if (std::find(valid.begin(), valid.end(), item) == valid.end())
      p.add("lora.targets: unknown projection '", item, "' in '", l.targets,
            "' (valid: q, k, v, o, gate, up, down, head, all)");
    if ((item == "gate" || item == "up" || item == "down" || item == "all") && c.model.n_expert > 0)
      p.add("lora.targets: '", item, "' adapts the MLP, which model.n_expert ", c.model.n_expert,
            " makes a mixture of experts: adapters on experts are not built (q, k, v, o, head)");
    if (item == "gate" && c.model.mlp != "swiglu")
      p.add("lora.targets: 'gate' needs model.mlp swiglu (a GELU MLP has no gate)");
    if (item == "head" && c.model.tie_embeddings)
      p.add(
          "lora.targets: 'head' needs model.tie_embeddings false (the tied matrix is also the "
          "token embedding)");
  }
  check_lora_rank(c, p);
  if (c.optim.name != "adamw")
    p.add("lora.rank > 0 trains adapters with optim.name adamw; got '", c.optim.name, "' (",
          c.optim.name == "muon" ? "Muon orthogonalises the model's own matrices"
                                 : "LOMO and AdaLomo are for full-parameter training",
          ")");
  if (c.checkpoint.init.empty())
    p.add("lora.rank > 0 needs checkpoint.init (--init): the base checkpoint the adapters adapt");
}

// train.objective and what goes with dpo (train/dpo.h).
void check_objective(const Config& c, Problems& p) {
  const TrainConfig& t = c.train;
  if (p.one_of("train.objective", t.objective, {"lm", "dpo"}) &&
      (t.objective == "dpo") != (c.data.windows == "pairs"))
    p.add("train.objective '", t.objective, "' and data.windows '", c.data.windows,
          "' go together only as dpo and pairs (a pair's two rows scored against each other)");
  if (t.objective != "dpo") return;
  if (!(t.dpo_beta > 0 && std::isfinite(t.dpo_beta)))  // NaN too
    p.add("train.dpo_beta must be positive (0.1 is usual), got ", t.dpo_beta);
  if (!(t.dpo_label_smoothing >= 0 && t.dpo_label_smoothing < 0.5))
    p.add("train.dpo_label_smoothing must be in [0, 0.5), got ", t.dpo_label_smoothing);
  if (!(t.dpo_nll_weight >= 0 && std::isfinite(t.dpo_nll_weight)))
    p.add("train.dpo_nll_weight must be >= 0, got ", t.dpo_nll_weight);
  if (p.one_of("train.dpo_loss", t.dpo_loss, {"sigmoid", "ipo", "simpo", "orpo"}) &&
      (t.dpo_loss == "ipo" || t.dpo_loss == "orpo") && t.dpo_label_smoothing != 0)
    p.add("train.dpo_label_smoothing (", t.dpo_label_smoothing,
          ") is the sigmoid loss's and SimPO's; train.dpo_loss ", t.dpo_loss, " has none");
  const bool simpo = t.dpo_loss == "simpo", orpo = t.dpo_loss == "orpo";
  if (orpo && t.dpo_nll_weight != 0)
    p.add("train.dpo_nll_weight (", t.dpo_nll_weight,
          ") is set apart from the loss; train.dpo_loss orpo holds the chosen responses' NLL "
          "already, with weight 1");
  if (!(t.simpo_gamma >= 0 && std::isfinite(t.simpo_gamma)))
    p.add("train.simpo_gamma must be >= 0 (SimPO's target reward margin), got ", t.simpo_gamma);
  else if (!simpo && t.simpo_gamma != TrainConfig{}.simpo_gamma)
    p.add("train.simpo_gamma (", t.simpo_gamma, ") is SimPO's; train.dpo_loss ", t.dpo_loss,
          " has none");
  if (c.checkpoint.init.empty() && !simpo && !orpo)
    p.add(
        "train.objective dpo needs checkpoint.init: the trained model to tune, its reference "
        "(train.dpo_loss simpo and orpo need no reference)");
  // Not built: LOMO, EMA, lora.trainable, S^2-Attn (the reference moves or attends otherwise).
  for (const auto& [on, what] :
       {std::pair{c.optim.updates_in_backward(), "optim.name " + c.optim.name},
        std::pair{t.ema_decay > 0, std::string("train.ema_decay")},
        std::pair{t.s2_attn, std::string("train.s2_attn")},
        std::pair{c.lora.rank > 0 && !c.lora.trainable.empty(), std::string("lora.trainable")}})
    if (on) p.add("train.objective dpo with ", what, " is not built");
}

}  // namespace tessera::config_rules
