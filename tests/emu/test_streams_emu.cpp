// The CUDA emulator's streams and events (kernels/emu/streams.cpp): work queued on a stream the
// program made runs later, so what is read before waiting on its event is what was there before.
// emu::hold_streams keeps the streams' threads from starting their next operation, which makes
// "not yet run" certain instead of likely. This binary runs with the legacy stream synchronous
// (legacy_stream.cpp); the last tests here turn on its asynchronous mode, every other binary's.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "emu/cuda_emu.h"

namespace tessera {
namespace {

struct Held {  // RAII: the streams are held for the scope, released on every exit path
  Held() { emu::hold_streams(true); }
  ~Held() { emu::hold_streams(false); }
};

struct AsyncLegacy {  // RAII: the legacy stream asynchronous for the scope
  AsyncLegacy() { emu::set_legacy_async(true); }
  ~AsyncLegacy() { emu::set_legacy_async(false); }
};

std::vector<uint8_t> read(const void* p, size_t n) {
  std::vector<uint8_t> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), p, n, cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

TEST(StreamsEmu, a_streams_work_is_unseen_until_the_legacy_stream_waits_for_its_event) {
  void* p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 64), cudaSuccess);  // 0xff bytes
  cudaStream_t s;
  cudaEvent_t e;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
  {
    Held held;
    ASSERT_EQ(cudaMemsetAsync(p, 7, 64, s), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
    EXPECT_EQ(cudaEventQuery(e), cudaErrorNotReady);
    EXPECT_EQ(read(p, 64), std::vector<uint8_t>(64, 0xff));  // the legacy stream does not wait
    // Returns at once: the host is not blocked (the held stream would never let it go), only the
    // legacy stream's next operation waits.
    ASSERT_EQ(cudaStreamWaitEvent(cudaStreamLegacy, e, 0), cudaSuccess);
  }
  EXPECT_EQ(read(p, 64), std::vector<uint8_t>(64, 7));  // the copy waited for the memset
  EXPECT_EQ(cudaEventQuery(e), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(e), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaSuccess);
}

TEST(StreamsEmu, a_stream_runs_in_order_and_waits_for_another_streams_event) {
  void *p = nullptr, *q = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 32), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&q, 32), cudaSuccess);
  cudaStream_t a, b;
  cudaEvent_t e, done;
  ASSERT_EQ(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&done), cudaSuccess);
  {
    Held held;
    ASSERT_EQ(cudaMemsetAsync(p, 1, 32, a), cudaSuccess);
    ASSERT_EQ(cudaMemsetAsync(p, 2, 16, a), cudaSuccess);  // after the first, on the same stream
    ASSERT_EQ(cudaEventRecord(e, a), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(b, e, 0), cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(q, p, 32, cudaMemcpyDeviceToDevice, b), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(done, b), cudaSuccess);
    // Destroyed while pending: freed once its work is done, and the wait on it still holds.
    ASSERT_EQ(cudaEventDestroy(e), cudaSuccess);
    // A legacy event recorded behind a wait on `done` completes with it.
    ASSERT_EQ(cudaStreamWaitEvent(nullptr, done, 0), cudaSuccess);
    cudaEvent_t behind;
    ASSERT_EQ(cudaEventCreate(&behind), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(behind, nullptr), cudaSuccess);
    EXPECT_EQ(cudaEventQuery(behind), cudaErrorNotReady);
    emu::hold_streams(false);
    ASSERT_EQ(cudaEventSynchronize(behind), cudaSuccess);
    EXPECT_EQ(cudaEventQuery(done), cudaSuccess);
    EXPECT_EQ(cudaEventDestroy(behind), cudaSuccess);
  }
  std::vector<uint8_t> want(32, 1);
  std::fill(want.begin(), want.begin() + 16, 2);
  EXPECT_EQ(read(q, 32), want);
  EXPECT_EQ(cudaEventDestroy(done), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(a), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(b), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(cudaFree(q), cudaSuccess);
}

TEST(StreamsEmu, synchronize_calls_wait_for_every_stream_and_the_legacy_stream_runs_at_once) {
  void* p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 8), cudaSuccess);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(p, 3, 8, nullptr), cudaSuccess);  // legacy: done on return
  EXPECT_EQ(read(p, 8), std::vector<uint8_t>(8, 3));
  ASSERT_EQ(cudaMemsetAsync(p, 4, 8, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(read(p, 8), std::vector<uint8_t>(8, 4));
  ASSERT_EQ(cudaMemsetAsync(p, 5, 8, s), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(read(p, 8), std::vector<uint8_t>(8, 5));
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaSuccess);
}

// What the device holds, read as only the emulator can (its device memory is host memory): no
// copy, so nothing is synchronized.
std::vector<uint8_t> peek(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

TEST(StreamsEmu, an_asynchronous_legacy_launch_returns_first_and_a_copy_to_the_host_waits_for_it) {
  AsyncLegacy async;
  void* p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 16), cudaSuccess);
  auto* out = static_cast<uint8_t*>(p);
  std::vector<uint8_t> staged(16, 9);
  {
    Held held;
    ASSERT_EQ(cudaMemcpy(p, staged.data(), 16, cudaMemcpyHostToDevice), cudaSuccess);
    std::fill(staged.begin(), staged.end(), 0);  // the copy took its bytes at the call
    emu::launch("plus_one", emu::config(1, 16), nullptr, [](uint8_t* o) { o[threadIdx.x] += 1; })(out);
    EXPECT_EQ(peek(p, 16), std::vector<uint8_t>(16, 0xff));  // neither has run
  }
  EXPECT_EQ(read(p, 16), std::vector<uint8_t>(16, 10));  // both ran, in order, before the read
  EXPECT_EQ(cudaFree(p), cudaSuccess);
}

TEST(StreamsEmu, a_stream_waiting_on_a_legacy_event_waits_for_the_work_queued_before_it) {
  AsyncLegacy async;
  void *p = nullptr, *q = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 32), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&q, 32), cudaSuccess);
  cudaStream_t s;
  cudaEvent_t ready;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&ready), cudaSuccess);
  {
    Held held;
    ASSERT_EQ(cudaMemsetAsync(p, 6, 32, nullptr), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(ready, nullptr), cudaSuccess);
    EXPECT_EQ(cudaEventQuery(ready), cudaErrorNotReady);  // the memset before it is queued
    ASSERT_EQ(cudaStreamWaitEvent(s, ready, 0), cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(q, p, 32, cudaMemcpyDeviceToDevice, s), cudaSuccess);
  }
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(peek(q, 32), std::vector<uint8_t>(32, 6));
  EXPECT_EQ(cudaEventDestroy(ready), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(cudaFree(q), cudaSuccess);
}

TEST(StreamsEmu, a_kernel_that_fails_on_the_legacy_stream_is_the_next_calls_launch_failure) {
  AsyncLegacy async;
  void* p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 64), cudaSuccess);
  auto* out = static_cast<float*>(p);
  // Lane 0 leaves; the rest then shuffle from it: an emulator error, raised on the stream's thread.
  emu::launch("reads_an_exited_lane", emu::config(1, 32), nullptr, [](float* o) {
    if (threadIdx.x == 0) return;
    o[threadIdx.x] = __shfl_sync(0xffffffffu, 1.0f, 0);
  })(out);
  const cudaError_t e = cudaDeviceSynchronize();
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  const std::string what = cudaGetErrorString(e);
  EXPECT_NE(what.find("reads_an_exited_lane"), std::string::npos) << what;
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);  // sticky, as a GPU's is
  std::vector<uint8_t> h(4);
  EXPECT_EQ(cudaMemcpy(h.data(), p, 4, cudaMemcpyDeviceToHost), cudaErrorLaunchFailure);
  emu::clear_fault();  // for the tests after this one
  EXPECT_EQ(cudaFree(p), cudaSuccess);
}

}  // namespace
}  // namespace tessera
