#include "core/storage.h"

#include <malloc.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>

#include "backend/cuda.h"
#include "core/env.h"
#include "core/error.h"

namespace tessera {
namespace {

struct Counters {
  std::mutex mu;
  MemoryStats stats;
};

Counters& counters(Device d) {
  static Counters cpu;
  static Counters cuda[16];
  if (d.is_cpu()) return cpu;
  TESSERA_CHECK(d.index >= 0 && d.index < 16, "device index out of range: ", d.str());
  return cuda[d.index];
}

void count(Device d, int64_t delta) {
  Counters& c = counters(d);
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.current_bytes += delta;
  if (delta > 0) c.stats.n_allocs++;
  if (c.stats.current_bytes > c.stats.peak_bytes) c.stats.peak_bytes = c.stats.current_bytes;
}

}  // namespace

MemoryStats memory_stats(Device d) {
  Counters& c = counters(d);
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}

void reset_peak_memory(Device d) {
  Counters& c = counters(d);
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.peak_bytes = c.stats.current_bytes;
}

namespace {
std::atomic<int64_t> h2d_bytes{0}, d2h_bytes{0}, readout_bytes{0};
}  // namespace

TransferStats transfer_stats() { return {h2d_bytes.load(), d2h_bytes.load(), readout_bytes.load()}; }
void count_host_to_device(int64_t bytes) { h2d_bytes += bytes; }
void count_device_to_host(int64_t bytes) { d2h_bytes += bytes; }
void count_host_readout(int64_t bytes) { readout_bytes += bytes; }

// glibc serves blocks above M_MMAP_THRESHOLD (128 KiB to 32 MiB, adaptive) with a fresh mmap and
// returns them with munmap, so every activation of a training step would cost page faults on
// first touch. Keeping them in the heap lets the next step reuse the same pages (configs/tiny.yaml's
// model, forward + backward on 2 cores: about 2.2x faster per step than with glibc's defaults).
static void keep_large_blocks_in_the_heap() {
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)done;
}

// Large host blocks ask for transparent huge pages: the kernel then backs them with 2 MiB pages,
// one page fault each where 4 KiB pages take 512. A block's first touch is what that saves (a
// checkpoint loaded into fresh tensors, a model built, the first step's activations; later steps
// reuse the heap's pages, above). On the 2-core AMD EPYC VM of 2026-12-05 a fault cost ~10 us:
// loading a GPT-2 124M checkpoint with AdamW's state (1.5 GB) took 4.9-5.5 s with 4 KiB pages,
// 1.2-1.7 s with huge ones (docs/checkpoints.md, "What the checks cost"). Only where the kernel
// offers them on request ("madvise" or "always" in /sys/kernel/mm/transparent_hugepage/enabled);
// TESSERA_HUGE_PAGES=off leaves every block to the kernel's default.
//
// A block of a huge page or more starts on one, so that the advice covers all of it but its last
// partial huge page, which is taken whole too where that adds at most an eighth to the block. (The
// advice must come before anything touches the pages: glibc writes the headers of the chunks
// around a block, which a huge page shared with the neighbours would already hold as 4 KiB pages;
// a block on heap memory glibc used before may still find one such page in its first huge page.
// With only the whole huge pages inside blocks of 4 MiB or more advised, a GPT-2 124M
// checkpoint's tensors left ~81,000 4 KiB pages to fault, and the load took 2.4-2.5 s.)
namespace {
size_t host_huge_page_bytes() {
  static const size_t bytes = [] {
    std::ifstream enabled("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string modes;
    std::getline(enabled, modes);
    if (modes.find('[') == std::string::npos || modes.find("[never]") != std::string::npos)
      return size_t(0);
    std::ifstream size("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
    size_t b = 0;
    return (size >> b) && b > 0 && (b & (b - 1)) == 0 ? b : size_t(0);
  }();
  return bytes;
}

// The huge page size a block of nbytes is advised to, 0 for none; read before the block is
// allocated, so that a bad TESSERA_HUGE_PAGES is refused with nothing to free.
size_t huge_pages_for(size_t nbytes) {
  const size_t huge = host_huge_page_bytes();
  return huge && nbytes >= huge && !env_switch("TESSERA_HUGE_PAGES", "on", "off") ? huge : 0;
}

// The bytes to allocate for a block of `padded` bytes on huge pages of `huge` bytes: the last
// partial huge page whole, where that costs at most padded / 8.
size_t huge_page_padded(size_t padded, size_t huge) {
  const size_t whole = (padded + huge - 1) / huge * huge;
  return whole - padded <= padded / 8 ? whole : padded;
}
}  // namespace

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  keep_large_blocks_in_the_heap();
  if (device.is_cuda()) {
    data_ = cuda::device_malloc(nbytes, device.index);  // throws in a build without CUDA
  } else {
    // 64-byte alignment for SIMD loads. posix_memalign, not aligned_alloc: a block on huge pages
    // need not be a whole number of them (huge_page_padded), and aligned_alloc's size must be a
    // multiple of its alignment (C11 7.22.3.1; AddressSanitizer refuses it otherwise).
    size_t padded = (nbytes + 63) / 64 * 64;
    const size_t huge = huge_pages_for(padded);
    if (huge) padded = huge_page_padded(padded, huge);
    data_ = nullptr;
    if (padded && posix_memalign(&data_, huge ? huge : 64, padded) != 0) data_ = nullptr;
    TESSERA_CHECK(data_ || !padded, "out of host memory allocating ", nbytes, " bytes");
    // Advice: a kernel that refuses it leaves the block as it was.
    if (huge) (void)madvise(data_, padded / huge * huge, MADV_HUGEPAGE);
  }
  count(device, int64_t(nbytes));
}

Storage::~Storage() {
  if (device_.is_cuda()) {
    cuda::device_free(data_, device_.index);
  } else {
    std::free(data_);
  }
  count(device_, -int64_t(nbytes_));
}

}  // namespace tessera
