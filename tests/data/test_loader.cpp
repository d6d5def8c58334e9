// DataLoader: windows, shift-by-one targets, deterministic epochs, exact resume, rank striding.
//
// Shards here hold distinct ids (shard f holds f * 1000 + i at position i), so the first token of a
// row names the window it came from.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/loader.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::data;
using tessera::testing::error_of;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kVocab = 100000;

using tessera::testing::TempDir;

// Writes shards of the given lengths; shard f holds f * 1000 + i. Returns their paths.
std::vector<std::string> make_shards(const TempDir& dir, const std::vector<int64_t>& lengths) {
  std::vector<std::string> files;
  for (size_t f = 0; f < lengths.size(); ++f) {
    std::vector<uint32_t> tokens;
    for (int64_t i = 0; i < lengths[f]; ++i) tokens.push_back(uint32_t(f * 1000 + size_t(i)));
    files.push_back(dir.file("shard_" + std::to_string(f) + ".bin"));
    write_shard(files.back(), tokens, kVocab);
  }
  return files;
}

LoaderOptions options(std::vector<std::string> files, int64_t B, int64_t T, bool shuffle = true,
                      uint64_t seed = 1234) {
  LoaderOptions o;
  o.files = std::move(files);
  o.batch_size = B;
  o.seq_len = T;
  o.vocab_size = kVocab;
  o.seed = seed;
  o.shuffle = shuffle;
  return o;
}

struct Rows {
  std::vector<std::vector<int32_t>> inputs, targets;
  bool operator==(const Rows&) const = default;
};

// The rows of the next n batches, in order.
Rows take(DataLoader& loader, int64_t n) {
  Rows r;
  for (int64_t i = 0; i < n; ++i) {
    Batch b = loader.next();
    const int64_t B = b.inputs.size(0), T = b.inputs.size(1);
    std::vector<int32_t> in = b.inputs.to_vector<int32_t>(), tg = b.targets.to_vector<int32_t>();
    for (int64_t row = 0; row < B; ++row) {
      r.inputs.emplace_back(in.begin() + row * T, in.begin() + (row + 1) * T);
      r.targets.emplace_back(tg.begin() + row * T, tg.begin() + (row + 1) * T);
    }
  }
  return r;
}

// The first token of each row: the identity of its window.
std::vector<int32_t> window_ids(const Rows& r) {
  std::vector<int32_t> ids;
  for (const auto& row : r.inputs) ids.push_back(row[0]);
  return ids;
}

}  // namespace

TEST(Loader, targets_are_inputs_shifted_by_one_and_match_the_shard) {
  TempDir dir;
  DataLoader plain(options(make_shards(dir, {21}), 2, 4, /*shuffle=*/false));
  Batch b = plain.next();
  EXPECT_EQ(b.inputs.shape(), (Shape{2, 4}));
  EXPECT_EQ(b.targets.shape(), (Shape{2, 4}));
  EXPECT_EQ(b.inputs.dtype(), DType::I32);
  EXPECT_TRUE(b.inputs.device().is_cpu());
  EXPECT_EQ(b.inputs.to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(b.targets.to_vector<int32_t>(), (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8}));

  // Shuffled: every row is still a contiguous run of the shard starting at a multiple of T.
  DataLoader loader(options(make_shards(dir, {41, 25}), 3, 4));
  Rows r = take(loader, 10);
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    const int32_t start = r.inputs[i][0];
    EXPECT_EQ(start % 1000 % 4, 0) << "window starts at a multiple of T";
    for (int32_t t = 0; t < 4; ++t) {
      EXPECT_EQ(r.inputs[i][size_t(t)], start + t);
      EXPECT_EQ(r.targets[i][size_t(t)], start + t + 1);
    }
  }
}

TEST(Loader, unshuffled_order_is_sequential_and_never_crosses_shards) {
  TempDir dir;
  // T = 4: 23 tokens -> windows at 0..16 (5; tokens 21, 22 unused), 17 tokens -> 4 windows ending
  // exactly at the last token, 3 tokens -> none.
  DataLoader loader(options(make_shards(dir, {23, 17, 3}), 1, 4, /*shuffle=*/false));
  EXPECT_EQ(loader.windows_per_epoch(), 9);
  EXPECT_EQ(loader.batches_per_epoch(), 9);
  Rows r = take(loader, 11);
  EXPECT_EQ(window_ids(r),
            (std::vector<int32_t>{0, 4, 8, 12, 16, 1000, 1004, 1008, 1012, 0, 4}));
  EXPECT_EQ(r.targets[8], (std::vector<int32_t>{1013, 1014, 1015, 1016}));  // last token of shard 1
  EXPECT_EQ(loader.state().epoch, 1);
  EXPECT_EQ(count_windows({23, 17, 3}, 4), 9);  // what eval counts without opening a loader
  EXPECT_EQ(count_windows({4, 5, 0}, 4), 1);    // 4 tokens hold no window of 5; 5 hold one
  EXPECT_EQ(count_windows({}, 4), 0);
  EXPECT_EQ(count_windows({8, 9}, 4), 1 + 2);   // a second window of 5 needs tokens 4..8
}

TEST(Loader, every_window_appears_exactly_once_per_epoch) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {41, 25});  // T = 4: 10 + 6 windows
  std::set<int32_t> all;
  for (int32_t s = 0; s < 40; s += 4) all.insert(s);
  for (int32_t s = 1000; s < 1024; s += 4) all.insert(s);

  DataLoader loader(options(files, 4, 4));  // 16 windows = 4 batches exactly
  ASSERT_EQ(loader.windows_per_epoch(), 16);
  ASSERT_EQ(loader.batches_per_epoch(), 4);
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::vector<int32_t> ids = window_ids(take(loader, 4));
    EXPECT_EQ(std::set<int32_t>(ids.begin(), ids.end()), all) << "epoch " << epoch;
    EXPECT_EQ(ids.size(), all.size());
  }

  // B = 3: 5 batches use 15 distinct windows, the 16th is dropped at the epoch's end.
  DataLoader ragged(options(files, 3, 4));
  ASSERT_EQ(ragged.batches_per_epoch(), 5);
  std::vector<int32_t> ids = window_ids(take(ragged, 5));
  std::set<int32_t> distinct(ids.begin(), ids.end());
  EXPECT_EQ(distinct.size(), 15u);
  EXPECT_TRUE(std::includes(all.begin(), all.end(), distinct.begin(), distinct.end()));
  EXPECT_EQ(ragged.state(), (LoaderState{1234, 1, 0}));
}

TEST(Loader, order_is_a_function_of_seed_and_epoch) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {41, 25});
  DataLoader a(options(files, 4, 4, true, 7)), b(options(files, 4, 4, true, 7));
  const Rows ra = take(a, 8);  // two epochs of 16 windows
  EXPECT_EQ(take(b, 8), ra);
  const std::vector<int32_t> ids = window_ids(ra);
  const std::vector<int32_t> epoch0(ids.begin(), ids.begin() + 16), epoch1(ids.begin() + 16, ids.end());

  DataLoader other_seed(options(files, 4, 4, true, 8));
  EXPECT_NE(window_ids(take(other_seed, 4)), epoch0);

  // Epoch 1 is reached directly from (seed, epoch), without replaying epoch 0.
  DataLoader jump(options(files, 4, 4, true, 999));
  jump.set_state({7, 1, 0});
  EXPECT_EQ(window_ids(take(jump, 4)), epoch1);
}

TEST(Loader, different_epochs_give_different_orders) {
  TempDir dir;
  DataLoader loader(options(make_shards(dir, {41, 25}), 4, 4));
  const std::vector<int32_t> e0 = window_ids(take(loader, 4));
  const std::vector<int32_t> e1 = window_ids(take(loader, 4));
  const std::vector<int32_t> e2 = window_ids(take(loader, 4));
  EXPECT_NE(e0, e1);
  EXPECT_NE(e1, e2);
  EXPECT_NE(e0, e2);
  std::vector<int32_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_NE(e0, sorted) << "a shuffled epoch should not come out in file order";
}

// The order is the Fisher-Yates shuffle that data/loader.cpp documents, computed here from its
// definition: position i = N-1 .. 1 swaps with j = r mod (i + 1), r the first 64 bits of Philox
// counter i under key seed and stream ("DATA" << 32 | epoch). A checkpoint saves only (seed,
// epoch, position), so any other permutation (another algorithm, stream or bit order) would make
// a run resumed by a newer build silently read other windows than the run it continues; and a
// slip such as r mod i (Sattolo's algorithm: every order one cycle, no window ever left in place)
// still passes every once-per-epoch check above.
TEST(Loader, the_order_is_fisher_yates_on_philox_counters_from_its_definition) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {41, 25});  // T = 4: 10 + 6 windows
  auto id_of = [](int64_t w) { return int32_t(w < 10 ? 4 * w : 1000 + 4 * (w - 10)); };
  DataLoader loader(options(files, 4, 4, true, 77));
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> order(16);
    for (int64_t w = 0; w < 16; ++w) order[size_t(w)] = w;
    const uint64_t stream = (uint64_t(0x44415441u) << 32) | uint64_t(epoch);
    for (int64_t i = 15; i > 0; --i) {
      const Philox4 r = philox4x32_10(uint64_t(i), 77, stream);
      const uint64_t bits = (uint64_t(r.v[0]) << 32) | r.v[1];
      std::swap(order[size_t(i)], order[size_t(bits % uint64_t(i + 1))]);
    }
    std::vector<int32_t> want;
    for (int64_t w : order) want.push_back(id_of(w));
    EXPECT_EQ(window_ids(take(loader, 4)), want) << "epoch " << epoch;
  }

  // Whatever the formula, a uniform shuffle of two windows keeps them in place about half the
  // time: over 64 seeds both orders appear (all 64 alike would happen with probability 2^-63).
  TempDir other;
  const std::vector<std::string> two = make_shards(other, {9});  // T = 4: windows at 0 and 4
  std::set<std::vector<int32_t>> seen;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    DataLoader l(options(two, 2, 4, true, seed));
    seen.insert(window_ids(take(l, 1)));
  }
  EXPECT_EQ(seen, (std::set<std::vector<int32_t>>{{0, 4}, {4, 0}}));
}

TEST(Loader, restoring_state_mid_epoch_replays_the_batch_sequence_exactly) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {41, 25});
  DataLoader a(options(files, 3, 4));  // 5 batches per epoch
  take(a, 2);
  const LoaderState s = a.state();
  EXPECT_EQ(s, (LoaderState{1234, 0, 6}));  // 2 batches of B = 3 windows
  const Rows expected = take(a, 9);  // runs through the end of epoch 0 and into epoch 2

  DataLoader b(options(files, 3, 4, true, /*seed=*/5));  // the state's seed wins
  take(b, 3);                                            // and whatever b did before is forgotten
  b.set_state(s);
  EXPECT_EQ(b.state(), s);
  EXPECT_EQ(take(b, 9), expected);
  EXPECT_EQ(b.state(), a.state());
}

TEST(Loader, restoring_state_at_an_epoch_boundary_replays_exactly) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {41, 25});
  DataLoader a(options(files, 3, 4));
  take(a, 5);  // exactly one epoch
  const LoaderState s = a.state();
  EXPECT_EQ(s, (LoaderState{1234, 1, 0}));
  const Rows expected = take(a, 7);

  DataLoader b(options(files, 3, 4));
  b.set_state(s);
  EXPECT_EQ(take(b, 7), expected);

  // "After the last batch of epoch 0" is the same point.
  DataLoader c(options(files, 3, 4));
  c.set_state({1234, 0, 15});
  EXPECT_EQ(c.state(), s);
  EXPECT_EQ(take(c, 7), expected);
}

TEST(Loader, ranks_split_each_global_batch_in_order_and_disjointly) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {41, 25, 33});  // 10 + 6 + 8 windows
  const int world = 3;
  const int64_t B = 2;
  DataLoader global(options(files, world * B, 4));
  ASSERT_EQ(global.batches_per_epoch(), 4);

  std::vector<DataLoader> ranks;
  for (int r = 0; r < world; ++r) {
    LoaderOptions o = options(files, B, 4);
    o.rank = r;
    o.world = world;
    ranks.emplace_back(o);
    EXPECT_EQ(ranks.back().batches_per_epoch(), 4);
  }
  for (int step = 0; step < 10; ++step) {  // two and a half epochs
    Rows want = take(global, 1), got;
    std::set<int32_t> seen;
    for (int r = 0; r < world; ++r) {
      Rows part = take(ranks[size_t(r)], 1);
      for (int32_t id : window_ids(part))
        EXPECT_TRUE(seen.insert(id).second) << "window " << id << " on two ranks, step " << step;
      got.inputs.insert(got.inputs.end(), part.inputs.begin(), part.inputs.end());
      got.targets.insert(got.targets.end(), part.targets.begin(), part.targets.end());
    }
    EXPECT_EQ(got, want) << "step " << step;
    for (const DataLoader& r : ranks) EXPECT_EQ(r.state(), global.state());
  }
}

// What ranks compare to know they read the same tokens (train/rank_agreement.h): equal for the
// same shards however the loader is set up, different when one token, the order of the files, or
// a token moved from one shard to the next differs.
TEST(Loader, contents_fingerprint_follows_the_tokens_and_the_order_of_the_shards) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {40, 30});
  const uint32_t base = DataLoader(options(files, 2, 4)).contents_fingerprint();
  EXPECT_EQ(DataLoader(options(files, 3, 8, false, 99)).contents_fingerprint(), base);
  EXPECT_NE(DataLoader(options({files[1], files[0]}, 2, 4)).contents_fingerprint(), base);
  std::vector<uint32_t> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back(uint32_t(i));
  tokens[17] = 5;
  write_shard(files[0], tokens, kVocab);
  EXPECT_NE(DataLoader(options(files, 2, 4)).contents_fingerprint(), base);
  // The same tokens cut into shards elsewhere: 39 + 31 instead of 40 + 30.
  tokens[17] = 17;
  std::vector<uint32_t> second;
  for (int i = 0; i < 30; ++i) second.push_back(uint32_t(1000 + i));
  second.insert(second.begin(), tokens.back());
  tokens.pop_back();
  write_shard(files[0], tokens, kVocab);
  write_shard(files[1], second, kVocab);
  EXPECT_NE(DataLoader(options(files, 2, 4)).contents_fingerprint(), base);
}

TEST(Loader, reads_raw_uint16_shards) {
  TempDir dir;
  std::vector<uint16_t> raw(13);
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = uint16_t(100 + i);
  const std::string path = dir.file("train.bin");
  {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(raw.data()), std::streamsize(raw.size() * 2));
  }
  LoaderOptions o = options({path}, 1, 4, false);
  o.format = ShardFormat::RawU16;
  o.vocab_size = 200;
  DataLoader loader(o);
  EXPECT_EQ(loader.windows_per_epoch(), 3);
  Rows r = take(loader, 3);
  EXPECT_EQ(window_ids(r), (std::vector<int32_t>{100, 104, 108}));
  EXPECT_EQ(r.targets[2], (std::vector<int32_t>{109, 110, 111, 112}));
}

// A shard's header records the vocabulary its ids were written for: byte-level shards (257) are
// refused under data.tokenizer gpt2 and GPT-2's under byte (every byte id is a GPT-2 id too, so
// the id check alone let one train as the other), naming the file; llm.c's shards record none.
TEST(Loader, shards_written_for_the_other_tokenizer_are_refused_naming_the_file) {
  TempDir dir;
  const std::string bytes = dir.file("bytes.bin"), gpt2 = dir.file("gpt2.bin");
  std::vector<uint32_t> tokens(200);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint32_t(i);
  write_shard(bytes, tokens, 257);
  write_shard(gpt2, tokens, 50257);
  LoaderOptions o = options({bytes}, 2, 8);
  o.vocab_size = 50257;
  o.tokenizer = "gpt2";
  const std::string e = error_of([&] { DataLoader loader(o); });
  EXPECT_NE(e.find("shard " + bytes + " was written for a vocabulary of 257 (the byte "
                   "tokenizer's), but data.tokenizer is gpt2"),
            std::string::npos)
      << e;
  o.files = {gpt2};
  EXPECT_NO_THROW(DataLoader loader(o));
  o.tokenizer = "byte";
  EXPECT_NE(error_of([&] { DataLoader loader(o); }).find("written for a vocabulary of 50257"),
            std::string::npos);
  // A header whose int 3 is 0 (llm.c's) is read under either.
  std::string raw = tessera::testing::read_file(gpt2);
  std::memset(raw.data() + 12, 0, 4);
  std::ofstream(gpt2, std::ios::binary | std::ios::trunc) << raw;
  EXPECT_NO_THROW(DataLoader loader(o));
}

TEST(Loader, bad_options_are_clear_errors) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {41});
  std::string msg = error_of([&] { DataLoader l(options({}, 2, 4)); });
  EXPECT_NE(msg.find("no files"), std::string::npos) << msg;
  msg = error_of([&] { DataLoader l(options(files, 0, 4)); });
  EXPECT_NE(msg.find("batch_size must be positive, got 0"), std::string::npos) << msg;
  msg = error_of([&] { DataLoader l(options(files, 2, -1)); });
  EXPECT_NE(msg.find("seq_len must be positive, got -1"), std::string::npos) << msg;
  for (int64_t vocab : {int64_t(0), (int64_t(1) << 31) + 1}) {  // ids are held as i32
    msg = error_of([&] {
      LoaderOptions o = options(files, 2, 4);
      o.vocab_size = vocab;
      DataLoader l(o);
    });
    EXPECT_NE(msg.find("vocab_size must be in [1, 2^31], got " + std::to_string(vocab)),
              std::string::npos) << msg;
  }
  msg = error_of([&] {
    LoaderOptions o = options(files, 2, 4);
    o.rank = 2;
    o.world = 2;
    DataLoader l(o);
  });
  EXPECT_NE(msg.find("rank 2"), std::string::npos) << msg;

  // A bad shard fails the loader with the shard's own error (here: an id beyond the vocabulary).
  msg = error_of([&] {
    LoaderOptions o = options(files, 2, 4);
    o.vocab_size = 30;
    DataLoader l(o);
  });
  EXPECT_NE(msg.find(files[0]), std::string::npos) << msg;
  EXPECT_NE(msg.find("token id 30"), std::string::npos) << msg;
}

TEST(Loader, a_shard_cut_short_during_training_is_an_error_naming_it) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {41, 900});
  DataLoader loader(options(files, 4, 4, /*shuffle=*/false));
  take(loader, 2);                            // windows 0..7, all in shard 0 (10 windows)
  fs::resize_file(files[1], 1024 + 4 * 100);  // shard 1 (uint32 ids) keeps 100 of 900 tokens
  take(loader, 4);  // windows 8..23: shard 1's windows 0..13 end at token 56, still there
  const std::string msg = error_of([&] { take(loader, 30); });
  EXPECT_NE(msg.find("shard " + files[1] + " changed size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("now has 1424 bytes"), std::string::npos) << msg;
}

TEST(Loader, shards_too_short_for_one_window_name_their_sizes) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {4, 3});
  std::string msg = error_of([&] { DataLoader l(options(files, 1, 4)); });
  EXPECT_NE(msg.find("seq_len + 1 = 5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("7 tokens in total"), std::string::npos) << msg;
  EXPECT_NE(msg.find(files[0] + ": 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find(files[1] + ": 3"), std::string::npos) << msg;

  // Windows exist but not enough for one global batch: no epoch could ever yield a batch.
  msg = error_of([&] {
    LoaderOptions o = options(make_shards(dir, {41}), 3, 4);  // 10 windows < 4 x 3
    o.world = 4;
    DataLoader l(o);
  });
  EXPECT_NE(msg.find("10 windows"), std::string::npos) << msg;
  EXPECT_NE(msg.find("4 x 3 = 12"), std::string::npos) << msg;
  EXPECT_NE(msg.find(files[0]), std::string::npos) << "names the shards: " << msg;
}

// Gradient accumulation needs one optimizer step's windows in the shards: a step of 16 windows
// (4 micro-batches of 4) cannot come from 10, though one micro-batch can. Refused at
// construction, naming the counts, rather than an epoch that never yields a step.
TEST(Loader, shards_holding_fewer_windows_than_one_optimizer_step_are_refused) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {41});  // 10 windows of 4 + 1 tokens
  LoaderOptions o = options(files, 4, 4);
  o.step_windows = 16;
  const std::string msg = error_of([&] { DataLoader l(o); });
  EXPECT_NE(msg.find("the shards (" + files[0] + ") hold 10 windows of 5 tokens, fewer than one "
                     "optimizer step of 16 windows"),
            std::string::npos)
      << msg;
  o.step_windows = 8;  // two micro-batches: fits
  EXPECT_NO_THROW(DataLoader l(o));
}

TEST(Loader, set_state_rejects_positions_outside_the_epoch) {
  TempDir dir;
  DataLoader loader(options(make_shards(dir, {41}), 2, 4));  // 10 windows per epoch
  std::string msg = error_of([&] { loader.set_state({1, 0, 11}); });
  EXPECT_NE(msg.find("position 11"), std::string::npos) << msg;
  EXPECT_NE(msg.find("10 windows"), std::string::npos) << msg;
  msg = error_of([&] { loader.set_state({1, -1, 0}); });
  EXPECT_NE(msg.find("negative epoch -1"), std::string::npos) << msg;
}

TEST(Loader, expand_glob_sorts_matches_and_names_an_empty_pattern) {
  TempDir dir;
  make_shards(dir, {2, 2, 2});
  fs::create_directories(dir.path / "shard_dir.bin");  // directories are not shards
  const std::vector<std::string> got = expand_glob(dir.file("shard_*.bin"));
  EXPECT_EQ(got, (std::vector<std::string>{dir.file("shard_0.bin"), dir.file("shard_1.bin"),
                                           dir.file("shard_2.bin")}));
  const std::string pattern = dir.file("val_*.bin");
  std::string msg = error_of([&] { expand_glob(pattern, "data.val"); });
  EXPECT_NE(msg.find("data.val: no files match '" + pattern + "' ["), std::string::npos) << msg;
  msg = error_of([&] { expand_glob("data/nothing_here_*.bin", "data.train"); });
  EXPECT_NE(
      msg.find(
          "data.train: no files match 'data/nothing_here_*.bin' (run scripts/prepare_data.sh?)"),
      std::string::npos)
      << msg;
  // A directory named for its shards: told to glob them.
  msg = error_of([&] { expand_glob(dir.path.string(), "data.train"); });
  EXPECT_NE(msg.find("data.train: no files match '" + dir.path.string() +
                     "' (a directory: name its shards with a glob, as data/kjv/byte/train_*.bin)"),
            std::string::npos)
      << msg;
}

// tokenize numbers shards with at least three digits: the 1001st is train_1000.bin, which bytewise
// order would read between train_100 and train_101. Runs of digits compare by value; names of one
// width keep their bytewise order, and names equal but for leading zeros are still ordered.
TEST(Loader, shards_past_a_thousand_follow_their_numbers) {
  TempDir dir;
  for (const char* name : {"train_1000.bin", "train_101.bin", "train_100.bin", "train_999.bin",
                           "train_000.bin", "train_0100.bin"})
    dir.write(name, "x");
  EXPECT_EQ(expand_glob(dir.file("train_*.bin")),
            (std::vector<std::string>{dir.file("train_000.bin"), dir.file("train_0100.bin"),
                                      dir.file("train_100.bin"), dir.file("train_101.bin"),
                                      dir.file("train_999.bin"), dir.file("train_1000.bin")}));
  const std::vector<std::string> same_width = {"a_001.bin", "a_010.bin", "a_100.bin", "b_000.bin"};
  for (size_t i = 0; i + 1 < same_width.size(); ++i) {
    EXPECT_TRUE(shard_order(same_width[i], same_width[i + 1])) << same_width[i];
    EXPECT_FALSE(shard_order(same_width[i + 1], same_width[i])) << same_width[i];
  }
  EXPECT_FALSE(shard_order("a_1.bin", "a_1.bin"));
  EXPECT_TRUE(shard_order("data/x9/a.bin", "data/x10/a.bin"));
  // Equal numbers but for leading zeros: ordered bytewise, so one of the two comes first.
  EXPECT_TRUE(shard_order("a_01.bin", "a_1.bin"));
  EXPECT_FALSE(shard_order("a_1.bin", "a_01.bin"));
}

// A run reads the same windows in the same optimizer steps whatever its world size, as long as the
// windows per step are the same: 1 rank x 4 micro-batches of 2, 2 ranks x 2 of 2, 4 ranks x 1 of 2.
TEST(Loader, steps_read_the_same_windows_at_any_world_size) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {41, 25, 33});  // 24 windows, S = 8
  const int64_t B = 2, S = 8;
  auto step_windows = [&](int world, int steps) {
    std::vector<DataLoader> ranks;
    for (int r = 0; r < world; ++r) {
      LoaderOptions o = options(files, B, 4);
      o.rank = r, o.world = world, o.step_windows = S;
      ranks.emplace_back(o);
    }
    std::vector<std::set<int32_t>> out;
    for (int s = 0; s < steps; ++s) {
      std::set<int32_t> ids;
      for (int64_t m = 0; m < S / (world * B); ++m)
        for (DataLoader& l : ranks)
          for (int32_t id : window_ids(take(l, 1))) ids.insert(id);
      EXPECT_EQ(ids.size(), size_t(S));
      out.push_back(ids);
    }
    EXPECT_EQ(ranks[0].window_index(), steps * S);
    return out;
  };
  const auto one = step_windows(1, 7);  // 3 steps per epoch: into the third epoch
  EXPECT_EQ(step_windows(2, 7), one);
  EXPECT_EQ(step_windows(4, 7), one);
}

TEST(Loader, an_epoch_uses_whole_steps_and_seek_counts_windows) {
  TempDir dir;
  const std::vector<std::string> files = make_shards(dir, {41, 25});  // 16 windows
  LoaderOptions o = options(files, 2, 4);
  o.step_windows = 6;  // 2 steps of 6 per epoch: 4 windows dropped
  DataLoader l(o);
  EXPECT_EQ(l.used_windows(), 12);
  take(l, 6);
  EXPECT_EQ(l.state(), (LoaderState{1234, 1, 0}));
  l.seek(12 + 5);  // window 5 of epoch 1
  EXPECT_EQ(l.state(), (LoaderState{1234, 1, 5}));
  take(l, 3);  // 5 -> 11: one window left, fewer than B: the epoch ends
  EXPECT_EQ(l.state(), (LoaderState{1234, 2, 0}));
  std::string msg = error_of([&] {
    LoaderOptions bad = o;
    bad.step_windows = 5;
    DataLoader x(bad);
  });
  EXPECT_NE(msg.find("step_windows 5 is not a multiple"), std::string::npos) << msg;
}
