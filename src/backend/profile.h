// The kernel profile: where a step's device time goes, kernel by kernel.
//
//   profile::start();                 // clears, then times every TESSERA_KERNEL call
//   ... run steps ...
//   profile::stop();
//   for (const profile::Row& r : profile::rows()) ...   // waits for the device, then sums up
//
// Every kernel call goes through TESSERA_KERNEL (backend/kernels.h), so while the profile is on,
// that dispatch times each call: on the CPU with the host clock around it; on CUDA with a pair of
// events recorded around it on the stream every kernel runs on, so the time is the device's and
// the host does not wait per call (rows() waits once, at the end). A kernel that calls another
// through TESSERA_KERNEL counts once, as the outer call. Calls are grouped by kernel name and the
// shapes and dtype of their first two tensor arguments (a gemm's output and first operand, a
// copy's destination and source), so the permute copies and the casts of one step are told apart.
// Each group also sums the bytes of all its calls' tensor arguments: divided by its time, a lower
// bound on the memory traffic it achieved (each tensor counted once, whether read, written or
// both; a gemm's operands once though they are read in tiles), the figure to hold against the
// device's bandwidth for the memory-bound kernels.
//
// Off (the default), the dispatch costs one relaxed atomic load. Not thread-safe beyond that: start
// and stop from the thread that runs the kernels. The time of work outside the kernel table (NCCL
// collectives, host code, waits) is not in the rows: compare their total with the step's wall time.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera::profile {

namespace detail {
extern std::atomic<bool> g_on;
}

inline bool on() { return detail::g_on.load(std::memory_order_relaxed); }
void start();  // forgets earlier calls and turns timing on
void stop();   // turns timing off; what was timed stays until the next start

struct Row {
  std::string kernel;  // the kernel table's entry name: "gemm", "copy", "flash_attention_forward"
  std::string device;  // "cpu", "cuda:0"
  std::string shapes;  // "bf16 (8192, 2304) <- (8192, 768)": first two tensor arguments
  int64_t calls = 0;
  double ms = 0;       // summed over the calls
  double bytes = 0;    // the calls' tensor arguments' bytes, summed
};
// Every group timed since start(), most time first. Waits for pending device timings.
std::vector<Row> rows();

// A plain-text table of rows: per group ms and calls per step (divided by steps), its share of all
// timed kernel time, and a per-kernel-name total; at most top groups, the rest summed on one line.
// wall_ms > 0 (the profiled steps' wall time, per step) adds the share of the wall time that the
// kernels account for.
std::string table(const std::vector<Row>& rows, int steps, double wall_ms, int top = 40);

// ---- used by TESSERA_KERNEL ----
class Scope {
 public:
  Scope(const char* kernel, Device device, const Tensor* first, const Tensor* second,
        int64_t bytes = 0);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  bool active_ = false;  // false for a call nested inside another timed one
  int64_t group_ = 0;
  Device device_;
  double t0_ = 0;              // host clock (CPU)
  void* event0_ = nullptr;     // device event (CUDA)
};

// The first and second Tensor among a call's arguments (nullptr where there are fewer), and the
// bytes of all of them (undefined ones count 0).
inline const Tensor* as_tensor(const Tensor& t) { return &t; }
template <class X>
const Tensor* as_tensor(const X&) {
  return nullptr;
}
template <class... A>
void tensor_args(const Tensor*& a, const Tensor*& b, int64_t& bytes, const A&... args) {
  for (const Tensor* t : {as_tensor(args)...}) {
    if (!t) continue;
    if (t->defined()) bytes += int64_t(t->nbytes());
    if (!a)
      a = t;
    else if (!b)
      b = t;
  }
}

}  // namespace tessera::profile
