// The dropout generator's key (train/run_state.h dropout_key): every rank draws its own masks, and
// none reuses the random numbers the initial weights were drawn with (the run's seed, from counter
// 0), as rank 0 did when it drew dropout with the seed itself.
#include <gtest/gtest.h>

#include <set>

#include "core/rng.h"
#include "train/run_state.h"

namespace tessera::train {
namespace {

TEST(DropoutKey, no_rank_draws_the_initial_weights_random_numbers_or_another_ranks) {
  for (uint64_t seed : {uint64_t(0), uint64_t(1337), ~uint64_t(0)}) {
    std::set<uint64_t> keys;
    for (int rank = 0; rank < 64; ++rank) {
      const uint64_t key = dropout_key(seed, rank);
      EXPECT_NE(key, seed) << "rank " << rank << " draws with the init generator's key";
      keys.insert(key);
    }
    EXPECT_EQ(keys.size(), 64u) << "two ranks share a dropout stream";
    // The first draws differ from the init generator's: a mask element i is not decided by the
    // random words weight i was drawn from.
    int same = 0;
    for (uint64_t i = 0; i < 256; ++i)
      same += philox_uniform(i, dropout_key(seed, 0)) == philox_uniform(i, seed);
    EXPECT_LT(same, 4);
  }
}

}  // namespace
}  // namespace tessera::train
