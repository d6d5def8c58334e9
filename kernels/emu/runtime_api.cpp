// The CUDA emulator's runtime API (model: cuda_emu.h): the part of it that kernels/*.cu calls, over
// host memory: allocations (each filled with 0xff bytes, as uninitialised memory may hold
// anything), copies and sets queued on streams (streams.cpp), errors, one device. The launches'
// fiber scheduler: runtime.cpp.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emu.h"

namespace {

std::mutex g_mu;
std::map<uintptr_t, size_t> g_allocations;  // start -> bytes
size_t g_allocated = 0;
int g_device = 0;

// Each runtime call's error is also the one cudaGetLastError returns next, as in CUDA. A failed
// kernel's (streams.cpp) is returned by every call that checks it, as a GPU's sticky error is.
cudaError_t set(cudaError_t e) {
  if (e != cudaSuccess) tessera::emu::g_last_error = e;
  return e;
}

// A copy's direction against where its pointers lie, then the copy, queued on the stream
// (streams.cpp). As CUDA's from pageable host memory: the source bytes are taken at the call, so
// the caller may reuse them at once; a copy to the host returns once it is done.
cudaError_t copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                 cudaStream_t stream = nullptr) {
  const bool to_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool from_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (n == 0) return cudaSuccess;
  using tessera::emu::on_device;
  if ((to_device && !on_device(dst, n)) || (from_device && !on_device(src, n)) ||
      (kind == cudaMemcpyDeviceToHost && on_device(dst, n)) ||
      (kind == cudaMemcpyHostToDevice && on_device(src, n)))
    return set(cudaErrorInvalidValue);
  if (const cudaError_t e = tessera::emu::fault()) return e;
  if (kind == cudaMemcpyDeviceToDevice && tessera::emu::skip_kernels()) return cudaSuccess;
  if (kind == cudaMemcpyHostToDevice && tessera::emu::asynchronous(stream)) {
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + n);
    tessera::emu::enqueue(stream, [=] { std::memcpy(dst, staged->data(), n); });
    return cudaSuccess;
  }
  tessera::emu::enqueue(stream, [=] { std::memmove(dst, src, n); });
  if (kind == cudaMemcpyDeviceToHost) tessera::emu::drain(stream);
  return tessera::emu::fault();
}

}  // namespace

bool tessera::emu::on_device(const void* p, size_t n) {
  std::lock_guard<std::mutex> lock(g_mu);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = g_allocations.upper_bound(a);
  if (it == g_allocations.begin()) return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}

void tessera::emu::check_vector_access(const void* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) fail("a 16-byte access at a misaligned address");
  if (!on_device(p, 16)) fail("a 16-byte access outside every device allocation");
}

extern "C" {

cudaError_t cudaMalloc(void** p, size_t n) {
  // TESSERA_EMU_MALLOC_MAX=bytes: a larger request fails as a full GPU's does (a test of what
  // runs out of memory), read at each call.
  if (const char* e = std::getenv("TESSERA_EMU_MALLOC_MAX"); e && *e && n > std::stoull(e))
    return set(cudaErrorMemoryAllocation);
  // 256-byte alignment, as cudaMalloc's; a zero-byte request still gets a distinct pointer.
  void* q = std::aligned_alloc(256, std::max<size_t>((n + 255) / 256 * 256, 256));
  if (!q) return set(cudaErrorMemoryAllocation);
  // cudaMalloc leaves memory uninitialised; fresh host pages would read as zeros, hiding a kernel
  // that reads what nothing wrote. Every byte 0xff instead: NaN as f32 and bf16, -1 as integers.
  if (!tessera::emu::skip_kernels()) std::memset(q, 0xff, n);
  std::lock_guard<std::mutex> lock(g_mu);
  g_allocations[reinterpret_cast<uintptr_t>(q)] = n;
  g_allocated += n;
  *p = q;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  cudaDeviceSynchronize();  // as CUDA's: no queued kernel, copy or collective still uses p
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == g_allocations.end()) return set(cudaErrorInvalidValue);
  g_allocated -= it->second;
  g_allocations.erase(it);
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  const size_t total = size_t(80) << 30;
  std::lock_guard<std::mutex> lock(g_mu);
  *total_bytes = total;
  *free_bytes = total - std::min(total, g_allocated);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  return copy(dst, src, n, kind);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return copy(dst, src, n, kind, stream);
}
cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t n, size_t offset,
                               cudaMemcpyKind) {
  auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src),
                                                    static_cast<const char*>(src) + n);
  char* dst = static_cast<char*>(const_cast<void*>(symbol)) + offset;
  tessera::emu::enqueue(cudaStreamLegacy, [=] { std::memcpy(dst, staged->data(), n); });
  return tessera::emu::fault();
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = tessera::emu::g_last_error;
  tessera::emu::g_last_error = cudaSuccess;
  return e != cudaSuccess ? e : tessera::emu::fault();
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument (cuda emulator)";
    case cudaErrorMemoryAllocation:
      return "out of memory (cuda emulator)";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument (cuda emulator)";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal (cuda emulator)";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle (cuda emulator)";
    case cudaErrorNotReady:
      return "device not ready (cuda emulator)";
    case cudaErrorLaunchFailure:
      return tessera::emu::fault_string();
    default:
      return "error (cuda emulator)";
  }
}

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = g_device;
  return cudaSuccess;
}
// The emulated device is compute capability 9.0: it carries out what the kernels use up to sm_90a
// (wgmma included, kernels/emu/wgmma.h). Other attributes are not modelled: an error.
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return set(cudaErrorInvalidDevice);
  if (attr == cudaDevAttrComputeCapabilityMajor) return *value = 9, cudaSuccess;
  if (attr == cudaDevAttrComputeCapabilityMinor) return *value = 0, cudaSuccess;
  return set(cudaErrorInvalidValue);
}
// The properties tessera reads: the name (train's MFU looks its peak up by name: none for this
// one, unless TESSERA_EMU_DEVICE_NAME gives another to try that path), the compute capability and
// one multiprocessor; the rest zero.
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return set(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  const char* name = std::getenv("TESSERA_EMU_DEVICE_NAME");
  std::snprintf(prop->name, sizeof prop->name, "%s",
                name && *name ? name : "tessera CUDA emulator");
  prop->major = 9, prop->minor = 0, prop->multiProcessorCount = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (d != 0) return set(cudaErrorInvalidDevice);
  g_device = d;
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* f, cudaFuncAttribute attr, int value) {
  if (value < 0 || value > 232448) return set(cudaErrorInvalidValue);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize)
    tessera::emu::set_dynamic_smem_limit(f, size_t(value));
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t stream) {
  if (n && !tessera::emu::on_device(p, n)) return set(cudaErrorInvalidValue);
  if (!tessera::emu::skip_kernels())
    tessera::emu::enqueue(stream, [=] { std::memset(p, value, n); });
  return tessera::emu::fault();
}

}  // extern "C"
