// Pending: written with its op in src/ops/softmax.cpp.
#include "backend/cpu/cpu.h"
namespace tessera::cpu {
void softmax_forward(const Tensor& y, const Tensor& x) { TESSERA_FAIL("pending"); }
void softmax_backward(const Tensor& dx, const Tensor& dy, const Tensor& y) { TESSERA_FAIL("pending"); }
void log_softmax_forward(const Tensor& y, const Tensor& x) { TESSERA_FAIL("pending"); }
void log_softmax_backward(const Tensor& dx, const Tensor& dy, const Tensor& y) { TESSERA_FAIL("pending"); }
void cross_entropy_forward(const Tensor& losses, const Tensor& lse, const Tensor& logits,
                           const Tensor& targets, int64_t ignore_index) { TESSERA_FAIL("pending"); }
void cross_entropy_backward(const Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& lse, const Tensor& targets, int64_t ignore_index) { TESSERA_FAIL("pending"); }
}
