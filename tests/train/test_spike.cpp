// The spike detector's rules: NaN/Inf always, z-scores only once the window is full, one-sided,
// the scored value outside its window, outliers never admitted.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "test_util.h"
#include "train/spike.h"

using namespace tessera::train;

namespace {

// A full window of 4 alternating 1, 3: mean 2, population std 1, so a loss's z-score is
// loss - 2; the gradient norms are e^1, e^3, scored in log space: a norm's z-score is log(norm) - 2.
SpikeDetector full_detector(double threshold = 7) {
  SpikeDetector d({.window = 4, .threshold = threshold});
  for (int i = 0; i < 4; ++i) d.accept(i % 2 ? 3.0 : 1.0, std::exp(i % 2 ? 3.0 : 1.0));
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
  const double typical = std::exp(2.0);
  EXPECT_FALSE(d.check(2.0 + 6.9, typical).spike);
  EXPECT_TRUE(d.check(2.0 + 7.1, typical).spike);
  EXPECT_FALSE(d.check(2.0, std::exp(2.0 + 6.9)).spike);
  SpikeVerdict v = d.check(2.0, std::exp(2.0 + 7.1));
  EXPECT_TRUE(v.spike);
  EXPECT_NE(v.reason.find("gradient norm"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("7.1 sigma"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("log scale"), std::string::npos) << v.reason;
  // On the raw scale (mean 11.4, std 8.5) a norm of 80 would be 8 sigma; in log space it is 2.4.
  EXPECT_FALSE(d.check(2.0, 80.0).spike);
}

TEST(Spike, one_sided_a_sudden_drop_is_not_a_spike) {
  SpikeDetector d = full_detector();
  EXPECT_FALSE(d.check(2.0 - 50.0, 1e-6).spike);
  EXPECT_FALSE(d.check(2.0, 0.0).spike);  // a zero norm stays finite in log space
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
  d.accept(5.0, std::exp(5.0));
  EXPECT_EQ(d.losses(), (std::deque<double>{3.0, 1.0, 3.0, 5.0}));
  EXPECT_EQ(d.log_norms().size(), 4u);
  EXPECT_DOUBLE_EQ(d.log_norms().front(), 3.0);
  EXPECT_DOUBLE_EQ(d.log_norms().back(), 5.0);
}

TEST(Spike, constant_window_does_not_divide_by_zero) {
  SpikeDetector d({.window = 3, .threshold = 7});
  for (int i = 0; i < 3; ++i) d.accept(2.0, 1.0);
  EXPECT_FALSE(d.check(2.0, 1.0).spike);
  EXPECT_TRUE(d.check(2.1, 1.0).spike);  // any real rise over a flat line is an outlier
}

// The floor under a flat window's std is relative, 1e-9 of its mean: at a mean of 1000 a rise of
// 3e-6 is 3 of those (below the threshold), one of 1e-5 is 10.
TEST(Spike, a_flat_window_scores_a_rise_against_a_floor_relative_to_its_mean) {
  SpikeDetector d({.window = 3, .threshold = 7});
  for (int i = 0; i < 3; ++i) d.accept(1000.0, 1.0);
  EXPECT_FALSE(d.check(1000.0 + 3e-6, 1.0).spike);
  EXPECT_TRUE(d.check(1000.0 + 1e-5, 1.0).spike);
}

// "More than threshold standard deviations": a z-score of exactly the threshold is no spike.
TEST(Spike, a_z_score_equal_to_the_threshold_is_not_a_spike) {
  SpikeDetector d = full_detector(7);
  EXPECT_FALSE(d.check(2.0 + 7.0, std::exp(2.0)).spike);  // (9 - 2) / 1 = 7 exactly
  EXPECT_TRUE(d.check(2.0 + 7.0 + 1e-9, std::exp(2.0)).spike);
}

// The loss is scored on its own scale: the message gives the window's mean as it is.
TEST(Spike, the_loss_reason_gives_the_value_its_z_score_and_the_window_mean) {
  EXPECT_EQ(full_detector().check(9.5, std::nullopt).reason,
            "loss 9.5 is 7.5 sigma above the mean 2 of the last 4 steps");
  EXPECT_EQ(full_detector().check(std::nan(""), std::nullopt).reason, "loss is nan");
}

TEST(Spike, a_window_below_one_step_is_refused) {
  for (int64_t window : {0, -3}) {
    const std::string msg =
        tessera::testing::error_of([&] { SpikeDetector d({.window = window, .threshold = 7}); });
    EXPECT_NE(msg.find("spike.window must be positive, got " + std::to_string(window)),
              std::string::npos)
        << msg;
  }
}

TEST(Spike, saved_windows_restore_and_longer_ones_keep_the_newest) {
  SpikeDetector d({.window = 2, .threshold = 7});
  d.set_windows({1, 2, 3}, {4, 5, 6});
  EXPECT_EQ(d.losses(), (std::deque<double>{2, 3}));
  EXPECT_EQ(d.log_norms(), (std::deque<double>{5, 6}));
}

TEST(Spike, an_unknown_norm_is_not_scored_and_not_recorded) {
  SpikeDetector d = full_detector();
  EXPECT_FALSE(d.check(2.0, std::nullopt).spike);
  EXPECT_TRUE(d.check(100.0, std::nullopt).spike);
  d.accept(2.0, std::nullopt);
  EXPECT_EQ(d.losses().size(), 4u);
  EXPECT_EQ(d.log_norms().size(), 4u);
}
