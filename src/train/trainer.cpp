#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "autograd/autograd.h"
#include "checkpoint/checkpoint.h"
#include "data/loader.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"

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
  return g;
}

namespace {

data::LoaderOptions loader_options(const Config& cfg, const std::string& pattern, bool shuffle) {
  data::LoaderOptions o;
  o.files = data::expand_glob(pattern);
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

std::string duration(double seconds) {
  char buf[32];
  const int64_t s = int64_t(seconds);
  std::snprintf(buf, sizeof buf, "%ldm%02lds", long(s / 60), long(s % 60));
  return buf;
}

// Deletes all but the newest `keep` step_*.h5 of the run, never the one `latest` names.
void prune(const fs::path& dir, int64_t keep, const std::string& latest) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) == 0 && e.path().extension() == ".h5") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (size_t i = 0; i + size_t(keep) < files.size(); ++i)
    if (files[i].filename() != latest) fs::remove(files[i]);
}

}  // namespace

double evaluate(const nn::GPT& model, const Config& cfg, const std::string& pattern,
                int64_t batches) {
  NoGradGuard no_grad;
  data::DataLoader loader(loader_options(cfg, pattern, false));
  const int64_t n = std::min(batches, loader.batches_per_epoch());
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    data::Batch b = loader.next();
    sum += model.loss(b.inputs, b.targets, false).item();
  }
  return sum / double(n);
}

TrainResult run_training(const Config& cfg, std::ostream& log) {
  cfg.validate();
  TESSERA_CHECK(cfg.train.device == "cpu", "train.device: '", cfg.train.device,
                "' is not available yet: training runs on the CPU backend (train.device: cpu)");
  const fs::path run_dir = fs::path(cfg.checkpoint.dir) / cfg.train.run_name;
  fs::create_directories(run_dir);

  manual_seed(uint64_t(cfg.train.seed));
  Generator init_gen(uint64_t(cfg.train.seed));
  nn::GPT model(model_config(cfg.model, cfg.train), init_gen);
  std::vector<NamedParam> params = named_params(model.parameters());
  AdamW opt(params, {.lr = cfg.optim.lr, .beta1 = cfg.optim.beta1, .beta2 = cfg.optim.beta2,
                     .eps = cfg.optim.eps, .weight_decay = cfg.optim.weight_decay});
  const ScheduleOptions sched{.name = cfg.optim.schedule, .lr = cfg.optim.lr,
                              .min_lr = cfg.optim.min_lr, .warmup_steps = cfg.optim.warmup_steps,
                              .max_steps = cfg.train.max_steps};
  data::DataLoader loader(loader_options(cfg, cfg.data.train, true));
  const int64_t accum = cfg.grad_accum_steps();
  const int64_t B = cfg.train.batch_size, T = cfg.sequence_length();

  int64_t step = 0, tokens_seen = 0;
  if (!cfg.checkpoint.init.empty()) {
    const std::string path = resolve_checkpoint(cfg.checkpoint.init);
    load_model_into(path, model.parameters());
    log << "init: weights from " << path << "\n";
  }
  std::string resume = cfg.checkpoint.resume;
  if (resume == "auto") resume = fs::exists(run_dir / "latest") ? run_dir.string() : "";
  if (!resume.empty()) {
    const std::string path = resolve_checkpoint(resume);
    CheckpointData ck = load_checkpoint(path);
    load_model_into(path, model.parameters());
    std::map<std::string, Tensor> saved(ck.optimizer.begin(), ck.optimizer.end());
    std::vector<StateEntry> state;
    for (const NamedParam& p : params) {
      auto m = saved.find(p.name + "/m"), v = saved.find(p.name + "/v");
      TESSERA_CHECK(m != saved.end() && v != saved.end(), path, ": no optimizer state for ",
                    p.name);
      state.push_back({p.name, m->second, v->second, Tensor()});
    }
    opt.load_state(state);
    step = ck.trainer_ints.at("step");
    tokens_seen = ck.trainer_ints.at("tokens_seen");
    opt.set_step_count(ck.trainer_ints.at("optimizer_step"));
    default_generator().set_state(ck.rng.at("default"));
    loader.set_state({uint64_t(ck.data.at("seed")), ck.data.at("epoch"), ck.data.at("position")});
    log << "resume: " << path << " at step " << step << "\n";
  }

  log << "model: " << model.num_parameters() << " parameters; " << accum
      << " micro-batch(es) of " << B << " x " << T << " per step; run dir " << run_dir.string()
      << "\n";
  std::ofstream metrics;
  if (cfg.log.metrics) {
    metrics.open(run_dir / "metrics.jsonl", std::ios::app);
    TESSERA_CHECK(metrics.good(), "cannot write ", (run_dir / "metrics.jsonl").string());
  }
  auto emit = [&](const std::string& json) {
    if (metrics.is_open()) metrics << json << "\n" << std::flush;
  };

  auto save = [&](int64_t done) {
    CheckpointData ck;
    ck.model = model.parameters();
    for (const StateEntry& e : opt.state()) {
      ck.optimizer.emplace_back(e.name + "/m", e.m);
      ck.optimizer.emplace_back(e.name + "/v", e.v);
    }
    ck.trainer_ints = {{"step", done}, {"tokens_seen", tokens_seen},
                       {"optimizer_step", opt.step_count()}};
    ck.rng["default"] = default_generator().state();
    const data::LoaderState ls = loader.state();
    ck.data = {{"seed", int64_t(ls.seed)}, {"epoch", ls.epoch}, {"position", ls.position}};
    ck.config_yaml = to_yaml(cfg);
    char name[32];
    std::snprintf(name, sizeof name, "step_%08ld.h5", long(done));
    save_checkpoint((run_dir / name).string(), ck);
    write_latest(run_dir.string(), name);
    prune(run_dir, std::max<int64_t>(cfg.checkpoint.keep, 1), name);
    log << "checkpoint: " << (run_dir / name).string() << "\n";
    return (run_dir / name).string();
  };

  TrainResult result;
  result.steps = step;
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = step;
  for (; step < cfg.train.max_steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    double loss_sum = 0;
    for (int64_t micro = 0; micro < accum; ++micro) {
      data::Batch b = loader.next();
      Tensor loss = model.loss(b.inputs, b.targets, true);
      loss_sum += loss.item();
      backward(accum == 1 ? loss : ops::scale(loss, 1.0 / double(accum)));
    }
    const double norm = clip_grad_norm(params, cfg.optim.grad_clip);
    const double lr = lr_at(sched, step);
    opt.step(lr);
    opt.zero_grad();
    tokens_seen += B * T * accum;
    const double loss = loss_sum / double(accum);
    TESSERA_CHECK(std::isfinite(loss), "step ", step, ": loss is ", loss,
                  " (diverged); lower optim.lr or resume from an earlier checkpoint");
    const int64_t done = step + 1;
    result.steps = done;
    result.last_train_loss = loss;

    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (done % std::max<int64_t>(cfg.log.interval, 1) == 0 || done == cfg.train.max_steps ||
        step == first_step) {
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double eta = elapsed / double(done - first_step) * double(cfg.train.max_steps - done);
      char line[256];
      std::snprintf(line, sizeof line,
                    "step %5ld/%ld | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | eta %s",
                    long(done), long(cfg.train.max_steps), loss, lr, norm,
                    double(B * T * accum) / dt, duration(eta).c_str());
      log << line << std::endl;
      emit("{\"step\": " + std::to_string(done) + ", \"loss\": " + json_number(loss) +
           ", \"lr\": " + json_number(lr) + ", \"grad_norm\": " + json_number(norm) +
           ", \"tokens_per_s\": " + json_number(double(B * T * accum) / dt) +
           ", \"tokens\": " + std::to_string(tokens_seen) + "}");
    }
    const bool last = done == cfg.train.max_steps;
    if (cfg.eval.interval > 0 && (done % cfg.eval.interval == 0 || last)) {
      const double val = evaluate(model, cfg, cfg.data.val, cfg.eval.steps);
      result.last_val_loss = val;
      char line[128];
      std::snprintf(line, sizeof line, "step %5ld | val loss %.4f | val ppl %.2f", long(done), val,
                    std::exp(val));
      log << line << std::endl;
      emit("{\"step\": " + std::to_string(done) + ", \"val_loss\": " + json_number(val) +
           ", \"val_ppl\": " + json_number(std::exp(val)) + "}");
    }
    if ((cfg.checkpoint.interval > 0 && done % cfg.checkpoint.interval == 0) || last)
      result.last_checkpoint = save(done);
  }
  return result;
}

}  // namespace tessera::train
