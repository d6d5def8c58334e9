// CUDA embedding lookup and its scatter-add backward: the twins of src/backend/cpu/embedding.cpp.
// table, dtable (V, C); ids i32 (N); out, dout (N, C)
//
// The backward is deterministic without float atomics. The ids are sorted stably with their
// positions (CUB's radix sort is stable), so each distinct id becomes one run of positions in
// increasing order; the first position of a run owns that table row and adds the run's rows of
// dout into it in order, starting from what dtable holds. That is the CPU's order of additions:
// f32 results match it bit for bit, and bf16 ones are its f32 sums rounded once. A bf16 dout
// may go into an f32 dtable (the f32 gradient buffer of a bf16 table): the same f32 sums, not
// rounded to bf16.
//
// The op validates ids on the host before launching (ops/embedding.cpp); the kernels only keep an
// out-of-range id from touching memory: the forward writes NaN for it, the backward skips it.
#include <cub/device/device_radix_sort.cuh>

#include <cstdint>

#include "backend/kernels.h"
#include "common.cuh"
#include "core.cuh"

namespace tessera::cuda {
namespace {

using core::global_index;
using core::grid_for;
using core::grid_stride;
using core::kThreads;
using core::ld;
using core::st;

template <typename T>
__device__ __forceinline__ T quiet_nan();
template <>
__device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fc00000); }
template <>
__device__ __forceinline__ uint16_t quiet_nan<uint16_t>() { return 0x7fc0; }

template <typename T>
__global__ void embedding_forward_kernel(T* out, const T* table, const int32_t* ids, int64_t N,
                                         int64_t V, int64_t C) {
  for (int64_t i = global_index(); i < N * C; i += grid_stride()) {
    const int64_t id = ids[i / C];
    out[i] = (id >= 0 && id < V) ? table[id * C + i % C] : quiet_nan<T>();  // bits copied
  }
}

__global__ void iota_kernel(int32_t* p, int64_t n) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) p[i] = int32_t(i);
}

// Block (s, y): sorted position s, columns [y * kThreads, (y + 1) * kThreads). Only the first
// position of a run of equal ids works; it walks the run, which lists the positions of that id in
// increasing order.
template <typename T, typename R>
__global__ void embedding_backward_kernel(T* dtable, const R* dout, const int32_t* sorted_ids,
                                          const int32_t* sorted_pos, int64_t N, int64_t V,
                                          int64_t C) {
  const int64_t s = blockIdx.x;
  const int32_t id = sorted_ids[s];
  if ((s > 0 && sorted_ids[s - 1] == id) || id < 0 || id >= V) return;
  const int64_t c = int64_t(blockIdx.y) * kThreads + threadIdx.x;
  if (c >= C) return;
  float acc = ld(dtable, int64_t(id) * C + c);
  for (int64_t r = s; r < N && sorted_ids[r] == id; ++r)
    acc += ld(dout, int64_t(sorted_pos[r]) * C + c);
  st(dtable, int64_t(id) * C + c, acc);
}

// Shapes and dtypes (the ids' values are the op's to check: they live on the device). widen: an
// f32 table under bf16 rows is allowed (the backward's).
void check_embedding(const char* kernel, const Tensor& table, const Tensor& rows, const Tensor& ids,
                     bool widen = false) {
  TESSERA_CHECK(table.dim() == 2, "cuda kernel ", kernel, ": table must be (V, C), got ",
                table.str());
  const int64_t N = ids.numel(), C = table.size(1);
  TESSERA_CHECK(ids.dtype() == DType::I32 && ids.is_contiguous() &&
                    ids.device() == table.device(),
                "cuda kernel ", kernel, ": ids must be contiguous i32 on ",
                table.device().str(), ", got ", ids.str());
  TESSERA_CHECK(rows.numel() == N * C, "cuda kernel ", kernel, ": ", rows.str(),
                " is not (N, C) = (", N, ", ", C, ") of ", table.str());
  const bool widened = widen && table.dtype() == DType::F32 && rows.dtype() == DType::BF16;
  core::check_args(kernel, table.dtype(), {{"table", table}});
  core::check_args(kernel, widened ? DType::BF16 : table.dtype(), {{"rows", rows}});
  TESSERA_CHECK(rows.device() == table.device(), "cuda kernel ", kernel, ": rows ", rows.str(),
                " and table ", table.str(), " are on different devices");
}

void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& ids) {
  check_embedding("embedding_forward", table, out, ids);
  const int64_t V = table.size(0), C = table.size(1), N = ids.numel();
  if (N * C == 0) return;
  DeviceGuard guard(table.device().index);
  core::dispatch("embedding_forward", table.dtype(), [&](auto z) {
    using T = decltype(z);
    embedding_forward_kernel<T><<<grid_for(N * C), kThreads>>>(
        static_cast<T*>(out.data_ptr()), static_cast<const T*>(table.data_ptr()),
        static_cast<const int32_t*>(ids.data_ptr()), N, V, C);
    CUDA_CHECK_LAUNCH();
  });
}

void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) {
  check_embedding("embedding_backward", dtable, dout, ids, /*widen=*/true);
  const int64_t V = dtable.size(0), C = dtable.size(1), N = ids.numel();
  if (N * C == 0) return;
  TESSERA_CHECK(N <= int64_t(0x7fffffff) && (C + kThreads - 1) / kThreads <= 65535,
                "cuda kernel embedding_backward: ", N, " ids of ", C,
                " channels exceed the grid limits");
  DeviceGuard guard(dtable.device().index);
  const Device dev = dtable.device();

  // Scratch: positions, then the sorted ids and positions, then CUB's temporary storage.
  Tensor pos = Tensor::empty({3 * N}, {DType::I32, dev});
  int32_t* pos_in = static_cast<int32_t*>(pos.data_ptr());
  int32_t* sorted_pos = pos_in + N;
  int32_t* sorted_ids = pos_in + 2 * N;
  const int32_t* ids_in = static_cast<const int32_t*>(ids.data_ptr());
  iota_kernel<<<grid_for(N), kThreads>>>(pos_in, N);
  CUDA_CHECK_LAUNCH();
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ids_in, sorted_ids, pos_in,
                                             sorted_pos, int(N)));
  Tensor temp = Tensor::empty({int64_t(std::max<size_t>(temp_bytes, 1))}, {DType::U8, dev});
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, ids_in, sorted_ids,
                                             pos_in, sorted_pos, int(N)));

  const dim3 grid(unsigned(N), unsigned((C + kThreads - 1) / kThreads));
  auto launch = [&](auto t, auto r) {
    using T = decltype(t);
    using R = decltype(r);
    embedding_backward_kernel<T, R><<<grid, kThreads>>>(static_cast<T*>(dtable.data_ptr()),
                                                        static_cast<const R*>(dout.data_ptr()),
                                                        sorted_ids, sorted_pos, N, V, C);
    CUDA_CHECK_LAUNCH();
  };
  if (dtable.dtype() != dout.dtype()) {  // f32 under bf16: check_embedding allows no other pair
    launch(float{}, uint16_t{});
  } else {
    core::dispatch("embedding_backward", dtable.dtype(), [&](auto z) { launch(z, z); });
  }
}

}  // namespace

void add_embedding_kernels(Kernels& k) {
  k.embedding_forward = embedding_forward;
  k.embedding_backward = embedding_backward;
}

}  // namespace tessera::cuda
