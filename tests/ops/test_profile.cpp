// The kernel profile (backend/profile.h): every TESSERA_KERNEL call is counted and timed while it is
// on, grouped by kernel and argument shapes; nothing is recorded while it is off.
#include <gtest/gtest.h>

#include <algorithm>

#include "autograd/autograd.h"
#include "backend/kernels.h"
#include "backend/profile.h"
#include "core/rng.h"
#include "ops/activation.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/reduce.h"

using namespace tessera;

namespace {

const profile::Row* find(const std::vector<profile::Row>& rows, const std::string& kernel) {
  auto it = std::find_if(rows.begin(), rows.end(),
                         [&](const profile::Row& r) { return r.kernel == kernel; });
  return it == rows.end() ? nullptr : &*it;
}

int64_t calls(const std::vector<profile::Row>& rows, const std::string& kernel) {
  int64_t n = 0;
  for (const profile::Row& r : rows)
    if (r.kernel == kernel) n += r.calls;
  return n;
}

// A small forward and backward: layernorm, linear (gemm and a bias add), gelu.
void step(int64_t rows, Generator& g) {
  Tensor x = randn({rows, 8}, g).requires_grad_();
  Tensor w = randn({16, 8}, g).requires_grad_(), b = zeros({16}).requires_grad_();
  Tensor y = ops::gelu(ops::linear(ops::layernorm(x, ones({8}), zeros({8})), w, b));
  ops::sum(y).backward();
}

struct ProfileOff {
  ~ProfileOff() { profile::stop(); }  // a failing test leaves the profile off for the next
};

}  // namespace

TEST(Profile, counts_every_kernel_call_by_kernel_and_shapes) {
  ProfileOff off;
  Generator g(1);
  profile::start();
  step(4, g);
  step(4, g);
  step(6, g);
  profile::stop();
  const std::vector<profile::Row> rows = profile::rows();

  // Three forwards and three backwards: one layernorm_forward, one gelu_forward and one
  // gelu_backward each, grouped by the shapes of their first two tensor arguments.
  EXPECT_EQ(calls(rows, "layernorm_forward"), 3);
  EXPECT_EQ(calls(rows, "layernorm_backward"), 3);
  EXPECT_EQ(calls(rows, "gelu_forward"), 3);
  EXPECT_EQ(calls(rows, "gelu_backward"), 3);
  int64_t ln_groups = 0;
  for (const profile::Row& r : rows) {
    EXPECT_EQ(r.device, "cpu") << r.kernel;
    EXPECT_GE(r.ms, 0.0) << r.kernel;
    EXPECT_GT(r.calls, 0) << r.kernel;
    if (r.kernel != "layernorm_forward") continue;
    ++ln_groups;
    // y (rows, 8) is the first tensor argument, mean (rows) the second.
    EXPECT_TRUE(r.shapes == "f32 (4, 8) <- (4,)" || r.shapes == "f32 (6, 8) <- (6,)") << r.shapes;
    EXPECT_EQ(r.calls, r.shapes == "f32 (4, 8) <- (4,)" ? 2 : 1) << r.shapes;
    // Every tensor argument's bytes, summed over the calls: y and x (rows, 8), mean and rstd
    // (rows), weight and bias (8), all f32.
    const double rows_n = r.shapes == "f32 (4, 8) <- (4,)" ? 4 : 6;
    EXPECT_EQ(r.bytes, double(r.calls) * 4 * (2 * rows_n * 8 + 2 * rows_n + 2 * 8)) << r.shapes;
  }
  EXPECT_EQ(ln_groups, 2);
  // The forward's gemm (linear_forward for a Linear with a bias) and the backward's two (dx, and
  // dw in linear_param_backward) at least, per step.
  EXPECT_GE(
      calls(rows, "gemm") + calls(rows, "linear_forward") + calls(rows, "linear_param_backward"),
      9);
  // Most time first.
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_GE(rows[i - 1].ms, rows[i].ms);

  const std::string table = profile::table(rows, 3, 0.0);
  EXPECT_NE(table.find("layernorm_forward"), std::string::npos) << table;
  EXPECT_NE(table.find("per kernel:"), std::string::npos) << table;
  EXPECT_NE(table.find("GB/s"), std::string::npos) << table;
}

TEST(Profile, records_nothing_while_off_and_start_forgets) {
  ProfileOff off;
  Generator g(2);
  profile::start();
  step(4, g);
  profile::stop();
  const int64_t before = calls(profile::rows(), "gelu_forward");
  EXPECT_EQ(before, 1);
  step(4, g);  // off: not counted
  EXPECT_EQ(calls(profile::rows(), "gelu_forward"), before);
  profile::start();
  EXPECT_TRUE(profile::rows().empty());
  step(4, g);
  profile::stop();
  EXPECT_EQ(calls(profile::rows(), "gelu_forward"), 1);
}

TEST(Profile, a_call_inside_a_timed_call_counts_once) {
  ProfileOff off;
  Tensor y = zeros({3});
  profile::start();
  {
    profile::Scope outer("outer_kernel", Device::cpu(), &y, nullptr);
    TESSERA_KERNEL(y, fill)(y, 2.0);  // nested: part of outer_kernel's time
  }
  TESSERA_KERNEL(y, fill)(y, 3.0);
  profile::stop();
  const std::vector<profile::Row> rows = profile::rows();
  ASSERT_NE(find(rows, "outer_kernel"), nullptr);
  EXPECT_EQ(find(rows, "outer_kernel")->calls, 1);
  EXPECT_EQ(calls(rows, "fill"), 1);
  EXPECT_EQ(find(rows, "fill")->shapes, "f32 (3,)");
}
