// optim.schedule: wsd in the training loop. Its steps before the cooldown do not depend on
// train.max_steps, so a run resumed there with another --max-steps, longer or shorter, is the run
// that was planned that long from the start: the same LR and the same loss at every step, and no
// warning that the schedule changed (cosine's resume warns, test_train.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>

#include "train/trainer.h"
#include "train_fixture.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using testing::metric;
using testing::TempRun;

Config wsd_config(const TempRun& run, int64_t steps, const char* name) {
  Config c = run.config(steps);  // warmup 5, lr 3e-3, min_lr 3e-4
  c.optim.schedule = "wsd";
  c.log.interval = 1;
  c.checkpoint.interval = 4, c.checkpoint.keep = 10;
  c.train.run_name = name;
  return c;
}

// Trains `planned` steps to step 8, then resumes it with train.max_steps `steps`; returns the log
// of the resume.
std::string stopped_at_8_and_resumed(const TempRun& run, int64_t planned, int64_t steps,
                                     const char* name) {
  Config c = wsd_config(run, planned, name);
  c.train.stop_after = 8;
  std::ostringstream first, second;
  EXPECT_EQ(train::run_training(c, first).steps, 8) << first.str();
  c.train.stop_after = 0;
  c.train.max_steps = c.eval.interval = steps;
  c.checkpoint.resume = "auto";
  EXPECT_EQ(train::run_training(c, second).steps, steps) << second.str();
  return second.str();
}

void expect_same_run(const TempRun& run, const char* a, const char* b, int64_t steps) {
  const fs::path ma = run.dir / "ckpt" / a / "metrics.jsonl";
  const fs::path mb = run.dir / "ckpt" / b / "metrics.jsonl";
  for (const char* key : {"loss", "lr"}) {
    const auto x = metric(ma, key), y = metric(mb, key);
    EXPECT_EQ(int64_t(x.size()), steps) << key;
    EXPECT_EQ(x, y) << key;
  }
  EXPECT_EQ(metric(ma, "val_loss"), metric(mb, "val_loss"));
}

TEST(Wsd, a_run_lengthened_or_shortened_before_its_cooldown_is_the_run_planned_that_long) {
  TempRun run;
  std::ostringstream log;
  train::run_training(wsd_config(run, 20, "planned-20"), log);
  EXPECT_NE(log.str().find("lr: warmup to 0.003 over steps 1-5, held through step 16, 1 - sqrt "
                           "cooldown to 0.0003 by step 20 (wsd)\n"),
            std::string::npos)
      << log.str();
  train::run_training(wsd_config(run, 12, "planned-12"), log);

  // 12 planned: cooldown ceil(12 / 5) = 3 steps from update 9; stopped at step 8, before it.
  const std::string longer = stopped_at_8_and_resumed(run, 12, 20, "lengthened");
  EXPECT_EQ(longer.find("the LR schedule differs"), std::string::npos) << longer;
  expect_same_run(run, "planned-20", "lengthened", 20);
  // 20 planned (cooldown from update 16), branched off at step 8 into a 12-step run.
  const std::string shorter = stopped_at_8_and_resumed(run, 20, 12, "shortened");
  EXPECT_EQ(shorter.find("the LR schedule differs"), std::string::npos) << shorter;
  expect_same_run(run, "planned-12", "shortened", 12);

  // The 20-step run's LRs: warmup over steps 1-5 (updates 0-4), lr until update 16 (step 17),
  // then 3e-4 + (1 - sqrt(q)) 2.7e-3 with q = (update - 16) / 4.
  const auto lr = metric(run.dir / "ckpt" / "planned-20" / "metrics.jsonl", "lr");
  auto at = [&](int64_t step) { return std::stod(lr.at(step)); };
  EXPECT_NEAR(at(1), 6e-4, 1e-12);
  for (int64_t step = 5; step <= 17; ++step) EXPECT_NEAR(at(step), 3e-3, 1e-12) << step;
  for (int64_t step = 18; step <= 20; ++step)  // printed to 4 significant digits
    EXPECT_NEAR(at(step), 3e-4 + (1 - std::sqrt((step - 17) / 4.0)) * 2.7e-3, 5e-7) << step;
  EXPECT_LT(at(20), at(19));
}

}  // namespace
}  // namespace tessera
