// LR schedules at their landmarks: first step, end of warmup, start of decay, middle, last step,
// max_steps and beyond; and the errors for bad options.
#include <gtest/gtest.h>

#include "optim/schedule.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;

// lr 1, min_lr 0.1, warmup 10, decay over steps [10, 110): progress = (step - 10) / 100.
ScheduleOptions options(const char* name) {
  return {.name = name, .lr = 1.0, .min_lr = 0.1, .warmup_steps = 10, .max_steps = 110};
}

TEST(Schedule, warmup_is_linear_from_lr_over_warmup_and_reaches_lr_on_its_last_step) {
  for (const char* name : {"cosine", "linear", "constant", "wsd"}) {
    const ScheduleOptions s = options(name);
    EXPECT_DOUBLE_EQ(lr_at(s, 0), 0.1) << name;  // lr * 1 / 10: step 0 is not taken at lr 0
    EXPECT_DOUBLE_EQ(lr_at(s, 4), 0.5) << name;
    EXPECT_DOUBLE_EQ(lr_at(s, 9), 1.0) << name;  // warmup - 1
    EXPECT_DOUBLE_EQ(lr_at(s, 10), 1.0) << name;  // warmup: decay starts at lr
  }
}

TEST(Schedule, cosine_decays_from_lr_to_min_lr) {
  const ScheduleOptions s = options("cosine");
  // min + 0.5 (1 + cos(pi p)) (lr - min); literals from Python's math.cos.
  EXPECT_DOUBLE_EQ(lr_at(s, 35), 0.86819805153394636);  // p = 0.25
  EXPECT_DOUBLE_EQ(lr_at(s, 60), 0.55);                  // p = 0.5: halfway between lr and min
  EXPECT_DOUBLE_EQ(lr_at(s, 109), 0.10022204783542078);  // max - 1, p = 0.99: not yet min_lr
  EXPECT_DOUBLE_EQ(lr_at(s, 110), 0.1);                  // max
  EXPECT_DOUBLE_EQ(lr_at(s, 1000), 0.1);
}

TEST(Schedule, linear_decays_from_lr_to_min_lr) {
  const ScheduleOptions s = options("linear");
  EXPECT_DOUBLE_EQ(lr_at(s, 35), 0.775);   // 0.1 + 0.75 * 0.9
  EXPECT_DOUBLE_EQ(lr_at(s, 60), 0.55);
  EXPECT_DOUBLE_EQ(lr_at(s, 109), 0.109);  // 0.1 + 0.01 * 0.9
  EXPECT_DOUBLE_EQ(lr_at(s, 110), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(s, 1000), 0.1);
}

TEST(Schedule, constant_holds_lr_after_warmup_and_ignores_min_lr) {
  const ScheduleOptions s = options("constant");
  for (int64_t step : {10, 60, 109, 110, 1000}) EXPECT_DOUBLE_EQ(lr_at(s, step), 1.0) << step;
}

TEST(Schedule, wsd_holds_lr_then_cools_down_as_one_minus_sqrt_over_its_last_fifth) {
  const ScheduleOptions s = options("wsd");  // cooldown ceil(110 / 5) = 22: steps [88, 110)
  for (int64_t step : {10, 50, 87, 88}) EXPECT_DOUBLE_EQ(lr_at(s, step), 1.0) << step;
  // min + (1 - sqrt(q)) (lr - min), q = (step - 88) / 22; literals from Python's math.sqrt.
  EXPECT_DOUBLE_EQ(lr_at(s, 93), 0.5709418348394835);   // q = 5 / 22
  EXPECT_DOUBLE_EQ(lr_at(s, 99), 0.36360389693210715);  // q = 1 / 2
  EXPECT_DOUBLE_EQ(lr_at(s, 109), 0.12069242117344499);
  EXPECT_DOUBLE_EQ(lr_at(s, 110), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(s, 1000), 0.1);
}

TEST(Schedule, wsd_cooldown_steps_set_where_it_starts_and_warmup_bounds_it) {
  ScheduleOptions s = options("wsd");
  s.cooldown_steps = 50;  // [60, 110)
  EXPECT_DOUBLE_EQ(lr_at(s, 59), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 60), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 85), 0.36360389693210715);  // q = 1 / 2
  s.cooldown_steps = 200;  // longer than the steps after warmup: the cooldown starts at step 10
  EXPECT_DOUBLE_EQ(lr_at(s, 9), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 35), 0.55);  // q = 1 / 4
  EXPECT_DOUBLE_EQ(lr_at(s, 60), 0.36360389693210715);
}

// cooldown_shape: the same cooldown window [88, 110), the factor of (lr - min_lr) 1 - q (linear)
// or 0.5 (1 + cos(pi q)) (cosine); the stable part and the end as sqrt's. Literals from Python's
// math: 0.1 + 0.9 * (1 - 5/22), 0.1 + 0.9 * 0.5 * (1 + cos(pi * 5/22)).
TEST(Schedule, wsd_cools_down_linearly_or_along_a_cosine_when_told) {
  ScheduleOptions s = options("wsd");
  for (const char* shape : {"linear", "cosine"}) {
    s.cooldown_shape = shape;
    EXPECT_DOUBLE_EQ(lr_at(s, 88), 1.0) << shape;
    EXPECT_DOUBLE_EQ(lr_at(s, 99), 0.55) << shape;  // q = 1 / 2: both halve the way down
    EXPECT_DOUBLE_EQ(lr_at(s, 110), 0.1) << shape;
  }
  s.cooldown_shape = "linear";
  EXPECT_DOUBLE_EQ(lr_at(s, 93), 0.7954545454545454);
  EXPECT_EQ(describe(s),
            "lr: warmup to 1 over steps 1-10, held through step 88, linear cooldown to 0.1 by "
            "step 110 (wsd)");
  s.cooldown_shape = "cosine";
  EXPECT_DOUBLE_EQ(lr_at(s, 93), 0.8900873084594162);
  EXPECT_EQ(describe(s),
            "lr: warmup to 1 over steps 1-10, held through step 88, cosine cooldown to 0.1 by "
            "step 110 (wsd)");
}

// What wsd is for: the steps before the cooldown do not depend on max_steps, so a run lengthened
// there (a resume with a higher --max-steps) keeps every LR it has taken and the ones to come
// until its new cooldown; cosine's would all move.
TEST(Schedule, wsd_before_its_cooldown_is_the_same_for_any_max_steps) {
  ScheduleOptions s = options("wsd"), longer = s, cos = options("cosine"), cos_longer = cos;
  longer.max_steps = cos_longer.max_steps = 1000;
  for (int64_t step = 0; step < 88; ++step) EXPECT_EQ(lr_at(s, step), lr_at(longer, step)) << step;
  EXPECT_NE(lr_at(cos, 50), lr_at(cos_longer, 50));
}

TEST(Schedule, without_warmup_the_first_step_uses_lr) {
  ScheduleOptions s = options("cosine");
  s.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(lr_at(s, 0), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 55), 0.55);  // decay over [0, 110)
}

TEST(Schedule, a_run_shorter_than_its_warmup_warms_up_and_then_sits_at_min_lr) {
  ScheduleOptions s = options("cosine");
  s.warmup_steps = 100;
  s.max_steps = 50;
  EXPECT_DOUBLE_EQ(lr_at(s, 49), 0.5);  // still warming up past max_steps
  EXPECT_DOUBLE_EQ(lr_at(s, 100), 0.1);
}

// The run log's line, in its step numbers (update i is step i + 1).
TEST(Schedule, described_in_one_line_with_its_landmarks) {
  EXPECT_EQ(describe(options("cosine")),
            "lr: warmup to 1 over steps 1-10, cosine decay to 0.1 by step 110 (cosine)");
  EXPECT_EQ(describe(options("linear")),
            "lr: warmup to 1 over steps 1-10, linear decay to 0.1 by step 110 (linear)");
  EXPECT_EQ(describe(options("constant")),
            "lr: warmup to 1 over steps 1-10, then constant (constant)");
  EXPECT_EQ(describe(options("wsd")),
            "lr: warmup to 1 over steps 1-10, held through step 88, 1 - sqrt cooldown to 0.1 by "
            "step 110 (wsd)");
  ScheduleOptions s = options("wsd");
  s.warmup_steps = 0, s.cooldown_steps = 500;  // the whole run cools down
  EXPECT_EQ(describe(s), "lr: 1 from step 1, 1 - sqrt cooldown to 0.1 by step 110 (wsd)");
  s = options("cosine");
  s.max_steps = 10;
  EXPECT_EQ(describe(s),
            "lr: warmup to 1 over steps 1-10, then 0.1 (the decay's end, step 10, is within the "
            "warmup)");
  EXPECT_DOUBLE_EQ(lr_at(s, 10), 0.1);  // as it says
}

TEST(Schedule, bad_options_are_errors_that_name_them) {
  ScheduleOptions s = options("cosin");
  std::string msg = error_of([&] { lr_at(s, 0); });
  EXPECT_NE(msg.find("unknown name 'cosin'"), std::string::npos) << msg;

  s = options("linear");
  s.min_lr = 2.0;
  msg = error_of([&] { validate(s); });
  EXPECT_NE(msg.find("min_lr (2)"), std::string::npos) << msg;
  s.name = "constant";  // min_lr does not apply
  EXPECT_DOUBLE_EQ(lr_at(s, 20), 1.0);

  s = options("cosine");
  s.warmup_steps = -1;
  msg = error_of([&] { validate(s); });
  EXPECT_NE(msg.find("warmup_steps"), std::string::npos) << msg;

  s = options("cosine");
  s.cooldown_steps = 5;
  msg = error_of([&] { validate(s); });
  EXPECT_NE(msg.find("cooldown_steps (5) applies to wsd only"), std::string::npos) << msg;
  s.name = "wsd";
  s.cooldown_steps = -5;
  msg = error_of([&] { validate(s); });
  EXPECT_NE(msg.find("cooldown_steps must be >= 0, got -5"), std::string::npos) << msg;

  s = options("wsd");
  s.cooldown_shape = "exp";
  msg = error_of([&] { validate(s); });
  EXPECT_NE(msg.find("unknown cooldown_shape 'exp' (expected sqrt, linear or cosine)"),
            std::string::npos)
      << msg;
  s = options("cosine");
  s.cooldown_shape = "linear";
  msg = error_of([&] { validate(s); });
  EXPECT_NE(msg.find("cooldown_shape (linear) applies to wsd only"), std::string::npos) << msg;

  msg = error_of([&] { lr_at(options("cosine"), -3); });
  EXPECT_NE(msg.find("-3"), std::string::npos) << msg;
}

}  // namespace
}  // namespace tessera
