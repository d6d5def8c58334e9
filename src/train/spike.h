// Loss-spike detection: is this step's loss or gradient norm an outlier against the recent clean
// steps?
//
//   SpikeDetector det({.window = 128, .threshold = 7});
//   SpikeVerdict v = det.check(loss, grad_norm);   // before the update is applied
//   det.check(loss, std::nullopt);                  // no norm known yet (LOMO's single pass)
//   if (v.spike) { /* skip the update, roll back: train/trainer.cpp */ } else det.accept(loss, grad_norm);
//
// Rules (llm.c scores the loss the same way: a z-score over 128 steps, threshold 7):
//  - a NaN or infinite loss or gradient norm is always a spike;
//  - otherwise, once its window holds `window` values, a value more than `threshold` standard
//    deviations ABOVE the window's mean is a spike (one-sided: a sudden drop is good news). Loss and
//    gradient norm are scored separately, each against its own window (a step whose norm is not
//    known adds nothing to the norm window);
//  - the gradient norm is scored as log(norm): norms are positive and vary by factors, not by
//    amounts. On the raw scale a clean 2000-step run of configs/tiny.yaml reached z = 7.3 (a norm of
//    3.4 against a mean of 1.5: a false alarm that cost a skipped update); in log space its largest
//    z was 4.8, while an injected spike still scores > 10;
//  - the scored value is not in the window it is scored against, and only accepted (clean) steps
//    enter the windows, so a run of outliers cannot drag the baseline up to meet them.
// Mean and standard deviation (population) are recomputed from the window in chronological order
// every step, in double: O(window) per step, and a resumed run repeats the arithmetic exactly.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace tessera::train {

struct SpikeOptions {
  int64_t window = 128;
  double threshold = 7.0;
};

struct SpikeVerdict {
  bool spike = false;
  std::string reason;  // "loss 5.41 is 23.1 sigma above the mean 1.62 of the last 128 steps"
};

// Mean and population standard deviation of a window, in order.
struct WindowStats {
  double mean = 0, std = 0;
};
WindowStats window_stats(const std::deque<double>& values);

class SpikeDetector {
 public:
  explicit SpikeDetector(SpikeOptions options = {});

  SpikeVerdict check(double loss, std::optional<double> grad_norm) const;
  void accept(double loss, std::optional<double> grad_norm);  // a clean step enters the windows

  bool active() const { return int64_t(loss_.size()) == options_.window; }  // the loss window
  // The windows, oldest first (checkpointed and restored as they are); norms as log(norm).
  const std::deque<double>& losses() const { return loss_; }
  const std::deque<double>& log_norms() const { return norm_; }
  // Restores saved windows (only the newest `window` values when they are longer).
  void set_windows(std::deque<double> losses, std::deque<double> log_norms);

 private:
  SpikeOptions options_;
  std::deque<double> loss_, norm_;
};

}  // namespace tessera::train
