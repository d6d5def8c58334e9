// The training loop. One optimizer step, on every rank:
//   micro-batches (skipping rolled-back data, poisoning injected micro-batches) -> forward,
//   backward (the last one syncing gradients across ranks) -> global loss and gradient norm ->
//   spike check -> (spike: no update, roll back) | (clip, update, log, eval, checkpoint).
//
// Its helpers, one concern each: the optimizer behind one interface (optim/optimizer.h: AdamW over
// flat buffers with data-parallel sync and ZeRO-1, or LOMO/AdaLomo), the checkpoint fields
// (run_state.h), the rollback files (rollback.h), console and metrics (report.h), the device
// (device.h), the ranks (distributed/communicator.h).
//
// Ranks. Every rank checks first that it was given rank 0's config and shards and read the
// checkpoints rank 0 read (--resume, checkpoint.init; rank_agreement.h).
// Every rank builds the same model from the same seed, reads its own slice of every
// micro-batch, and takes every decision from values all ranks share (the loss averaged over ranks,
// the global gradient norm, rank 0's copy of both), so they roll back, skip and stop together.
// Rank 0 does all the writing: checkpoints, `latest`, metrics, console lines, deletions; the others
// wait for it at barriers. Each rank draws its own dropout masks: rank r's generator has the run's
// seed with r folded in; a checkpoint holds rank 0's (seed, offset), and the offsets of all ranks
// move together.
//
// A rollback restores everything but RunHistory, which records the rollbacks themselves and is
// saved again with the checkpoint rolled back to. The LR schedule position comes back with the
// checkpoint and skipped data does not advance it: after a rollback each step runs at the LR the
// schedule gives that step, so the run is the clean run on the data minus the skipped windows
// (going on from the spike's LR instead left a 120-step test run 17% above the clean run's loss,
// because every replayed step ran further down the cosine).
#include "train/trainer_impl.h"

namespace tessera::train {

namespace {

// Resets the default generator (dropout) to this rank's stream; returns the seed for the init one.
uint64_t seed_default_generator(int64_t seed, int rank) {
  manual_seed(dropout_key(uint64_t(seed), rank));
  return uint64_t(seed);
}

std::unique_ptr<dist::Communicator> communicator(const Config& cfg) {
  const dist::LaunchInfo launch = dist::detect_launch();
  return dist::make_communicator({.backend = cfg.dist.backend, .init = cfg.dist.init,
                                  .timeout_s = cfg.dist.timeout,
                                  .device = placement(cfg, launch.local_rank).device},
                                 launch);
}
}  // namespace

Trainer::~Trainer() {
  // Unwinding (a stop after too many spikes, an error): the last save still commits, and its
  // failure, if any, is said.
  if (!writer_.pending()) return;
  const std::string what = writer_.what(), error = writer_.wait();
  if (error.empty() || !out_) return;
  try {
    out_->line("checkpoint: the background write of " + what + " failed: " + error);
  } catch (...) {  // a destructor does not throw
  }
}

Trainer::Trainer(const Config& cfg, std::ostream& log)
    : comm_(communicator(cfg)),
      resumed_(read_resumed(cfg, *comm_, log, &resume_error_, &lock_)),
      cfg_(resolve_tokens_per_step(cfg, resumed_, comm_->rank(), comm_->world(), log)),
      rank_(comm_->rank()),
      world_(comm_->world()),
      run_dir_(fs::path(cfg_.checkpoint.dir) / cfg_.train.run_name),
      init_gen_(seed_default_generator(cfg_.train.seed, rank_)),
      model_(model_config(cfg_), init_gen_),
      params_(named_params(model_.parameters())),
      sched_(schedule_options(cfg_)),
      accum_(cfg_.grad_accum_steps(world_)),  // names the numbers when they do not divide
      B_(cfg_.train.batch_size),
      T_(cfg_.sequence_length()),
      step_windows_(accum_ * world_ * B_),
      loader_([&] {
        data::LoaderOptions o = loader_options(cfg_, "data.train", cfg_.data.train, true);
        o.rank = rank_, o.world = world_, o.step_windows = step_windows_;
        return o;
      }()),
      detector_({.window = cfg_.spike.window, .threshold = cfg_.spike.threshold}) {
  dropout_seed_ = uint64_t(cfg_.train.seed);
  fail_together(resume_error_,
                "another rank could not read the checkpoint to resume from (its error names it)");
  // A run that does not resume must not write over another run's checkpoints or metrics: its saves
  // would replace their files and `latest`, a later --resume auto could continue from either run,
  // and its metrics lines would follow the old run's in one metrics.jsonl.
  fail_together(rank_ == 0 && cfg_.checkpoint.resume.empty() ? earlier_run(run_dir_) : "",
                "rank 0 refused the run directory " + run_dir_.string());
  // The validation shards are opened (and every id checked) now, not at the first evaluation.
  std::string val_error;
  std::vector<std::string> val_notes;
  RankData data{.train_files = loader_.options().files,
                .train_windows = loader_.windows_per_epoch(),
                .val_files = {},
                .train_contents = loader_.contents_fingerprint()};
  if (cfg_.eval.interval > 0) try {
      // As evaluations read it: data.val needs to hold one window, not a batch.
      const data::DataLoader val(window_loader_options(cfg_, cfg_.data.val));
      val_notes = validation_notes(cfg_, val, loader_.options().files);
      val_notes.push_back(loss_mask_note(loader_, &val));
      val_notes.push_back(example_windows_note(loader_, &val));
      data.val_files = val.options().files;
      data.val_contents = val.contents_fingerprint();
    } catch (const Error& e) {
      val_error = e.what();
    }
  fail_together(val_error, "another rank could not open data.val");
  // The tokenizer that decodes samples is read now, not at the first one (rank 0 draws them).
  std::string sample_error;
  if (cfg_.log.sample_interval > 0 && rank_ == 0) try {
      samples_.emplace(cfg_);
    } catch (const Error& e) {
      sample_error = e.what();
    }
  fail_together(sample_error, "rank 0 could not read the tokenizer its samples need");
  // Every rank scores its share of eval.choices' items at each evaluation, so each reads them now.
  std::string choices_error;
  if (cfg_.eval.interval > 0 && !cfg_.eval.choices.empty()) try {
      choices_.emplace(cfg_);
    } catch (const Error& e) {
      choices_error = e.what();
    }
  fail_together(choices_error, "another rank could not read eval.choices");
  std::string answers_error;  // eval.answers likewise
  if (cfg_.eval.interval > 0 && !cfg_.eval.answers.empty()) try {
      answers_.emplace(cfg_);
    } catch (const Error& e) {
      answers_error = e.what();
    }
  fail_together(answers_error, "another rank could not read eval.answers");
  if (cfg_.eval.interval <= 0)
    for (std::string note :
         {loss_mask_note(loader_, nullptr), example_windows_note(loader_, nullptr)})
      val_notes.push_back(std::move(note));
  val_notes.push_back(documents_note(cfg_, model_.config().document_separator));
  // Built on the CPU in f32 above (the same initial weights on every device and rank), with the
  // --init weights and the adapters: NF4 codes come from the f32 weights and the base's fingerprint
  // is the f32 checkpoint's, whatever the device. Then placed (peft/lora.h: f32 adapters). Read
  // before the ranks compare what they start from: the same path may name other files elsewhere.
  std::string init_error;
  // A full checkpoint to resume replaces every weight (a requeued job keeps its checkpoint.init).
  const bool init_replaced = resumed_ && cfg_.lora.rank == 0;
  if (!cfg_.checkpoint.init.empty() && !init_replaced) try {
      base_path_ = load_init_weights(cfg_, model_.parameters());
      if (world_ > 1) data.init = weights_identity(model_.parameters());
    } catch (const std::exception& e) {
      init_error = e.what();
    }
  fail_together(init_error, "another rank could not load checkpoint.init " + cfg_.checkpoint.init +
                                " (its error names it)");
  if (world_ > 1) data.resumed = resumed_identity(resumed_);  // hashed only to be compared
  // Before the first collective of another size: every rank's config, shards and checkpoints are
  // rank 0's.
  check_ranks_agree(*comm_, cfg_, data);
  next_segment_id_ = agreed_segment_id(*comm_);
  // Every rank has rank 0's config now: all stop here together, before the run dir is touched.
  // LOMO updates each parameter as its gradient is ready: none to accumulate into (Lv et al. 2023).
  TESSERA_CHECK(
      !cfg_.optim.updates_in_backward() || accum_ == 1, "optim.name '", cfg_.optim.name,
      "' updates during backward and cannot accumulate gradients: train.total_batch_size (",
      cfg_.tokens_per_step(world_),
      " tokens) must be 0 or train.batch_size x sequence "
      "length x world = ",
      B_, " x ", T_, " x ", world_, " = ", B_ * T_ * world_);
  std::string dir_error;
  if (rank_ == 0) {
    for (const std::string& note : val_notes)
      if (!note.empty()) log << note << "\n";
    if (const std::string note = rollback_reach_note(cfg_); !note.empty()) log << note << "\n";
    if (cfg_.checkpoint.async && cfg_.train.device == "cpu")
      log << "note: checkpoint.async on the CPU: the background write shares the cores with "
             "training, which measured no faster than saving in the step (docs/checkpoints.md, "
             "\"Saving in the background\")\n";
    try {
      fs::create_directories(run_dir_);
      if (!lock_) lock_ = std::make_unique<RunLock>(run_dir_.string(), log);  // one train at a time
      for (const std::string& p : remove_interrupted_writes(run_dir_.string()))
        log << "warning: removed " << p << " (a checkpoint write that did not finish)\n";
    } catch (const Error& e) {  // names the directory or file
      dir_error = e.what();
    } catch (const std::exception& e) {  // std::filesystem's errors name the path
      dir_error = "cannot prepare the run directory " + run_dir_.string() + ": " + e.what();
    }
  }
  // Also the barrier: the run dir exists and holds no half-written file.
  fail_together(dir_error, "rank 0 could not prepare the run directory " + run_dir_.string());
  out_ = std::make_unique<Report>(log, run_dir_ / "metrics.jsonl", cfg_.log.metrics, rank_ == 0);
  if (!cfg_.checkpoint.init.empty() && init_replaced)
    out_->log() << "init: " << cfg_.checkpoint.init << " not read: the weights come from "
                << resumed_->path << "\n";
  if (!base_path_.empty()) {
    out_->log() << "init: weights from " << base_path_ << "\n";
    // Computed before any quantisation: the identity of the checkpoint's weights.
    if (cfg_.lora.rank > 0) base_fingerprint_ = peft::fingerprint(model_.parameters());
  }
  if (cfg_.lora.rank > 0)
    lora_ = std::make_unique<peft::Lora>(model_, lora_options(cfg_.lora), init_gen_);
  unfused_ = nn::unfused_requested();
  if (unfused_ && !lora_) model_.set_hook(&nn::unfused_linears());
  if (const Placement where = placement(cfg_, comm_->local_rank()); where.device.is_cuda()) {
    place_model(model_, where.device, where.dtype);
    if (lora_) lora_->place(where.device);
    // MFU on a GPU whose bf16 peak is known, for full-model training (LoRA's frozen base takes no
    // weight gradients: its step is not 6 N per token).
    const double peak = peak_bf16_flops(cuda::device_name(where.device.index));
    if (!lora_ && peak > 0) mfu_per_token_ = training_flops_per_token(model_, T_) / peak;
  }
  std::string dpo_error;  // the reference model, read where the policy is placed
  if (cfg_.train.objective == "dpo") try {
      dpo_ = std::make_unique<Dpo>(cfg_, model_, lora_.get());
      std::ostream& log = out_->log();
      log << "dpo: " << cfg_.train.dpo_loss << " loss, beta " << cfg_.train.dpo_beta;
      if (cfg_.train.dpo_loss == "simpo") log << ", gamma " << cfg_.train.simpo_gamma;
      log << ", label smoothing " << cfg_.train.dpo_label_smoothing << ", nll weight "
          << dpo_->options().nll_weight << "; reference: " << dpo_->reference() << "\n";
    } catch (const std::exception& e) {
      dpo_error = e.what();
    }
  fail_together(dpo_error, "another rank could not build the DPO reference model");
  params_ = named_params(lora_ ? lora_->parameters() : model_.parameters());
  build_optimizer();
  if (cfg_.train.ema_decay > 0) ema_.emplace(params_, cfg_.train.ema_decay, flat_.get());
  // The micro-batches a clean run reads at (1-based) step n start at windows (n - 1) S + k B;
  // spike.inject_rank r poisons only the one rank r reads first in the step.
  TESSERA_CHECK(cfg_.spike.inject_rank < step_windows_ / B_, "spike.inject_rank ",
                cfg_.spike.inject_rank, " names no micro-batch: a step has ", step_windows_ / B_,
                " (", world_, " rank(s) x ", accum_, " micro-batch(es))");
  for (int64_t n : parse_step_list(cfg_.spike.inject_steps)) {
    int64_t first = 0;  // a step whose windows are past 2^63 is never reached
    if (__builtin_mul_overflow(n - 1, step_windows_, &first) || first > INT64_MAX - step_windows_)
      continue;
    for (int64_t k = 0; k < step_windows_ / B_; ++k)
      if (cfg_.spike.inject_rank < 0 || k == cfg_.spike.inject_rank)
        poisoned_.insert(first + k * B_);
  }

  if (resumed_) {
    restore(resumed_->path, resumed_->data, true);
    resumed_.reset();  // its tensors are in the model and optimizer now
  }
  begin_segment();

  if (unfused_)
    out_->log() << "TESSERA_UNFUSED=1: the loss's gradient in its backward"
                << (lora_ ? "; the model's fused paths kept: LoRA's hook computes the Linears"
                          : ", the model's unfused paths (nn/unfused.h)")
                << "\n";
  if (lora_)
    out_->log() << "lora: " << lora_->adapter_parameters()
                << " trainable adapter parameters beside " << lora_->base_parameters()
                << " frozen\n";
  out_->log() << "model: " << (lora_ ? lora_->base_parameters() : model_.num_parameters())
              << " parameters"
              << (cfg_.model.n_expert > 0
                      ? " (" + std::to_string(std::llround(cfg_.model.active_parameter_count())) +
                            " a token meets: " + std::to_string(cfg_.model.expert_top_k) + " of " +
                            std::to_string(cfg_.model.n_expert) + " experts" +
                            (cfg_.model.shared_expert_hidden > 0 ? " and the shared one)" : ")")
                      : std::string())
              << "; " << accum_ << " micro-batch(es) of " << B_ << (dpo_ ? " pairs x 2" : "")
              << " x " << T_ << " per step on each of " << world_ << " rank(s) ("
              << comm_->backend() << "); run dir " << run_dir_.string() << "\n";
  out_->log() << describe(sched_) << "\n";
  report_memory();
}

void Trainer::build_optimizer() {
  const OptimConfig& o = cfg_.optim;
  if (!o.updates_in_backward()) {
    const FlatAdamWOptions options = flat_adamw_options(o, model_.config(), cfg_.dist.zero == 1);
    const std::vector<std::string>& muon = options.muon;
    if (!muon.empty()) {
      int64_t in_muon = 0, rest = 0;
      for (const NamedParam& p : params_)
        (std::find(muon.begin(), muon.end(), p.name) != muon.end() ? in_muon : rest) +=
            p.param.numel();
      out_->log() << "muon: " << muon.size() << " block matrices (" << in_muon
                  << " parameters) orthogonalised; AdamW for the other "
                  << params_.size() - muon.size() << " tensors (" << rest
                  << " parameters: embeddings, head, norms, biases"
                  << (cfg_.model.n_expert > 0 ? ", the experts' routers" : "") << ")";
      if (!options.muon_blocks.empty())
        out_->log() << "; c_attn orthogonalised as its q, k and v rows";
      if (world_ > 1)
        out_->log() << "; each matrix orthogonalised by one of the " << world_
                    << " ranks, which holds its momentum";
      out_->log() << "\n";
    }
    flat_ = std::make_unique<FlatParams>(
        params_,
        FlatOptions{.bucket_bytes = int64_t(cfg_.dist.bucket_mb * (1 << 20)), .pad = world_});
    opt_ = std::make_unique<FlatAdamW>(*flat_, *comm_, options);
  } else {
    opt_ = std::make_unique<LomoStep>(
        params_, LomoOptions{.name = o.name, .weight_decay = o.weight_decay,
                             .clip_value = o.clip_value, .loss_scale = o.loss_scale,
                             .max_norm = o.grad_clip},
        *comm_);
  }
}

// What the run holds: weights (the frozen base at its stored size, NF4 when quantised), trainable
// adapters, optimizer state (this rank's: about 1/world of it with ZeRO-1). Activations come and go
// within a step: the peak is reported at the end.
void Trainer::report_memory() {
  int64_t weights = 0;
  if (lora_)
    weights = lora_->base_bytes();  // quantised weights at their packed size
  else
    for (const auto& [n, t] : model_.parameters()) weights += int64_t(t.nbytes());
  std::ostream& log = out_->log();
  log << "memory: weights " << mib(weights);
  if (lora_)
    log << " (frozen" << (lora_->quantized() ? ", " + cfg_.lora.quantize : std::string()) << ")"
        << " | adapters " << mib(lora_->adapter_bytes()) << " (rank " << cfg_.lora.rank << ", "
        << cfg_.lora.targets << ")";
  log << " | optimizer state " << mib(opt_->state_bytes());
  if (world_ > 1 && cfg_.dist.zero == 1)
    log << " per rank (ZeRO-1 over " << world_ << " ranks)";
  else if (world_ > 1 && cfg_.optim.name == "muon")
    log << " per rank (Muon's momenta split over " << world_ << " ranks)";
  log << "\n";
}

data::Batch Trainer::next_batch(int64_t* window) {
  // Jump over rolled-back ranges (they may touch or nest, so repeat until clear).
  for (bool moved = true; moved;) {
    moved = false;
    const int64_t i = loader_.window_index();
    for (const auto& [begin, end] : history_.skips)
      if (i >= begin && i < end) {
        loader_.seek(end);
        moved = true;
      }
  }
  *window = loader_.window_index() + rank_ * B_;
  data::Batch b = loader_.next();
  if (poisoned_.count(*window) && cfg_.spike.inject_kind == "corrupt") {
    // Uniform random ids, a pure function of (seed, window): the same corrupt batch whenever this
    // position is read, on any rank.
    int32_t* in = b.inputs.data<int32_t>();
    int32_t* tg = b.targets.data<int32_t>();
    const uint64_t stream = (uint64_t(0x494e4a31u) << 32) | uint64_t(*window);  // "INJ1"
    for (int64_t k = 0; k < b.inputs.numel(); ++k) {
      Philox4 r = philox4x32_10(uint64_t(k), uint64_t(cfg_.train.seed), stream);
      in[k] = int32_t(r.v[0] % uint32_t(cfg_.model.vocab_size));
      tg[k] = int32_t(r.v[1] % uint32_t(cfg_.model.vocab_size));
    }
  }
  return b;
}

Tensor Trainer::micro_loss(const data::Batch& b, int64_t window, double weight,
                           nn::RouterLosses* router, PairSums* pairs) {
  // Batches come from the loader on the host; the model uploads them and checks their ids there.
  // AdamW differentiates each micro-batch's loss once, with dy = weight (forward_backward), so
  // the loss computes the logits' gradient in its forward (the fused classifier). LOMO's
  // two-pass clipping runs the backward twice: not fused. Nor under TESSERA_UNFUSED=1, nor for a
  // micro-batch that scores nothing (weight 0).
  const double fused_dy = !cfg_.optim.updates_in_backward() && !unfused_ ? weight : 0.0;
  Tensor loss = dpo_ ? dpo_->loss(b.inputs, b.targets, pairs, router)
                     : model_.loss(b.inputs, b.targets, true, fused_dy, router);
  if (poisoned_.count(window) && cfg_.spike.inject_kind != "corrupt") {
    const double s = cfg_.spike.inject_kind == "nan" ? std::nan("") : cfg_.spike.inject_scale;
    loss = ops::scale(loss, s);
  }
  return loss;
}

std::vector<double> Trainer::micro_weights(const std::vector<data::Batch>& batches) {
  // A DPO loss is a mean over pairs, each micro-batch holding B of them.
  if (!loader_.loss_masked() || dpo_)
    return std::vector<double>(size_t(accum_), 1.0 / double(accum_));
  std::vector<double> scored;
  for (const data::Batch& b : batches) {
    const int32_t* t = b.targets.data<int32_t>();
    scored.push_back(double(std::count_if(t, t + b.targets.numel(),
                                          [](int32_t id) { return id != data::kIgnoreTarget; })));
  }
  double total = 0;
  for (double n : scored) total += n;
  if (world_ > 1) total = comm_->all_reduce_host({total}, dist::ReduceOp::Sum)[0];
  // Gradients are averaged over ranks: n x world / total is each micro-batch's share of the step.
  for (double& n : scored) n = total > 0 ? n * double(world_) / total : 0.0;
  return scored;
}

double Trainer::forward_backward(int64_t* first_window, double* balance, PairSums* pairs) {
  // The step's batches first (the loader's order is the same), so that with loss masks each
  // micro-batch's weight is known before its backward.
  std::vector<data::Batch> batches;
  std::vector<int64_t> windows(static_cast<size_t>(accum_), 0);
  for (int64_t micro = 0; micro < accum_; ++micro)
    batches.push_back(next_batch(&windows[size_t(micro)]));
  *first_window = windows[0] - rank_ * B_;
  const std::vector<double> weights = micro_weights(batches);
  // Each micro-batch's loss is kept where it was computed and all are read back once, after the
  // last backward: on CUDA, reading each at once would make the host wait for every forward.
  // A mixture's balancing losses the same way, beside them (a recomputed block keeps its own).
  const bool balanced = cfg_.model.n_expert > 0 && !cfg_.train.recompute;
  Tensor losses, balances;
  *pairs = {};
  for (int64_t micro = 0; micro < accum_; ++micro) {
    const double w = weights[size_t(micro)];
    nn::RouterLosses router;
    PairSums sums;
    Tensor loss = micro_loss(batches[size_t(micro)], windows[size_t(micro)], w,
                             balanced ? &router : nullptr, &sums);
    *pairs += sums;
    const Tensor& balance = router.balance;
    if (!losses.defined()) losses = Tensor::empty({accum_}, loss.options());
    losses.narrow(0, micro, 1).copy_(loss.detach().view({1}));
    if (balance.defined()) {
      if (!balances.defined()) balances = Tensor::empty({accum_}, balance.options());
      balances.narrow(0, micro, 1).copy_(balance.view({1}));
    }
    opt_->backward(w == 1.0 ? loss : ops::scale(loss, w), micro == accum_ - 1);
  }
  *balance = -1;
  if (balances.defined()) {
    double sum = 0;
    for (double b : balances.to(DType::F64).to(Device::cpu()).to_vector<double>()) sum += b;
    *balance = sum / double(accum_ * cfg_.model.n_layer);
  }
  const std::vector<double> l = losses.to(DType::F64).to(Device::cpu()).to_vector<double>();
  double loss_sum = 0;  // in micro-batch order, in double
  if (!loader_.loss_masked() || dpo_) {
    for (double x : l) loss_sum += x;
    return loss_sum / double(accum_);
  }
  for (size_t i = 0; i < l.size(); ++i) loss_sum += l[i] * weights[i];
  return loss_sum;  // this rank's part: the mean over ranks is the step's mean over its targets
}

std::vector<double> Trainer::agree(std::vector<double> v) {
  if (world_ == 1) return v;
  v = comm_->all_reduce_host(std::move(v), dist::ReduceOp::Average);
  // Adding zeros is exact: every rank ends with rank 0's bits, whatever the reduction order.
  for (double& x : v) x = rank_ == 0 ? x : 0.0;
  return comm_->all_reduce_host(std::move(v), dist::ReduceOp::Sum);
}

void Trainer::spike(int64_t first_window, const std::string& reason) {
  const int64_t at = step_ + 1;  // the step that spiked, as the log counts steps
  ++history_.rollbacks;
  const SpikeConfig& sc = cfg_.spike;
  char line[512];
  std::snprintf(line, sizeof line, "spike at step %ld: %s", long(at), reason.c_str());
  out_->line(line);
  if (history_.rollbacks > sc.max_rollbacks) {
    out_->emit("{\"step\": " + std::to_string(at) + ", \"event\": \"stop\", \"reason\": " +
               json_string(reason) + ", \"rollbacks\": " + std::to_string(history_.rollbacks - 1) +
               "}");
    finish_save();  // a checkpoint still being written is committed, and listed below
    const std::vector<CheckpointFile> kept = list_checkpoints(run_dir_.string());
    TESSERA_FAIL("spike at step ", at, " (", reason, ") after ", sc.max_rollbacks,
                 " rollbacks (spike.max_rollbacks): stopping. ",
                 kept.empty()
                     ? "No checkpoint was saved in " + run_dir_.string() +
                           "; lower optim.lr or raise spike.max_rollbacks and start again with "
                           "--resume auto (from step 0: its metrics.jsonl goes on after this "
                           "attempt's lines) or under another train.run_name"
                     : "The checkpoints in " + run_dir_.string() + " are intact (the newest: " +
                           fs::path(kept.back().path).filename().string() +
                           "); lower optim.lr or raise spike.max_rollbacks, then --resume auto");
  }
  // Skip from the spike's first window on: skip_batches global batches (optimizer steps), or by
  // default a thousandth of the run (PaLM skipped 200-500 batches of a ~250k-step run), at least
  // one. Whole steps: the same windows on any world size and accumulation (a part of a step would
  // leave the next steps straddling two of the clean run's, differently on each world size).
  // Saturated at the largest window (a huge train.max_steps): the rest of the data, not overflow.
  int64_t skip = 0;
  if ((sc.skip_batches > 0 && __builtin_mul_overflow(sc.skip_batches, step_windows_, &skip)) ||
      (sc.skip_batches == 0 &&
       __builtin_mul_overflow(std::max<int64_t>(1, cfg_.train.max_steps / 1000), step_windows_,
                              &skip)) ||
      skip > INT64_MAX - first_window)
    skip = INT64_MAX - first_window;
  history_.skips.emplace_back(first_window, first_window + skip);

  finish_save();  // the checkpoint being written may be the one to go back to
  // Rank 0's choice; every rank has read that file when this returns (its last collective).
  std::optional<RollbackTarget> target =
      agree_rollback_target(*comm_, run_dir_.string(), step_, sc.rollback_steps, lineage_,
                            out_->log());
  std::string to = "none";
  if (target) {
    std::string error;
    if (rank_ == 0) try {
        // `latest` first: a crash while the files after the target go leaves it naming a file
        // that is there (the target, saved again below with the rollback recorded).
        write_latest(run_dir_.string(), checkpoint_name(target->step));
        remove_checkpoints_after(run_dir_.string(), target->step, out_->log());
      } catch (const std::exception& e) {
        error =
            "rollback: cannot point `latest` at " + target->file.path +
            " or remove the checkpoints after it: " + e.what();
      }
    fail_together(error, "rank 0 could not remove the checkpoints after the rollback point " +
                             target->file.path);
    restore(target->file.path, target->file.data, false);
    begin_segment();
    to = std::to_string(step_);
  }
  if (sc.lr_factor != 1.0 && sc.lr_factor_steps > 0)
    history_.lr_factor_until = step_ + std::min(sc.lr_factor_steps, INT64_MAX - step_);
  // (step_ is still the last step done when there is no target)
  std::string text =
      "rollback " + std::to_string(history_.rollbacks) + "/" + std::to_string(sc.max_rollbacks) +
      ": " +
      (target ? "back to step " + to + " (" + target->file.path + ")"
              : "no checkpoint at or before step " + std::to_string(step_ - sc.rollback_steps) +
                    " to go back to, update skipped") +
      "; skipping windows [" + std::to_string(first_window) + ", " +
      std::to_string(first_window + skip) + ") of the data";
  if (history_.lr_factor_until > step_) {
    std::snprintf(line, sizeof line, "; lr x%g for %ld steps", sc.lr_factor,
                  long(sc.lr_factor_steps));
    text += line;
  }
  out_->line(text);
  out_->emit("{\"step\": " + std::to_string(at) + ", \"event\": \"rollback\", \"reason\": " +
             json_string(reason) + ", \"to_step\": " + (target ? to : "null") +
             ", \"skip_begin\": " + std::to_string(first_window) +
             ", \"skip_end\": " + std::to_string(first_window + skip) +
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

TrainResult Trainer::run() {
  const Device dev = model_device(model_);
  const int64_t held = memory_stats(dev).current_bytes;
  reset_peak_memory(dev);
  result_.steps = step_;
  start_ = std::chrono::steady_clock::now();
  first_step_ = step_;
  const int64_t stop = cfg_.train.stop_after > 0
                           ? std::min(cfg_.train.stop_after, cfg_.train.max_steps)
                           : cfg_.train.max_steps;
  // A DPO window is a pair: two rows, and the reference's forward on each (a third of 6 N; SimPO
  // has none).
  const int64_t tokens_per_step = step_windows_ * T_ * (dpo_ ? 2 : 1);
  const double mfu_per_token = mfu_per_token_ * (dpo_ && dpo_->has_reference() ? 4.0 / 3.0 : 1.0);
  if (step_ >= stop)
    out_->line("nothing to train: the run is at step " + std::to_string(step_) + " and stops at " +
               std::to_string(stop) + " (train.max_steps" +
               (stop < cfg_.train.max_steps ? ", train.stop_after" : "") + ")");
  StopSignals signals;  // SIGTERM, SIGINT, SIGUSR1: finish the step, save it, stop
  int64_t updates = 0;  // steps this process applied (replayed ones after a rollback included)
  while (step_ < stop) {
    const auto t0 = std::chrono::steady_clock::now();
    int64_t first_window = 0;
    double balance = -1;
    PairSums pairs;
    const double local = forward_backward(&first_window, &balance, &pairs);
    // The loss over the global batch and the global norm, identical on every rank.
    const std::optional<double> known = opt_->grad_norm();
    // Two flags ride along: rank 0's background checkpoint write failed (checkpoint.async), and
    // a stop signal reached this rank (the mean over ranks is nonzero when one reached any).
    std::vector<double> values = {local, known.value_or(0.0),
                                  rank_ == 0 && writer_.failed() ? 1.0 : 0.0,
                                  signals.received() ? 1.0 : 0.0, balance};
    for (double v : pairs.values()) values.push_back(v);
    const std::vector<double> shared = agree(std::move(values));
    const PairSums step_pairs = PairSums::from_values(shared, 5);  // means over ranks
    if (shared[2] != 0) finish_save();  // throws on every rank
    const bool stop_asked = shared[3] != 0;
    const double loss = shared[0];
    const std::optional<double> norm = known ? std::optional<double>(shared[1]) : std::nullopt;
    SpikeVerdict verdict;
    if (!clean(loss, norm, &verdict)) {
      opt_->zero_grad();  // the update is not applied
      spike(first_window, verdict.reason);
      continue;
    }
    const double lr = lr_now();
    const double reported = opt_->step(lr);
    if (ema_) ema_->update();
    tokens_seen_ += tokens_per_step;
    const int64_t done = ++step_;
    ++updates;
    result_.steps = done;
    result_.last_train_loss = loss;

    if (done % cfg_.log.interval == 0 || done == stop || done == first_step_ + 1) {
      const double elapsed = seconds_since(start_);
      const double tokens_per_s = double(tokens_per_step) / seconds_since(t0);
      out_->step({.step = done,
                  .max_steps = cfg_.train.max_steps,
                  .loss = loss,
                  .lr = lr,
                  .grad_norm = norm.value_or(reported),
                  .tokens_per_s = tokens_per_s,
                  .tokens = tokens_seen_,
                  .eta_seconds = eta_seconds(elapsed, updates, done, cfg_.train.max_steps),
                  .mfu = mfu_per_token > 0 ? mfu_per_token * tokens_per_s / world_ : -1,
                  .balance = shared[4],
                  .reward_accuracy = dpo_ ? step_pairs.correct / step_pairs.pairs : -1,
                  .reward_chosen = step_pairs.chosen / std::max(step_pairs.pairs, 1.0),
                  .reward_rejected = step_pairs.rejected / std::max(step_pairs.pairs, 1.0)});
    }
    // Saved before the evaluation: an evaluation that fails loses no training. A stop asked for
    // during the step saves it, and then still evaluates it when that is due (the resumed run
    // goes on from the next step and would never evaluate this one).
    bool stopping = stop_asked && done < stop;
    const bool saved = (cfg_.checkpoint.interval > 0 && done % cfg_.checkpoint.interval == 0) ||
                       done == stop || stopping;
    if (saved) result_.last_checkpoint = save(done);
    const bool last = done == cfg_.train.max_steps;
    if (cfg_.eval.interval > 0 && (done % cfg_.eval.interval == 0 || last)) {
      if (dpo_) {  // the pairs of data.val
        const PairSums v =
            evaluate_pairs(*dpo_, cfg_, cfg_.data.val, cfg_.eval_windows(), comm_.get());
        result_.last_val_loss = v.loss / v.pairs;
        out_->eval_pairs(done, result_.last_val_loss, v.correct / v.pairs,
                         (v.chosen - v.rejected) / v.pairs, int64_t(v.pairs));
      } else {
        const ValidationLoss val =
            evaluate_windows(model_, cfg_, cfg_.data.val, cfg_.eval_windows(), comm_.get());
        result_.last_val_loss = val.loss;
        out_->eval(done, val.loss, val.tokens);
      }
      if (ema_) {
        const ValidationLoss averaged = ema_->with_weights([&] {
          return evaluate_windows(model_, cfg_, cfg_.data.val, cfg_.eval_windows(), comm_.get());
        });
        out_->eval_ema(done, averaged.loss);
      }
      if (choices_) {
        const ChoiceResult c = choices_->score(model_, comm_.get());
        out_->choices(done, c.acc, c.acc_norm, c.items);
      }
      if (answers_) {
        const AnswerResult a = answers_->score(model_, comm_.get());
        out_->answers(done, a.exact, a.formed, a.items);
      }
      // A signal that came during the evaluation stops here, not after one more step.
      if (!stopping && done < stop) stopping = agree({signals.received() ? 1.0 : 0.0})[0] != 0;
    }
    if (samples_ && (done % cfg_.log.sample_interval == 0 || last))
      out_->sample(done, samples_->draw(model_, done));
    if (stopping) {
      stop_on_request(done, signals.received(), saved);
      break;
    }
  }
  finish_save();  // the run's last checkpoint is committed before it returns
  result_.rollbacks = history_.rollbacks;
  out_->line("memory: " + peak_memory_summary(dev, held));
  char line[200];
  if (dev.is_cuda()) out_->line("memory: " + device_memory_summary(dev));
  if (const std::string tuning = gemm_tuning_summary(); !tuning.empty()) out_->line(tuning);
  if (world_ > 1) {
    std::snprintf(line, sizeof line,
                  "dist: %d ranks (%s), %.3f s waiting on gradient communication that backward "
                  "did not hide, over %ld steps",
                  world_, comm_->backend().c_str(), opt_->comm_wait_seconds(),
                  long(updates));
    out_->line(line);
  }
  return result_;
}


TrainResult run_training(const Config& cfg, std::ostream& log) {
  cfg.validate();
  Trainer trainer(cfg, log);
  return trainer.run();
}

}  // namespace tessera::train