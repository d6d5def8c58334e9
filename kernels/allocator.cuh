// The caching device allocator behind cuda::device_malloc / device_free (memory.cu).
//
//   void* p = alloc::allocate(nbytes, device);   // a cached block of nbytes' size class, or
//   cudaMalloc alloc::release(p, device);                   // back to the cache; cudaFree only in
//   empty_cache
//
// Blocks are binned by size class (allocator.cu) and reused only for requests of the same class,
// so a training loop whose shapes repeat every step stops calling cudaMalloc after its first step.
// Every kernel and copy runs on the one legacy default stream, so a block freed by the host while
// kernels that read it are still queued can be handed out at once: whatever the next owner launches
// is queued behind them (stream order). A second stream would break that and needs per-stream
// pools; NCCL's collective stream (nccl_comm.cu) instead holds its tensors until the compute
// stream has passed the collective's event.
#pragma once

#include <cstddef>

namespace tessera::cuda::alloc {

void* allocate(size_t nbytes, int device);
void release(void* ptr, int device);  // never throws (destructor path)

// The class a request of nbytes is served from (exposed for the tests' arithmetic).
size_t size_class(size_t nbytes);

}  // namespace tessera::cuda::alloc
