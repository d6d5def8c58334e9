// Trainer's checkpoint side: saving a step (in the step or in the background), restoring one
// (--resume, a rollback), and the checks a resumed checkpoint passes. See trainer.cpp.
#include "train/trainer_impl.h"

namespace tessera::train {

void Trainer::restore(const std::string& path, const CheckpointData& ck, bool with_history) {
  if (lora_) {
    TESSERA_CHECK(!ck.adapter.empty(), "checkpoint ", path, " is a full checkpoint, but this run "
                  "trains LoRA adapters (lora.rank > 0): resume it without lora, or pass it as "
                  "--init");
    peft::check_base(ck.adapter, path, base_path_, base_fingerprint_);
  } else {
    TESSERA_CHECK(ck.adapter.empty(), "checkpoint ", path, " holds LoRA adapters: resume it with "
                  "its config's lora section (lora.rank > 0)");
  }
  const std::optional<Config> stored =
      with_history ? std::optional(check_resumed_config(path, ck)) : std::nullopt;
  // Everything is checked before anything changes: the run state, then the optimizer's entries.
  const RunState s = get_run_state(ck, path, cfg_.tokens_per_step(world_), B_);
  TESSERA_CHECK(!with_history || s.step <= cfg_.train.max_steps, "checkpoint ", path, " is at step ",
                s.step, ", past train.max_steps (", cfg_.train.max_steps, "): raise it "
                "(--max-steps) to train on from there");
  // The checkpoint's generators go on (data order, dropout): another seed would change nothing
  // but the config stored with the next checkpoint.
  TESSERA_CHECK(!with_history || s.rng.seed == uint64_t(cfg_.train.seed), "checkpoint ", path,
                " was trained with train.seed ", s.rng.seed, " but this run sets ", cfg_.train.seed,
                ": a resumed run continues the checkpoint's data order and dropout; set "
                "train.seed: ",
                s.rng.seed, ", or start a new run from its weights with --init");
  if (with_history && rank_ == 0)
    for (const std::string& note : {newer_checkpoints_note(run_dir_.string(), path, s.step),
                                    schedule_change_note(*stored, cfg_, s.step, path)})
      if (!note.empty()) out_->log() << note << "\n";
  // The average is checked and taken before the weights change (a checkpoint without one, from a
  // run without train.ema_decay, starts it at its weights).
  const bool averaged = ema_ && ema_->take(ck, path);
  load_model_into(ck, path, lora_ ? lora_->parameters() : model_.parameters());
  if (ema_ && !averaged) {
    ema_->restart();
    if (rank_ == 0)
      out_->log() << "train.ema_decay: " << path << " holds no average of the weights; it "
                  << "starts at its weights\n";
  }
  opt_->load_state(ck.optimizer, path);
  opt_->set_step_count(s.optimizer_step);
  step_ = s.step;
  tokens_seen_ = s.tokens_seen;
  dropout_seed_ = s.rng.seed;
  default_generator().set_state({dropout_key(s.rng.seed, rank_), s.rng.offset});
  loader_.set_state(s.data);
  detector_.set_windows(s.loss_window, s.log_norm_window);
  lineage_ = s.lineage;
  if (with_history) {
    history_ = s.history;
    out_->log() << "resume: " << path << " at step " << step_;
    if (s.world != world_) out_->log() << " (written by " << s.world << " rank(s), now " << world_ << ")";
    out_->log() << "\n";
  }
}

// A resumed run continues the same model: the checkpoint's model and lora sections (dropout
// aside) must be the config's, or the weights would load into another architecture whose tensors
// happen to have the same shapes (n_head, attention kind, norm_eps, alpha, ...).
Config Trainer::check_resumed_config(const std::string& path, const CheckpointData& ck) const {
  const Config stored = parse_stored_config(ck.config_yaml, path + " (stored config)");
  std::string diff = model_difference(stored.model, cfg_.model), section = "model";
  if (diff.empty() && lora_) {
    const std::string d = config_schema::first_difference(stored.lora, cfg_.lora, {"dropout"});
    if (!d.empty()) diff = "lora." + d, section = "lora";
  }
  TESSERA_CHECK(diff.empty(), "checkpoint ", path, " was trained with another ", section,
                " than this config's (", diff, ", the checkpoint's first): resume it with its own ",
                section, " section, or start a new run from its weights with --init");
  // The data cursor counts windows of the checkpoint's length: another length would read another
  // shuffle from a position that meant something else (the tokens per step can still agree).
  const int64_t T = stored.sequence_length();
  TESSERA_CHECK(T == T_, "checkpoint ", path, " was trained on windows of ", T, " tokens but this "
                "run takes ", T_, " (", cfg_.train.seq_len > 0 ? "train.seq_len" : "model.block_size",
                "): a resumed run continues the checkpoint's data order, counted in windows; set "
                "train.seq_len: ", T, ", or start a new run from its weights with --init");
  // packed and documents cut the same windows (attention within documents is the model's).
  TESSERA_CHECK(data::parse_window_mode(stored.data.windows, path + ": data.windows") ==
                    data::parse_window_mode(cfg_.data.windows, "data.windows"),
                "checkpoint ", path, " was trained with data.windows: ", stored.data.windows,
                " but this run sets ", cfg_.data.windows,
                ": a resumed run continues the checkpoint's data order, counted "
                "in its windows; set data.windows: ",
                stored.data.windows, ", or start a new run from its weights with --init");
  if (rank_ != 0) return stored;
  if (stored.data.windows != cfg_.data.windows)
    out_->log() << "data.windows: " << cfg_.data.windows << " from here on, the checkpoint " << path
                << " trained with " << stored.data.windows << " (the same windows; attention "
                << (cfg_.data.windows == "documents" ? "now stays within" : "now crosses")
                << " documents)\n";
  const std::string moved =
      data_change_note(stored.data.train, cfg_.data.train, loader_.options().files, path);
  if (!moved.empty()) out_->log() << moved << "\n";
  return stored;
}

std::string Trainer::save(int64_t done) {
  finish_save();  // one write at a time, in order: the previous save's commits first
  CheckpointData ck;
  if (lora_) {
    ck.model = lora_->parameters();  // the adapters alone: the base stays where it came from
    ck.adapter = peft::adapter_attrs(*lora_, base_path_, base_fingerprint_);
  } else {
    ck.model = model_.parameters();
  }
  // The getters may be collectives (a ZeRO gather): every rank runs all of them, in order, even
  // when rank 0's write fails half way, so no rank is left waiting.
  std::vector<StateTensor> state = opt_->state();
  size_t next = 0;
  for (StateTensor& e : state)
    ck.optimizer_sources.emplace_back(e.key, [&next, &e] { ++next; return e.get(); });
  RunState s;
  s.step = done, s.tokens_seen = tokens_seen_, s.optimizer_step = opt_->step_count();
  s.rng = {dropout_seed_, default_generator().state().offset};
  s.data = loader_.state();
  s.loss_window = detector_.losses(), s.log_norm_window = detector_.log_norms();
  s.history = history_;
  s.world = world_, s.tokens_per_step = cfg_.tokens_per_step(world_);
  s.lineage = lineage_;
  put_run_state(s, ck);
  if (ema_) ema_->put(ck);
  ck.config_yaml = to_yaml(cfg_);
  const std::string name = checkpoint_name(done), path = (run_dir_ / name).string();
  // The commit: the file, then `latest`, then retention; here, or on the write thread.
  auto commit = [dir = run_dir_.string(), name,
                 keep = RetentionPolicy{.keep = cfg_.checkpoint.keep,
                                        .milestone_interval = cfg_.checkpoint.milestone_interval}](
                    const CheckpointData& data) { commit_checkpoint(dir, name, data, keep); };
  std::string error, note;
  if (rank_ == 0) {
    try {
      if (cfg_.checkpoint.async) {
        const auto t0 = std::chrono::steady_clock::now();
        CheckpointData staged = stage_on_host(ck);
        char line[96];
        std::snprintf(line, sizeof line, " (host copy in %.3f s; written in the background)",
                      seconds_since(t0));
        note = line;
        writer_.start(name, [commit, staged = std::move(staged)] { commit(staged); });
      } else {
        commit(ck);
      }
    } catch (const std::exception& e) {  // a tessera::Error, or std::filesystem's (pruning)
      error = e.what();
    }
  }
  for (; next < state.size();) ck.optimizer_sources[next].second();
  fail_together(error, "rank 0 could not save checkpoint " + name);
  out_->log() << "checkpoint: " << path << note << "\n";
  return path;
}

void Trainer::stop_on_request(int64_t done, int own_signal, bool saved) {
  // The rank that got the signal knows which; the others learn it here.
  const int sig = world_ > 1
                      ? int(comm_->all_reduce_host({double(own_signal)}, dist::ReduceOp::Max)[0])
                      : own_signal;
  if (!saved) result_.last_checkpoint = save(done);
  result_.stop_signal = sig;
  out_->emit("{\"step\": " + std::to_string(done) +
             ", \"event\": \"stop\", \"reason\": " + json_string(signal_name(sig)) + "}");
  out_->line("stopped at step " + std::to_string(done) + " on " + signal_name(sig) + " (" +
             (own_signal ? "received here" : "received by another rank") + "): checkpoint " +
             result_.last_checkpoint + "; continue with --resume auto");
}

void Trainer::finish_save() {
  if (!cfg_.checkpoint.async) return;
  const std::string what = writer_.what();
  const bool pending = writer_.pending();
  std::string error = writer_.wait();
  if (pending && error.empty()) {  // how long the write took, and whether the run waited for it
    char line[200];
    const double waited = writer_.waited_seconds();
    std::snprintf(line, sizeof line, "checkpoint: %s written in the background in %.2f s",
                  what.c_str(), writer_.job_seconds());
    out_->log() << line;
    if (waited >= 0.01) {
      std::snprintf(line, sizeof line, "; waited %.2f s for it", waited);
      out_->log() << line;
    }
    out_->log() << "\n";
  }
  if (!error.empty())
    error = "checkpoint.async: the background write of " + what +
            " failed, so training stopped at step " + std::to_string(step_) +
            " (resume from the newest checkpoint that committed with --resume auto): " + error;
  fail_together(error, "rank 0's background checkpoint write failed: training stopped at step " +
                           std::to_string(step_));
}

}  // namespace tessera::train
