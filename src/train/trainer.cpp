// The training loop. One optimizer step:
//   micro-batches (skipping rolled-back data ranges, poisoning injected ones) -> forward, backward
//   -> gradient norm -> spike check -> (spike: no update, roll back) | (clip, update, log, eval,
//   checkpoint).
//
// State and where it lives (everything a checkpoint holds, so a resumed run repeats the
// uninterrupted one bit for bit):
//   model, optimizer moments, step, tokens_seen, optimizer step count  /model, /optimizer, /trainer
//   default RNG (dropout)                                               /rng/default
//   data cursor (seed, epoch, position)                                 /data
//   LR schedule position, spike windows                                 /trainer
//   RunHistory: rollbacks, lr-factor end, skipped data                  /trainer attrs
// A rollback restores everything but RunHistory, which records the rollbacks themselves and is
// saved again with the checkpoint rolled back to. The LR schedule position comes back with the
// checkpoint and skipped data does not advance it: after a rollback each step runs at the LR the
// schedule gives that step, so the run is the clean run on the data minus the skipped batches
// (going on from the spike's LR instead left a 120-step test run 17% above the clean run's loss,
// because every replayed step ran further down the cosine).
#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "autograd/autograd.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "core/rng.h"
#include "data/loader.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/lomo.h"
#include "optim/schedule.h"
#include "peft/adapter.h"
#include "train/device.h"
#include "train/spike.h"

namespace tessera::train {
namespace fs = std::filesystem;

nn::GPTConfig model_config(const ModelConfig& m, const TrainConfig& t) {
  nn::GPTConfig g;
  // ModelConfig::hidden() and GPTConfig::hidden() resolve mlp_hidden == 0 the same way; pass the
  // raw value so there is one rule in force (the model's).

  g.n_layer = m.n_layer, g.n_head = m.n_head, g.n_kv_head = m.n_kv_head, g.n_embd = m.n_embd;
  g.block_size = m.block_size, g.vocab_size = m.vocab_size;
  g.norm = m.norm == "rmsnorm" ? nn::NormKind::RMSNorm : nn::NormKind::LayerNorm;
  g.mlp = m.mlp == "swiglu" ? nn::MlpKind::SwiGLU : nn::MlpKind::GELU;
  g.position = m.position == "rope"   ? nn::PositionKind::RoPE
               : m.position == "none" ? nn::PositionKind::None
                                      : nn::PositionKind::Learned;
  g.rope_theta = m.rope_theta, g.tie_embeddings = m.tie_embeddings, g.bias = m.bias;
  g.dropout = m.dropout, g.norm_eps = m.norm_eps, g.mlp_hidden = m.mlp_hidden;
  g.recompute = t.recompute;
  g.attention = m.attention == "stick_breaking" ? nn::AttentionKind::StickBreaking
                                                : nn::AttentionKind::Softmax;
  g.attend_current = m.attend_current, g.sb_remainder = m.sb_remainder == "current";
  g.s2_attn = t.s2_attn;
  return g;
}

peft::LoraOptions lora_options(const LoraConfig& l) {
  return {.rank = l.rank, .alpha = l.alpha, .dropout = l.dropout,
          .targets = peft::parse_targets(l.targets), .rslora = l.rslora, .quantize = l.quantize};
}

namespace {

data::LoaderOptions loader_options(const Config& cfg, const char* key, const std::string& pattern,
                                   bool shuffle) {
  data::LoaderOptions o;
  try {
    o.files = data::expand_glob(pattern);
  } catch (const Error&) {
    TESSERA_FAIL(key, ": no files match '", pattern, "' (run scripts/prepare_data.sh?)");
  }
  o.batch_size = cfg.train.batch_size;
  o.seq_len = cfg.sequence_length();
  o.vocab_size = cfg.model.vocab_size;
  o.seed = uint64_t(cfg.train.seed);
  o.shuffle = shuffle;
  return o;
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";  // JSON has no NaN/Inf
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string duration(double seconds) {
  char buf[32];
  const int64_t s = int64_t(seconds);
  std::snprintf(buf, sizeof buf, "%ldm%02lds", long(s / 60), long(s % 60));
  return buf;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

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

// A process killed mid-line leaves a line without its newline; the next run's first line would be
// glued onto it. Cut it off (every complete line is kept).
void drop_partial_line(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in || !in.seekg(-1, std::ios::end)) return;  // missing or empty
  if (in.get() == '\n') return;                     // the usual case: one byte read
  in.seekg(0);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t keep = text.find_last_of('\n');
  in.close();
  fs::resize_file(file, keep == std::string::npos ? 0 : keep + 1);
}

// Resets the default generator (dropout) to the run's seed; returns the seed for the init one.
uint64_t seed_default_generator(int64_t seed) {
  manual_seed(uint64_t(seed));
  return uint64_t(seed);
}

// What a run has been through: saved with every checkpoint, and kept (not restored) by a rollback.
struct RunHistory {
  int64_t rollbacks = 0;        // spikes handled so far
  int64_t lr_factor_until = 0;  // steps below it run at lr * spike.lr_factor
  std::vector<std::pair<int64_t, int64_t>> skips;  // [begin, end) global batch indices never read
};

class Trainer {
 public:
  Trainer(const Config& cfg, std::ostream& log);
  TrainResult run();

 private:
  // One step's forward/backward over its micro-batches; returns the mean loss. first_batch is the
  // global index of the step's first micro-batch.
  double forward_backward(int64_t* first_batch);
  // The model's loss on one micro-batch, poisoned when fault injection says so.
  Tensor micro_loss(int64_t* index);
  // Spike check of a finished forward (and backward, when norm is known): true when clean (the
  // values join the windows), false when it was a spike.
  bool clean(double loss, std::optional<double> norm, SpikeVerdict* verdict);
  double lr_now() const;
  data::Batch next_batch(int64_t* index);
  void spike(int64_t first_batch, const std::string& reason);
  std::string save(int64_t done);
  void restore(const std::string& path, const CheckpointData& ck, bool with_history);
  void emit(const std::string& json);
  void log_step(int64_t done, double loss, double lr, double norm, double dt);
  void load_init();
  void report_memory();

  const Config& cfg_;
  std::ostream& log_;
  fs::path run_dir_;
  Generator init_gen_;
  nn::GPT model_;
  std::vector<NamedParam> params_;
  std::unique_ptr<peft::Lora> lora_;       // lora.rank > 0: params_ are its adapters
  std::string base_path_, base_fingerprint_;  // the checkpoint.init the adapters belong to
  std::unique_ptr<AdamW> adamw_;           // optim.name adamw
  std::unique_ptr<FusedOptimizer> fused_;  // lomo | adalomo: the update runs inside backward
  ScheduleOptions sched_;
  data::DataLoader loader_;
  SpikeDetector detector_;
  int64_t accum_, B_, T_;
  std::set<int64_t> poisoned_;  // global batch indices that fault injection corrupts
  std::ofstream metrics_;

  int64_t step_ = 0, tokens_seen_ = 0;
  RunHistory history_;
  TrainResult result_;
  std::chrono::steady_clock::time_point start_;
  int64_t first_step_ = 0;
};

Trainer::Trainer(const Config& cfg, std::ostream& log)
    : cfg_(cfg),
      log_(log),
      run_dir_(fs::path(cfg.checkpoint.dir) / cfg.train.run_name),
      init_gen_(seed_default_generator(cfg.train.seed)),
      model_(model_config(cfg.model, cfg.train), init_gen_),
      params_(named_params(model_.parameters())),
      sched_{.name = cfg.optim.schedule, .lr = cfg.optim.lr, .min_lr = cfg.optim.min_lr,
             .warmup_steps = cfg.optim.warmup_steps, .max_steps = cfg.train.max_steps},
      loader_(loader_options(cfg, "data.train", cfg.data.train, true)),
      detector_({.window = cfg.spike.window, .threshold = cfg.spike.threshold}),
      accum_(cfg.grad_accum_steps()),
      B_(cfg.train.batch_size),
      T_(cfg.sequence_length()) {
  // Built on the CPU in f32 above (the same initial weights on every device), then placed.
  if (const Placement where = placement(cfg); where.device.is_cuda()) {
    place_model(model_, where.device, where.dtype);
    params_ = named_params(model_.parameters());
  }
  if (!cfg.checkpoint.init.empty()) load_init();
  if (cfg.lora.rank > 0) {
    lora_ = std::make_unique<peft::Lora>(model_, lora_options(cfg.lora), init_gen_);
    params_ = named_params(lora_->parameters());
  }
  if (cfg.optim.name == "adamw") {
    adamw_ = std::make_unique<AdamW>(
        params_, AdamWOptions{.lr = cfg.optim.lr, .beta1 = cfg.optim.beta1,
                              .beta2 = cfg.optim.beta2, .eps = cfg.optim.eps,
                              .weight_decay = cfg.optim.weight_decay});
  } else {
    TESSERA_CHECK(accum_ == 1, "optim.name '", cfg.optim.name,
                  "' cannot accumulate gradients (train.total_batch_size)");
    fused_ = std::make_unique<FusedOptimizer>(
        params_, LomoOptions{.name = cfg.optim.name, .weight_decay = cfg.optim.weight_decay,
                             .clip_value = cfg.optim.clip_value,
                             .loss_scale = cfg.optim.loss_scale, .max_norm = cfg.optim.grad_clip});
  }
  // The batches a clean run reads at (1-based) step n: [(n - 1) * accum, n * accum).
  for (int64_t n : parse_step_list(cfg.spike.inject_steps))
    for (int64_t i = 0; i < accum_; ++i) poisoned_.insert((n - 1) * accum_ + i);

  fs::create_directories(run_dir_);
  for (const std::string& p : remove_interrupted_writes(run_dir_.string()))
    log_ << "warning: removed " << p << " (a checkpoint write that did not finish)\n";

  const std::string& resume = cfg.checkpoint.resume;
  if (resume == "auto") {
    if (std::optional<Resumable> r = load_resumable(run_dir_.string(), log_))
      restore(r->path, r->data, true);
  } else if (!resume.empty()) {
    const std::string path = resolve_checkpoint(resume);
    restore(path, load_checkpoint(path), true);
  }

  if (cfg.log.metrics) {
    drop_partial_line(run_dir_ / "metrics.jsonl");
    metrics_.open(run_dir_ / "metrics.jsonl", std::ios::app);
    TESSERA_CHECK(metrics_.good(), "cannot write ", (run_dir_ / "metrics.jsonl").string());
  }
  if (lora_)
    log_ << "lora: " << lora_->adapter_parameters() << " trainable adapter parameters beside "
         << lora_->base_parameters() << " frozen\n";
  log_ << "model: " << (lora_ ? lora_->base_parameters() : model_.num_parameters())
       << " parameters; " << accum_
       << " micro-batch(es) of " << B_ << " x " << T_ << " per step; run dir " << run_dir_.string()
       << "\n";
  report_memory();
}

void Trainer::load_init() {
  const std::string path = resolve_checkpoint(cfg_.checkpoint.init);
  TESSERA_CHECK(load_checkpoint_attributes(path).adapter.empty(), "checkpoint.init: ", path,
                " holds LoRA adapters, not a model; merge them into their base first "
                "(build/merge --adapter ", path, ")");
  load_model_into(path, model_.parameters());  // /model alone: the optimizer state is not needed
  log_ << "init: weights from " << path << "\n";
  base_path_ = path;
  // Computed before any quantisation: the identity of the checkpoint's weights.
  if (cfg_.lora.rank > 0) base_fingerprint_ = peft::fingerprint(model_.parameters());
}

// What the run holds: weights (the frozen base at its stored size, NF4 when quantised), trainable
// adapters, optimizer state. Activations come and go within a step: the peak is reported at the end.
void Trainer::report_memory() {
  auto mib = [](int64_t b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f MiB", double(b) / (1 << 20));
    return std::string(buf);
  };
  int64_t weights = 0, state = 0;
  if (lora_)
    weights = lora_->base_bytes();  // quantised weights at their packed size
  else
    for (const auto& [n, t] : model_.parameters()) weights += int64_t(t.nbytes());
  if (adamw_)
    for (const StateEntry& e : adamw_->state())
      state += int64_t(e.m.nbytes() + e.v.nbytes());
  else
    for (const auto& [n, t] : fused_->state()) state += int64_t(t.nbytes());
  log_ << "memory: weights " << mib(weights);
  if (lora_)
    log_ << " (frozen" << (lora_->quantized() ? ", " + cfg_.lora.quantize : std::string()) << ")"
         << " | adapters " << mib(lora_->adapter_bytes()) << " (rank " << cfg_.lora.rank << ", "
         << cfg_.lora.targets << ")";
  log_ << " | optimizer state " << mib(state) << "\n";
}

void Trainer::restore(const std::string& path, const CheckpointData& ck, bool with_history) {
  if (lora_) {
    TESSERA_CHECK(!ck.adapter.empty(), "checkpoint ", path, " is a full checkpoint, but this run "
                  "trains LoRA adapters (lora.rank > 0): resume it without lora, or pass it as "
                  "--init");
    peft::check_base(ck.adapter, path, base_path_, base_fingerprint_);
    load_model_into(ck, path, lora_->parameters());
  } else {
    TESSERA_CHECK(ck.adapter.empty(), "checkpoint ", path, " holds LoRA adapters: resume it with "
                  "its config's lora section (lora.rank > 0)");
    load_model_into(ck, path, model_.parameters());
  }
  if (adamw_) {
    std::map<std::string, Tensor> saved(ck.optimizer.begin(), ck.optimizer.end());
    std::vector<StateEntry> state;
    for (const NamedParam& p : params_) {
      auto m = saved.find(p.name + "/m"), v = saved.find(p.name + "/v");
      TESSERA_CHECK(m != saved.end() && v != saved.end(), "checkpoint ", path,
                    ": no AdamW state for ", p.name, " (resume with the optimizer it was saved "
                    "with; --init takes the weights alone)");
      // A bf16 parameter's f32 master is saved beside m and v; without one (an older file), the
      // master restarts from the weights just loaded rather than keep this run's initial ones.
      auto master = saved.find(p.name + "/master");
      const bool own_master = p.param.dtype() != DType::F32 && p.param.dtype() != DType::F64;
      state.push_back({p.name, m->second, v->second,
                       master != saved.end() ? master->second
                       : own_master          ? p.param.detach()
                                             : Tensor()});
    }
    adamw_->load_state(state);
    adamw_->set_step_count(get_int(ck, path, "optimizer_step"));
  } else {
    try {
      fused_->load_state(ck.optimizer);
    } catch (const Error& e) {
      TESSERA_FAIL("checkpoint ", path, ": ", e.what(), " (resume with the optimizer it was saved ",
                   "with; --init takes the weights alone)");
    }
    fused_->set_step_count(get_int(ck, path, "optimizer_step"));
  }
  step_ = get_int(ck, path, "step");
  tokens_seen_ = get_int(ck, path, "tokens_seen");
  TESSERA_CHECK(get_int(ck, path, "micro_step", 0) == 0, "checkpoint ", path,
                " was taken inside gradient accumulation, which tessera never does");
  auto rng = ck.rng.find("default");
  TESSERA_CHECK(rng != ck.rng.end(), "checkpoint ", path, ": no /rng/default");
  default_generator().set_state(rng->second);
  auto d = [&](const char* key) {
    auto it = ck.data.find(key);
    TESSERA_CHECK(it != ck.data.end(), "checkpoint ", path, ": /data has no attribute '", key, "'");
    return it->second;
  };
  loader_.set_state({uint64_t(d("seed")), d("epoch"), d("position")});
  detector_.set_windows(window_of(ck, "spike/loss_window"),
                        window_of(ck, "spike/log_norm_window"));
  if (with_history) {
    history_ = RunHistory{};
    history_.rollbacks = get_int(ck, path, "rollbacks", 0);
    history_.lr_factor_until = get_int(ck, path, "lr_factor_until", 0);
    const int64_t n = get_int(ck, path, "skip_ranges", 0);
    for (int64_t i = 0; i < n; ++i) {
      const std::string k = "skip_" + std::to_string(i);
      history_.skips.emplace_back(get_int(ck, path, k + "_begin"), get_int(ck, path, k + "_end"));
    }
    log_ << "resume: " << path << " at step " << step_ << "\n";
  }
}

std::string Trainer::save(int64_t done) {
  CheckpointData ck;
  if (lora_) {
    ck.model = lora_->parameters();  // the adapters alone: the base stays where it came from
    ck.adapter = peft::adapter_attrs(*lora_, base_path_, base_fingerprint_);
  } else {
    ck.model = model_.parameters();
  }
  if (adamw_) {
    const std::vector<StateEntry> state = adamw_->state();  // in parameter order
    for (size_t i = 0; i < state.size(); ++i) {
      const StateEntry& e = state[i];
      ck.optimizer.emplace_back(e.name + "/m", e.m);
      ck.optimizer.emplace_back(e.name + "/v", e.v);
      // An f32 master that is not the parameter itself (bf16 weights on CUDA): resume needs its
      // low bits. CPU runs (f32 parameters) store no master: the weights are the master.
      if (e.master.data_ptr() != params_[i].param.data_ptr())
        ck.optimizer.emplace_back(e.name + "/master", e.master);
    }
  } else {
    ck.optimizer = fused_->state();
  }
  ck.trainer_ints = {{"step", done},
                     {"tokens_seen", tokens_seen_},
                     {"optimizer_step", adamw_ ? adamw_->step_count() : fused_->step_count()},
                     {"micro_step", 0},  // checkpoints fall between optimizer steps
                     {"schedule_step", step_},  // the LR schedule position is the step
                     {"rollbacks", history_.rollbacks},
                     {"lr_factor_until", history_.lr_factor_until},
                     {"skip_ranges", int64_t(history_.skips.size())}};
  for (size_t i = 0; i < history_.skips.size(); ++i) {
    const std::string k = "skip_" + std::to_string(i);
    ck.trainer_ints[k + "_begin"] = history_.skips[i].first;
    ck.trainer_ints[k + "_end"] = history_.skips[i].second;
  }
  // An empty window is left out (its absence reads back as empty).
  for (const auto& [name, w] : {std::pair{"spike/loss_window", &detector_.losses()},
                                std::pair{"spike/log_norm_window", &detector_.log_norms()}})
    if (!w->empty())
      ck.trainer_tensors.emplace_back(
          name, from_vector(std::vector<double>(w->begin(), w->end()), {int64_t(w->size())}));
  ck.rng["default"] = default_generator().state();
  const data::LoaderState ls = loader_.state();
  ck.data = {{"seed", int64_t(ls.seed)}, {"epoch", ls.epoch}, {"position", ls.position}};
  ck.config_yaml = to_yaml(cfg_);
  const std::string name = checkpoint_name(done);
  save_checkpoint((run_dir_ / name).string(), ck);
  write_latest(run_dir_.string(), name);
  prune_checkpoints(run_dir_.string(),
                    {.keep = cfg_.checkpoint.keep,
                     .milestone_interval = cfg_.checkpoint.milestone_interval},
                    name);
  log_ << "checkpoint: " << (run_dir_ / name).string() << "\n";
  return (run_dir_ / name).string();
}

void Trainer::emit(const std::string& json) {
  if (metrics_.is_open()) metrics_ << json << "\n" << std::flush;
}

data::Batch Trainer::next_batch(int64_t* index) {
  // Jump over rolled-back ranges (they may touch or nest, so repeat until clear).
  for (bool moved = true; moved;) {
    moved = false;
    const int64_t i = loader_.batch_index();
    for (const auto& [begin, end] : history_.skips)
      if (i >= begin && i < end) {
        loader_.seek(end);
        moved = true;
      }
  }
  *index = loader_.batch_index();
  data::Batch b = loader_.next();
  if (poisoned_.count(*index) && cfg_.spike.inject_kind == "corrupt") {
    // Uniform random ids, a pure function of (seed, batch index): the same corrupt batch
    // whenever this position is read.
    int32_t* in = b.inputs.data<int32_t>();
    int32_t* tg = b.targets.data<int32_t>();
    const uint64_t stream = (uint64_t(0x494e4a31u) << 32) | uint64_t(*index);  // "INJ1"
    for (int64_t k = 0; k < b.inputs.numel(); ++k) {
      Philox4 r = philox4x32_10(uint64_t(k), uint64_t(cfg_.train.seed), stream);
      in[k] = int32_t(r.v[0] % uint32_t(cfg_.model.vocab_size));
      tg[k] = int32_t(r.v[1] % uint32_t(cfg_.model.vocab_size));
    }
  }
  return b;
}

Tensor Trainer::micro_loss(int64_t* index) {
  data::Batch b = next_batch(index);
  const Device dev = model_device(model_);  // batches come from the loader on the host
  Tensor loss = model_.loss(b.inputs.to(dev), b.targets.to(dev), true);
  if (poisoned_.count(*index) && cfg_.spike.inject_kind != "corrupt") {
    const double s = cfg_.spike.inject_kind == "nan" ? std::nan("") : cfg_.spike.inject_scale;
    loss = ops::scale(loss, s);
  }
  return loss;
}

double Trainer::forward_backward(int64_t* first_batch) {
  double loss_sum = 0;
  for (int64_t micro = 0; micro < accum_; ++micro) {
    int64_t index = 0;
    Tensor loss = micro_loss(&index);
    if (micro == 0) *first_batch = index;
    loss_sum += loss.item();
    backward(accum_ == 1 ? loss : ops::scale(loss, 1.0 / double(accum_)));
  }
  return loss_sum / double(accum_);
}

void Trainer::spike(int64_t first_batch, const std::string& reason) {
  const int64_t at = step_ + 1;  // the step that spiked, as the log counts steps
  ++history_.rollbacks;
  const SpikeConfig& sc = cfg_.spike;
  char line[512];
  std::snprintf(line, sizeof line, "spike at step %ld: %s", long(at), reason.c_str());
  log_ << line << std::endl;
  if (history_.rollbacks > sc.max_rollbacks) {
    emit("{\"step\": " + std::to_string(at) + ", \"event\": \"stop\", \"reason\": " +
         json_string(reason) + ", \"rollbacks\": " + std::to_string(history_.rollbacks - 1) + "}");
    TESSERA_FAIL("spike at step ", at, " (", reason, ") after ", sc.max_rollbacks,
                 " rollbacks (spike.max_rollbacks): stopping. The checkpoints in ",
                 run_dir_.string(),
                 " are intact; lower optim.lr or raise spike.max_rollbacks, then --resume auto");
  }
  // Skip from the spike's first batch on: skip_batches batches, or by default a thousandth of
  // the run in optimizer steps (PaLM skipped 200-500 batches of a ~250k-step run), at least one
  // step's worth.
  const int64_t skip = sc.skip_batches > 0
                           ? sc.skip_batches
                           : std::max<int64_t>(1, cfg_.train.max_steps / 1000) * accum_;
  history_.skips.emplace_back(first_batch, first_batch + skip);

  // The newest checkpoint at least rollback_steps before the spike that loads completely.
  std::optional<Resumable> target;
  std::vector<CheckpointFile> files = list_checkpoints(run_dir_.string());
  for (auto it = files.rbegin(); it != files.rend() && !target; ++it) {
    if (it->step > step_ - sc.rollback_steps) continue;
    try {
      target = Resumable{it->path, load_checkpoint(it->path)};
    } catch (const Error& e) {
      log_ << "warning: cannot roll back to " << it->path << ": " << e.what() << "\n";
    }
  }
  std::string to = "none";
  if (target) {
    // Checkpoints after the target belong to the abandoned trajectory: resuming from one would
    // replay into the spike.
    for (const CheckpointFile& f : files)
      if (f.step > get_int(target->data, target->path, "step")) {
        fs::remove(f.path);
        log_ << "rollback: removed " << f.path << " (after the rollback point)\n";
      }
    restore(target->path, target->data, false);
    to = std::to_string(step_);
  }
  if (sc.lr_factor != 1.0 && sc.lr_factor_steps > 0)
    history_.lr_factor_until = step_ + sc.lr_factor_steps;
  std::snprintf(line, sizeof line,
                "rollback %ld/%ld: %s; skipping batches [%ld, %ld) of the data",
                long(history_.rollbacks), long(sc.max_rollbacks),
                target ? ("back to step " + to + " (" + target->path + ")").c_str()
                       : "no checkpoint before the spike, update skipped",
                long(first_batch), long(first_batch + skip));
  log_ << line;
  if (history_.lr_factor_until > step_)
    log_ << "; lr x" << sc.lr_factor << " for " << sc.lr_factor_steps << " steps";
  log_ << std::endl;
  emit("{\"step\": " + std::to_string(at) + ", \"event\": \"rollback\", \"reason\": " +
       json_string(reason) + ", \"to_step\": " + (target ? to : "null") +
       ", \"skip_begin\": " + std::to_string(first_batch) +
       ", \"skip_end\": " + std::to_string(first_batch + skip) +
       ", \"rollbacks\": " + std::to_string(history_.rollbacks) + "}");
  // Record the rollback in the checkpoint it returned to, so a crash now resumes past the skipped
  // data instead of into the spike again.
  if (target) save(step_);
}

bool Trainer::clean(double loss, std::optional<double> norm, SpikeVerdict* verdict) {
  if (!cfg_.spike.enabled) {
    TESSERA_CHECK(std::isfinite(loss), "step ", step_ + 1, ": loss is ", loss,
                  " (diverged); lower optim.lr, or enable spike: to roll back automatically");
    return true;
  }
  *verdict = detector_.check(loss, norm);
  if (verdict->spike) return false;
  detector_.accept(loss, norm);
  return true;
}

double Trainer::lr_now() const {
  double lr = lr_at(sched_, step_);
  if (step_ < history_.lr_factor_until) lr *= cfg_.spike.lr_factor;
  return lr;
}

void Trainer::log_step(int64_t done, double loss, double lr, double norm, double dt) {
  const double elapsed = seconds_since(start_);
  const double eta = elapsed / double(std::max<int64_t>(done - first_step_, 1)) *
                     double(cfg_.train.max_steps - done);
  const double tok_s = double(B_ * T_ * accum_) / dt;
  char line[256];
  std::snprintf(line, sizeof line,
                "step %5ld/%ld | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | eta %s",
                long(done), long(cfg_.train.max_steps), loss, lr, norm, tok_s,
                duration(eta).c_str());
  log_ << line << std::endl;
  emit("{\"step\": " + std::to_string(done) + ", \"loss\": " + json_number(loss) +
       ", \"lr\": " + json_number(lr) + ", \"grad_norm\": " + json_number(norm) +
       ", \"tokens_per_s\": " + json_number(tok_s) + ", \"tokens\": " +
       std::to_string(tokens_seen_) + "}");
}

TrainResult Trainer::run() {
  const Device dev = model_.parameters().front().second.device();
  const int64_t held = memory_stats(dev).current_bytes;
  reset_peak_memory(dev);
  result_.steps = step_;
  start_ = std::chrono::steady_clock::now();
  first_step_ = step_;
  const int64_t stop = cfg_.train.stop_after > 0
                           ? std::min(cfg_.train.stop_after, cfg_.train.max_steps)
                           : cfg_.train.max_steps;
  while (step_ < stop) {
    const auto t0 = std::chrono::steady_clock::now();
    int64_t first_batch = 0;
    double loss = 0, norm = 0, lr = 0;
    SpikeVerdict verdict;
    if (adamw_) {
      loss = forward_backward(&first_batch);
      norm = grad_norm(params_);
      if (!clean(loss, norm, &verdict)) {
        adamw_->zero_grad();  // the update is not applied
        spike(first_batch, verdict.reason);
        continue;
      }
      clip_grads(params_, norm, cfg_.optim.grad_clip);
      lr = lr_now();
      adamw_->step(lr);
      adamw_->zero_grad();
    } else {
      // LOMO/AdaLomo update inside backward, so the spike check must come first: on the loss
      // alone, or on loss and norm when norm clipping runs a first, update-free pass anyway.
      // Without it a gradient-norm spike goes unseen, and a NaN gradient shows up as the next
      // step's NaN loss (rolled back like any other).
      Tensor l = micro_loss(&first_batch);
      loss = l.item();
      std::optional<double> known;
      if (cfg_.optim.grad_clip > 0) known = fused_->grad_norm(l);
      if (!clean(loss, known, &verdict)) {
        spike(first_batch, verdict.reason);
        continue;
      }
      lr = lr_now();
      norm = known ? fused_->apply(l, lr, fused_->clip_coef(*known)) : fused_->apply(l, lr);
    }
    tokens_seen_ += B_ * T_ * accum_;
    const int64_t done = ++step_;
    result_.steps = done;
    result_.last_train_loss = loss;

    if (done % cfg_.log.interval == 0 || done == stop || done == first_step_ + 1)
      log_step(done, loss, lr, norm, seconds_since(t0));
    const bool last = done == cfg_.train.max_steps;
    if (cfg_.eval.interval > 0 && (done % cfg_.eval.interval == 0 || last)) {
      const double val = evaluate(model_, cfg_, cfg_.data.val, cfg_.eval.steps);
      result_.last_val_loss = val;
      char line[128];
      std::snprintf(line, sizeof line, "step %5ld | val loss %.4f | val ppl %.2f", long(done), val,
                    std::exp(val));
      log_ << line << std::endl;
      emit("{\"step\": " + std::to_string(done) + ", \"val_loss\": " + json_number(val) +
           ", \"val_ppl\": " + json_number(std::exp(val)) + "}");
    }
    if ((cfg_.checkpoint.interval > 0 && done % cfg_.checkpoint.interval == 0) || done == stop)
      result_.last_checkpoint = save(done);
  }
  result_.rollbacks = history_.rollbacks;
  const int64_t peak = memory_stats(dev).peak_bytes;
  char line[160];
  std::snprintf(line, sizeof line,
                "memory: peak %.2f MiB allocated = %.2f MiB held between steps + %.2f MiB of "
                "activations, gradients and temporaries",
                double(peak) / (1 << 20), double(held) / (1 << 20), double(peak - held) / (1 << 20));
  log_ << line << std::endl;
  if (dev.is_cuda()) log_ << "memory: " << device_memory_summary(dev) << std::endl;
  return result_;
}

}  // namespace

double evaluate(const nn::GPT& model, const Config& cfg, const std::string& pattern,
                int64_t batches) {
  NoGradGuard no_grad;
  data::DataLoader loader(loader_options(cfg, "data.val", pattern, false));
  const int64_t n = std::min(batches, loader.batches_per_epoch());
  const Device dev = model_device(model);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    data::Batch b = loader.next();
    sum += model.loss(b.inputs.to(dev), b.targets.to(dev), false).item();
  }
  return sum / double(n);
}

TrainResult run_training(const Config& cfg, std::ostream& log) {
  cfg.validate();
  (void)placement(cfg);  // a CUDA run without CUDA (or with a CPU-only part) fails here, clearly
  Trainer trainer(cfg, log);
  return trainer.run();
}

}  // namespace tessera::train
