// The CUDA emulator's streams and events (kernels/emu/streams.cpp): work queued on a stream the
// program made runs later, so what is read before waiting on its event is what was there before.
// emu::hold_streams keeps the streams' threads from starting their next operation, which makes
// "not yet run" certain instead of likely.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "emu/cuda_emu.h"

namespace tessera {
namespace {

struct Held {  // RAII: the streams are held for the scope, released on every exit path
  Held() { emu::hold_streams(true); }
  ~Held() { emu::hold_streams(false); }
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

}  // namespace
}  // namespace tessera
