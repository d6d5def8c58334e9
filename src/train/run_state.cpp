// RunState <-> CheckpointData: see run_state.h.
#include "train/run_state.h"

#include <algorithm>
#include <optional>

namespace tessera::train {
namespace {

int64_t get_int(const CheckpointData& ck, const std::string& path, const std::string& key,
                std::optional<int64_t> fallback = std::nullopt) {
  auto it = ck.trainer_ints.find(key);
  if (it != ck.trainer_ints.end()) return it->second;
  TESSERA_CHECK(fallback.has_value(), "checkpoint ", path, ": /trainer has no attribute '", key,
                "'");
  return *fallback;
}

std::deque<double> window_of(const CheckpointData& ck, const std::string& name) {
  for (const auto& [key, t] : ck.trainer_tensors)
    if (key == name) {
      std::vector<double> v = t.to(DType::F64).to_vector<double>();
      return {v.begin(), v.end()};
    }
  return {};
}

}  // namespace

Lineage get_lineage(const CheckpointData& ck, const std::string& path) {
  const int64_t n = get_int(ck, path, "lineage_segments", 0);
  if (n == 0) return {Segment{0, 0}};  // written before checkpoints held one
  Lineage out;
  for (int64_t i = 0; i < n; ++i) {
    const std::string k = "lineage_" + std::to_string(i);
    out.push_back({get_int(ck, path, k + "_id"), get_int(ck, path, k + "_from")});
  }
  return out;
}

bool on_trajectory(const Lineage& checkpoint, int64_t checkpoint_step, const Lineage& run,
                   int64_t run_step) {
  if (checkpoint.empty()) return false;
  for (size_t j = 0; j < run.size(); ++j)
    if (run[j] == checkpoint.back()) {
      // The run left segment j where segment j + 1 began (or is on it still, at run_step); the
      // segments before must be the run's too (ids are random: a mismatch is another run).
      const int64_t left = j + 1 < run.size() ? run[j + 1].from : run_step;
      return checkpoint_step <= left && checkpoint.size() == j + 1 &&
             std::equal(checkpoint.begin(), checkpoint.end(), run.begin());
    }
  return false;
}

void put_run_state(const RunState& s, CheckpointData& ck) {
  const RunHistory& h = s.history;
  ck.trainer_ints = {{"step", s.step},
                     {"tokens_seen", s.tokens_seen},
                     {"optimizer_step", s.optimizer_step},
                     {"micro_step", 0},         // checkpoints fall between optimizer steps
                     {"schedule_step", s.step},  // the LR schedule position is the step
                     {"rollbacks", h.rollbacks},
                     {"lr_factor_until", h.lr_factor_until},
                     {"skip_ranges", int64_t(h.skips.size())},
                     {"window_positions", 1},
                     {"world", s.world},
                     {"tokens_per_step", s.tokens_per_step}};
  for (size_t i = 0; i < h.skips.size(); ++i) {
    const std::string k = "skip_" + std::to_string(i);
    ck.trainer_ints[k + "_begin"] = h.skips[i].first;
    ck.trainer_ints[k + "_end"] = h.skips[i].second;
  }
  ck.trainer_ints["lineage_segments"] = int64_t(s.lineage.size());
  for (size_t i = 0; i < s.lineage.size(); ++i) {
    const std::string k = "lineage_" + std::to_string(i);
    ck.trainer_ints[k + "_id"] = s.lineage[i].id;
    ck.trainer_ints[k + "_from"] = s.lineage[i].from;
  }
  // An empty window is left out (its absence reads back as empty).
  for (const auto& [name, w] : {std::pair{"spike/loss_window", &s.loss_window},
                                std::pair{"spike/log_norm_window", &s.log_norm_window}})
    if (!w->empty())
      ck.trainer_tensors.emplace_back(
          name, from_vector(std::vector<double>(w->begin(), w->end()), {int64_t(w->size())}));
  ck.rng["default"] = s.rng;
  ck.data = {{"seed", int64_t(s.data.seed)}, {"epoch", s.data.epoch},
             {"position", s.data.position}};
}

RunState get_run_state(const CheckpointData& ck, const std::string& path, int64_t tokens_per_step,
                       int64_t batch_size) {
  RunState s;
  s.step = get_int(ck, path, "step");
  s.tokens_seen = get_int(ck, path, "tokens_seen");
  s.optimizer_step = get_int(ck, path, "optimizer_step");
  TESSERA_CHECK(get_int(ck, path, "micro_step", 0) == 0, "checkpoint ", path,
                " was taken inside gradient accumulation, which tessera never does");
  s.world = get_int(ck, path, "world", 1);
  // Older files lack the figure; their own steps tell it.
  s.tokens_per_step = get_int(ck, path, "tokens_per_step",
                              s.step > 0 ? s.tokens_seen / s.step : tokens_per_step);
  TESSERA_CHECK(s.tokens_per_step == tokens_per_step, "checkpoint ", path, " was trained with ",
                s.tokens_per_step, " tokens per step (on ", s.world, " rank(s)) but this run takes ",
                tokens_per_step, " (train.total_batch_size, or batch_size x seq_len x world): a "
                "resumed run must keep the tokens per step to continue the same data order; set "
                "train.total_batch_size: ", s.tokens_per_step);
  // Before positions counted windows they counted batches of B windows (one process).
  const int64_t unit = get_int(ck, path, "window_positions", 0) == 1 ? 1 : batch_size;

  auto rng = ck.rng.find("default");
  TESSERA_CHECK(rng != ck.rng.end(), "checkpoint ", path, ": no /rng/default");
  s.rng = rng->second;
  auto d = [&](const char* key) {
    auto it = ck.data.find(key);
    TESSERA_CHECK(it != ck.data.end(), "checkpoint ", path, ": /data has no attribute '", key, "'");
    return it->second;
  };
  s.data = {uint64_t(d("seed")), d("epoch"), d("position") * unit};
  s.loss_window = window_of(ck, "spike/loss_window");
  s.log_norm_window = window_of(ck, "spike/log_norm_window");
  RunHistory& h = s.history;
  h.rollbacks = get_int(ck, path, "rollbacks", 0);
  h.lr_factor_until = get_int(ck, path, "lr_factor_until", 0);
  const int64_t n = get_int(ck, path, "skip_ranges", 0);
  for (int64_t i = 0; i < n; ++i) {
    const std::string k = "skip_" + std::to_string(i);
    h.skips.emplace_back(get_int(ck, path, k + "_begin") * unit,
                         get_int(ck, path, k + "_end") * unit);
  }
  s.lineage = get_lineage(ck, path);
  return s;
}

}  // namespace tessera::train
