// LR schedules after llm.c (train_gpt2.cu, get_learning_rate): warmup uses (step + 1) so the first
// update is not taken at lr 0, and decay runs over [warmup, max_steps) (wsd: over its cooldown),
// reaching min_lr at max_steps. Computed in double (llm.c uses float): it runs once per step, so
// precision is free.
#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <sstream>
#include <string_view>

#include "core/error.h"

namespace tessera {
namespace {

enum class Kind { Cosine, Linear, Constant, Wsd };

Kind kind_of(const std::string& name) {
  if (name == "cosine") return Kind::Cosine;
  if (name == "linear") return Kind::Linear;
  if (name == "constant") return Kind::Constant;
  if (name == "wsd") return Kind::Wsd;
  TESSERA_FAIL("schedule: unknown name '", name, "' (expected cosine, linear, constant or wsd)");
}

// Where the decay starts: the warmup's end, or for wsd the start of its cooldown.
int64_t decay_start(const ScheduleOptions& s, Kind k) {
  if (k != Kind::Wsd) return s.warmup_steps;
  const int64_t cooldown = s.cooldown_steps > 0 ? s.cooldown_steps : (s.max_steps + 4) / 5;
  return std::max(s.warmup_steps, s.max_steps - cooldown);
}

}  // namespace

void validate(const ScheduleOptions& s) {
  const Kind k = kind_of(s.name);
  TESSERA_CHECK(s.lr >= 0, "schedule: lr must be >= 0, got ", s.lr);
  TESSERA_CHECK(s.min_lr >= 0, "schedule: min_lr must be >= 0, got ", s.min_lr);
  TESSERA_CHECK(s.warmup_steps >= 0, "schedule: warmup_steps must be >= 0, got ", s.warmup_steps);
  TESSERA_CHECK(s.max_steps >= 0, "schedule: max_steps must be >= 0, got ", s.max_steps);
  TESSERA_CHECK(s.cooldown_steps >= 0, "schedule: cooldown_steps must be >= 0, got ",
                s.cooldown_steps);
  TESSERA_CHECK(k == Kind::Wsd || s.cooldown_steps == 0, "schedule ", s.name, ": cooldown_steps (",
                s.cooldown_steps, ") applies to wsd only");
  TESSERA_CHECK(
      s.cooldown_shape == "sqrt" || s.cooldown_shape == "linear" || s.cooldown_shape == "cosine",
      "schedule: unknown cooldown_shape '", s.cooldown_shape,
      "' (expected sqrt, linear or cosine)");
  TESSERA_CHECK(k == Kind::Wsd || s.cooldown_shape == "sqrt", "schedule ", s.name,
                ": cooldown_shape (", s.cooldown_shape, ") applies to wsd only");
  TESSERA_CHECK(k == Kind::Constant || s.min_lr <= s.lr, "schedule ", s.name, ": min_lr (",
                s.min_lr, ") must not exceed lr (", s.lr, ")");
}

double lr_at(const ScheduleOptions& s, int64_t step) {
  validate(s);
  TESSERA_CHECK(step >= 0, "schedule: step must be >= 0, got ", step);
  const Kind k = kind_of(s.name);
  if (step < s.warmup_steps) return s.lr * double(step + 1) / double(s.warmup_steps);
  if (k == Kind::Constant) return s.lr;
  if (step >= s.max_steps) return s.min_lr;
  const int64_t start = decay_start(s, k);
  if (step < start) return s.lr;  // wsd's stable part
  // Here start <= step < max_steps, so the denominator is positive and progress in [0, 1).
  const double progress = double(step - start) / double(s.max_steps - start);
  // wsd's cooldown takes its shape from cooldown_shape (1 - sqrt unless told).
  const std::string_view shape = k == Kind::Wsd      ? std::string_view(s.cooldown_shape)
                                 : k == Kind::Cosine ? "cosine"
                                                     : "linear";
  const double coeff = shape == "cosine" ? 0.5 * (1.0 + std::cos(std::numbers::pi * progress))
                       : shape == "sqrt" ? 1.0 - std::sqrt(progress)
                                         : 1.0 - progress;
  return s.min_lr + coeff * (s.lr - s.min_lr);
}

std::string describe(const ScheduleOptions& s) {
  validate(s);
  const Kind k = kind_of(s.name);
  std::ostringstream out;  // doubles as %g writes them: 0.001, 1e-05
  out << "lr: ";
  if (s.warmup_steps > 0)
    out << "warmup to " << s.lr << " over steps 1-" << s.warmup_steps;
  else
    out << s.lr << " from step 1";
  if (k == Kind::Constant) {
    out << ", then constant (" << s.name << ")";
  } else if (s.max_steps <= s.warmup_steps) {  // lr_at's rule: past the warmup, the decay ended
    out << ", then " << s.min_lr << " (the decay's end, step " << s.max_steps
        << ", is within the warmup)";
  } else {
    const int64_t start = decay_start(s, k);
    if (start > s.warmup_steps) out << ", held through step " << start;
    out << ", "
        << (k == Kind::Cosine            ? "cosine decay"
            : k == Kind::Linear          ? "linear decay"
            : s.cooldown_shape == "sqrt" ? "1 - sqrt cooldown"
                                         : s.cooldown_shape + " cooldown")
        << " to " << s.min_lr << " by step " << s.max_steps << " (" << s.name << ")";
  }
  return out.str();
}

}  // namespace tessera
