// What a training run tells its user: console lines and <run dir>/metrics.jsonl. Only rank 0
// reports (a Report built with active = false swallows everything), so N ranks print one log.
//
//   Report out(std::cout, run_dir / "metrics.jsonl", cfg.log.metrics, comm.rank() == 0);
//   out.line("resume: ...");
//   out.step({.step = 10, .loss = 2.1, ...});    // console line + JSON object
//
// metrics.jsonl: one object per line (README, "Metrics"); steps replayed after a resume or a
// rollback appear again and the last line for a step is the one that counts. A line cut short by a
// killed process is removed when the file is opened again. A line that cannot be written (a full
// disk) is taken back whole, so the file never holds a torn line: the log warns once, training
// goes on, and the first line written again says how many are missing before it. A metrics.jsonl
// removed or replaced while the run writes is opened anew at its path, with a warning.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <string>

namespace tessera::train {

// What an earlier run left in run_dir, for the refusal of a fresh run there: describe_run's
// checkpoints and `latest` (checkpoint/retention.h), then "metrics.jsonl with N lines" when that
// file is not empty ("" when there is none of these). A fresh run's lines appended after a stale
// file's would read as one run's, so a file that outlived its checkpoints counts as a run too.
std::string describe_run_and_metrics(const std::filesystem::path& run_dir);

// Throws, naming the file, when metrics.jsonl exists and is not a regular file (symbolic links
// followed): a directory, or a device or FIFO that reading would never finish (/dev/zero).
void check_metrics_file(const std::filesystem::path& file);

std::string json_number(double v);  // "null" for NaN and infinities (JSON has neither)
std::string json_string(const std::string& s);  // quoted, json_escape'd (checkpoint/json.h)
// text with every byte that does not start well-formed UTF-8 replaced by U+FFFD
// (data::replace_invalid_utf8: JSON text must be UTF-8, and a byte-level model's sample need not
// be) and the control characters other than newline and tab written as \xNN, for a terminal: an
// untrained model's sample must not send it escape sequences.
std::string printable(const std::string& text);

// Seconds left to step max_steps at the pace of this process's updates so far: `updates` took
// `elapsed` seconds, and step `done` is the last one made (a rollback can take a run below its
// first step, so updates, not done - first, is what the time was spent on).
double eta_seconds(double elapsed, int64_t updates, int64_t done, int64_t max_steps);

struct StepReport {
  int64_t step = 0, max_steps = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_s = 0;  // over all ranks
  int64_t tokens = 0;       // seen so far, over all ranks
  double eta_seconds = 0;
  double mfu = -1;  // model FLOPs utilisation of one device (train/mfu.h); < 0: not shown
  // A mixture of experts' load-balancing loss, the mean a block over the step (1: uniform,
  // nn/moe.h); < 0: not shown (a dense model).
  double balance = -1;
  // train.objective dpo (train/dpo.h): the step's pairs' reward accuracy (< 0: not shown), and the
  // mean rewards of their chosen and rejected responses.
  double reward_accuracy = -1, reward_chosen = 0, reward_rejected = 0;
};

class Report {
 public:
  Report(std::ostream& log, const std::filesystem::path& metrics, bool metrics_on, bool active);
  ~Report();
  Report(const Report&) = delete;
  Report& operator=(const Report&) = delete;

  bool active() const { return active_; }
  std::ostream& log();  // a sink that discards on ranks other than 0
  void line(const std::string& text);
  void emit(const std::string& json);  // one metrics.jsonl object
  void step(const StepReport& r);
  void eval(int64_t step, double val_loss, int64_t tokens);  // tokens: the targets scored
  // train.objective dpo's validation: the DPO loss and the rewards' accuracy and mean margin over
  // `pairs` pairs.
  void eval_pairs(int64_t step, double val_loss, double accuracy, double margin, int64_t pairs);
  void sample(int64_t step, const std::string& text);        // log.sample_interval's
  // eval.choices's accuracy: acc and acc_norm over `items` items.
  void choices(int64_t step, double acc, double acc_norm, int64_t items);
  // The validation loss of the weights' average (train.ema_decay).
  void eval_ema(int64_t step, double val);
  // eval.answers's shares: answered exactly, and answered with some response of the file.
  void answers(int64_t step, double exact, double formed, int64_t items);

 private:
  void open_metrics();
  // "step N | <what> <a_name> A | <b_name> B (I items)", and in metrics.jsonl <what>_<a_name>,
  // <what>_<b_name> and <what>_items.
  void shares(int64_t step, const std::string& what, const std::string& a_name, double a,
              const std::string& b_name, double b, int64_t items);

  std::ostream& log_;
  std::filesystem::path metrics_path_;
  int metrics_fd_ = -1;  // O_APPEND: each line one write(2)
  int64_t missing_ = 0;  // lines not written since the last one that was
  bool active_;
  std::ofstream null_;  // never opened: writes to it are dropped
};

}  // namespace tessera::train
