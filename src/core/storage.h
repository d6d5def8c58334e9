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

// Bytes copied between host and device memory (Tensor::copy_, through which every transfer goes)
// and bytes read out of tensors into host vectors (Tensor::to_vector), since the process started.
// Tests take the difference around a code path to show it moves nothing to the host.
struct TransferStats {
  int64_t host_to_device_bytes = 0;
  int64_t device_to_host_bytes = 0;
  int64_t host_readout_bytes = 0;  // to_vector on any device: a tensor leaving tensor land
};
TransferStats transfer_stats();
void count_host_to_device(int64_t bytes);
void count_device_to_host(int64_t bytes);
void count_host_readout(int64_t bytes);

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
