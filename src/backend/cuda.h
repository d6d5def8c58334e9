// The CUDA backend as seen from src/: plain C++ declarations, no CUDA headers.
//
// Implemented by kernels/*.cu when tessera is built with CUDA, and by src/backend/cuda_stub.cpp
// otherwise (every function then throws "tessera was built without CUDA support").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tessera {
struct Kernels;
}

namespace tessera::cuda {

bool available();          // built with CUDA and at least one device present (never throws)
int device_count();        // 0 when the driver finds no device
// The device's name as the driver gives it ("NVIDIA H200"; the emulator's "tessera CUDA emulator");
// "" when the driver cannot say (never throws in a CUDA build: it only labels reports).
std::string device_name(int device);
void* device_malloc(size_t nbytes, int device);
void device_free(void* ptr, int device);
void copy_to_device(void* dst, const void* src, size_t nbytes, int device);  // does not wait
void copy_to_host(void* dst, const void* src, size_t nbytes, int device);
void copy_device_to_device(void* dst, const void* src, size_t nbytes, int device);
void synchronize(int device);

// Device timing for the kernel profile (backend/profile.h): record_event records an event on the
// stream every kernel runs on and returns it (from a pool; never null); elapsed_ms waits for `end`
// and gives the device time between the two; release_event returns an event to the pool.
void* record_event(int device);
double elapsed_ms(void* start, void* end);
void release_event(void* event);

// How often the host has waited for a device since the process started: synchronize calls, and
// copies to the host (each waits for every kernel queued before it). A training step that waits
// once, to read its loss, adds 1 to copies_to_host; the kernel profile reports these per step.
struct SyncStats {
  int64_t synchronize_calls = 0;
  int64_t copies_to_host = 0;
};
SyncStats sync_stats();  // zeros in a build without CUDA

// How kernels/blas.cu has applied each Linear's bias (and GELU) since the process started: in
// cuBLASLt's epilogue, or by its fallback (the bias copied into the output and the gemm adding
// onto it; then the GELU kernel), taken where cuBLASLt offers no algorithm for the epilogue or the
// operands do not allow it (f64, a bias not 16-byte aligned, an output width not a multiple of 8).
// On a GPU it says whether the epilogues ran (bench_gpu prints it per step).
struct BlasStats {
  int64_t bias_epilogue = 0;  // linear_forward
  int64_t bias_fallback = 0;
  int64_t gelu_epilogue = 0;  // linear_gelu_forward
  int64_t gelu_fallback = 0;  // (each also counts the linear_forward it falls back on)
  int64_t dgelu_epilogue = 0;  // linear_dgelu_backward: GELU's derivative in the dx gemm
  int64_t dgelu_fallback = 0;  // (the gemm, then the GELU backward kernel)
  int64_t bgrad_epilogue = 0;  // linear_param_backward: the bias gradient in the dw gemm
  int64_t bgrad_fallback = 0;  // (the gemm, then sum_dim)
  int64_t residual_in_gemm = 0;   // linear_forward's residual read as the gemm's C, apart from D
  int64_t residual_fallback = 0;  // (copied into y first, where no algorithm writes D apart)
  int64_t per_batch_gemms = 0;  // batched gemms run as one gemm per batch (no batched algorithm)
  // TESSERA_GEMM_TUNE (kernels/blas.cu): plans whose candidate algorithms were timed, those of
  // them that kept another than the heuristic's first, those left untimed for want of memory
  // for a scratch D, and the host time the timing took.
  int64_t tuned_plans = 0;
  int64_t tuned_not_first = 0;
  int64_t tune_skipped = 0;
  double tune_ms = 0.0;
};
BlasStats blas_stats();  // zeros in a build without CUDA

// cuBLASLt is not linked: kernels/cublaslt_loader.cpp opens it with dlopen at the first gemm, so a
// process that runs no gemm on a GPU skips its static constructors (0.6-0.8 s and 210 MB resident
// at every start on a 2-core x86 machine). Opens it if the first gemm has not, and returns the
// file it came from, or why it could not be opened (the error every gemm then reports).
std::string cublaslt_library();

// device_malloc/device_free go through a caching allocator (kernels/allocator.cu): freed blocks are
// kept per device, binned by size class, and handed out again, so a training loop whose shapes
// repeat calls cudaMalloc only in its first steps. Tensor-level counters (the bytes tensors asked
// for: current and peak allocated) are core/storage.h's memory_stats; these are the allocator's.
// TESSERA_CUDA_CACHE=0 in the environment turns the cache off (every free is a cudaFree), e.g. for
// compute-sanitizer runs.
struct DeviceMemoryStats {
  int64_t reserved_bytes = 0;       // held from the driver: blocks in use + cached blocks
  int64_t peak_reserved_bytes = 0;
  int64_t in_use_bytes = 0;         // blocks handed out, counted at their size class
  int64_t cached_bytes = 0;         // free blocks kept for reuse
  int64_t cuda_malloc_calls = 0;    // real cudaMalloc calls since the start of the process
  int64_t cuda_free_calls = 0;      // real cudaFree calls
  int64_t cache_hits = 0;           // allocations served from the cache
};
DeviceMemoryStats device_memory_stats(int device);  // zeros in a build without CUDA
bool caching_enabled();  // the cache is on (not TESSERA_CUDA_CACHE=0); false without CUDA
void empty_cache(int device);  // returns every cached block of the device to the driver

// Which kernels run bf16 flash attention at head dims 64 and 128:
//  - Mma (the default): the register-tile kernels of kernels/flash_mma.h (mma.sync fragments,
//    ldmatrix, cp.async), the forward on blocks of 64 queries, 16 per warp, at D 64 (so too the
//    stick-breaking forward, kernels/stick_mma.h), 128 queries, 32 per warp, at D 128 (64 for
//    stick-breaking); at D 64 the 64-row forward was the faster on the H200 (docs/gpu-notes.md);
//  - MmaNarrow: the same with forward blocks of 64 queries at D 128 too;
//  - Mma3Blocks: Mma with its D 64 forward on 128-query blocks compiled for three blocks an SM
//    (fewer registers, some spilled), and stick-breaking's forward on 128-query blocks; a measured
//    option (kernels/flash_mma.cu). (The D 64 dK dV kernel runs three blocks an SM in every
//    mma family: measured faster on the H200.)
//  - Mma5Blocks: Mma with its D 64 forward (64-query blocks) compiled for five blocks an SM
//    (96 registers, a few bytes spilled); not yet run on a GPU;
//  - Mma2Stage: Mma whose forward streams the next key tile's K and V into a second stage while
//    the block uses this one's (one barrier a tile, two where one stage); not yet run on a GPU;
//  - MmaStoredDs: Mma whose backward's dK dV kernel stores dS (bf16, B H T^2 bytes, 1 GiB a pass
//    at most: kernels/head_slices.h) for a dQ kernel that reads it instead of recomputing S and
//    dP; not yet run on a GPU;
//  - Mma2StageDs: both of the above, Mma2Stage's forward and MmaStoredDs's backward (the step
//    with both measured in one call, before either is the default);
//  - Wmma: the kernels of kernels/flash_attention.cu that stage S, P and O through shared memory
//    (stick-breaking has only the register-tile kernels);
//  - Wgmma: the Mma bodies with every product on Hopper's warpgroup MMA (kernels/flash_wgmma.cu;
//    one warpgroup a block; the forward on blocks of 128 queries at D 64, 64 at D 128; the
//    backward on 64-row blocks, dK dV holding K and V in registers at D 64): sm_90a builds on
//    compute capability 9.0 GPUs only, an error elsewhere; on the H200 its forward was right and
//    no faster, its D 64 backward wrong (fixed since, not re-run), so not the default;
//  - WgmmaNarrow: Wgmma with fewer registers at D 64 (more blocks an SM): the forward on blocks
//    of 64 queries, and dK dV reading K and V from shared memory at every query tile.
// TESSERA_FLASH_KERNELS=mma, mma-narrow, mma-3blocks, mma-5blocks, mma-2stage, mma-ds,
// mma-2stage-ds, wmma, wgmma or wgmma-narrow in the environment sets the choice at start-up
// (flash_kernels_named); the GPU tests run each, bench_attention each but mma-2stage-ds (whose
// halves are its mma-2stage and mma-ds rows).
enum class FlashKernels {
  Mma,
  MmaNarrow,
  Mma3Blocks,
  Mma5Blocks,
  Mma2Stage,
  MmaStoredDs,
  Mma2StageDs,
  Wmma,
  Wgmma,
  WgmmaNarrow
};
FlashKernels flash_kernels();
void set_flash_kernels(FlashKernels k);
// The family TESSERA_FLASH_KERNELS names (null or empty: Mma); an error listing the names for
// any other value.
FlashKernels flash_kernels_named(const char* name);
// Whether family k's forward streams K and V in two stages (Mma2Stage, Mma2StageDs: softmax and
// stick-breaking), and whether its softmax backward's dQ reads the dS that its dK dV kernel
// stores (MmaStoredDs, Mma2StageDs).
constexpr bool two_stage_forward(FlashKernels k) {
  return k == FlashKernels::Mma2Stage || k == FlashKernels::Mma2StageDs;
}
constexpr bool stored_ds_backward(FlashKernels k) {
  return k == FlashKernels::MmaStoredDs || k == FlashKernels::Mma2StageDs;
}
// Which register-tile attention paths ran, counted per call since the start of the process
// (kernels/flash_mma.cu, stick_breaking.cu): where two families give the same bits, these say which
// kernels a run took (a stored-dS family recomputes where one kv-head group's dS would pass its
// budget, for one).
struct FlashStats {
  int64_t two_stage_forwards = 0;       // softmax and stick-breaking, K and V in two stages
  int64_t stored_ds_backwards = 0;      // softmax backwards whose dQ read the dS dK dV stored
  int64_t stored_ds_passes = 0;         // their passes (head_slices: the dS held a pass is bounded)
  int64_t recomputed_ds_backwards = 0;  // mma.sync softmax backwards whose dQ recomputed it
  int64_t document_forwards = 0;        // attention within documents: forwards in one launch
  int64_t document_backwards = 0;       // and backwards (doc_tiles.h), softmax and stick-breaking
  int64_t document_tables = 0;          // their tables uploaded: once a set of spans (doc_table.cu)
};
FlashStats flash_stats();  // zeros in a build without CUDA
// Whether FlashKernels::Wgmma and WgmmaNarrow can run here: an sm_90a build and a 9.0 device.
bool flash_wgmma_available();
// One building block of the wgmma flash kernels run alone on one warpgroup
// (kernels/wgmma_probe.cu), for a GPU test to check their layouts against a plain product. a and
// b are row-major bf16 bits; the result is row-major f32:
//  - Abt: a (64, D) and b (64, D), both read from shared memory: a b^T (64, 64);
//  - AbtHeld: a (64 MT, D) held in registers, b (64, D): a b^T (64 MT, 64);
//  - Pm: a (64 MT, 64) in the accumulators' registers, b (64, D) from shared memory: a b (64 MT, D).
// D 64 with MT 1 or 2, or D 128 with MT 1; swap_k, swap_n swap the K-major and N-major
// descriptors' LBO and SBO (kernels/wgmma_tiles.cuh). Needs flash_wgmma_available().
enum class WgmmaBlock { Abt, AbtHeld, Pm };
std::vector<float> wgmma_probe(WgmmaBlock block, int D, int MT, bool swap_k, bool swap_n,
                               const std::vector<uint16_t>& a, const std::vector<uint16_t>& b);

// The CUDA kernel table (src/backend/kernels.h). Entries the CUDA backend does not provide yet are
// null; calling one raises an error that names the kernel.
const Kernels& kernels();

}  // namespace tessera::cuda
