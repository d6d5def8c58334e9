// Learning-rate schedules: linear warmup, then cosine, linear or no decay (llm.c's convention), or
// warmup-stable-decay (wsd: held at lr, then a short 1 - sqrt cooldown at the end).
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
//                   wsd:      lr until D = max(W, M - C), then min_lr + f(q) (lr - min_lr)
//                             with q = (step - D) / (M - D), over the last C = cooldown_steps
//                             steps (0: a fifth of M, rounded up); f by cooldown_shape:
//                             sqrt 1 - sqrt(q), linear 1 - q, cosine 0.5 (1 + cos(pi q))
//   step >= M       min_lr (constant: lr)
// wsd after Hagele et al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond Fixed Training
// Durations", arXiv:2405.18392): a 1 - sqrt cooldown over the last 20% of the steps matched or
// beat a cosine schedule's final loss, and the run before the cooldown does not depend on M, so
// it can be lengthened (--max-steps on resume) without its LR moving, and a cooldown taken from
// any of its checkpoints. llm.c's wsd has the same shape (its decay point at 0.8 M). The paper
// also compares linear cooldowns (1 - sqrt was better); torchtitan's WSD offers linear, sqrt and
// cosine decay types, as cooldown_shape does.
// Warmup is tested first, so a run shorter than its warmup (M <= W) simply never decays; that
// keeps a debug run with a small max_steps legal.
#pragma once

#include <cstdint>
#include <string>

namespace tessera {

struct ScheduleOptions {
  std::string name = "cosine";  // cosine | linear | constant | wsd
  double lr = 1e-3;             // peak, reached at the end of warmup
  double min_lr = 0.0;          // where the decay ends (ignored by constant)
  int64_t warmup_steps = 0;
  int64_t max_steps = 0;
  // wsd: the steps before max_steps that decay; 0 = ceil(max_steps / 5)
  int64_t cooldown_steps = 0;
  std::string cooldown_shape = "sqrt";  // wsd: sqrt | linear | cosine

  bool operator==(const ScheduleOptions&) const = default;
};

// Throws naming the field: unknown name or cooldown_shape, negative lr / min_lr / step counts,
// min_lr > lr for a decaying schedule, cooldown_steps or a cooldown_shape other than sqrt for a
// schedule other than wsd.
void validate(const ScheduleOptions& s);

// The learning rate of update number `step` (>= 0). Validates s on every call (a few compares).
double lr_at(const ScheduleOptions& s, int64_t step);

// One line for the run's log, in the log's step numbers (update i is step i + 1), e.g.
// "lr: warmup to 0.001 over steps 1-100, held through step 1600, 1 - sqrt cooldown to 0.0001
// by step 2000 (wsd)".
std::string describe(const ScheduleOptions& s);

}  // namespace tessera
