#include "checkpoint/async_save.h"

#include <chrono>
#include <exception>
#include <utility>

#include "core/error.h"

namespace tessera {
namespace {

Tensor owned_host_copy(const Tensor& t) {
  if (!t.defined()) return t;  // save_checkpoint names it (check_data)
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  h.copy_(t);
  return h;
}

double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

CheckpointData stage_on_host(const CheckpointData& ck) {
  CheckpointData out = ck;  // every attribute; the tensors are replaced by copies below
  out.optimizer_sources.clear();
  for (auto& [name, t] : out.model) t = owned_host_copy(t);
  for (auto& [key, t] : out.optimizer) t = owned_host_copy(t);
  // A source's tensor may be a gathered shard released when it goes out of scope: copied at once.
  for (const auto& [key, source] : ck.optimizer_sources)
    out.optimizer.emplace_back(key, owned_host_copy(source()));
  for (auto& [name, t] : out.trainer_tensors) t = owned_host_copy(t);
  return out;
}

BackgroundWrite::~BackgroundWrite() {
  if (thread_.joinable()) thread_.join();
}

void BackgroundWrite::start(std::string what, std::function<void()> job) {
  TESSERA_CHECK(!pending(), "background write of ", what, " started while the write of ", what_,
                " was not collected");
  what_ = std::move(what);
  error_.clear();
  job_seconds_ = waited_seconds_ = 0;
  state_.store(kRunning, std::memory_order_release);
  auto body = [this, job = std::move(job)] {
    const auto t0 = std::chrono::steady_clock::now();
    int end = kDone;
    try {
      job();
    } catch (const std::exception& e) {
      error_ = e.what();
      end = kFailed;
    } catch (...) {
      error_ = "background write of " + what_ + " failed with an unknown exception";
      end = kFailed;
    }
    job_seconds_ = seconds_between(t0, std::chrono::steady_clock::now());
    state_.store(end, std::memory_order_release);
  };
  try {
    thread_ = std::thread(std::move(body));
  } catch (...) {  // no thread to be had: nothing runs, nothing is pending
    state_.store(kDone, std::memory_order_release);
    throw;
  }
}

std::string BackgroundWrite::wait() {
  if (!thread_.joinable()) return "";
  const auto t0 = std::chrono::steady_clock::now();
  thread_.join();
  waited_seconds_ = seconds_between(t0, std::chrono::steady_clock::now());
  return std::exchange(error_, "");
}

}  // namespace tessera
