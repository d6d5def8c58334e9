// The warp instructions of the register-tile attention bodies (flash_mma.h, stick_mma.h) as inline
// PTX: the context type W their plain C++ runs on in a kernel. Under the CUDA emulator
// (kernels/emu) these asm statements run on its PTX interpreter (kernels/emu/ptx.h): the same
// operands, registers and shared addresses.
//
// PTX used (sm_80+): ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16,
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, cp.async.cg.shared.global (16 bytes, with
// a source size of 0 to zero-fill), cp.async.commit_group, cp.async.wait_group 0,
// ex2.approx.ftz.f32, rcp.approx.ftz.f32.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

namespace tessera::cuda::attn {

struct DeviceCtx {
  unsigned char* base;
  __device__ int thread() const { return int(threadIdx.x); }
  __device__ unsigned char* smem() const { return base; }
  __device__ void sync_block() { __syncthreads(); }
  __device__ static uint32_t shared_addr(const void* p) {
    return uint32_t(__cvta_generic_to_shared(p));
  }
  __device__ void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_addr(row)));
  }
  __device__ void ldmatrix_x4_trans(uint32_t (&r)[4], const uint16_t* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_addr(row)));
  }
  __device__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ float shfl_xor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
  __device__ bool any(bool p) { return __any_sync(0xffffffffu, p) != 0; }  // one VOTE.ANY
  __device__ void cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_addr(dst)),
                 "l"(src), "r"(valid ? 16 : 0));
  }
  __device__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
  __device__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
  __device__ static uint32_t pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
  }
  // ex2.approx.ftz.f32: one MUFU.EX2 where exp2f wraps it in three more instructions for the
  // subnormal range (nvcc 13.0, sm_90), 96 of them each key tile in the D 64 forward. The same
  // 2 ulp as exp2f; results below 2^-126 are 0 (a weight that small adds nothing beside a row's
  // largest, 1).
  __device__ static float exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
  }
  __device__ static float log(float x) { return logf(x); }
  __device__ static float log2(float x) { return log2f(x); }
  // rcp.approx.ftz.f32 (1 ulp): one MUFU.RCP, where __fdividef(1, x) adds a range test and two
  // scalings for |x| > 2^126 (1 <= x <= 2 here).
  __device__ static float rcp(float x) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
  }
};

}  // namespace tessera::cuda::attn
