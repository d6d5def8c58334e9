// Pending: written with its op in src/ops/attention.cpp.
#include "backend/cpu/cpu.h"
namespace tessera::cpu {
void attention_forward(const Tensor& out, const Tensor& probs, const Tensor& q, const Tensor& k,
                       const Tensor& v, double scale) { TESSERA_FAIL("pending"); }
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                        const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
                        double scale) { TESSERA_FAIL("pending"); }
}
