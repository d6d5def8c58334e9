// CUDA device memory and the memory kernels (copy, fill) of the kernel table.
// Shapes: copy handles any shape up to rank 8 with arbitrary strides and any dtype pair.
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "allocator.cuh"
#include "backend/copy_geometry.h"
#include "backend/cuda.h"
#include "backend/kernels.h"
#include "common.cuh"

namespace tessera::cuda {
namespace {

using Geometry = CopyGeometry;  // backend/copy_geometry.h

template <typename T>
__device__ __forceinline__ float to_f32(T v) { return float(v); }
template <>
__device__ __forceinline__ float to_f32<uint16_t>(uint16_t v) {  // bf16 bits
  return __uint_as_float(uint32_t(v) << 16);
}
template <typename T>
__device__ __forceinline__ double load_d(const T* p) { return double(*p); }
template <>
__device__ __forceinline__ double load_d<uint16_t>(const uint16_t* p) { return double(to_f32(*p)); }

template <typename T>
__device__ __forceinline__ void store_d(T* p, double v) { *p = static_cast<T>(v); }
template <>
__device__ __forceinline__ void store_d<uint16_t>(uint16_t* p, double v) {  // round to nearest even
  float f = float(v);
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) {
    *p = uint16_t((u >> 16) | 0x0040u);
  } else {
    *p = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}

// One element converted: the same dtype moves its bits, any other pair goes through double (a
// bf16 result rounds to nearest even, as on the CPU).
template <typename D, typename S>
__device__ __forceinline__ void convert(D* dst, const S* src) {
  if constexpr (std::is_same_v<D, S>) {
    *dst = *src;
  } else {
    store_d(dst, load_d(src));
  }
}

// Every element of a rank-`rank` box (Geometry, already collapsed), one per thread; I is the index
// type, 32-bit whenever every offset fits (far cheaper division on the GPU).
template <typename D, typename S, typename I>
__global__ void copy_kernel(D* dst, const S* src, I n, Geometry g) {
  const I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x);
  if (i >= n) return;
  I rest = i, so = 0, dof = 0;
  for (int d = g.rank - 1; d > 0; --d) {
    const I size = I(g.shape[d]);
    const I idx = rest % size;
    rest /= size;
    so += idx * I(g.src_strides[d]);
    dof += idx * I(g.dst_strides[d]);
  }
  so += rest * I(g.src_strides[0]);
  dof += rest * I(g.dst_strides[0]);
  convert(dst + dof, src + so);
}

void copy(const Tensor& dst, const Tensor& src) {
  TESSERA_CHECK(dst.shape() == src.shape(), "cuda copy: ", shape_str(dst.shape()), " vs ",
                shape_str(src.shape()));
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard guard(dst.device().index);
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    CUDA_CHECK(cudaMemcpy(dst.data_ptr(), src.data_ptr(), dst.nbytes(), cudaMemcpyDeviceToDevice));
    return;
  }
  const Geometry g = copy_geometry("cuda copy", dst, src);
  const int threads = 256;
  const unsigned blocks = unsigned((n + threads - 1) / threads);
  const bool narrow_index = fits_int32_index(n, threads, max_offset(g));
  visit_any_dtype(dst.dtype(), [&](auto dz) {
    visit_any_dtype(src.dtype(), [&](auto sz) {
      using D = decltype(dz);
      using S = decltype(sz);
      D* d = static_cast<D*>(dst.data_ptr());
      const S* s = static_cast<const S*>(src.data_ptr());
      if (narrow_index)
        copy_kernel<D, S, int32_t><<<blocks, threads>>>(d, s, int32_t(n), g);
      else
        copy_kernel<D, S, int64_t><<<blocks, threads>>>(d, s, n, g);
      CUDA_CHECK_LAUNCH();
    });
  });
}

template <typename T>
__global__ void fill_kernel(T* dst, int64_t n, double value) {
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) store_d(dst + i, value);
}

void fill(const Tensor& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  TESSERA_CHECK(dst.is_contiguous(), "cuda fill: ", dst.str(), " is not contiguous");
  DeviceGuard guard(dst.device().index);
  const int threads = 256;
  const unsigned blocks = unsigned((n + threads - 1) / threads);
  visit_any_dtype(dst.dtype(), [&](auto z) {
    using T = decltype(z);
    fill_kernel<T><<<blocks, threads>>>(static_cast<T*>(dst.data_ptr()), n, value);
    CUDA_CHECK_LAUNCH();
  });
}

SyncStats g_sync;  // counted on the host thread that drives the device
struct Event {  // a profile event and the device it was created on
  cudaEvent_t event;
  int device;
};
// Recorded and resolved: free for the next record_event. Never destroyed, so its events stay
// reachable to the end (destroying CUDA events in static destructors races the runtime's teardown).
std::vector<Event*>& g_events = *new std::vector<Event*>;

}  // namespace

bool available() { return device_count() > 0; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();  // not sticky, but leave nothing for the next check to report
    return "";
  }
  return prop.name;
}

// Through the caching allocator (allocator.cu): a freed block is kept and handed out again.
void* device_malloc(size_t nbytes, int device) {
  static const int count = device_count();  // asked once: it cannot change within a process
  TESSERA_CHECK(device >= 0 && device < count, "CUDA device ", device, " requested but ", count,
                " device(s) found");
  return alloc::allocate(nbytes, device);
}

void device_free(void* ptr, int device) { alloc::release(ptr, device); }  // never throws

// Queued on the stream every kernel runs on, without waiting for the kernels before it: from
// pageable memory, cudaMemcpyAsync returns once the bytes are staged, so src may be freed at once
// (CUDA runtime API, "API synchronization behavior"); cudaMemcpy would first wait for the stream.
void copy_to_device(void* dst, const void* src, size_t nbytes, int device) {
  DeviceGuard guard(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, 0));
}

void copy_to_host(void* dst, const void* src, size_t nbytes, int device) {
  DeviceGuard guard(device);
  ++g_sync.copies_to_host;
  CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToHost));
}

void copy_device_to_device(void* dst, const void* src, size_t nbytes, int device) {
  DeviceGuard guard(device);
  CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToDevice));
}

void synchronize(int device) {
  DeviceGuard guard(device);
  ++g_sync.synchronize_calls;
  CUDA_CHECK(cudaDeviceSynchronize());
}

SyncStats sync_stats() { return g_sync; }

// Events for the kernel profile, pooled per device (an event belongs to the device current when it
// was created): a profiled step records two per kernel call.

void* record_event(int device) {
  DeviceGuard guard(device);
  Event* e = nullptr;
  for (size_t i = 0; i < g_events.size(); ++i)
    if (g_events[i]->device == device) {
      e = g_events[i];
      g_events.erase(g_events.begin() + std::ptrdiff_t(i));
      break;
    }
  if (!e) {
    e = new Event{nullptr, device};
    CUDA_CHECK(cudaEventCreate(&e->event));
  }
  CUDA_CHECK(cudaEventRecord(e->event, 0));  // the legacy default stream, where every kernel runs
  return e;
}

double elapsed_ms(void* start, void* end) {
  const Event* a = static_cast<const Event*>(start);
  const Event* b = static_cast<const Event*>(end);
  CUDA_CHECK(cudaEventSynchronize(b->event));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, a->event, b->event));
  return double(ms);
}

void release_event(void* event) {
  if (event) g_events.push_back(static_cast<Event*>(event));
}

// Entries a file does not fill stay null and TESSERA_KERNEL names the missing one. Each kernels/*.cu
// file fills its own entries through an add_*_kernels function (common.cuh): an explicit call, since
// a static-initialiser registry would be dropped with its object file from the static library.
const Kernels& kernels() {
  static const Kernels table = [] {
    Kernels k{};
    k.copy = copy;
    k.fill = fill;
    add_core_kernels(k);
    add_blas_kernels(k);
    add_optim_kernels(k);
    add_attention_kernels(k);
    add_nf4_kernels(k);
    return k;
  }();
  return table;
}

}  // namespace tessera::cuda
