// The CUDA emulator: kernels/*.cu compiled by g++ and run on the CPU, so their logic (indexing,
// reductions, barriers, warp collectives, shared-memory use) is checked by the GPU parity tests on
// a machine without a GPU. Built by `cmake -DTESSERA_CUDA_EMU=ON` (CMakeLists.txt): every
// kernels/*.cu except nccl_comm.cu goes through kernels/emu/translate.py and is compiled with this
// header included first; kernels/emu/runtime.cpp and runtime_api.cpp stand in for the CUDA
// runtime (streams.cpp for its streams and events), ptx.cpp for the inline PTX, cublaslt.cpp for the part of cuBLASLt that
// kernels/blas.cu calls and nccl.cpp for NCCL.
//
// The model:
//  - "device" memory is host memory; the runtime tracks every cudaMalloc'd range, so a copy in the
//    wrong direction or off the end of an allocation is an error, not a silent read.
//  - A launch runs its blocks one after another. Each thread of a block is a fiber on the calling
//    OS thread; a fiber runs until it reaches __syncthreads, a warp collective (__syncwarp, a
//    shuffle, a wmma operation, ldmatrix or mma.sync) or its end, then the next one runs. So
//    every barrier is real: a thread that reads shared memory another thread writes after a missing barrier reads
//    the stale value, in one order of threads or another (TESSERA_EMU_ORDER=reverse runs the
//    threads of each block last to first, =random in a random interleaving; set_order below).
//  - Collectives check their masks: a lane named in a mask that has exited, lanes of one warp in
//    one collective with different masks, a shuffle from a lane outside the mask: errors that name
//    the kernel, the block and the thread. A block whose live threads all wait and none can go on
//    (a __syncthreads some threads never reach) is reported as a deadlock, not hung. A warp runs
//    one collective at a time: two with disjoint masks in flight at once (divergent lanes, legal
//    on the GPU) are reported as different masks; every collective in kernels/ names the full warp.
//  - Dynamic shared memory starts every block filled with 0xff bytes (NaN as f32 and bf16), so a
//    read of a value no thread wrote shows up.
//  - Static __shared__ arrays become function statics: shared by the threads of a block, and safe
//    because blocks run one at a time.
//  - wmma fragments hold their whole tile in every lane (the hardware layout is unspecified, and
//    the kernels only load, store, fill and multiply them); products are exact bf16 x bf16 in f32.
//  - Inline PTX (asm statements) runs on the interpreter of ptx.h / ptx.cpp.
//  - cp.async against the shared reads it sees (ldmatrix, wgmma's shared operands) is checked for
//    races in any order of threads (ptx::SmemRaces): a copy into bytes another warp read since
//    the last __syncthreads, or a read of a copy that no wait and __syncthreads order before it.
//  - Streams run their work after the call that queued it returns, each on a thread of its own
//    (streams.cpp): the legacy default stream (every kernel's) at once, a stream the program
//    makes (NCCL's) after a random delay. So a missing event dependency, or a host buffer read
//    before the copy that fills it has synchronized, reads stale data here as on the GPU.
// What it cannot show: speed, occupancy, register spills, bank conflicts, races through plain
// loads and stores that the fiber order happens to hide, NCCL's transports, cuBLASLt's own choices (its algorithms, its GELU form, its
// accumulation order), and a fragment layout misread from the PTX ISA (ptx_fragments.h).
#pragma once

// Kernel code may check what only the emulator can (core.cuh's 16-byte accesses).
#define TESSERA_CUDA_EMULATED 1

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <numeric>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ptx.h"

namespace tessera::ptx {
class CpAsyncQueue;  // ptx_fragments.h
class WgmmaQueue;    // wgmma.h
}

// ---- qualifiers -------------------------------------------------------------------------------
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#undef __constant__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__

namespace tessera::emu {

// ---- the runtime's side (runtime.cpp) ----------------------------------------------------------

struct Builtins {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
// The running fiber's built-in variables (set by the scheduler before it switches to a fiber).
// constinit: no dynamic initialisation, so a kernel reads it directly, not through the TLS
// wrapper call GCC otherwise makes for an extern thread_local (at -O2 with -fsanitize=undefined
// that wrapper's path is reported as a null load: a known false positive).
extern constinit thread_local Builtins* current;

struct LaunchConfig {
  dim3 grid, block;
  size_t smem = 0;
  const void* function = nullptr;  // the kernel: its dynamic shared-memory limit (below)
};
inline LaunchConfig config(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
  return {grid, block, smem};
}

// Runs body once per thread of every block (see the model above), on the legacy stream: a bad
// configuration is the next cudaGetLastError; an emulator error throws tessera::Error naming the
// kernel, from this call when the legacy stream is synchronous, or else becomes the sticky launch
// failure that later calls return (streams.cpp).
void run(const char* kernel, const LaunchConfig& c, std::function<void()> body);
// A kernel's identity for its attributes: the address of the function (cudaFuncSetAttribute's
// first argument). A launch asking more than 48 KiB of dynamic shared memory fails, as on the
// GPU, unless cudaFuncAttributeMaxDynamicSharedMemorySize allowed that much for the function.
template <class F>
const void* function_id(F* f) {
  return reinterpret_cast<const void*>(f);
}
// The order a block's threads run in (TESSERA_EMU_ORDER=forward, reverse or random at start-up):
// Forward (the default) queues them 0, 1, ... and each barrier's waiters in that order; Reverse
// last to first; Random queues each __syncthreads' waiters in a random order and, in half the
// launches, runs a warp on past its collectives before the other warps (the others queue its
// released lanes last). Random draws from a generator seeded by the launch's number, so a run
// repeats. A race hidden in one order may show in another.
enum class Order { Forward, Reverse, Random };
void set_order(Order o);
Order order();

void* dynamic_shared();
// A static __shared__ array at its declaration (translate.py): filled with 0xff bytes by the first
// thread of the block to reach it, as dynamic shared memory is at the block's start.
void static_shared(void* p, size_t bytes);
// The launch's dynamic shared memory at a shared-window address (ptx.h), checked to hold `bytes`.
unsigned char* shared_pointer(uint64_t address, size_t bytes);
// cudaFuncAttributeMaxDynamicSharedMemorySize of a kernel (runtime_api.cpp), read at its launches.
void set_dynamic_smem_limit(const void* function, size_t bytes);
// What cudaGetLastError returns next: a bad launch configuration, or a runtime call's error.
extern thread_local cudaError_t g_last_error;
ptx::CpAsyncQueue& cp_async_queue();  // the running thread's cp.async copies in flight
// ptx::SmemRaces over the block's dynamic shared memory, for the running thread: a cp.async into
// dst issued, one the thread waited for, a shared read (ldmatrix, a wgmma operand) at p.
void smem_race_copy(const void* dst);
void smem_race_waited(const void* dst);
void smem_race_read(const void* p);
ptx::WgmmaQueue& wgmma_queue();       // the running thread's wgmma.mma_async operations in flight
bool on_device(const void* p, size_t n);  // [p, p + n) lies in one cudaMalloc'd allocation
// Streams (streams.cpp): op runs later, in order, on the stream's own thread: at once on the
// legacy stream (or 0, or cudaStreamPerThread), after a random delay of up to
// TESSERA_EMU_STREAM_DELAY_US microseconds (default 1000) on a stream made by cudaStreamCreate*.
// With set_legacy_async(false) (or TESSERA_EMU_LEGACY_STREAM=sync) a legacy-stream op runs in the
// calling thread before enqueue returns. hold_streams(true) keeps every stream's thread from
// starting its next operation until hold_streams(false): a test's window in which queued work
// has not run. drain(s) returns once everything queued on s has run.
void enqueue(cudaStream_t s, std::function<void()> op);
// A kernel, cuBLASLt product or CUB sort: as enqueue, but skipped once an operation has failed
// (fault() below), as a GPU runs nothing after a launch failure.
void enqueue_compute(cudaStream_t s, std::function<void()> op);
void drain(cudaStream_t s);
bool asynchronous(cudaStream_t s);
void hold_streams(bool hold);
void set_legacy_async(bool async);  // drains the legacy stream first
// A failure of an operation on a stream's thread: once there has been one, fault() is
// cudaErrorLaunchFailure (else cudaSuccess) and fault_string() its message. clear_fault()
// forgets it, which a GPU cannot: for the emulator's tests.
cudaError_t fault();
const char* fault_string();
void clear_fault();
// Before each legacy-stream operation (a launch, a copy, a cuBLASLt or CUB call): waits for the
// events cudaStreamWaitEvent put in the legacy stream's way.
void legacy_turn();
// TESSERA_EMU_SKIP_KERNELS=1: launches, matmuls, sorts, memsets and device-to-device copies are
// checked and then not carried out, so a program's time is what its host side costs (dispatch,
// autograd, the allocator, the launches' arguments); every value computed on the device is garbage.
// scripts/bench_host.sh measures a training step so.
bool skip_kernels();
void sync_block();
// A warp collective: every lane of `mask` deposits `bytes` (at most kMaxDeposit) and waits for the
// others; then read(c) runs in each lane, c.slot[l] holding lane l's deposit for each lane l of
// c.mask. c.scratch (kScratch bytes) is shared by the lanes of this one collective, for a result
// the first reader computes for all (c.scratch_ready says whether one has).
constexpr size_t kMaxDeposit = 64;
constexpr size_t kScratch = 16 * 8 * sizeof(float);
struct Collective {
  const unsigned char (*slot)[kMaxDeposit];
  unsigned mask;
  void* scratch;
  bool* scratch_ready;
};
const Collective& enter_collective(unsigned mask, const void* mine, size_t bytes);
void leave_collective(const Collective& c);
template <class Read>
void warp_collective(unsigned mask, const void* mine, size_t bytes, Read&& read) {
  const Collective& c = enter_collective(mask, mine, bytes);
  read(c);
  leave_collective(c);
}
int lane_id();
int warp_id();  // the running thread's warp in its block
// A 16-byte vector access at p: an error unless p is 16-byte aligned (the GPU faults on a
// misaligned one) and [p, p + 16) lies in one allocation.
void check_vector_access(const void* p);
// translate.py turns `reinterpret_cast<V*>(p)` of a CUDA vector type V (float2, uint4,
// __nv_bfloat162 ...) into vector_cast<V*>(p): on a GPU an access through a pointer not aligned to
// V's size faults ("misaligned address"), on the CPU it would go unnoticed; here it is an error.
[[noreturn]] void misaligned_vector(size_t bytes, const void* p);
template <class Ptr, class From>
Ptr vector_cast(From p) {
  using V = std::remove_cv_t<std::remove_pointer_t<Ptr>>;
  static_assert(alignof(V) == sizeof(V), "a CUDA vector type is aligned to its size");
  if (reinterpret_cast<uintptr_t>(p) % alignof(V) != 0) misaligned_vector(sizeof(V), p);
  return reinterpret_cast<Ptr>(p);
}
[[noreturn]] void fail(const char* what);  // an error in the running thread, e.g. a misuse
// A kernel's __launch_bounds__ maximum, which translate.py calls at the start of its body: a GPU
// refuses a launch of more threads a block than that ("too many resources requested for launch").
void launch_bounds(long long max_threads);

// A kernel's pointer argument that is not null and neither in nor at the end of a cudaMalloc'd
// allocation (an end pointer may be passed and never read): a GPU's accesses through it fault ("an
// illegal memory access"), so the launch is refused naming it.
[[noreturn]] void host_pointer_argument(const char* kernel, size_t index, const void* p);
template <class T>
void check_argument(const char* kernel, size_t index, const T& a) {
  if constexpr (std::is_pointer_v<T> && !std::is_function_v<std::remove_pointer_t<T>>) {
    const char* p = reinterpret_cast<const char*>(a);
    if (p != nullptr && !on_device(p, 1) && !on_device(p - 1, 1))
      host_pointer_argument(kernel, index, p);
  }
}

// CUDA's launch: the arguments are evaluated once (here) and each thread gets its own copies.
template <class F>
auto launch(const char* kernel, LaunchConfig c, const void* function, F f) {
  c.function = function;
  return [kernel, c, f](auto&&... args) {
    size_t index = 0;
    (check_argument<std::decay_t<decltype(args)>>(kernel, index++, args), ...);
    std::tuple<std::decay_t<decltype(args)>...> saved(args...);
    run(kernel, c, [f, saved = std::move(saved)] {
      auto mine = saved;
      std::apply(f, mine);
    });
  };
}

template <class T>
T shuffle(unsigned mask, T v, int src, const char* what) {
  static_assert(sizeof(T) <= kMaxDeposit && std::is_trivially_copyable_v<T>);
  T out{};
  warp_collective(mask, &v, sizeof v, [&](const Collective& c) {
    if (src < 0 || src > 31 || !(c.mask >> src & 1u)) fail(what);
    std::memcpy(&out, c.slot[src], sizeof out);
  });
  return out;
}

}  // namespace tessera::emu

// ---- host-side templates that cuda_runtime.h offers only to nvcc --------------------------------
template <class T>
cudaError_t cudaFuncSetAttribute(T* kernel, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
template <class T>
cudaError_t cudaMemcpyToSymbol(const T& symbol, const void* src, size_t bytes, size_t offset = 0,
                               cudaMemcpyKind kind = cudaMemcpyHostToDevice) {
  return ::cudaMemcpyToSymbol(static_cast<const void*>(&symbol), src, bytes, offset, kind);
}

// ---- built-in variables and intrinsics --------------------------------------------------------
using std::isfinite;
using std::isinf;
using std::isnan;

#define threadIdx (::tessera::emu::current->thread_idx)
#define blockIdx (::tessera::emu::current->block_idx)
#define blockDim (::tessera::emu::current->block_dim)
#define gridDim (::tessera::emu::current->grid_dim)

inline void __syncthreads() { ::tessera::emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::tessera::emu::warp_collective(mask, nullptr, 0, [](const ::tessera::emu::Collective&) {});
}

// Shuffles: the source lane within `width`-lane segments, as the CUDA programming guide defines
// them (a source outside the segment, or past its end for up/down, returns the caller's value).
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int lane = ::tessera::emu::lane_id(), base = lane & ~(width - 1);
  return ::tessera::emu::shuffle(mask, v, base + (src & (width - 1)),
                                 "__shfl_sync reads a lane outside its mask");
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = ::tessera::emu::lane_id(), src = lane ^ lane_mask;
  const bool inside = (src & ~(width - 1)) == (lane & ~(width - 1));
  return ::tessera::emu::shuffle(mask, v, inside ? src : lane,
                                 "__shfl_xor_sync reads a lane outside its mask");
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::tessera::emu::lane_id(), src = lane - int(delta);
  const bool inside = src >= (lane & ~(width - 1));
  return ::tessera::emu::shuffle(mask, v, inside ? src : lane,
                                 "__shfl_up_sync reads a lane outside its mask");
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::tessera::emu::lane_id(), src = lane + int(delta);
  const bool inside = src < (lane & ~(width - 1)) + width;
  return ::tessera::emu::shuffle(mask, v, inside ? src : lane,
                                 "__shfl_down_sync reads a lane outside its mask");
}

// Votes: every lane of mask gives a predicate; __any_sync is nonzero where one of them is.
inline int __any_sync(unsigned mask, int predicate) {
  int any = 0;
  ::tessera::emu::warp_collective(mask, &predicate, sizeof predicate,
                                  [&](const ::tessera::emu::Collective& c) {
                                    for (int l = 0; l < 32; ++l) {
                                      int v;
                                      std::memcpy(&v, c.slot[l], sizeof v);
                                      if (c.mask >> l & 1u && v) any = 1;
                                    }
                                  });
  return any;
}

inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline int __float_as_int(float f) { return std::bit_cast<int>(f); }
// The _rn operations are the IEEE ones, each rounded on its own as the intrinsics are on the GPU:
// the emulated kernels compile with floating-point contraction where the CPU has FMA (nvcc's
// default -fmad=true fuses a plain a * b + c too), and emu::rounded around an intrinsic's operands
// and result keeps g++ from fusing a product into the intrinsic's sum or its product into a sum.
namespace emu {
template <class T>
inline T rounded(T v) {  // an optimisation barrier: v as computed, not fused with what follows
#if defined(__x86_64__)
  asm("" : "+x"(v));
#elif defined(__aarch64__)
  asm("" : "+w"(v));
#else
  volatile T t = v;
  v = t;
#endif
  return v;
}
}  // namespace emu
inline float __fadd_rn(float a, float b) { return emu::rounded(emu::rounded(a) + emu::rounded(b)); }
inline float __fsub_rn(float a, float b) { return emu::rounded(emu::rounded(a) - emu::rounded(b)); }
inline float __fmul_rn(float a, float b) { return emu::rounded(emu::rounded(a) * emu::rounded(b)); }
inline float __fdiv_rn(float a, float b) { return emu::rounded(emu::rounded(a) / emu::rounded(b)); }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return emu::rounded(emu::rounded(a) + emu::rounded(b)); }
inline double __dsub_rn(double a, double b) { return emu::rounded(emu::rounded(a) - emu::rounded(b)); }
inline double __dmul_rn(double a, double b) { return emu::rounded(emu::rounded(a) * emu::rounded(b)); }
inline double __ddiv_rn(double a, double b) { return emu::rounded(emu::rounded(a) / emu::rounded(b)); }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
// The fast intrinsics at the edge of their documented error (CUDA C++ Programming Guide,
// "Intrinsic Functions"), so that a tolerance that holds only for exact functions fails here as it
// would on a GPU. The error is a fixed function of the operands (a hash picks its size and sign),
// so a run repeats itself bit for bit.
namespace emu {
inline float ulps_from(float v, int n) {  // v moved n ulps (toward +inf when n > 0)
  for (; n > 0; --n) v = std::nextafter(v, INFINITY);
  for (; n < 0; ++n) v = std::nextafter(v, -INFINITY);
  return v;
}
inline int fast_math_ulps(float a, float b, int most) {  // in [-most, most], never 0
  uint32_t h =
      (std::bit_cast<uint32_t>(a) ^ (std::bit_cast<uint32_t>(b) * 0x9E3779B9u)) * 0x85EBCA6Bu;
  h ^= h >> 15;
  const int n = int(h % uint32_t(most)) + 1;
  return (h >> 16) & 1 ? n : -n;
}
inline float flush_subnormal(float v) { return std::fpclassify(v) == FP_SUBNORMAL ? 0.0f * v : v; }
}  // namespace emu
// ex2.approx.ftz(x * log2(e)): the product rounded to float (the error that grows with |x|), then
// 2^y rounded and moved 1 ulp (within the 2 ulp of ex2.approx); subnormal operands and results
// flushed to zero. The guide's bound: 2 + floor(|1.173 x|) ulp.
inline float __expf(float x) {
  const float y = emu::flush_subnormal(x) * 1.44269504088896341f;
  const float r = emu::flush_subnormal(float(std::exp2(double(y))));
  if (r == 0.0f || std::isinf(r) || std::isnan(r)) return r;
  return emu::flush_subnormal(emu::ulps_from(r, emu::fast_math_ulps(x, 0.0f, 1)));
}
// lg2.approx(x) * ln(2): within 2^-21.41 absolute for x in [0.5, 2], 3 ulp elsewhere.
inline float __logf(float x) {
  const float r = float(std::log(double(emu::flush_subnormal(x))));
  if (r == 0.0f || !std::isfinite(r)) return r;
  if (x >= 0.5f && x <= 2.0f) return r + float(emu::fast_math_ulps(x, 1.0f, 1)) * 3.5e-7f;
  return emu::ulps_from(r, emu::fast_math_ulps(x, 1.0f, 2));
}
// a * rcp.approx(b): within 2 ulp for |b| in [2^-126, 2^126] (here: rounded, then moved 1 ulp); 0
// (NaN for an infinite a) for |b| in (2^126, 2^128).
inline float __fdividef(float a, float b) {
  const float m = std::fabs(b);
  if (m > 0x1p126f && m < INFINITY) return std::isinf(a) ? NAN : 0.0f * a * b;
  const float r = emu::flush_subnormal(float(double(a) / double(emu::flush_subnormal(b))));
  if (r == 0.0f || !std::isfinite(r)) return r;
  return emu::ulps_from(r, emu::fast_math_ulps(a, b, 1));
}

// ---- nvcuda::wmma: whole tiles in every lane ----------------------------------------------------
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = rows * cols;
  T x[num_elements];  // element (r, c) at r * cols + c
};

namespace detail {
// A warp operation: the lanes meet (as the _sync operations do), then each does the whole tile.
inline void converge() { __syncwarp(); }
template <class T>
float as_float(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(v);
  } else {
    return float(v);
  }
}
template <class F, class T>
void load(F& f, const T* p, unsigned ld, bool row_major) {
  converge();
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = row_major ? p[size_t(r) * ld + c] : p[size_t(c) * ld + r];
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const T& v) {
  std::fill(f.x, f.x + f.num_elements, v);
}
template <class Use, int M, int N, int K, class T, class Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ld) {
  detail::load(f, p, ld, std::is_same_v<Layout, row_major>);
}
template <int M, int N, int K, class T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ld, layout_t l) {
  detail::load(f, p, ld, l == mem_row_major);
}
template <int M, int N, int K, class T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ld, layout_t l) {
  detail::converge();
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      (l == mem_row_major ? p[size_t(r) * ld + c] : p[size_t(c) * ld + r]) = f.x[r * N + c];
}
template <int M, int N, int K, class TA, class LA, class TB, class LB, class TC>
void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b,
              const fragment<accumulator, M, N, K, TC>& c) {
  detail::converge();
  TC out[M * N];
  for (int r = 0; r < M; ++r)
    for (int col = 0; col < N; ++col) {
      float s = c.x[r * N + col];
      for (int k = 0; k < K; ++k)
        s += detail::as_float(a.x[r * K + k]) * detail::as_float(b.x[k * N + col]);
      out[r * N + col] = s;
    }
  std::copy(out, out + M * N, d.x);
}
}  // namespace nvcuda::wmma

// ---- cub: the one call the kernels make -----------------------------------------------------------
namespace cub {
struct DeviceRadixSort {
  // A stable sort of (key, value) pairs by key, as CUB's radix sort is. The first call (no
  // temporary storage) asks for one byte, so the caller's allocation path runs as on the GPU.
  template <class K, class V>
  static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out,
                               const V* values_in, V* values_out, int n, int = 0,
                               int = int(sizeof(K) * 8), cudaStream_t stream = nullptr) {
    if (!temp) {
      temp_bytes = 1;
      return cudaSuccess;
    }
    if (tessera::emu::skip_kernels()) return cudaSuccess;
    tessera::emu::enqueue_compute(stream, [=] {
      std::vector<int> order(size_t(std::max(n, 0)));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int a, int b) { return keys_in[a] < keys_in[b]; });
      std::vector<K> k(order.size());
      std::vector<V> v(order.size());
      for (size_t i = 0; i < order.size(); ++i) k[i] = keys_in[order[i]], v[i] = values_in[order[i]];
      std::copy(k.begin(), k.end(), keys_out);
      std::copy(v.begin(), v.end(), values_out);
    });
    return tessera::emu::fault();
  }
};
}  // namespace cub
