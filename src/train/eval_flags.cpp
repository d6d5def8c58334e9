#include "train/eval_flags.h"

#include <algorithm>

#include "core/error.h"

namespace tessera::train {

std::vector<int64_t> parse_contexts(const std::string& text) {
  std::string problem = text.empty() ? "'' is not a context length >= 1" : "";
  std::vector<int64_t> out = parse_positive_list(text, "context length", &problem);
  TESSERA_CHECK(problem.empty(), "command line: --contexts '", text, "': ", problem);
  return out;
}

bool apply_rope_flags(Config& cfg, const RopeFlags& flags, const std::string& path) {
  std::vector<std::string> sets = flags.sets;
  std::vector<std::string> parameters;  // the flags that set a scaling parameter, as given
  for (const std::string& s : sets) {
    TESSERA_CHECK(s.rfind("model.rope_scaling.", 0) == 0, "command line: --set '", s,
                  "': eval changes only model.rope_scaling.* (the rest of a trained model is "
                  "fixed by its checkpoint)");
    if (s.rfind("model.rope_scaling.type=", 0) != 0) parameters.push_back("--set " + s);
    // A key given twice, by its flag and by --set: which one was meant is not for eval to guess.
    TESSERA_CHECK(flags.type.empty() || s.rfind("model.rope_scaling.type=", 0) != 0,
                  "command line: --rope-scaling ", flags.type, " and --set ", s,
                  " both give the scaling type: give one");
    TESSERA_CHECK(flags.factor.empty() || s.rfind("model.rope_scaling.factor=", 0) != 0,
                  "command line: --rope-factor ", flags.factor, " and --set ", s,
                  " both give the factor: give one");
  }
  if (!flags.type.empty()) sets.push_back("model.rope_scaling.type=" + flags.type);
  if (!flags.factor.empty()) {
    parameters.push_back("--rope-factor " + flags.factor);
    if (flags.factor != "auto") sets.push_back("model.rope_scaling.factor=" + flags.factor);
  }
  const std::string stored = cfg.model.rope_scaling.type;
  for (const std::string& s : sets) apply_override(cfg, s);
  if (sets.empty() && flags.factor.empty()) return false;

  RopeScalingConfig& rs = cfg.model.rope_scaling;
  TESSERA_CHECK(cfg.model.position == "rope", "RoPE scaling (--rope-scaling, --rope-factor, "
                "--set model.rope_scaling.*) needs a model with rotary positions, but ", path,
                " has model.position '", cfg.model.position,
                "': there are no rotary frequencies to scale");
  if (rs.type == "none" && !parameters.empty()) {
    std::string given;
    for (const std::string& p : parameters) given += (given.empty() ? "" : ", ") + p;
    TESSERA_FAIL("command line: ", given, " needs --rope-scaling linear|dynamic|yarn|llama3",
                 flags.type.empty() ? ": model.rope_scaling.type is none in " + path
                                    : ", not none", ", so the evaluation would run unscaled");
  }
  if (rs.type == "none") {
    // Plain RoPE, also for a checkpoint trained with scaling: its stored factor and lengths go
    // with its type (validate() refuses them beside type none).
    rs = RopeScalingConfig{};
    validate_model(cfg.model, path + " with the command line's RoPE scaling");
    return true;
  }
  // linear, yarn and llama3 at factor 1 compute the trained frequencies exactly (dynamic does not:
  // it still raises the base past L0), so a type whose factor comes from nowhere, neither a flag
  // nor the checkpoint's own scaling, would evaluate unscaled while saying it scaled.
  const bool factor_given =
      !flags.factor.empty() || std::any_of(sets.begin(), sets.end(), [](const std::string& s) {
        return s.rfind("model.rope_scaling.factor=", 0) == 0;
      });
  if (rs.type != "dynamic" && rs.factor == 1 && !factor_given) {
    const std::string type = !flags.type.empty() ? "--rope-scaling " + flags.type
                             : rs.type != stored
                                 ? "--set model.rope_scaling.type=" + rs.type
                                 : "model.rope_scaling.type " + rs.type + " in " + path;
    TESSERA_FAIL("command line: ", type, " needs --rope-factor S or auto: the factor stored in ",
                 path, " is 1, so the evaluation would run unscaled");
  }
  // L0 = the length the model trained at, fixed now (the evaluation windows may be longer).
  if (rs.original_max_position == 0) rs.original_max_position = cfg.model.block_size;
  // The model section only: the stored training settings play no part in an evaluation.
  validate_model(cfg.model, path + " with the command line's RoPE scaling");
  return true;
}

}  // namespace tessera::train
