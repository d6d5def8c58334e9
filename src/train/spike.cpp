#include "train/spike.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace tessera::train {

WindowStats window_stats(const std::deque<double>& values) {
  WindowStats s;
  if (values.empty()) return s;
  for (double v : values) s.mean += v;
  s.mean /= double(values.size());
  double ss = 0;
  for (double v : values) ss += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(ss / double(values.size()));
  return s;
}

SpikeDetector::SpikeDetector(SpikeOptions options) : options_(options) {
  TESSERA_CHECK(options_.window > 0, "spike.window must be positive, got ", options_.window);
}

namespace {

// log(norm), with a zero norm (nothing to learn from this batch) kept finite.
double log_norm(double norm) { return std::log(std::max(norm, 1e-30)); }

// The reason `value` is a spike against `window`, or "" when it is not. `shown` is the value as
// the message prints it (the norm, where value is its log).
std::string score(const char* what, double value, double shown, const std::deque<double>& window,
                  int64_t size, double threshold, bool log_scale) {
  char buf[200];
  if (!std::isfinite(shown)) {
    std::snprintf(buf, sizeof buf, "%s is %g", what, shown);
    return buf;
  }
  if (int64_t(window.size()) < size) return "";  // inactive until the window is full
  const WindowStats s = window_stats(window);
  // A window of identical values has std 0: any increase would score infinity. Relative noise of
  // 1e-9 of the mean is far below what any real loss curve shows, so it stands in as the floor.
  const double std = std::max(s.std, 1e-9 * std::fabs(s.mean) + 1e-300);
  const double z = (value - s.mean) / std;
  if (!(z > threshold)) return "";
  if (log_scale) {
    std::snprintf(buf, sizeof buf,
                  "%s %.4g is %.1f sigma above the mean %.4g of the last %zu steps (log scale)",
                  what, shown, z, std::exp(s.mean), window.size());
  } else {
    std::snprintf(buf, sizeof buf, "%s %.4g is %.1f sigma above the mean %.4g of the last %zu steps",
                  what, shown, z, s.mean, window.size());
  }
  return buf;
}

}  // namespace

SpikeVerdict SpikeDetector::check(double loss, std::optional<double> grad_norm) const {
  SpikeVerdict v;
  const std::string a =
      score("loss", loss, loss, loss_, options_.window, options_.threshold, false);
  const std::string b = grad_norm ? score("gradient norm", log_norm(*grad_norm), *grad_norm, norm_,
                                          options_.window, options_.threshold, true)
                                  : "";
  v.reason = a.empty() ? b : b.empty() ? a : a + "; " + b;
  v.spike = !v.reason.empty();
  return v;
}

void SpikeDetector::accept(double loss, std::optional<double> grad_norm) {
  loss_.push_back(loss);
  if (int64_t(loss_.size()) > options_.window) loss_.pop_front();
  if (!grad_norm) return;
  norm_.push_back(log_norm(*grad_norm));
  if (int64_t(norm_.size()) > options_.window) norm_.pop_front();
}

void SpikeDetector::set_windows(std::deque<double> losses, std::deque<double> log_norms) {
  loss_ = std::move(losses);
  norm_ = std::move(log_norms);
  // spike.window was lowered since they were saved: keep the newest values.
  while (int64_t(loss_.size()) > options_.window) loss_.pop_front();
  while (int64_t(norm_.size()) > options_.window) norm_.pop_front();
}

}  // namespace tessera::train
