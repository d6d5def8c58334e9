// Large host tensors ask the kernel for transparent huge pages (core/storage.cpp): what
// /proc/self/smaps says backs them, with the advice and without it (TESSERA_HUGE_PAGES=off), and
// how many page faults touching them takes.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/tensor.h"

using namespace tessera;

namespace {

// AnonHugePages of the mapping that holds `p`, in kB (smaps: one block of lines a mapping).
int64_t huge_kb_at(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {  // a mapping's first line
      inside = lo <= a && a < hi;
      continue;
    }
    int64_t kb = 0;
    if (inside && line.rfind("AnonHugePages:", 0) == 0 && std::istringstream(line.substr(14)) >> kb)
      return kb;
  }
  return -1;
}

int64_t vmstat(const std::string& key) {
  std::ifstream in("/proc/vmstat");
  std::string k;
  int64_t v = 0;
  while (in >> k >> v)
    if (k == key) return v;
  return -1;
}

std::string thp_mode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  std::getline(in, modes);
  const size_t a = modes.find('['), b = modes.find(']');
  return a == std::string::npos || b == std::string::npos ? "" : modes.substr(a + 1, b - a - 1);
}

size_t huge_page_bytes() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
  size_t b = 0;
  return in >> b ? b : 0;
}

// Page faults this thread has taken so far (a huge page is one, a 4 KiB page one).
int64_t thread_faults() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return ru.ru_minflt;
}

// Whether any 4 KiB page of [p, p + bytes) is mapped already (mincore(2)): a block on reused heap
// memory, where a page glibc wrote (a chunk's header) keeps its huge page from being one.
bool any_page_mapped(const void* p, size_t bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(4095);
  const size_t n = (reinterpret_cast<uintptr_t>(p) + bytes - a + 4095) / 4096;
  std::vector<unsigned char> in(n);
  if (mincore(reinterpret_cast<void*>(a), n * 4096, in.data()) != 0) return true;
  for (unsigned char c : in)
    if (c & 1) return true;
  return false;
}

// Whether storage.cpp advises large blocks here: the kernel offers huge pages on request.
bool thp_offered() {
  const std::string mode = thp_mode();
  return mode == "madvise" || mode == "always";
}

// A 64 MiB f32 tensor, every page touched; its middle's mapping's huge pages in kB.
int64_t touched_tensor_huge_kb(Tensor* keep) {
  *keep = Tensor::empty({int64_t(16) << 20}, DType::F32);
  std::memset(keep->data_ptr(), 1, keep->nbytes());
  return huge_kb_at(static_cast<const char*>(keep->data_ptr()) + keep->nbytes() / 2);
}

}  // namespace

TEST(HostMemory, a_large_tensor_is_backed_by_huge_pages_where_the_kernel_offers_them) {
  if (!thp_offered())
    GTEST_SKIP() << "no transparent huge pages on request here (mode '" << thp_mode() << "')";
  const int64_t fallbacks = vmstat("thp_fault_fallback");
  Tensor advised;
  const int64_t kb = touched_tensor_huge_kb(&advised);
  ASSERT_GE(kb, 0) << "no mapping in /proc/self/smaps holds the tensor";
  if (kb == 0 && vmstat("thp_fault_fallback") > fallbacks)
    GTEST_SKIP() << "the kernel had no free huge page (thp_fault_fallback rose)";
  EXPECT_GT(kb, 0) << "a touched 64 MiB tensor has no huge page (mode '" << thp_mode() << "')";

  // Without the advice, "madvise" mode backs the block with 4 KiB pages alone ("always" backs
  // every block with huge pages: nothing to tell apart there).
  if (thp_mode() != "madvise") return;
  ::setenv("TESSERA_HUGE_PAGES", "off", 1);
  Tensor plain;
  const int64_t plain_kb = touched_tensor_huge_kb(&plain);
  ::unsetenv("TESSERA_HUGE_PAGES");
  EXPECT_EQ(plain_kb, 0) << "TESSERA_HUGE_PAGES=off, yet the tensor has huge pages";
}

TEST(HostMemory, an_unknown_huge_pages_switch_is_refused_naming_it) {
  if (!thp_offered()) GTEST_SKIP() << "the switch is read only where THP is offered";
  ::setenv("TESSERA_HUGE_PAGES", "maybe", 1);
  std::string msg;
  try {
    (void)Tensor::empty({int64_t(4) << 20}, DType::F32);
  } catch (const Error& e) {
    msg = e.what();
  }
  ::unsetenv("TESSERA_HUGE_PAGES");
  EXPECT_NE(msg.find("TESSERA_HUGE_PAGES='maybe'"), std::string::npos) << msg;
}

// A block of a huge page or more starts on one, so that none of its huge pages is shared with the
// chunk headers glibc writes around it, and its last partial huge page is taken whole where that
// adds at most an eighth: touching its huge pages then takes a fault each, not one per 4 KiB. (Not
// the first: a small block glibc placed there before, since freed, may have touched a 4 KiB page
// of it, which keeps that huge page in 4 KiB pages.)
TEST(HostMemory, a_block_of_a_huge_page_or_more_faults_in_whole_huge_pages) {
  const size_t huge = huge_page_bytes();
  if (!thp_offered() || huge == 0)
    GTEST_SKIP() << "no transparent huge pages on request here (mode '" << thp_mode() << "')";
  const int64_t fallbacks = vmstat("thp_fault_fallback");
  // 1.25 huge pages: its first huge page whole (the rest, 0.25, would cost 0.75 more to round).
  const Tensor small = Tensor::empty({int64_t(huge + huge / 4) / 4}, DType::F32);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data_ptr()) % huge, 0u)
      << "a block of 1.25 huge pages does not start on a huge page";
  // 4.75 huge pages: rounded up to 5 (0.25 more is under an eighth).
  const size_t bytes = 4 * huge + 3 * huge / 4;
  const Tensor t = Tensor::empty({int64_t(bytes / 4)}, DType::F32);
  char* const p = static_cast<char*>(t.data_ptr());
  ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % huge, 0u)
      << "a block of 4.75 huge pages does not start on a huge page";
  if (any_page_mapped(p + huge, bytes - huge))
    GTEST_SKIP() << "the block is on heap memory used before";
  const int64_t before = thread_faults();
  std::memset(p + huge, 1, bytes - huge);
  const int64_t faults = thread_faults() - before;
  if (vmstat("thp_fault_fallback") > fallbacks)
    GTEST_SKIP() << "the kernel had no free huge page (thp_fault_fallback rose)";
  // Four huge pages, a few faults to spare; 4 KiB pages would take 512 a huge page (the last
  // 0.75 of one, 384, where the block was not rounded up).
  EXPECT_LE(faults, 8) << "touching huge pages 2 to 4.75 of a block of 4.75 took " << faults
                       << " page faults";
}
