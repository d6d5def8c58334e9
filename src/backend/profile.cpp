#include "backend/profile.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>
#include <utility>

#include "backend/cuda.h"

namespace tessera::profile {

namespace detail {
std::atomic<bool> g_on{false};
}

namespace {

struct Pending {  // a device call whose events are not resolved yet
  int64_t group;
  void* start;
  void* end;
};

std::vector<Row> g_groups;
std::map<std::string, int64_t> g_index;  // group key -> index into g_groups
std::vector<Pending> g_pending;
thread_local int t_depth = 0;  // timed calls open on this thread

double host_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

std::string describe(const Tensor* t) {
  if (!t || !t->defined()) return "";
  return shape_str(t->shape());
}

int64_t group_of(const char* kernel, Device device, const Tensor* first, const Tensor* second) {
  std::string shapes;
  if (first && first->defined()) shapes.append(dtype_name(first->dtype())).append(" ").append(describe(first));
  if (second && second->defined()) {
    shapes.append(" <- ").append(describe(second));
    if (first && first->defined() && second->dtype() != first->dtype())
      shapes.append(" ").append(dtype_name(second->dtype()));
  }
  const std::string dev = device.str();
  std::string key(kernel);
  key.append("|").append(dev).append("|").append(shapes);
  auto it = g_index.find(key);
  if (it != g_index.end()) return it->second;
  g_groups.push_back(Row{kernel, dev, shapes, 0, 0.0, 0.0});
  return g_index[key] = int64_t(g_groups.size()) - 1;
}

void resolve() {
  for (const Pending& p : g_pending) {
    g_groups[size_t(p.group)].ms += cuda::elapsed_ms(p.start, p.end);
    cuda::release_event(p.start);
    cuda::release_event(p.end);
  }
  g_pending.clear();
}

}  // namespace

void start() {
  resolve();  // returns the events of an earlier profile to their pool
  g_groups.clear();
  g_index.clear();
  detail::g_on.store(true, std::memory_order_relaxed);
}

void stop() { detail::g_on.store(false, std::memory_order_relaxed); }

std::vector<Row> rows() {
  resolve();
  std::vector<Row> out = g_groups;
  std::stable_sort(out.begin(), out.end(), [](const Row& a, const Row& b) { return a.ms > b.ms; });
  return out;
}

Scope::Scope(const char* kernel, Device device, const Tensor* first, const Tensor* second,
             int64_t bytes)
    : device_(device) {
  if (t_depth > 0) {  // nested: the outer call's time includes this one
    ++t_depth;
    return;
  }
  group_ = group_of(kernel, device, first, second);
  if (device.is_cpu())
    t0_ = host_ms();
  else
    event0_ = cuda::record_event(device.index);  // may throw: nothing is counted then
  ++g_groups[size_t(group_)].calls;
  g_groups[size_t(group_)].bytes += double(bytes);
  ++t_depth;
  active_ = true;
}

Scope::~Scope() {
  --t_depth;  // a constructor that threw never gets here, and did not count itself
  if (!active_) return;
  if (device_.is_cpu()) {
    g_groups[size_t(group_)].ms += host_ms() - t0_;
    return;
  }
  // A kernel that threw still has its start event: time what it queued, if recording works.
  try {
    g_pending.push_back({group_, event0_, cuda::record_event(device_.index)});
  } catch (...) {
    cuda::release_event(event0_);
  }
}

std::string table(const std::vector<Row>& rows, int steps, double wall_ms, int top) {
  const double per = steps > 0 ? 1.0 / steps : 1.0;
  double total = 0;
  int64_t calls = 0;
  std::map<std::string, std::pair<double, int64_t>> by_kernel;
  for (const Row& r : rows) {
    total += r.ms;
    calls += r.calls;
    by_kernel[r.kernel].first += r.ms;
    by_kernel[r.kernel].second += r.calls;
  }
  std::ostringstream os;
  char line[512];
  auto pct = [&](double ms) { return total > 0 ? 100.0 * ms / total : 0.0; };
  std::snprintf(line, sizeof line,
                "kernel time %.3f ms per step in %.0f calls per step (%d step%s profiled)", total * per,
                double(calls) * per, steps, steps == 1 ? "" : "s");
  os << line;
  if (wall_ms > 0) {
    std::snprintf(line, sizeof line, "; the profiled wall time %.3f ms per step, %.1f%% of it in kernels",
                  wall_ms, 100.0 * total * per / wall_ms);
    os << line;
  }
  os << "\n\n";
  std::snprintf(line, sizeof line, "%-28s %10s %7s %9s %8s  %s\n", "kernel", "ms/step", "share",
                "calls/st", "GB/s", "shapes (first two tensor arguments)");
  os << line;
  int shown = 0;
  double rest_ms = 0;
  int64_t rest_calls = 0;
  for (const Row& r : rows) {
    if (shown++ >= top) {
      rest_ms += r.ms;
      rest_calls += r.calls;
      continue;
    }
    // The tensor arguments' bytes over the time: a lower bound on the traffic (profile.h).
    const double gbs = r.ms > 0 ? r.bytes / (r.ms * 1e6) : 0.0;
    std::snprintf(line, sizeof line, "%-28s %10.4f %6.1f%% %9.1f %8.1f  %s %s\n",
                  r.kernel.c_str(), r.ms * per, pct(r.ms), double(r.calls) * per, gbs,
                  r.device.c_str(), r.shapes.c_str());
    os << line;
  }
  if (rest_calls) {
    std::snprintf(line, sizeof line, "%-28s %10.4f %6.1f%% %9.1f\n", "(the other groups)", rest_ms * per,
                  pct(rest_ms), double(rest_calls) * per);
    os << line;
  }
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> kernels(by_kernel.begin(),
                                                                           by_kernel.end());
  std::stable_sort(kernels.begin(), kernels.end(),
                   [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  os << "\nper kernel:\n";
  for (const auto& [name, v] : kernels) {
    std::snprintf(line, sizeof line, "%-28s %10.4f %6.1f%% %9.1f\n", name.c_str(), v.first * per,
                  pct(v.first), double(v.second) * per);
    os << line;
  }
  return os.str();
}

}  // namespace tessera::profile
