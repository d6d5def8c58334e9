// Example windows (loader.h, data.windows: example): one window per supervised fine-tuning
// example, found by the example-start bit of version 2 loss masks; short examples padded, long
// ones cut at their start; the order, state and errors as with packed windows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "config/expect_contains.h"
#include "data/loader.h"
#include "data/sft.h"
#include "data/shard.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::data;
using tessera::testing::error_of;
using tessera::testing::read_bytes;
using tessera::testing::run_command;
using tessera::testing::TempDir;
using tessera::testing::write_bytes;

namespace {

constexpr int32_t kEot = 256, kNo = kIgnoreTarget;

// The examples tokenized as tokenize --format sft does (byte tokenizer), into one shard and its
// mask at dir/name. Returns the shard's path.
std::string example_shard(const TempDir& dir, const std::string& name,
                          const std::vector<SftExample>& examples) {
  const auto tok = make_tokenizer("byte");
  std::vector<uint32_t> tokens;
  std::vector<uint8_t> mask;
  for (const SftExample& e : examples) append_sft_example(*tok, e, tokens, mask);
  const std::string path = dir.file(name);
  write_shard(path, tokens, 257);
  write_loss_mask(loss_mask_path(path), mask);
  return path;
}

LoaderOptions example_options(std::vector<std::string> files, int64_t B, int64_t T, bool shuffle) {
  LoaderOptions o;
  o.files = std::move(files);
  o.batch_size = B, o.seq_len = T, o.vocab_size = 257, o.seed = 11, o.shuffle = shuffle;
  o.windows = WindowMode::Example;
  return o;
}

std::vector<int32_t> ids(const std::string& s) { return {s.begin(), s.end()}; }

}  // namespace

// T = 6, windows of at most 7 tokens. "abc<eot>" (prompt "ab") and "de<eot>" (no prompt) are
// padded: input 0, target ignored. "0123456789xy<eot>" (13 tokens) keeps its last 7, "6789xy<eot>":
// its prompt's first six are cut, the targets 7 8 9 unscored, x y <eot> scored.
TEST(ExampleWindows, each_example_is_a_row_padded_or_cut_at_its_start) {
  TempDir dir;
  const std::string path =
      example_shard(dir, "train_000.bin", {{"ab", "c"}, {"", "de"}, {"0123456789", "xy"}});
  DataLoader loader(example_options({path}, 1, 6, false));
  EXPECT_EQ(loader.windows_per_epoch(), 3);
  EXPECT_EQ(loader.examples_cut(), 1);
  EXPECT_DOUBLE_EQ(loader.window_fill(), (3.0 + 2.0 + 6.0) / 18.0);
  const std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> want = {
      {{'a', 'b', 'c', 0, 0, 0}, {kNo, 'c', kEot, kNo, kNo, kNo}},
      {{'d', 'e', 0, 0, 0, 0}, {'e', kEot, kNo, kNo, kNo, kNo}},
      {ids("6789xy"), {kNo, kNo, kNo, 'x', 'y', kEot}},
  };
  for (int pass = 0; pass < 2; ++pass)  // the second epoch reads them again
    for (const auto& [in, tg] : want) {
      const Batch b = loader.next();
      EXPECT_EQ(b.inputs.to_vector<int32_t>(), in);
      EXPECT_EQ(b.targets.to_vector<int32_t>(), tg);
    }

  // The same shard packed: windows cut from the stream, across the examples.
  LoaderOptions packed = example_options({path}, 1, 6, false);
  packed.windows = WindowMode::Packed;
  DataLoader cut(packed);
  EXPECT_EQ(cut.windows_per_epoch(), (4 + 3 + 13 - 1) / 6);
  EXPECT_EQ(cut.next().inputs.to_vector<int32_t>(),
            (std::vector<int32_t>{'a', 'b', 'c', kEot, 'd', 'e'}));
}

// Two shards of examples of different lengths, shuffled: an epoch reads each example once, rank r
// of 2 the slice the packed loader would give it, and a restored state reads the same batch.
TEST(ExampleWindows, an_epoch_reads_every_example_once_across_shards_and_ranks) {
  TempDir dir;
  std::vector<SftExample> first, second;
  for (int i = 0; i < 13; ++i)  // prompts of 1 to 13 letters, each example's first its own
    (i < 6 ? first : second).push_back({std::string(size_t(i + 1), char('a' + i)), "!"});
  const std::vector<std::string> files = {example_shard(dir, "train_000.bin", first),
                                          example_shard(dir, "train_001.bin", second)};
  std::multiset<int32_t> seen;
  for (int rank = 0; rank < 2; ++rank) {
    LoaderOptions o = example_options(files, 3, 8, true);
    o.rank = rank, o.world = 2;
    DataLoader loader(o);
    EXPECT_EQ(loader.windows_per_epoch(), 13);
    EXPECT_EQ(loader.used_windows(), 12);  // two calls of 2 x 3
    EXPECT_EQ(loader.examples_cut(), 6);   // prompts of 8 to 13 letters + "!" + <eot> > 9 tokens
    for (int call = 0; call < 2; ++call) {
      const std::vector<int32_t> in = loader.next().inputs.to_vector<int32_t>();
      for (int r = 0; r < 3; ++r) seen.insert(in[size_t(r * 8)]);
    }
  }
  // 12 of the 13 examples (one is the epoch's remainder), none twice.
  EXPECT_EQ(seen.size(), 12u);
  EXPECT_EQ(std::set<int32_t>(seen.begin(), seen.end()).size(), 12u);

  DataLoader a(example_options(files, 2, 8, true));
  a.next();
  const LoaderState s = a.state();
  const std::vector<int32_t> next = a.next().targets.to_vector<int32_t>();
  DataLoader b(example_options(files, 2, 8, true));
  b.set_state(s);
  EXPECT_EQ(b.next().targets.to_vector<int32_t>(), next);
}

// Shards that mark no examples are refused naming the shard and the fix: no mask, a version 1
// mask (which has no example-start bit), a set too small for a batch.
TEST(ExampleWindows, shards_without_marked_examples_are_refused_naming_them) {
  TempDir dir;
  const std::string plain = dir.file("plain.bin");
  write_shard(plain, {1, 2, 3, 4}, 257);
  std::string msg = error_of([&] { DataLoader l(example_options({plain}, 1, 4, false)); });
  EXPECT_CONTAINS(msg, "shard " + plain + " has no loss mask (" + dir.file("plain.mask") +
                           "), so no examples, but data.windows is example");
  EXPECT_CONTAINS(msg,
                  "tokenize the examples (again) with --format sft, or set data.windows: packed");

  const std::string old = dir.file("old.bin");
  write_shard(old, {1, 2, 3, 4}, 257);
  write_loss_mask(loss_mask_path(old), {0, 1, 1, 1});
  std::vector<char> bytes = read_bytes(loss_mask_path(old));
  bytes[4] = 1;  // version 1
  write_bytes(loss_mask_path(old), bytes);
  msg = error_of([&] { DataLoader l(example_options({old}, 1, 4, false)); });
  EXPECT_CONTAINS(msg, "shard " + old + " has a version 1 loss mask, which marks no examples,");

  const std::string two = example_shard(dir, "two.bin", {{"a", "b"}, {"c", "d"}});
  msg = error_of([&] { DataLoader l(example_options({two}, 3, 4, false)); });
  EXPECT_CONTAINS(msg, "hold 2 examples (a window each), fewer than one global batch");
}

// tokenize --format sft ends a shard after the last whole example within --shard-tokens; an
// example longer than that fills a shard alone. Every shard starts with an example.
TEST(ExampleWindows, tokenize_keeps_each_example_whole_in_one_shard) {
  TempDir dir;
  std::string lines;
  for (const char* p : {"short:", "a much longer prompt:", "mid prompt:"})
    lines += std::string("{\"prompt\": \"") + p + "\", \"response\": \"ok\"}\n";
  const std::string in = dir.write("ex.jsonl", lines);
  std::string log;
  ASSERT_EQ(run_command(tessera::testing::bin_dir() +
                            "/tokenize --tokenizer byte --format sft "
                            "--val-fraction 0 --shard-tokens 20 --input " +
                            in + " --output " + dir.file("out"),
                        &log),
            0)
      << log;
  // 9, 24 and 14 tokens (prompt, "ok", <eot>): shards of 9, 24 (alone, over 20) and 14.
  std::vector<int64_t> sizes;
  for (int i = 0; i < 3; ++i) {
    const Shard s(dir.file("out/train_00" + std::to_string(i) + ".bin"), 257);
    sizes.push_back(s.size());
    EXPECT_EQ(s.example_starts(), std::vector<int64_t>{0});
  }
  EXPECT_EQ(sizes, (std::vector<int64_t>{9, 24, 14}));
}
