// kernels/head_slices.h: the passes an attention backward takes when its scratch (stick-breaking's
// checkpoints, the stored dS) would pass a budget. The GPU tests check that the passes give the
// one-pass bits (tests/cuda/test_attention_cuda.cpp); these check which passes there are.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/head_slices.h"
#include "test_util.h"

using tessera::cuda::attn::group_fits;
using tessera::cuda::attn::head_slices;
using tessera::cuda::attn::HeadSlice;
using tessera::cuda::attn::scratch_budget;

namespace {

std::string str(const std::vector<HeadSlice>& v) {
  std::ostringstream s;
  for (const HeadSlice& x : v)
    s << "(" << x.b0 << "+" << x.nb << ", " << x.g0 << "+" << x.ng << ") ";
  return s.str();
}

TEST(HeadSlices, whole_batches_then_kv_head_groups_as_the_budget_allows) {
  // B 5, H 4, Hkv 2 (G 2), 10 bytes a query head: 200 in all.
  EXPECT_EQ(str(head_slices(5, 4, 2, 10, 200)), "(0+5, 0+2) ");
  EXPECT_EQ(str(head_slices(5, 4, 2, 10, 1 << 30)), "(0+5, 0+2) ");
  // Four batch elements a pass fit: two passes, of three and two (not four and one).
  EXPECT_EQ(str(head_slices(5, 4, 2, 10, 199)), "(0+3, 0+2) (3+2, 0+2) ");
  EXPECT_EQ(str(head_slices(5, 4, 2, 10, 85)), "(0+2, 0+2) (2+2, 0+2) (4+1, 0+2) ");
  EXPECT_EQ(str(head_slices(5, 4, 2, 10, 40)),
            "(0+1, 0+2) (1+1, 0+2) (2+1, 0+2) (3+1, 0+2) (4+1, 0+2) ");
  // Under one batch element's heads: whole groups of G = 2 query heads (20 bytes).
  EXPECT_EQ(str(head_slices(2, 4, 2, 10, 39)), "(0+1, 0+1) (0+1, 1+1) (1+1, 0+1) (1+1, 1+1) ");
  EXPECT_TRUE(group_fits(4, 2, 10, 20));
  // Under one group: still one group a pass (the stick-breaking backward's choice); a caller that
  // cannot hold it asks group_fits first.
  EXPECT_FALSE(group_fits(4, 2, 10, 19));
  EXPECT_EQ(str(head_slices(1, 4, 2, 10, 19)), "(0+1, 0+1) (0+1, 1+1) ");
  // Sixteen kv heads of one query head each, three a pass fit: six passes, 3 3 3 3 2 2.
  EXPECT_EQ(str(head_slices(1, 16, 16, 10, 35)),
            "(0+1, 0+3) (0+1, 3+3) (0+1, 6+3) (0+1, 9+3) (0+1, 12+2) (0+1, 14+2) ");
  // Nothing to slice: the whole, which the kernels return from at once.
  EXPECT_EQ(str(head_slices(0, 4, 2, 10, 1)), "(0+0, 0+2) ");
  EXPECT_EQ(str(head_slices(3, 4, 2, 0, 1)), "(0+3, 0+2) ");
}

TEST(HeadSlices, every_kv_head_once_and_each_pass_within_the_budget) {
  for (int64_t B : {1, 2, 3, 7})
    for (int64_t Hkv : {1, 2, 3, 4})
      for (int64_t G : {1, 2, 4})
        for (int64_t head : {1, 7, 64})
          for (int64_t budget = 1; budget <= B * Hkv * G * head + 1; budget += 5) {
            const int64_t H = Hkv * G;
            const std::vector<HeadSlice> s = head_slices(B, H, Hkv, head, budget);
            SCOPED_TRACE("B " + std::to_string(B) + " H " + std::to_string(H) + " Hkv " +
                         std::to_string(Hkv) + " head " + std::to_string(head) + " budget " +
                         std::to_string(budget) + ": " + str(s));
            std::vector<int> seen(size_t(B * Hkv), 0);
            for (const HeadSlice& x : s) {
              ASSERT_TRUE(x.nb >= 1 && x.ng >= 1 && x.b0 + x.nb <= B && x.g0 + x.ng <= Hkv);
              ASSERT_TRUE(x.nb == 1 || x.ng == Hkv) << "a pass of several batch elements holds "
                                                       "all their heads";
              if (group_fits(H, Hkv, head, budget)) {
                EXPECT_LE(x.nb * x.ng * G * head, budget);
              }
              for (int64_t b = x.b0; b < x.b0 + x.nb; ++b)
                for (int64_t g = x.g0; g < x.g0 + x.ng; ++g) ++seen[size_t(b * Hkv + g)];
            }
            for (int n : seen) ASSERT_EQ(n, 1);
            // As few passes as fit, of sizes within one of each other.
            if (s.size() > 1) {
              const bool batches = H * head <= budget;
              const int64_t units = batches ? B : Hkv, per = (batches ? H : G) * head;
              const int64_t most = std::max<int64_t>(1, budget / per);
              EXPECT_EQ(int64_t(s.size()), (batches ? 1 : B) * ((units + most - 1) / most));
              int64_t lo = units, hi = 0;
              for (const HeadSlice& x : s) {
                lo = std::min(lo, batches ? x.nb : x.ng);
                hi = std::max(hi, batches ? x.nb : x.ng);
              }
              EXPECT_LE(hi - lo, 1);
            }
          }
}

TEST(HeadSlices, the_budget_comes_from_the_environment_or_is_one_gib) {
  const char* var = "TESSERA_TEST_SCRATCH_BYTES";
  {
    tessera::testing::ScopedEnv env({{var, ""}});
    EXPECT_EQ(scratch_budget(var), int64_t(1) << 30);
    ::unsetenv(var);
    EXPECT_EQ(scratch_budget(var), int64_t(1) << 30);
  }
  tessera::testing::ScopedEnv env({{var, "4096"}});
  EXPECT_EQ(scratch_budget(var), 4096);
  for (const char* bad : {"0", "-5", "12abc", "1e9"}) {
    ::setenv(var, bad, 1);
    const std::string e = tessera::testing::error_of([&] { scratch_budget(var); });
    EXPECT_NE(e.find(std::string(var) + "='" + bad + "' is not a positive number of bytes"),
              std::string::npos)
        << e;
  }
}

}  // namespace
