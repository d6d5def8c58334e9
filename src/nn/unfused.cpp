#include "nn/unfused.h"

#include <cstdlib>
#include <cstring>

#include "ops/ops.h"

namespace tessera::nn {
namespace {

class UnfusedLinears : public LinearHook {
 public:
  Tensor base(const std::string&, const Tensor& x, const Tensor& w,
              const Tensor& b) const override {
    Tensor y = ops::matmul(x, w, false, true);
    return b.defined() ? ops::add(y, b) : y;
  }
  Tensor adapt(Proj, int64_t, const Tensor&, const Tensor& y, bool) const override { return y; }
};

}  // namespace

const LinearHook& unfused_linears() {
  static const UnfusedLinears hook;
  return hook;
}

bool unfused_requested() {
  const char* e = std::getenv("TESSERA_UNFUSED");
  if (!e || !*e || std::strcmp(e, "0") == 0) return false;
  TESSERA_CHECK(std::strcmp(e, "1") == 0, "TESSERA_UNFUSED='", e, "': expected 1 or 0");
  return true;
}

}  // namespace tessera::nn
