#include "nn/unfused.h"

#include "core/env.h"
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

bool unfused_requested() { return env_switch("TESSERA_UNFUSED", "0", "1"); }

}  // namespace tessera::nn
