#include "train/average.h"

#include <filesystem>

#include "config/config.h"
#include "core/error.h"
#include "train/ema.h"
#include "train/load.h"

namespace tessera::train {

namespace {

// The step and config an averaged checkpoint is written with: a model of its own, not a run to
// resume or a base to initialise from again.
void finish(Averaged& out, Config config) {
  config.checkpoint.init.clear();
  config.checkpoint.resume.clear();
  out.data.trainer_ints = {{"step", out.step}};
  out.data.config_yaml = to_yaml(config);
}

}  // namespace

Averaged average_checkpoints(const std::vector<std::string>& checkpoints) {
  TESSERA_CHECK(checkpoints.size() >= 2, "average: needs two checkpoints or more, got ",
                checkpoints.size());
  Averaged out;
  Config first, newest;
  std::vector<std::vector<double>> sums;  // one per parameter, in out.data.model's order
  for (const std::string& given : checkpoints) {
    LoadedModel m = load_model(given);
    TESSERA_CHECK(!m.lora, m.path, " holds LoRA adapters: merge them into their base first ",
                  "(build/merge), then average the merged checkpoints");
    for (const std::string& seen : out.paths)  // the same file under another spelling too
      TESSERA_CHECK(!std::filesystem::equivalent(seen, m.path), m.path,
                    seen == m.path ? " is given twice (" + given + ")"
                                   : " is " + seen + " again (given as " + given + ")",
                    ": each checkpoint counts once");
    const auto& params = m.model->parameters();
    if (out.paths.empty()) {
      first = m.config;
      for (const auto& [name, t] : params) {
        sums.emplace_back(size_t(t.numel()), 0.0);
        out.data.model.emplace_back(name, t.contiguous().clone());  // overwritten by the means
      }
    } else {
      const std::string diff = model_difference(first.model, m.config.model);
      TESSERA_CHECK(diff.empty(), "average: ", m.path, " is another model than ", out.paths[0],
                    ": ", diff);
    }
    const auto& held = out.data.model;  // the first input's names and shapes
    TESSERA_CHECK(params.size() == held.size(), "average: ", m.path, " has ", params.size(),
                  " parameters, ", out.paths[0], " ", held.size());
    for (size_t i = 0; i < params.size(); ++i) {
      const auto& [name, t] = params[i];
      TESSERA_CHECK(name == held[i].first && t.shape() == held[i].second.shape(),
                    "average: ", m.path, "'s parameter ", i, " is ", name, " ",
                    shape_str(t.shape()), " where ", out.paths[0], " has ", held[i].first, " ",
                    shape_str(held[i].second.shape()));
      const Tensor c = t.contiguous();
      const float* v = c.data<float>();
      std::vector<double>& s = sums[i];
      for (size_t j = 0; j < s.size(); ++j) s[j] += double(v[j]);
    }
    if (out.paths.empty() || m.step >= out.step) {  // the newest input's config and step
      newest = m.config;
      out.step = m.step;
    }
    out.paths.push_back(m.path);
    out.steps.push_back(m.step);
  }
  const double n = double(out.paths.size());
  for (size_t i = 0; i < sums.size(); ++i) {
    float* v = out.data.model[i].second.data<float>();
    for (size_t j = 0; j < sums[i].size(); ++j) v[j] = float(sums[i][j] / n);
  }
  finish(out, newest);
  return out;
}

Averaged ema_checkpoint(const std::string& checkpoint) {
  LoadedModel m = load_model(checkpoint);
  TESSERA_CHECK(!m.lora, m.path, " holds LoRA adapters, which keep no average of the weights");
  CheckpointData held;
  held.model = ema_weights(load_checkpoint(m.path), m.path);
  load_model_into(held, m.path + " (its average of the weights)", m.model->parameters());
  Averaged out;
  for (const auto& [name, t] : m.model->parameters())
    out.data.model.emplace_back(name, t.contiguous().clone());
  out.step = m.step;
  out.paths = {m.path};
  out.steps = {m.step};
  finish(out, m.config);
  return out;
}

}  // namespace tessera::train
