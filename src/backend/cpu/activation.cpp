// Pending: written with its op in src/ops/activation.cpp.
#include "backend/cpu/cpu.h"
namespace tessera::cpu {
void gelu_forward(const Tensor& y, const Tensor& x) { TESSERA_FAIL("pending"); }
void gelu_backward(const Tensor& dx, const Tensor& dy, const Tensor& x) { TESSERA_FAIL("pending"); }
void silu_forward(const Tensor& y, const Tensor& x) { TESSERA_FAIL("pending"); }
void silu_backward(const Tensor& dx, const Tensor& dy, const Tensor& x) { TESSERA_FAIL("pending"); }
void swiglu_forward(const Tensor& y, const Tensor& gate, const Tensor& up) { TESSERA_FAIL("pending"); }
void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dy, const Tensor& gate,
                     const Tensor& up) { TESSERA_FAIL("pending"); }
void dropout(const Tensor& y, const Tensor& x, double p, uint64_t seed, uint64_t offset) { TESSERA_FAIL("pending"); }
}
