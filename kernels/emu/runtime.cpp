// The CUDA emulator's runtime (model: cuda_emu.h): the fiber scheduler that runs a launch's
// threads, their barriers and warp collectives. The part of the CUDA runtime API that
// kernels/*.cu calls, over host memory: runtime_api.cpp. One emulated device, index 0. Streams
// and events: streams.cpp (a launch runs on the legacy stream's thread, after the call has
// returned).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>

#include "core/error.h"
#include "cuda_emu.h"
#include "ptx_fragments.h"
#include "wgmma.h"

// Under AddressSanitizer the fiber switches are announced to it (its "fiber" interface), so it
// keeps track of which stack is live; kernels' reads and writes of emulated device memory (host
// allocations) are then checked like any others.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define TESSERA_EMU_ASAN 1
#else
#define TESSERA_EMU_ASAN 0
#endif

// ---- fibers -----------------------------------------------------------------------------------

// switch_stack(save, load): saves the callee-saved registers and the f32/x87 control words on the
// current stack, stores its pointer in *save, and resumes the stack `load` (one saved the same way,
// or one prepared by start_fiber). A few instructions, where swapcontext also makes a system call
// to save the signal mask: the emulator switches fibers millions of times a test.
#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is x86-64 assembly"
#endif
extern "C" void tessera_emu_switch_stack(void** save, void* load);
asm(R"(
  .text
  .globl tessera_emu_switch_stack
  .type tessera_emu_switch_stack, @function
tessera_emu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size tessera_emu_switch_stack, .-tessera_emu_switch_stack
)");

namespace tessera::emu {

constinit thread_local Builtins* current = nullptr;
// What cudaGetLastError returns next: a bad launch configuration, or a runtime call's error.
thread_local cudaError_t g_last_error = cudaSuccess;

namespace {

// Each kernel's dynamic shared-memory limit, as cudaFuncAttributeMaxDynamicSharedMemorySize set it
// (by function address); 48 KiB for a kernel it was never set for (CUDA C++ Programming Guide,
// "Shared Memory": more than 48 KiB a block needs that opt-in).
constexpr size_t kDefaultDynamicSmem = 48 << 10;
std::mutex g_smem_limits_mutex;
std::map<const void*, size_t> g_smem_limits;

size_t dynamic_smem_limit(const void* function) {
  std::lock_guard<std::mutex> lock(g_smem_limits_mutex);
  const auto it = g_smem_limits.find(function);
  return it == g_smem_limits.end() ? kDefaultDynamicSmem : it->second;
}

constexpr size_t kStackBytes = 256 << 10;  // the wmma tiles of a flash kernel are ~40 KiB a thread
constexpr size_t kGuard = 4096;             // the guard page below each stack (at least a page)

struct Stack {
  void* base = nullptr;  // a guard page, then the stack
  size_t bytes = 0;
};

// Stacks are mapped once per OS thread and reused by every launch.
std::vector<Stack>& stacks(size_t n) {
  thread_local std::vector<Stack> pool;
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  TESSERA_CHECK(page <= kGuard, "cuda emulator: pages of ", page, " bytes exceed the stack guard");
  while (pool.size() < n) {
    const size_t bytes = kStackBytes + kGuard;
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    TESSERA_CHECK(p != MAP_FAILED, "cuda emulator: cannot map ", n, " thread stacks");
    mprotect(p, kGuard, PROT_NONE);  // an overflow faults instead of corrupting the next stack
    pool.push_back({p, bytes});
  }
  return pool;
}

enum class State { Ready, Waiting, Done };
enum class Wait { None, Barrier, Collective, Error };  // what a Waiting fiber waits in

struct Fiber {
  void* sp = nullptr;  // its saved stack pointer while it is not running
  const Stack* stack = nullptr;
  void* asan_fake = nullptr;  // AddressSanitizer's fake stack while switched out
  Builtins b{};
  State state = State::Ready;
  int lane = 0, warp = 0;
  bool started = false;  // it has run: its stack holds frames (unwind_block)
  Wait waits = Wait::None;
  ptx::CpAsyncQueue copies;  // its cp.async copies in flight (ptx.cpp)
  ptx::WgmmaQueue wgmma;     // its wgmma.mma_async operations in flight (ptx.cpp)
};

// A warp's collectives: the lanes of the one in progress deposit into bank `bank`; the release
// flips it. A lane still reading the other bank (readers > 0) holds up the next deposit there.
struct Warp {
  unsigned lanes = 0;    // mask of the block's threads in this warp (the last may be partial)
  unsigned exited = 0;   // lanes that have returned
  unsigned mask = 0;     // of the collective in progress; 0 when none
  unsigned arrived = 0;  // lanes in it so far
  int bank = 0;
  struct Bank {
    int readers = 0;
    Collective c{};
    unsigned char deposit[32][kMaxDeposit];
    unsigned char scratch[kScratch];
    bool scratch_ready = false;
  } banks[2];
};

struct Launch {
  const char* kernel = "";
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::deque<Fiber*> ready;  // run in this order
  int at_barrier = 0;
  int live = 0;
  Fiber* running = nullptr;
  void* scheduler = nullptr;  // the launching thread's stack pointer while a fiber runs
  void* asan_fake = nullptr;  // the launching thread's, for AddressSanitizer
  const void* asan_bottom = nullptr;
  size_t asan_size = 0;
  std::vector<unsigned char> smem;
  std::vector<const void*> static_filled;  // the block's static __shared__ arrays filled so far
  Order order = Order::Forward;
  uint64_t rng = 0;  // Order::Random's generator (splitmix64), seeded per launch
  bool warps_ahead = false;  // Order::Random, drawn per launch: a released warp runs on at once
  bool copies_early = false;  // Order::Random, drawn per launch: cp.async copies land at issue
  bool unwinding = false;     // the block failed: a resumed thread throws Abandoned (unwind_block)
  int64_t barriers = 0;       // __syncthreads completed in this block: SmemRaces' generations
  ptx::SmemRaces races;       // over `smem`, this block's
  std::string error;
};

thread_local Launch* g_launch = nullptr;

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}


// The two directions of a switch. `exiting`: the fiber never runs again.
void to_scheduler(Launch& l, Fiber& f, bool exiting = false) {
#if TESSERA_EMU_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f.asan_fake, l.asan_bottom, l.asan_size);
#else
  (void)exiting;
#endif
  tessera_emu_switch_stack(&f.sp, l.scheduler);
#if TESSERA_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake, &l.asan_bottom, &l.asan_size);
#endif
}

void to_fiber(Launch& l, Fiber& f) {
#if TESSERA_EMU_ASAN
  __sanitizer_start_switch_fiber(&l.asan_fake, static_cast<char*>(f.stack->base) + kGuard,
                                 f.stack->bytes - kGuard);
#endif
  tessera_emu_switch_stack(&l.scheduler, f.sp);
#if TESSERA_EMU_ASAN
  __sanitizer_finish_switch_fiber(l.asan_fake, nullptr, nullptr);
#endif
}

std::string where(const Launch& l, const Fiber& f) {
  return std::string("kernel ") + l.kernel + " block (" + std::to_string(f.b.block_idx.x) + ", " +
         std::to_string(f.b.block_idx.y) + ", " + std::to_string(f.b.block_idx.z) + ") thread (" +
         std::to_string(f.b.thread_idx.x) + ", " + std::to_string(f.b.thread_idx.y) + ", " +
         std::to_string(f.b.thread_idx.z) + ")";
}

Fiber& self() {
  TESSERA_CHECK(g_launch && g_launch->running,
                "cuda emulator: a device function was called outside a kernel launch");
  return *g_launch->running;
}

// Thrown in the running fiber by abandon() and caught at the bottom of its stack (fiber_main), so
// the frames in between unwind, their strings and vectors freed, before the fiber leaves for good.
struct Abandoned {};

// Leaves the running fiber (already Waiting, or Ready and queued) and runs the scheduler; back in
// a block that failed meanwhile, it unwinds (unwind_block).
void yield() {
  to_scheduler(*g_launch, self());
  if (g_launch->unwinding) throw Abandoned{};
}

void make_ready(Launch& l, Fiber& f, bool front = false) {
  f.state = State::Ready;
  if (front) {
    l.ready.push_front(&f);
  } else {
    l.ready.push_back(&f);
  }
}

[[noreturn]] void abandon(const std::string& why) {
  Launch& l = *g_launch;
  if (l.error.empty()) l.error = why;
  throw Abandoned{};
}

// The running fiber, its error recorded, leaves for good as a thread that failed (not one that
// returned: the lanes waiting for it are not told it exited).
[[noreturn]] void leave_failed(Launch& l, Fiber& f) {
  f.state = State::Waiting;
  f.waits = Wait::Error;
  to_scheduler(l, f, true);
  std::abort();  // never resumed
}

// __syncthreads completes when every live thread of the block has reached it (a returned thread
// no longer counts, as on sm_70 and later).
void check_block_barrier(Launch& l) {
  if (l.at_barrier == 0 || l.at_barrier != l.live) return;
  l.at_barrier = 0;
  ++l.barriers;
  const size_t n = l.fibers.size(), first = l.ready.size();
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = l.fibers[l.order == Order::Reverse ? n - 1 - i : i];
    if (f.state == State::Waiting && f.waits == Wait::Barrier) make_ready(l, f);
  }
  if (l.order == Order::Random)  // the released threads in a random order (Fisher-Yates)
    for (size_t i = l.ready.size() - 1; i > first; --i)
      std::swap(l.ready[i], l.ready[first + splitmix64(l.rng) % (i - first + 1)]);
}

void fiber_main() {
  Launch& l = *g_launch;
  Fiber& f = *l.running;
#if TESSERA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &l.asan_bottom, &l.asan_size);
#endif
  bool failed = false;
  try {
    (*l.body)();
  } catch (const Abandoned&) {
    failed = true;
  } catch (const std::exception& e) {  // e.g. a check in a device function
    if (l.error.empty()) l.error = where(l, f) + ": " + e.what();
    failed = true;
  }
  // Out of the handler before switching: the C++ runtime's record of the exception being handled
  // is per OS thread, which every fiber shares.
  if (failed) leave_failed(l, f);
  if (!failed && !f.wgmma.empty() && l.error.empty())  // its accumulators would never be written
    l.error = where(l, f) +
              ": exits with wgmma.mma_async operations no wgmma.wait_group waited for";
  f.state = State::Done;
  --l.live;
  Warp& w = l.warps[size_t(f.warp)];
  w.exited |= 1u << f.lane;
  if (w.arrived && (w.mask >> f.lane & 1u) && l.error.empty())
    l.error = where(l, f) + ": exits while lanes of its warp wait for it in a collective whose "
              "mask names it";
  check_block_barrier(l);
  to_scheduler(l, f, true);
  std::abort();  // never resumed
}

// A fresh stack that switch_stack resumes into fiber_main: from its top, a zero return address
// (fiber_main is entered as if called, with the stack 16-byte aligned before the call), the
// entry, six zeroed callee-saved registers, and the control words of the launching thread.
void* start_fiber(const Stack& s) {
#if TESSERA_EMU_ASAN
  // A fiber that never returned (its last switch left from inside fiber_main) leaves its frames'
  // redzones poisoned: the stack starts clean.
  ASAN_UNPOISON_MEMORY_REGION(static_cast<char*>(s.base) + kGuard, s.bytes - kGuard);
#endif
  uintptr_t top = (reinterpret_cast<uintptr_t>(s.base) + s.bytes) & ~uintptr_t(15);
  auto* words = reinterpret_cast<uint64_t*>(top);
  words[-1] = 0;
  words[-2] = reinterpret_cast<uint64_t>(&fiber_main);
  for (int i = 3; i <= 8; ++i) words[-i] = 0;
  uint32_t mxcsr = 0;
  uint16_t fpu = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpu));
  std::memcpy(&words[-9], &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(&words[-9]) + 4, &fpu, 2);
  return &words[-9];
}

// The block failed (an error, a deadlock): each thread still suspended in it is resumed once to
// throw Abandoned where it waits, so its frames unwind as a failed thread's do (their strings and
// vectors freed) before its stack is reused. A thread that never ran has no frames.
void unwind_block(Launch& l) {
  l.unwinding = true;
  for (Fiber& f : l.fibers) {
    if (!f.started || f.state == State::Done || f.waits == Wait::Error) continue;
    l.running = &f;
    current = &f.b;
    to_fiber(l, f);
  }
  l.running = nullptr;
  current = nullptr;
}

void run_block(Launch& l, const LaunchConfig& c, uint3 block) {
  const bool reverse = l.order == Order::Reverse;
  const int n = int(c.block.x * c.block.y * c.block.z);
  std::vector<Stack>& pool = stacks(size_t(n));
  std::fill(l.smem.begin(), l.smem.end(), 0xff);
  l.races.reset(l.smem.size());
  l.barriers = 0;
  l.static_filled.clear();
  l.live = n;
  l.at_barrier = 0;
  l.ready.clear();
  for (size_t i = 0; i < l.warps.size(); ++i) {
    Warp& w = l.warps[i];
    const int lanes = std::min(32, n - int(i) * 32);
    w.lanes = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    w.exited = w.mask = w.arrived = 0;
    w.banks[0].readers = w.banks[1].readers = 0;
  }
  for (int i = 0; i < n; ++i) {
    const int t = reverse ? n - 1 - i : i;
    Fiber& f = l.fibers[size_t(t)];
    f = Fiber{};
    f.lane = t % 32, f.warp = t / 32;
    f.copies.early = l.copies_early;
    f.b.thread_idx = {unsigned(t) % c.block.x, unsigned(t) / c.block.x % c.block.y,
                      unsigned(t) / (c.block.x * c.block.y)};
    f.b.block_idx = block;
    f.b.block_dim = c.block;
    f.b.grid_dim = c.grid;
    f.stack = &pool[size_t(t)];
    f.sp = start_fiber(*f.stack);
    l.ready.push_back(&f);
  }
  if (l.order == Order::Random)  // the block's threads start in a random order too
    for (size_t i = l.ready.size(); i > 1; --i)
      std::swap(l.ready[i - 1], l.ready[splitmix64(l.rng) % i]);
  while (l.live > 0) {
    if (l.ready.empty()) {
      int at_barrier = 0;
      std::string collective;
      for (const Fiber& f : l.fibers) {
        if (f.state != State::Waiting) continue;
        if (f.waits == Wait::Barrier) {
          ++at_barrier;
        } else if (collective.empty()) {
          collective = ", and " + where(l, f) + " waits in a warp collective";
        }
      }
      unwind_block(l);
      TESSERA_FAIL("cuda emulator: kernel ", l.kernel, " block (", block.x, ", ", block.y, ", ",
                   block.z, ") deadlocks: ", l.live, " live threads, ", at_barrier,
                   " of them at __syncthreads", collective);
    }
    Fiber& f = *l.ready.front();
    l.ready.pop_front();
    l.running = &f;
    current = &f.b;
    f.started = true;
    to_fiber(l, f);
    l.running = nullptr;
    current = nullptr;
    if (!l.error.empty()) {
      unwind_block(l);
      TESSERA_FAIL("cuda emulator: ", l.error);
    }
  }
}

Order& order_setting() {
  static Order o = [] {
    const char* e = std::getenv("TESSERA_EMU_ORDER");
    const std::string v = e ? e : "";
    if (v == "reverse") return Order::Reverse;
    if (v == "random") return Order::Random;
    TESSERA_CHECK(v.empty() || v == "forward", "TESSERA_EMU_ORDER must be forward, reverse or random, got '", v, "'");
    return Order::Forward;
  }();
  return o;
}

// Launches so far: Order::Random's seed, so a run repeats exactly. Counted where they run: one
// thread at a time (the legacy stream's, or the caller's when it is synchronous).
std::atomic<uint64_t> g_launches{0};

}  // namespace

void run(const char* kernel, const LaunchConfig& c, std::function<void()> body) {
  TESSERA_CHECK(!g_launch, "cuda emulator: kernel ", kernel, " launched from device code");
  const uint64_t threads = uint64_t(c.block.x) * c.block.y * c.block.z;
  // The limits of sm_80/sm_90: 1024 threads a block, grid y and z below 65536, 227 KiB of shared
  // memory a block (CUDA C++ Programming Guide, "Compute Capabilities").
  if (threads == 0 || threads > 1024 || c.block.z > 64 || c.grid.x == 0 || c.grid.y == 0 ||
      c.grid.z == 0 || c.grid.y > 65535 || c.grid.z > 65535 || c.grid.x > 0x7fffffffu) {
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  const bool opted_in = !c.function || c.smem <= kDefaultDynamicSmem ||
                        c.smem <= dynamic_smem_limit(c.function);  // no function: not checked
  if (c.smem > 232448 || !opted_in) {
    g_last_error = cudaErrorInvalidValue;
    return;
  }
  if (skip_kernels()) return;
  // On the legacy stream: after what cudaStreamWaitEvent put before it, and not after a failure.
  enqueue_compute(cudaStreamLegacy, [kernel, c, threads, body = std::move(body)] {
    Launch l;
    l.kernel = kernel;
    l.body = &body;
    l.fibers.resize(threads);
    l.warps.resize((threads + 31) / 32);
    l.smem.resize(c.smem);
    g_launch = &l;
    struct Reset {
      ~Reset() { g_launch = nullptr, current = nullptr; }
    } reset;
    l.order = order_setting();
    l.rng = ++g_launches;
    l.warps_ahead = l.order == Order::Random && splitmix64(l.rng) % 2;
    l.copies_early = l.order == Order::Random && splitmix64(l.rng) % 2;
    for (unsigned z = 0; z < c.grid.z; ++z)
      for (unsigned y = 0; y < c.grid.y; ++y)
        for (unsigned x = 0; x < c.grid.x; ++x) run_block(l, c, {x, y, z});
  });
}

bool skip_kernels() {
  static const bool skip = [] {
    const char* e = std::getenv("TESSERA_EMU_SKIP_KERNELS");
    const std::string v = e ? e : "";
    TESSERA_CHECK(v.empty() || v == "0" || v == "1", "TESSERA_EMU_SKIP_KERNELS must be 0 or 1, got '", v, "'");
    return v == "1";
  }();
  return skip;
}

void set_order(Order o) { order_setting() = o; }
Order order() { return order_setting(); }

void* dynamic_shared() {
  Launch& l = *g_launch;
  return l.smem.empty() ? nullptr : l.smem.data();
}

void static_shared(void* p, size_t bytes) {
  Launch& l = *g_launch;
  if (std::find(l.static_filled.begin(), l.static_filled.end(), p) != l.static_filled.end()) return;
  l.static_filled.push_back(p);
  std::memset(p, 0xff, bytes);
}

int lane_id() { return self().lane; }
int warp_id() { return self().warp; }

size_t shared_address(const void* p) {
  const Launch& l = *g_launch;
  const auto* c = static_cast<const unsigned char*>(p);
  if (l.smem.empty() || c < l.smem.data() || c >= l.smem.data() + l.smem.size())
    fail("__cvta_generic_to_shared of an address outside the launch's dynamic shared memory");
  return size_t(c - l.smem.data());
}

unsigned char* shared_pointer(uint64_t address, size_t bytes) {
  Launch& l = *g_launch;
  if (address > l.smem.size() || bytes > l.smem.size() - address)
    fail("a shared-memory address past the end of the launch's dynamic shared memory");
  return l.smem.data() + address;
}

ptx::CpAsyncQueue& cp_async_queue() { return self().copies; }

// The race checks (ptx::SmemRaces) of the running thread's cp.async copies and shared reads; other
// than dynamic shared memory is not tracked.
namespace {
bool in_dynamic_smem(const Launch& l, const void* p) {
  const auto* c = static_cast<const unsigned char*>(p);
  return !l.smem.empty() && c >= l.smem.data() && c < l.smem.data() + l.smem.size();
}
int thread_index(const Launch& l, const Fiber& f) { return int(&f - l.fibers.data()); }
}  // namespace
void smem_race_copy(const void* dst) {
  Launch& l = *g_launch;
  if (!in_dynamic_smem(l, dst)) return;
  Fiber& f = self();
  const std::string e = l.races.copy(shared_address(dst), thread_index(l, f), f.warp, l.barriers);
  if (!e.empty()) fail(e.c_str());
}
void smem_race_waited(const void* dst) {
  Launch& l = *g_launch;
  if (in_dynamic_smem(l, dst))
    l.races.waited(shared_address(dst), thread_index(l, self()), l.barriers);
}
void smem_race_read(const void* p) {
  Launch& l = *g_launch;
  if (!in_dynamic_smem(l, p)) return;
  const std::string e = l.races.read(shared_address(p), self().warp, l.barriers);
  if (!e.empty()) fail(e.c_str());
}
ptx::WgmmaQueue& wgmma_queue() { return self().wgmma; }

[[noreturn]] void fail(const char* what) { abandon(where(*g_launch, self()) + ": " + what); }

void misaligned_vector(size_t bytes, const void* p) {
  std::ostringstream what;
  what << "a " << bytes << "-byte vector access at " << p << ", not aligned to " << bytes
       << " bytes (a GPU faults: misaligned address)";
  if (g_launch && current) fail(what.str().c_str());
  TESSERA_FAIL("cuda emulator: ", what.str());
}

void host_pointer_argument(const char* kernel, size_t index, const void* p) {
  std::ostringstream where;
  where << p;
  TESSERA_FAIL("cuda emulator: kernel ", kernel, " argument ", index, " (counting from 0) is ",
               where.str(), ", outside device memory: on a GPU its accesses fault (an illegal "
               "memory access)");
}

void launch_bounds(long long max_threads) {
  const dim3& b = current->block_dim;
  const long long threads = (long long)b.x * b.y * b.z;
  if (threads > max_threads)
    abandon(where(*g_launch, self()) + ": launched with " + std::to_string(threads) +
            " threads a block, more than its __launch_bounds__ (" + std::to_string(max_threads) +
            "): a GPU refuses the launch (too many resources requested for launch)");
}

void sync_block() {
  Launch& l = *g_launch;
  Fiber& f = self();
  f.state = State::Waiting;
  f.waits = Wait::Barrier;
  ++l.at_barrier;
  check_block_barrier(l);
  yield();  // released or not, the fiber was queued or waits: the scheduler decides
}

const Collective& enter_collective(unsigned mask, const void* mine, size_t bytes) {
  Launch& l = *g_launch;
  Fiber& f = self();
  Warp& w = l.warps[size_t(f.warp)];
  const unsigned me = 1u << f.lane;
  if (!(mask & me)) abandon(where(l, f) + ": a warp collective whose mask leaves out the calling lane");
  if (mask & w.exited)
    abandon(where(l, f) + ": a warp collective names lane " +
            std::to_string(std::countr_zero(mask & w.exited)) + ", which has exited");
  // The first lane in waits until the bank's previous readers are done, then claims it (lanes that
  // come while it waits wait with it; the one that runs first after the readers claims).
  while (w.arrived == 0 && w.banks[w.bank].readers > 0) {
    make_ready(l, f);
    yield();
  }
  if (w.arrived == 0) {
    w.mask = mask;
    Warp::Bank& b = w.banks[w.bank];
    b.c = Collective{b.deposit, mask & w.lanes, b.scratch, &b.scratch_ready};
    b.scratch_ready = false;
    b.readers = std::popcount(mask & w.lanes);
  } else if (w.mask != mask) {
    abandon(where(l, f) + ": lanes of one warp are in a collective with different masks");
  }
  Warp::Bank& b = w.banks[w.bank];
  if (bytes) std::memcpy(b.deposit[f.lane], mine, bytes);
  w.arrived |= me;
  if (w.arrived == (mask & w.lanes)) {  // the last lane in releases the others
    // Released lanes run next (the warp runs on ahead of the others) or after the queue, in
    // lane order (Forward, Reverse) or in a random one (Random: a lane that hands another a value
    // through shared memory without __syncwarp is caught whichever of the two runs first).
    const bool ahead = l.warps_ahead;
    int lanes[32], count = 0;
    for (unsigned waiting = w.arrived & ~me; waiting; waiting &= waiting - 1)
      lanes[count++] = std::countr_zero(waiting);
    if (l.order == Order::Random)
      for (int i = count - 1; i > 0; --i) std::swap(lanes[i], lanes[splitmix64(l.rng) % (i + 1)]);
    else if (ahead)  // pushed to the front one by one: the highest lane first leaves them in order
      std::reverse(lanes, lanes + count);
    for (int i = 0; i < count; ++i) make_ready(l, l.fibers[size_t(f.warp * 32 + lanes[i])], ahead);
    w.arrived = 0;
    w.mask = 0;
    w.bank ^= 1;
  } else {
    f.state = State::Waiting;
    f.waits = Wait::Collective;
    yield();
  }
  return b.c;
}

void leave_collective(const Collective& c) {
  Launch& l = *g_launch;
  Warp& w = l.warps[size_t(self().warp)];
  Warp::Bank& b = &c == &w.banks[0].c ? w.banks[0] : w.banks[1];
  --b.readers;
}

void set_dynamic_smem_limit(const void* function, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_smem_limits_mutex);
  g_smem_limits[function] = bytes;
}

}  // namespace tessera::emu
