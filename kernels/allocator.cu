// Caching device allocator (see allocator.cuh for the contract and why one stream makes it safe).
//
// Size classes: up to 1 MiB, multiples of 512 B (at most 511 B wasted per block); above, eight
// classes per power of two (a request in (2^e, 2^(e+1)] rounds up to a multiple of 2^e / 8: at most
// 12.5% wasted). A block serves only requests of its own class: no splitting or merging, which
// keeps the code short and is enough for a training loop, whose steps ask for the same sizes every
// time.
//
// When cudaMalloc fails, every cached block of the device is returned to the driver and the
// request is tried once more; a second failure is an error that names the request and the state
// of the pool. Pools live on the heap and are never destroyed: at process exit the CUDA runtime may
// already be torn down, and cudaFree then would fail.
#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "allocator.cuh"
#include "backend/cuda.h"
#include "common.cuh"

namespace tessera::cuda {

bool caching_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("TESSERA_CUDA_CACHE");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return on;
}

namespace {

constexpr int kMaxDevices = 64;
constexpr size_t kSmallStep = 512;
constexpr size_t kSmallLimit = size_t(1) << 20;

struct Pool {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> cached;  // size class -> free blocks
  std::unordered_map<void*, size_t> live;                 // handed-out block -> its size class
  std::unordered_set<void*> exact;  // live blocks of the requested size, not a class: never cached
  DeviceMemoryStats stats;
};

Pool& pool(int device) {
  static Pool* pools = new Pool[kMaxDevices];  // never destroyed (see the file comment)
  TESSERA_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index ", device, " outside [0, ",
                kMaxDevices, ")");
  return pools[device];
}

// Frees every cached block of p (p.mu held, the device current).
void free_cached(Pool& p) {
  for (auto& [size, blocks] : p.cached) {
    for (void* b : blocks) {
      cudaFree(b);  // a failure here leaves nothing to recover; the block is gone either way
      p.stats.cuda_free_calls++;
      p.stats.reserved_bytes -= int64_t(size);
      p.stats.cached_bytes -= int64_t(size);
    }
  }
  p.cached.clear();
}

std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / double(1 << 20));
  return buf;
}

}  // namespace

namespace alloc {

size_t size_class(size_t nbytes) {
  if (nbytes <= kSmallLimit)
    return std::max(kSmallStep, (nbytes + kSmallStep - 1) / kSmallStep * kSmallStep);
  const size_t step = std::bit_floor(nbytes - 1) / 8;
  return (nbytes + step - 1) / step * step;
}

void* allocate(size_t nbytes, int device) {
  if (nbytes == 0) return nullptr;
  Pool& p = pool(device);
  const size_t size = size_class(nbytes);
  std::lock_guard<std::mutex> lock(p.mu);
  if (caching_enabled()) {
    auto it = p.cached.find(size);
    if (it != p.cached.end() && !it->second.empty()) {
      void* b = it->second.back();
      it->second.pop_back();
      p.live.emplace(b, size);
      p.stats.cached_bytes -= int64_t(size);
      p.stats.in_use_bytes += int64_t(size);
      p.stats.cache_hits++;
      return b;
    }
  }
  DeviceGuard guard(device);
  void* b = nullptr;
  size_t got = size;
  cudaError_t err = cudaMalloc(&b, size);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky, but clear it so the next check does not see it
    free_cached(p);
    err = cudaMalloc(&b, size);
  }
  // A class rounds up by as much as an eighth (a 68.8 GB request is a 77.3 GB block): what fits
  // only at its own size is allocated so, and freed rather than cached when released.
  if (err == cudaErrorMemoryAllocation && size > nbytes) {
    cudaGetLastError();
    err = cudaMalloc(&b, nbytes);
    if (err == cudaSuccess) got = nbytes, p.exact.insert(b);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    TESSERA_FAIL("CUDA out of memory on device ", device, ": asked for ", nbytes, " bytes (",
                 mib(int64_t(size)), " block); tessera holds ", mib(p.stats.in_use_bytes),
                 " in use, ", mib(p.stats.reserved_bytes), " reserved; the driver reports ",
                 mib(int64_t(free_b)), " free of ", mib(int64_t(total_b)), " (",
                 cudaGetErrorString(err), ")");
  }
  p.live.emplace(b, got);
  p.stats.cuda_malloc_calls++;
  p.stats.reserved_bytes += int64_t(got);
  p.stats.in_use_bytes += int64_t(got);
  if (p.stats.reserved_bytes > p.stats.peak_reserved_bytes)
    p.stats.peak_reserved_bytes = p.stats.reserved_bytes;
  return b;
}

void release(void* ptr, int device) {
  if (!ptr) return;
  if (device < 0 || device >= kMaxDevices) return;
  Pool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  auto it = p.live.find(ptr);
  if (it == p.live.end()) {
    // Not ours: a bug elsewhere. Destructors must not throw, so say it and leave the block alone.
    std::fprintf(stderr,
                 "tessera: device_free of %p on device %d, which the allocator never "
                 "handed out\n",
                 ptr, device);
    return;
  }
  const size_t size = it->second;
  p.live.erase(it);
  p.stats.in_use_bytes -= int64_t(size);
  const bool exact = p.exact.erase(ptr) > 0;
  if (caching_enabled() && !exact) {
    p.cached[size].push_back(ptr);
    p.stats.cached_bytes += int64_t(size);
    return;
  }
  int prev = 0;
  cudaGetDevice(&prev);
  if (prev != device) cudaSetDevice(device);
  cudaFree(ptr);
  if (prev != device) cudaSetDevice(prev);
  p.stats.cuda_free_calls++;
  p.stats.reserved_bytes -= int64_t(size);
}

}  // namespace alloc

DeviceMemoryStats device_memory_stats(int device) {
  Pool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  return p.stats;
}

void empty_cache(int device) {
  Pool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  if (p.cached.empty()) return;
  DeviceGuard guard(device);
  free_cached(p);
}

}  // namespace tessera::cuda
