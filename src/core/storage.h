// Storage: one allocation on one device, shared (ref-counted) by every tensor that views it.
// Allocation goes through the device's allocator, which keeps byte counters: current and peak
// bytes are how tests and benchmarks measure memory (e.g. gradient memory during backward).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/dtype.h"

namespace tessera {

struct MemoryStats {
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t n_allocs = 0;  // allocations served since start
};

MemoryStats memory_stats(Device d);
void reset_peak_memory(Device d);  // peak := current

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

}  // namespace tessera
