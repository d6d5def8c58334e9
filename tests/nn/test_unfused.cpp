// nn/unfused.h: the model without its fusions (bench_gpu --unfused, TESSERA_UNFUSED=1) is the same
// model. A GPT-2 style model (biases, learned positions, tied head, a vocabulary of 50 padded to
// 64 columns) in f64 gives the same loss and gradients through its fused paths and through the
// unfused ones, which the kernels each ran show: the fused run's GELU rides c_fc's kernel and its
// attention reads q, k and v off the fused projection; the unfused run's does neither and its
// logits are not padded. f64: the two orders of operations differ by a few ulps, so 1e-12 of each
// value's scale; a missing bias or a wrong head split is off by O(1e-2) or more.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <string>

#include "backend/profile.h"
#include "nn/gpt.h"
#include "nn/unfused.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;
using testing::values;

struct Pass {
  double loss;
  std::map<std::string, std::vector<double>> grads;
  std::map<std::string, int64_t> kernels;  // calls per kernel
  int64_t columns;
};

Pass run_model(bool unfused) {
  nn::GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.block_size = 8, c.vocab_size = 50;
  Generator g(3);
  nn::GPT model(c, g, DType::F64);
  if (unfused) model.set_hook(&nn::unfused_linears());
  std::vector<int32_t> x, y;
  for (int i = 0; i < 16; ++i) x.push_back((7 * i + 3) % 50), y.push_back((11 * i + 5) % 50);
  profile::start();
  Tensor loss = model.loss(from_vector(x, {2, 8}), from_vector(y, {2, 8}));
  loss.backward();
  profile::stop();
  Pass r{loss.item(), {}, {}, model.logit_columns()};
  for (const auto& [name, p] : model.parameters()) r.grads[name] = values(p.grad());
  for (const profile::Row& row : profile::rows()) r.kernels[row.kernel] += row.calls;
  return r;
}

TEST(Unfused, the_unfused_model_is_the_fused_model_through_the_earlier_kernels) {
  const Pass fused = run_model(false), unfused = run_model(true);
  auto calls = [](const Pass& p, const char* kernel) {
    const auto it = p.kernels.find(kernel);
    return it == p.kernels.end() ? int64_t(0) : it->second;
  };
  // Two layers: c_fc with its GELU in one kernel each, or the GELU apart; the bias gradients in
  // the weight gradients' kernel, or summed apart; the heads split and merged by copies.
  EXPECT_EQ(calls(fused, "linear_gelu_forward"), 2);
  EXPECT_EQ(calls(fused, "gelu_forward"), 0);
  EXPECT_EQ(calls(unfused, "linear_gelu_forward"), 0);
  EXPECT_EQ(calls(unfused, "gelu_forward"), 2);
  EXPECT_GT(calls(fused, "linear_param_backward"), 0);
  EXPECT_EQ(calls(unfused, "linear_param_backward"), 0);
  EXPECT_GE(calls(unfused, "copy"), calls(fused, "copy") + 2 * 2);
  EXPECT_EQ(fused.columns, 64);
  EXPECT_EQ(unfused.columns, 50);
  EXPECT_NEAR(unfused.loss, fused.loss, 1e-12 * std::fabs(fused.loss));
  ASSERT_EQ(unfused.grads.size(), fused.grads.size());
  for (const auto& [name, want] : fused.grads) {
    const std::vector<double>& got = unfused.grads.at(name);
    ASSERT_EQ(got.size(), want.size()) << name;
    double scale = 0;
    for (double v : want) scale = std::max(scale, std::fabs(v));
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-12 * scale) << name << " [" << i << "]";
  }
}

TEST(Unfused, tessera_unfused_is_read_from_the_environment) {
  struct Unset {
    ~Unset() { ::unsetenv("TESSERA_UNFUSED"); }
  } unset;
  ::unsetenv("TESSERA_UNFUSED");
  EXPECT_FALSE(nn::unfused_requested());
  ::setenv("TESSERA_UNFUSED", "0", 1);
  EXPECT_FALSE(nn::unfused_requested());
  ::setenv("TESSERA_UNFUSED", "1", 1);
  EXPECT_TRUE(nn::unfused_requested());
  ::setenv("TESSERA_UNFUSED", "yes", 1);
  const std::string msg = error_of([] { nn::unfused_requested(); });
  EXPECT_NE(msg.find("TESSERA_UNFUSED='yes'"), std::string::npos) << msg;
}

}  // namespace
}  // namespace tessera
