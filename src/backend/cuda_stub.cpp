// Linked instead of kernels/*.cu when tessera is built without CUDA: any request for a CUDA tensor
// or kernel fails with one clear message.
#include "backend/cuda.h"
#include "backend/kernels.h"
#include "core/error.h"

namespace tessera::cuda {
namespace {
[[noreturn]] void no_cuda() {
  TESSERA_FAIL("tessera was built without CUDA support (reconfigure with nvcc on the PATH, "
               "-DTESSERA_CUDA=ON)");
}
}  // namespace

bool available() { return false; }
int device_count() { return 0; }
std::string device_name(int) { no_cuda(); }
void* device_malloc(size_t, int) { no_cuda(); }
void device_free(void*, int) {}
void copy_to_device(void*, const void*, size_t, int) { no_cuda(); }
void copy_to_host(void*, const void*, size_t, int) { no_cuda(); }
void copy_device_to_device(void*, const void*, size_t, int) { no_cuda(); }
void synchronize(int) { no_cuda(); }
void* record_event(int) { no_cuda(); }
double elapsed_ms(void*, void*) { no_cuda(); }
void release_event(void*) {}
SyncStats sync_stats() { return {}; }
BlasStats blas_stats() { return {}; }
std::string cublaslt_library() { no_cuda(); }
DeviceMemoryStats device_memory_stats(int) { return {}; }
bool caching_enabled() { return false; }
void empty_cache(int) {}
FlashKernels flash_kernels() { return FlashKernels::Mma; }
void set_flash_kernels(FlashKernels) {}
FlashKernels flash_kernels_named(const char*) { no_cuda(); }
FlashStats flash_stats() { return {}; }
bool flash_wgmma_available() { return false; }
std::vector<float> wgmma_probe(WgmmaBlock, int, int, bool, bool, const std::vector<uint16_t>&,
                               const std::vector<uint16_t>&) {
  no_cuda();
}
const Kernels& kernels() { no_cuda(); }

}  // namespace tessera::cuda
