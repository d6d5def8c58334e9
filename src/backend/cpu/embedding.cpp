// Pending: written with its op in src/ops/embedding.cpp.
#include "backend/cpu/cpu.h"
namespace tessera::cpu {
void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& ids) { TESSERA_FAIL("pending"); }
void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) { TESSERA_FAIL("pending"); }
}
