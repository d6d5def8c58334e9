// Pending: written with its op in src/ops/rope.cpp.
#include "backend/cpu/cpu.h"
namespace tessera::cpu {
void rope(const Tensor& y, const Tensor& x, double theta, int64_t pos_offset, bool inverse) { TESSERA_FAIL("pending"); }
}
