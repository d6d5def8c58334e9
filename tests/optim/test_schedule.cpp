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
  for (const char* name : {"cosine", "linear", "constant"}) {
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

  msg = error_of([&] { lr_at(options("cosine"), -3); });
  EXPECT_NE(msg.find("-3"), std::string::npos) << msg;
}

}  // namespace
}  // namespace tessera
