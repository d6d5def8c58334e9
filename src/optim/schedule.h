// Learning-rate schedules: linear warmup, then cosine, linear or no decay (llm.c's convention).
//
//   ScheduleOptions s{.name = "cosine", .lr = 6e-4, .min_lr = 6e-5, .warmup_steps = 700,
//                     .max_steps = 19073};
//   validate(s);                        // once, where the config is read
//   opt.step(lr_at(s, step));           // step = 0, 1, ... (the index of the update being made)
//
// With W = warmup_steps, M = max_steps, progress = (step - W) / (M - W):
//   step < W        lr * (step + 1) / W        (step 0 already moves; step W-1 reaches lr)
//   W <= step < M   cosine:   min_lr + 0.5 (1 + cos(pi progress)) (lr - min_lr)
//                   linear:   min_lr + (1 - progress) (lr - min_lr)
//                   constant: lr
//   step >= M       min_lr (constant: lr)
// Warmup is tested first, so a run shorter than its warmup (M <= W) simply never decays; that
// keeps a debug run with a small max_steps legal.
#pragma once

#include <cstdint>
#include <string>

namespace tessera {

struct ScheduleOptions {
  std::string name = "cosine";  // cosine | linear | constant
  double lr = 1e-3;             // peak, reached at the end of warmup
  double min_lr = 0.0;          // where cosine/linear decay ends (ignored by constant)
  int64_t warmup_steps = 0;
  int64_t max_steps = 0;

  bool operator==(const ScheduleOptions&) const = default;
};

// Throws naming the field: unknown name, negative lr / min_lr / step counts, min_lr > lr for a
// decaying schedule.
void validate(const ScheduleOptions& s);

// The learning rate of update number `step` (>= 0). Validates s on every call (a few compares).
double lr_at(const ScheduleOptions& s, int64_t step);

}  // namespace tessera
