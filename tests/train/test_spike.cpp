// The spike detector's rules: NaN/Inf always, z-scores only once the window is full, one-sided,
// the scored value outside its window, outliers never admitted.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "train/spike.h"

using namespace tessera::train;

namespace {

// A full window of 4 alternating 1, 3: mean 2, population std 1, so a value's z-score is
// value - 2 for the loss; the gradient norms are 10 x that (mean 20, std 10).
SpikeDetector full_detector(double threshold = 7) {
  SpikeDetector d({.window = 4, .threshold = threshold});
  for (int i = 0; i < 4; ++i) d.accept(i % 2 ? 3.0 : 1.0, i % 2 ? 30.0 : 10.0);
  return d;
}

}  // namespace

TEST(Spike, window_stats_are_mean_and_population_std) {
  WindowStats s = window_stats({1.0, 3.0, 1.0, 3.0});
  EXPECT_EQ(s.mean, 2.0);
  EXPECT_EQ(s.std, 1.0);
}

TEST(Spike, z_score_threshold_on_loss_and_on_gradient_norm) {
  SpikeDetector d = full_detector();
  ASSERT_TRUE(d.active());
  EXPECT_FALSE(d.check(2.0 + 6.9, 20.0).spike);
  EXPECT_TRUE(d.check(2.0 + 7.1, 20.0).spike);
  EXPECT_FALSE(d.check(2.0, 20.0 + 69.0).spike);
  SpikeVerdict v = d.check(2.0, 20.0 + 71.0);
  EXPECT_TRUE(v.spike);
  EXPECT_NE(v.reason.find("gradient norm"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("7.1 sigma"), std::string::npos) << v.reason;
}

TEST(Spike, one_sided_a_sudden_drop_is_not_a_spike) {
  SpikeDetector d = full_detector();
  EXPECT_FALSE(d.check(2.0 - 50.0, 20.0 - 500.0).spike);
}

TEST(Spike, inactive_until_the_window_is_full_except_for_nan_and_inf) {
  SpikeDetector d({.window = 4, .threshold = 7});
  for (int i = 0; i < 3; ++i) d.accept(1.0 + i, 1.0);
  EXPECT_FALSE(d.active());
  EXPECT_FALSE(d.check(1e6, 1e6).spike);
  EXPECT_TRUE(d.check(std::nan(""), 1.0).spike);
  EXPECT_TRUE(d.check(1.0, std::numeric_limits<double>::infinity()).spike);
  EXPECT_TRUE(d.check(-std::numeric_limits<double>::infinity(), 1.0).spike);
}

TEST(Spike, check_leaves_the_windows_alone_and_accept_rolls_them) {
  SpikeDetector d = full_detector();
  const std::deque<double> before = d.losses();
  d.check(100.0, 100.0);
  EXPECT_EQ(d.losses(), before);
  // A rejected outlier stays an outlier: the baseline it is scored against did not move.
  EXPECT_TRUE(d.check(100.0, 20.0).spike);
  d.accept(5.0, 50.0);
  EXPECT_EQ(d.losses(), (std::deque<double>{3.0, 1.0, 3.0, 5.0}));
  EXPECT_EQ(d.norms(), (std::deque<double>{30.0, 10.0, 30.0, 50.0}));
}

TEST(Spike, constant_window_does_not_divide_by_zero) {
  SpikeDetector d({.window = 3, .threshold = 7});
  for (int i = 0; i < 3; ++i) d.accept(2.0, 1.0);
  EXPECT_FALSE(d.check(2.0, 1.0).spike);
  EXPECT_TRUE(d.check(2.1, 1.0).spike);  // any real rise over a flat line is an outlier
}

TEST(Spike, saved_windows_restore_and_longer_ones_keep_the_newest) {
  SpikeDetector d({.window = 2, .threshold = 7});
  d.set_windows({1, 2, 3}, {4, 5, 6});
  EXPECT_EQ(d.losses(), (std::deque<double>{2, 3}));
  EXPECT_EQ(d.norms(), (std::deque<double>{5, 6}));
}

TEST(Spike, an_unknown_norm_is_not_scored_and_not_recorded) {
  SpikeDetector d = full_detector();
  EXPECT_FALSE(d.check(2.0, std::nullopt).spike);
  EXPECT_TRUE(d.check(100.0, std::nullopt).spike);
  d.accept(2.0, std::nullopt);
  EXPECT_EQ(d.losses().size(), 4u);
  EXPECT_EQ(d.norms(), (std::deque<double>{10.0, 30.0, 10.0, 30.0}));
}
