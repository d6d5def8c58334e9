// The Trainer class, shared by trainer.cpp (construction and the loop) and
// trainer_checkpoints.cpp (saving, restoring, the run's lineage). Internal to src/train: the
// public entry point is run_training (trainer.h).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>

#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "checkpoint/async_save.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "config/schema.h"
#include "core/rng.h"
#include "core/storage.h"
#include "data/loader.h"
#include "distributed/communicator.h"
#include "nn/hf_names.h"
#include "nn/unfused.h"
#include "ops/ops.h"
#include "optim/flat.h"
#include "optim/flat_adamw.h"
#include "optim/lomo_step.h"
#include "optim/schedule.h"
#include "peft/adapter.h"
#include "train/answers.h"
#include "train/choices.h"
#include "train/device.h"
#include "train/dpo.h"
#include "train/ema.h"
#include "train/init_weights.h"
#include "train/load.h"
#include "train/mfu.h"
#include "train/rank_agreement.h"
#include "train/report.h"
#include "train/resume.h"
#include "train/rollback.h"
#include "train/run_lock.h"
#include "train/run_notes.h"
#include "train/run_state.h"
#include "train/samples.h"
#include "train/spike.h"
#include "train/stop_signals.h"
#include "train/trainer.h"

namespace tessera::train {
namespace fs = std::filesystem;

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

inline std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f MiB", double(bytes) / (1 << 20));
  return buf;
}

class Trainer {
 public:
  Trainer(const Config& cfg, std::ostream& log);
  ~Trainer();
  TrainResult run();

 private:
  // One step's forward/backward over its micro-batches; returns this rank's mean loss and sets
  // first_window to the step's first window, balance to a mixture of experts' mean
  // load-balancing loss a block over them (nn/moe.h; -1 for a dense model), and pairs to the
  // sums over this rank's preference pairs (train.objective dpo).
  double forward_backward(int64_t* first_window, double* balance, PairSums* pairs);
  // The loss of one micro-batch (window: the first of this rank's), whose backward will send
  // dy = weight; router: a mixture's router losses (GPT::loss), when wanted; pairs: its sums
  // under train.objective dpo.
  Tensor micro_loss(const data::Batch& b, int64_t window, double weight, nn::RouterLosses* router,
                    PairSums* pairs);
  // Each micro-batch's weight in the step: 1 / accum, or with loss masks its share of the targets
  // the step scores on all ranks (x world: gradients are averaged over ranks).
  std::vector<double> micro_weights(const std::vector<data::Batch>& batches);
  data::Batch next_batch(int64_t* window);
  // Values every rank then holds bit for bit: the mean over ranks, as rank 0 computed it.
  std::vector<double> agree(std::vector<double> v);
  bool clean(double loss, std::optional<double> norm, SpikeVerdict* verdict);
  double lr_now() const;
  void spike(int64_t first_window, const std::string& reason);
  std::string save(int64_t done);
  // checkpoint.async: collects rank 0's background write of the last save (blocking until it is
  // committed); a failed write stops every rank. Every rank calls it at the same points: before a
  // save, before a rollback reads the run directory, when a step's agreed flag says the write
  // failed, and at the end of the run.
  void finish_save();
  // A stop signal reached a rank (StopSignals; every rank calls this at the same step): the step
  // done is saved unless it just was, and the run ends reporting the signal.
  void stop_on_request(int64_t done, int own_signal, bool saved);
  void restore(const std::string& path, const CheckpointData& ck, bool with_history);
  // Returns the checkpoint's stored config, parsed.
  Config check_resumed_config(const std::string& path, const CheckpointData& ck) const;
  // Throws on every rank when any rank's `error` is set (rank_agreement.h).
  void fail_together(const std::string& error, const std::string& elsewhere) {
    train::fail_together(*comm_, error, elsewhere);
  }
  void build_optimizer();
  void report_memory();

  std::unique_ptr<dist::Communicator> comm_;
  std::string resume_error_;  // why this rank could not read the checkpoint to resume from
  std::unique_ptr<RunLock> lock_;  // rank 0's, while the run lives (from read_resumed on)
  // The checkpoint --resume names (read_resumed), held from before cfg_ is resolved from it until
  // it is restored, at the end of the constructor: the file is verified and read once.
  std::optional<Resumable> resumed_;
  const Config cfg_;  // the run's config, total_batch_size resolved (resolve_tokens_per_step)
  const int rank_, world_;
  fs::path run_dir_;
  Generator init_gen_;
  nn::GPT model_;
  std::vector<NamedParam> params_;
  std::unique_ptr<peft::Lora> lora_;          // lora.rank > 0: params_ are its adapters
  bool unfused_ = false;                      // TESSERA_UNFUSED=1 (nn/unfused.h)
  std::string base_path_, base_fingerprint_;  // the checkpoint.init the adapters belong to
  std::unique_ptr<FlatParams> flat_;          // adamw: parameters and gradients, flat
  std::unique_ptr<Optimizer> opt_;
  std::optional<WeightEma> ema_;  // train.ema_decay > 0: the average of params_, every rank
  std::unique_ptr<Dpo> dpo_;      // train.objective dpo: the loss and its reference model
  ScheduleOptions sched_;
  const int64_t accum_, B_, T_, step_windows_;
  data::DataLoader loader_;
  SpikeDetector detector_;
  std::set<int64_t> poisoned_;  // first windows of the micro-batches fault injection poisons
  std::unique_ptr<Report> out_;
  std::optional<TrainingSamples> samples_;  // log.sample_interval > 0, rank 0
  std::optional<TrainingChoices> choices_;  // eval.choices, every rank
  std::optional<TrainingAnswers> answers_;  // eval.answers, every rank

  double mfu_per_token_ = 0;   // MFU = this x tokens/s of one device (train/mfu.h); 0: not shown
  uint64_t dropout_seed_ = 0;  // the run's (rank 0's) dropout seed
  int64_t step_ = 0, tokens_seen_ = 0;
  RunHistory history_;
  TrainResult result_;
  std::chrono::steady_clock::time_point start_;
  int64_t first_step_ = 0;
  // The trajectory the weights were trained along (run_state.h); restore() sets it to the
  // checkpoint's and begin_segment() starts this process's next stretch of it at step_.
  Lineage lineage_;
  int64_t next_segment_id_ = 0;  // agreed by the ranks (agreed_segment_id), then counted up
  void begin_segment() { lineage_.push_back({next_segment_id_++, step_}); }
  BackgroundWrite writer_;  // checkpoint.async, rank 0: the last save's write (joined first)
};

}  // namespace tessera::train
