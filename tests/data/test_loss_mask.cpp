// Loss masks beside token shards (shard.h): their file format and checks, and the loader's targets
// under them (kIgnoreTarget exactly where the mask says 0, one token later than the input).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/digest.h"
#include "config/expect_contains.h"
#include "data/loader.h"
#include "data/shard.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::data;
using tessera::testing::error_of;
using tessera::testing::read_bytes;
using tessera::testing::TempDir;
using tessera::testing::write_bytes;
namespace fs = std::filesystem;

namespace {

// A shard of n tokens 0, 1, 2, ... and a mask of a pattern no shift maps onto itself: 1 at
// positions i with i % 5 in {1, 2} or i % 7 == 3. Returns the shard's path.
std::string masked_shard(const TempDir& dir, const std::string& name, int64_t n,
                         std::vector<uint8_t>* mask_out = nullptr) {
  std::vector<uint32_t> tokens;
  std::vector<uint8_t> mask;
  for (int64_t i = 0; i < n; ++i) {
    tokens.push_back(uint32_t(i % 257));
    mask.push_back(uint8_t(i % 5 == 1 || i % 5 == 2 || i % 7 == 3));
  }
  const std::string path = dir.file(name);
  write_shard(path, tokens, 257);
  write_loss_mask(loss_mask_path(path), mask);
  if (mask_out) *mask_out = mask;
  return path;
}

LoaderOptions options(std::vector<std::string> files, int64_t B, int64_t T, bool shuffle) {
  LoaderOptions o;
  o.files = std::move(files);
  o.batch_size = B, o.seq_len = T, o.vocab_size = 257, o.seed = 7, o.shuffle = shuffle;
  return o;
}

}  // namespace

TEST(LossMask, is_named_after_its_shard_and_round_trips) {
  EXPECT_EQ(loss_mask_path("d/train_000.bin"), "d/train_000.mask");
  EXPECT_EQ(loss_mask_path("d/raw_shard"), "d/raw_shard.mask");
  TempDir dir;
  std::vector<uint8_t> mask;
  const std::string path = masked_shard(dir, "train_000.bin", 100, &mask);
  const std::vector<char> bytes = read_bytes(loss_mask_path(path));
  ASSERT_EQ(bytes.size(), 1024u + 100u);
  int32_t header[3];
  std::memcpy(header, bytes.data(), sizeof header);
  EXPECT_EQ(header[0], 20261205);
  EXPECT_EQ(header[1], 2);
  EXPECT_EQ(header[2], 100);

  const Shard s(path, 257);
  ASSERT_TRUE(s.has_loss_mask());
  std::vector<uint8_t> got(40);
  s.read_mask(30, 40, got.data());
  EXPECT_EQ(got, std::vector<uint8_t>(mask.begin() + 30, mask.begin() + 70));
  int64_t ones = 0;
  for (uint8_t m : mask) ones += m;
  EXPECT_EQ(s.mask_scored(), ones);
  EXPECT_EQ(s.mask_crc32c(), crc32c(mask.data(), mask.size(), 0));
  EXPECT_CONTAINS(error_of([&] { s.read_mask(90, 11, got.data()); }),
                  "cannot read [90, 101) of 100");

  // A shard without one: none opened, and asking for it names the file it looked for.
  write_shard(dir.file("plain.bin"), {1, 2, 3}, 257);
  const Shard plain(dir.file("plain.bin"), 257);
  EXPECT_FALSE(plain.has_loss_mask());
  EXPECT_CONTAINS(error_of([&] { plain.read_mask(0, 1, got.data()); }), "plain.mask");
}

TEST(LossMask, a_byte_with_an_unknown_bit_is_refused_when_written_and_when_read) {
  TempDir dir;
  const std::string out = dir.file("m.mask");
  EXPECT_CONTAINS(error_of([&] {
                    write_loss_mask(out, {0, 1, 3, 2, 8});
                  }),
                  "value 8 at position 4 has a bit other than scored (1), example start (2) and "
                  "pair start (4)");
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));

  const std::string path = masked_shard(dir, "a.bin", 50);
  std::vector<char> bytes = read_bytes(loss_mask_path(path));
  bytes[1024 + 17] = 7;
  write_bytes(loss_mask_path(path), bytes);
  const std::string msg = error_of([&] { Shard s(path, 257); });
  EXPECT_CONTAINS(msg, "loss mask " + loss_mask_path(path) +
                           ": value 7 at position 17 is not one a version 2 mask holds (0 to 3)");
}

// Version 1 masks (bytes 0 or 1, no example starts) are read as before; a 2 in one is refused.
TEST(LossMask, a_version_1_mask_is_read_without_example_starts) {
  TempDir dir;
  std::vector<uint8_t> mask;
  const std::string path = masked_shard(dir, "a.bin", 50, &mask);
  std::vector<char> bytes = read_bytes(loss_mask_path(path));
  bytes[4] = 1;  // the version int, little-endian
  write_bytes(loss_mask_path(path), bytes);
  {
    const Shard s(path, 257);
    ASSERT_TRUE(s.has_loss_mask());
    EXPECT_FALSE(s.has_example_starts());
    std::vector<uint8_t> got(50);
    s.read_mask(0, 50, got.data());
    EXPECT_EQ(got, mask);
  }
  bytes[1024 + 3] = 2;
  write_bytes(loss_mask_path(path), bytes);
  EXPECT_CONTAINS(error_of([&] { Shard s(path, 257); }),
                  ": value 2 at position 3 is not one a version 1 mask holds (0 to 1)");
}

TEST(LossMask, a_mask_that_disagrees_with_its_shard_names_both_and_what_differs) {
  TempDir dir;
  const std::string path = masked_shard(dir, "a.bin", 50);
  const std::string mask = loss_mask_path(path);
  const std::vector<char> good = read_bytes(mask);

  write_loss_mask(mask, std::vector<uint8_t>(49, 1));  // another shard's
  std::string msg = error_of([&] { Shard s(path, 257); });
  EXPECT_CONTAINS(msg,
                  "loss mask " + mask + " holds 49 tokens but its shard " + path + " holds 50");

  std::vector<char> bytes = good;
  bytes.pop_back();  // truncated
  write_bytes(mask, bytes);
  msg = error_of([&] { Shard s(path, 257); });
  EXPECT_CONTAINS(msg, "is truncated or oversized: the file has 1073 bytes");

  bytes = good;
  bytes[0] ^= 1;  // magic
  write_bytes(mask, bytes);
  EXPECT_CONTAINS(error_of([&] { Shard s(path, 257); }), "wrong magic");
  bytes = good;
  bytes[4] = 4;  // version
  write_bytes(mask, bytes);
  EXPECT_CONTAINS(error_of([&] { Shard s(path, 257); }), "unknown version 4 (expected 1, 2 or 3)");
  write_bytes(mask, std::vector<char>(100, 0));
  EXPECT_CONTAINS(error_of([&] { Shard s(path, 257); }), "shorter than the 1024-byte header");
}

TEST(LossMask, a_mask_rewritten_while_open_is_an_error_naming_it) {
  TempDir dir;
  const std::string path = masked_shard(dir, "a.bin", 50);
  const Shard s(path, 257);
  std::vector<char> bytes = read_bytes(loss_mask_path(path));
  bytes[1024 + 20] = 9;
  write_bytes(loss_mask_path(path), bytes);  // in place: the open descriptor sees it
  std::vector<uint8_t> got(10);
  const std::string msg = error_of([&] { s.read_mask(15, 10, got.data()); });
  EXPECT_CONTAINS(msg, "changed while it was being read: value 9 at position 20");
  bytes.resize(1024 + 10);
  write_bytes(loss_mask_path(path), bytes);
  EXPECT_CONTAINS(error_of([&] { s.read_mask(15, 10, got.data()); }), "changed size");
}

// Target t of a window starting at token s is token s + t + 1: it is scored where mask[s + t + 1]
// is 1 and kIgnoreTarget elsewhere; inputs are never masked. Checked for every window, shuffled.
TEST(LossMask, the_loader_ignores_exactly_the_targets_the_mask_leaves_out) {
  TempDir dir;
  std::vector<uint8_t> mask;
  const std::string path = masked_shard(dir, "train_000.bin", 161, &mask);  // 10 windows of 16
  DataLoader loader(options({path}, 2, 16, true));
  ASSERT_TRUE(loader.loss_masked());
  int64_t scored = 0, seen = 0;
  for (int64_t b = 0; b < 5; ++b) {
    const Batch batch = loader.next();
    const std::vector<int32_t> in = batch.inputs.to_vector<int32_t>();
    const std::vector<int32_t> tg = batch.targets.to_vector<int32_t>();
    for (int64_t r = 0; r < 2; ++r) {
      const int64_t start = in[size_t(r * 16)];  // token i is i here (i < 257)
      for (int64_t t = 0; t < 16; ++t) {
        EXPECT_EQ(in[size_t(r * 16 + t)], start + t);
        const int32_t want = mask[size_t(start + t + 1)] ? int32_t(start + t + 1) : kIgnoreTarget;
        EXPECT_EQ(tg[size_t(r * 16 + t)], want) << "window at " << start << ", t " << t;
        scored += tg[size_t(r * 16 + t)] != kIgnoreTarget;
      }
      ++seen;
    }
  }
  EXPECT_EQ(seen, 10);
  int64_t ones = 0;  // every token but the first is a target once
  for (size_t i = 1; i < mask.size(); ++i) ones += mask[i];
  EXPECT_EQ(scored, ones);
}

TEST(LossMask, shards_of_one_set_are_all_masked_or_none_is) {
  TempDir dir;
  const std::string a = masked_shard(dir, "train_000.bin", 40);
  const std::string b = dir.file("train_001.bin");
  write_shard(b, std::vector<uint32_t>(40, 5), 257);
  std::string msg = error_of([&] { DataLoader l(options({a, b}, 1, 8, false)); });
  EXPECT_CONTAINS(msg, "shard " + b + " has no loss mask (" + loss_mask_path(b) + ") but shard " +
                           a + " has one");
  msg = error_of([&] { DataLoader l(options({b, a}, 1, 8, false)); });
  EXPECT_CONTAINS(msg, "shard " + a + " has loss mask");
  write_loss_mask(loss_mask_path(b), std::vector<uint8_t>(40, 1));
  EXPECT_TRUE(DataLoader(options({a, b}, 1, 8, false)).loss_masked());
}

// Ranks compare contents fingerprints: the same tokens under another mask are other data.
TEST(LossMask, the_contents_fingerprint_follows_the_mask) {
  TempDir dir;
  const std::string path = masked_shard(dir, "a.bin", 40);
  const uint32_t masked = DataLoader(options({path}, 1, 8, false)).contents_fingerprint();
  std::vector<uint8_t> other(40, 1);
  other[3] = 0;
  write_loss_mask(loss_mask_path(path), other);
  const uint32_t changed = DataLoader(options({path}, 1, 8, false)).contents_fingerprint();
  fs::remove(loss_mask_path(path));
  const uint32_t plain = DataLoader(options({path}, 1, 8, false)).contents_fingerprint();
  EXPECT_NE(masked, changed);
  EXPECT_NE(masked, plain);
  EXPECT_NE(changed, plain);
}
