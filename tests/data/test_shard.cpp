// Token shards: round trips in every format, and a clear error for every kind of corrupt file.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/digest.h"
#include "data/shard.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::data;
using tessera::testing::error_of;
using tessera::testing::read_bytes;
using tessera::testing::write_bytes;
namespace fs = std::filesystem;

namespace {

using tessera::testing::TempDir;

int32_t header_int(const std::vector<char>& bytes, int i) {
  int32_t v;
  std::memcpy(&v, bytes.data() + 4 * i, 4);
  return v;
}

void set_header_int(std::vector<char>& bytes, int i, int32_t v) { std::memcpy(bytes.data() + 4 * i, &v, 4); }

std::vector<uint32_t> read_all(const Shard& s) { return s.read(0, s.size()); }

}  // namespace

TEST(Shard, round_trip_uint16_with_llmc_header) {
  TempDir dir;
  const std::string path = dir.file("a.bin");
  const std::vector<uint32_t> tokens = {0, 1, 256, 7, 255, 42, 0};
  write_shard(path, tokens, 257);

  const std::vector<char> bytes = read_bytes(path);
  ASSERT_EQ(bytes.size(), 1024 + 2 * tokens.size());
  EXPECT_EQ(header_int(bytes, 0), 20240520);
  EXPECT_EQ(header_int(bytes, 1), 1);
  EXPECT_EQ(header_int(bytes, 2), int32_t(tokens.size()));
  EXPECT_EQ(header_int(bytes, 3), 257);  // the vocabulary the ids were written for
  EXPECT_EQ(header_int(bytes, 4), 0);    // the rest of the header is zero
  EXPECT_EQ(header_int(bytes, 255), 0);
  uint16_t third;
  std::memcpy(&third, bytes.data() + 1024 + 2 * 2, 2);
  EXPECT_EQ(third, 256);

  Shard s(path, 257);
  EXPECT_EQ(s.size(), int64_t(tokens.size()));
  EXPECT_EQ(s.written_vocab(), 257);
  EXPECT_EQ(s.token_bytes(), 2);
  EXPECT_EQ(s.path(), path);
  EXPECT_EQ(read_all(s), tokens);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(Shard, vocabulary_of_65536_still_fits_uint16) {
  TempDir dir;
  const std::string path = dir.file("edge.bin");
  write_shard(path, {65535, 0, 65535}, 65536);
  EXPECT_EQ(fs::file_size(path), 1024u + 2 * 3);
  Shard s(path, 65536);
  EXPECT_EQ(read_all(s), (std::vector<uint32_t>{65535, 0, 65535}));
}

TEST(Shard, round_trip_uint32_for_large_vocabularies) {
  TempDir dir;
  const std::string path = dir.file("llama.bin");
  const std::vector<uint32_t> tokens = {128255, 65536, 0, 70000, 99999};
  write_shard(path, tokens, 128256);

  const std::vector<char> bytes = read_bytes(path);
  ASSERT_EQ(bytes.size(), 1024 + 4 * tokens.size());
  EXPECT_EQ(header_int(bytes, 0), 20240801);
  EXPECT_EQ(header_int(bytes, 1), 7);
  EXPECT_EQ(header_int(bytes, 2), int32_t(tokens.size()));

  Shard s(path, 128256);
  EXPECT_EQ(s.token_bytes(), 4);
  EXPECT_EQ(read_all(s), tokens);
}

// The fingerprint ranks compare (train/rank_agreement.h): the CRC-32C of the token bytes after the
// header, over every read of the scan at open (a shard of more tokens than one scan read holds:
// 2^18), for each token width and for the vocabulary whose ids are not checked.
TEST(Shard, tokens_crc32c_is_that_of_the_stored_token_bytes_and_sees_one_changed_token) {
  TempDir dir;
  std::vector<uint32_t> tokens((1 << 18) + 1000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint32_t(i * 2654435761u % 50257);
  for (const auto& [name, vocab] : std::vector<std::pair<std::string, int64_t>>{
           {"u16.bin", 50257}, {"u16-unchecked.bin", 65536}, {"u32.bin", 128256}}) {
    SCOPED_TRACE(name);
    const std::string path = dir.file(name);
    write_shard(path, tokens, vocab);
    const std::vector<char> bytes = read_bytes(path);
    const Shard s(path, vocab);
    EXPECT_EQ(s.tokens_crc32c(), crc32c(bytes.data() + 1024, bytes.size() - 1024));
    std::vector<uint32_t> changed = tokens;
    changed[(1 << 18) + 500] ^= 1;  // in the scan's second read
    write_shard(dir.file("changed.bin"), changed, vocab);
    EXPECT_NE(Shard(dir.file("changed.bin"), vocab).tokens_crc32c(), s.tokens_crc32c());
    write_shard(dir.file("same.bin"), tokens, vocab);
    EXPECT_EQ(Shard(dir.file("same.bin"), vocab).tokens_crc32c(), s.tokens_crc32c());
  }
}

TEST(Shard, reads_raw_headerless_uint16) {
  TempDir dir;
  const std::string path = dir.file("train.bin");
  const std::vector<uint16_t> raw = {5, 50256, 3, 0, 1000};
  std::vector<char> bytes(raw.size() * 2);
  std::memcpy(bytes.data(), raw.data(), bytes.size());
  write_bytes(path, bytes);

  Shard s(path, 50257, ShardFormat::RawU16);
  EXPECT_EQ(s.size(), 5);
  EXPECT_EQ(read_all(s), (std::vector<uint32_t>{5, 50256, 3, 0, 1000}));

  write_bytes(path, {});
  EXPECT_EQ(Shard(path, 50257, ShardFormat::RawU16).size(), 0);  // an empty file is an empty shard
}

TEST(Shard, raw_uint16_of_odd_size_is_an_error) {
  TempDir dir;
  const std::string path = dir.file("odd.bin");
  write_bytes(path, {1, 0, 2, 0, 3});
  std::string msg = error_of([&] { Shard s(path, 100, ShardFormat::RawU16); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("odd size of 5 bytes"), std::string::npos) << msg;
}

TEST(Shard, empty_shard_round_trips) {
  TempDir dir;
  const std::string path = dir.file("empty.bin");
  write_shard(path, {}, 257);
  EXPECT_EQ(fs::file_size(path), 1024u);
  EXPECT_EQ(Shard(path, 257).size(), 0);
}

TEST(Shard, write_creates_parent_directories_and_replaces_atomically) {
  TempDir dir;
  const std::string path = dir.file("nested/deeper/s.bin");
  write_shard(path, {1, 2, 3}, 10);
  write_shard(path, {4, 5}, 10);  // overwrites the complete old shard by rename
  Shard s(path, 10);
  EXPECT_EQ(read_all(s), (std::vector<uint32_t>{4, 5}));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(Shard, write_rejects_an_id_outside_the_vocabulary_and_leaves_no_file) {
  TempDir dir;
  const std::string path = dir.file("bad.bin");
  std::string msg = error_of([&] { write_shard(path, {1, 2, 257, 3}, 257); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("token id 257"), std::string::npos) << msg;
  EXPECT_NE(msg.find("position 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocabulary size 257"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(Shard, wrong_magic_names_the_path_and_both_magics) {
  TempDir dir;
  const std::string path = dir.file("magic.bin");
  write_shard(path, {1, 2, 3}, 257);
  std::vector<char> bytes = read_bytes(path);
  set_header_int(bytes, 0, 12345);
  write_bytes(path, bytes);
  std::string msg = error_of([&] { Shard s(path, 257); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("wrong magic 12345"), std::string::npos) << msg;
  EXPECT_NE(msg.find("20240520"), std::string::npos) << msg;
}

TEST(Shard, unknown_version_is_an_error) {
  TempDir dir;
  const std::string path = dir.file("version.bin");
  write_shard(path, {1, 2, 3}, 257);
  std::vector<char> bytes = read_bytes(path);
  set_header_int(bytes, 1, 3);
  write_bytes(path, bytes);
  std::string msg = error_of([&] { Shard s(path, 257); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown version 3"), std::string::npos) << msg;
}

// A header whose token count is negative (a damaged or foreign file) is refused before the count
// sizes anything, naming the file and the count; with uint32 tokens as with uint16.
TEST(Shard, negative_token_count_in_the_header_names_the_file) {
  TempDir dir;
  for (uint32_t vocab : {257u, 100000u}) {
    SCOPED_TRACE(vocab);
    const std::string path = dir.file("negative_" + std::to_string(vocab) + ".bin");
    write_shard(path, {1, 2, 3}, vocab);
    std::vector<char> bytes = read_bytes(path);
    set_header_int(bytes, 2, -3);
    write_bytes(path, bytes);
    const std::string msg = error_of([&] { Shard s(path, vocab); });
    EXPECT_NE(msg.find("shard " + path + ": negative token count -3"), std::string::npos) << msg;
  }
}

TEST(Shard, file_shorter_than_the_header_is_an_error) {
  TempDir dir;
  const std::string path = dir.file("short.bin");
  write_bytes(path, std::vector<char>(100, 0));
  std::string msg = error_of([&] { Shard s(path, 257); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("100 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1024-byte header"), std::string::npos) << msg;
}

TEST(Shard, truncated_file_names_both_sizes) {
  TempDir dir;
  const std::string path = dir.file("cut.bin");
  write_shard(path, {1, 2, 3, 4, 5}, 257);  // 1024 + 10 bytes
  fs::resize_file(path, 1024 + 7);
  std::string msg = error_of([&] { Shard s(path, 257); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated or oversized"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1031 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("5 tokens"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1034 bytes"), std::string::npos) << msg;
}

TEST(Shard, oversized_file_names_both_sizes) {
  TempDir dir;
  const std::string path = dir.file("long.bin");
  write_shard(path, {1, 2, 3}, 100000);  // uint32: 1024 + 12 bytes
  std::vector<char> bytes = read_bytes(path);
  bytes.insert(bytes.end(), {0, 0, 0, 0});
  write_bytes(path, bytes);
  std::string msg = error_of([&] { Shard s(path, 100000); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated or oversized"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1040 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1036 bytes"), std::string::npos) << msg;
}

TEST(Shard, token_outside_the_vocabulary_names_id_position_vocab_and_path) {
  TempDir dir;
  const std::string path = dir.file("ids.bin");
  write_shard(path, {10, 20, 499, 500, 30}, 1000);
  EXPECT_EQ(Shard(path, 1000).size(), 5);
  std::string msg = error_of([&] { Shard s(path, 500); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("token id 500"), std::string::npos) << msg;
  EXPECT_NE(msg.find("position 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocabulary size 500"), std::string::npos) << msg;
}

TEST(Shard, reads_any_range_and_rejects_one_past_the_end) {
  TempDir dir;
  write_shard(dir.file("a.bin"), {9, 8, 7, 6, 5}, 10);
  write_shard(dir.file("b.bin"), {70000, 1, 99999}, 100000);
  Shard a(dir.file("a.bin"), 10), b(dir.file("b.bin"), 100000);
  EXPECT_EQ(a.read(1, 3), (std::vector<uint32_t>{8, 7, 6}));
  EXPECT_EQ(a.read(4, 1), (std::vector<uint32_t>{5}));
  EXPECT_EQ(a.read(5, 0), (std::vector<uint32_t>{}));
  EXPECT_EQ(b.read(1, 2), (std::vector<uint32_t>{1, 99999}));
  // Exactly n tokens are written to out (uint16 ones are widened in place there): the next slot
  // keeps its value.
  for (const Shard* s : {&a, &b}) {
    std::vector<uint32_t> out(4, 0xdeadbeef);
    s->read(0, 3, out.data());
    EXPECT_EQ(out[3], 0xdeadbeef) << s->path();
  }
  std::string msg = error_of([&] { a.read(3, 3); });
  EXPECT_NE(msg.find(dir.file("a.bin")), std::string::npos) << msg;
  EXPECT_NE(msg.find("tokens [3, 6) of 5"), std::string::npos) << msg;
}

// Training reads a shard for hours; another process may cut it short meanwhile. The reads past the
// new end are an error naming the shard and its new size (a memory mapping would die of SIGBUS).
TEST(Shard, a_shard_truncated_while_open_is_an_error_naming_it) {
  TempDir dir;
  const std::string path = dir.file("live.bin");
  std::vector<uint32_t> tokens(100000);  // 1024 + 200000 bytes: past the first pages
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint32_t(i % 257);
  write_shard(path, tokens, 257);
  Shard s(path, 257);
  fs::resize_file(path, 2000);
  EXPECT_EQ(s.read(10, 3), (std::vector<uint32_t>{10, 11, 12}));  // still inside the file
  const std::string msg = error_of([&] { s.read(90000, 65); });
  EXPECT_NE(msg.find("shard " + path + " changed size while it was being read"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("tokens [90000, 90065)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("now has 2000 bytes"), std::string::npos) << msg;
  EXPECT_EQ(s.read(487, 1), (std::vector<uint32_t>{487 % 257}));  // the last whole token left
  // A range the new end cuts in two: the read gets its first 8 tokens, then nothing more.
  EXPECT_NE(error_of([&] { s.read(480, 20); }).find("tokens [480, 500)"), std::string::npos);
  EXPECT_NE(error_of([&] { s.read(488, 1); }).find("changed size"), std::string::npos);
}

// Rewritten in place with ids the model has no row for: an error, never an id past the vocabulary.
TEST(Shard, a_shard_rewritten_in_place_with_an_unknown_id_is_an_error) {
  TempDir dir;
  const std::string path = dir.file("rw.bin");
  write_shard(path, {1, 2, 3, 4, 5}, 257);
  Shard s(path, 257);
  {
    std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
    const uint16_t bad = 257;  // the first id with no row
    f.seekp(1024 + 2 * 3);
    f.write(reinterpret_cast<const char*>(&bad), 2);
  }
  EXPECT_EQ(s.read(0, 3), (std::vector<uint32_t>{1, 2, 3}));
  const std::string msg = error_of([&] { s.read(2, 3); });
  EXPECT_NE(msg.find("shard " + path + " changed while it was being read"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("token id 257 at position 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocabulary size 257"), std::string::npos) << msg;
}

// Each open shard holds a file descriptor; a corpus of thousands of shards must not stop at the
// usual soft limit of 1024 open files.
TEST(Shard, more_shards_than_the_soft_limit_on_open_files_still_open) {
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max < 512)
    GTEST_SKIP() << "the hard limit on open files is only " << saved.rlim_max;
  TempDir dir;
  write_shard(dir.file("s.bin"), {1, 2, 3}, 10);
  rlimit low = saved;
  low.rlim_cur = 128;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  {
    std::vector<Shard> shards;
    for (int i = 0; i < 256; ++i) shards.emplace_back(dir.file("s.bin"), 10);
    EXPECT_EQ(read_all(shards.back()), (std::vector<uint32_t>{1, 2, 3}));
  }
  setrlimit(RLIMIT_NOFILE, &saved);
}

// Where the hard limit is reached too, the error says what holds the descriptors. (In a child
// process: a lowered hard limit cannot be raised again.)
TEST(Shard, running_out_of_file_descriptors_names_the_limit) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_shard(path, {1, 2, 3}, 10);
  auto open_100_under_a_limit_of_64 = [&] {
    const rlimit lim = {.rlim_cur = 64, .rlim_max = 64};
    setrlimit(RLIMIT_NOFILE, &lim);
    std::vector<Shard> shards;
    int code = 0;
    try {
      for (int i = 0; i < 100; ++i) shards.emplace_back(path, 10);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      code = 1;
    }
    // _Exit runs no destructor: the child process's own TempDir goes here (once the shards have
    // given back the descriptors that removing it needs).
    shards.clear();
    std::error_code ec;
    std::filesystem::remove_all(dir.path, ec);
    std::_Exit(code);
  };
  EXPECT_EXIT(open_100_under_a_limit_of_64(), ::testing::ExitedWithCode(1),
              "cannot open shard .*s.bin: Too many open files \\(every open shard holds a file "
              "descriptor; the limit is 64: raise it with ulimit -n");
}

TEST(Shard, missing_file_is_an_error_naming_it) {
  TempDir dir;
  const std::string path = dir.file("nope.bin");
  std::string msg = error_of([&] { Shard s(path, 257); });
  EXPECT_NE(msg.find("cannot open shard " + path + ": No such file or directory"), std::string::npos)
      << msg;
  EXPECT_EQ(msg.find("every open shard"), std::string::npos) << msg;  // that is for EMFILE only
}

TEST(Shard, moves_transfer_the_open_file) {
  TempDir dir;
  write_shard(dir.file("a.bin"), {1, 2, 3}, 10);
  write_shard(dir.file("b.bin"), {7, 8}, 10);
  write_shard(dir.file("c.bin"), {4, 5}, 70000);  // uint32 tokens: another width, vocabulary, crc
  Shard a(dir.file("a.bin"), 10);
  const uint32_t crc_a = a.tokens_crc32c();
  Shard moved(std::move(a));
  EXPECT_EQ(read_all(moved), (std::vector<uint32_t>{1, 2, 3}));
  // What open read from the header and the scan goes along too (the loader checks the written
  // vocabulary against data.tokenizer; ranks compare the crc).
  EXPECT_EQ(moved.written_vocab(), 10);
  EXPECT_EQ(moved.tokens_crc32c(), crc_a);
  EXPECT_EQ(a.size(), 0);  // NOLINT: a moved-from shard is empty, and its destructor closes nothing

  Shard b(dir.file("b.bin"), 10);
  b = std::move(moved);  // b's old file is closed, moved's taken over
  EXPECT_EQ(read_all(b), (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(b.path(), dir.file("a.bin"));
  EXPECT_EQ(b.written_vocab(), 10);
  EXPECT_EQ(b.tokens_crc32c(), crc_a);
  Shard c(dir.file("c.bin"), 70000);
  const uint32_t crc_c = c.tokens_crc32c();
  b = std::move(c);
  EXPECT_EQ(read_all(b), (std::vector<uint32_t>{4, 5}));
  EXPECT_EQ(b.written_vocab(), 70000);
  EXPECT_EQ(b.token_bytes(), 4);
  EXPECT_EQ(b.tokens_crc32c(), crc_c);

  std::vector<Shard> shards;  // growth moves shards; their contents must survive
  for (int i = 0; i < 5; ++i) shards.emplace_back(dir.file("b.bin"), 10);
  for (const Shard& s : shards) EXPECT_EQ(read_all(s), (std::vector<uint32_t>{7, 8}));
}

// The header records the vocabulary where it fits its int32 (0 where it does not); ids are at
// most 32 bits, so a vocabulary past 2^32 or below 1 is refused before any file is made.
TEST(Shard, write_takes_a_vocabulary_of_1_to_2_pow_32_and_records_one_that_fits_the_header) {
  TempDir dir;
  const int64_t int32_max = std::numeric_limits<int32_t>::max();
  for (int64_t vocab : {int64_t(0), int64_t(-1), (int64_t(1) << 32) + 1}) {
    const std::string path = dir.file("v" + std::to_string(vocab) + ".bin");
    const std::string msg = error_of([&] { write_shard(path, {}, vocab); });
    EXPECT_NE(msg.find(path + ": vocab_size must be in [1, 2^32], got " + std::to_string(vocab)),
              std::string::npos)
        << msg;
    EXPECT_FALSE(fs::exists(path));
  }
  for (auto [vocab, recorded] : {std::pair{int64_t(1), int64_t(1)}, {int32_max, int32_max},
                                 {int32_max + 1, int64_t(0)}, {int64_t(1) << 32, int64_t(0)}}) {
    const std::string path = dir.file("w" + std::to_string(vocab) + ".bin");
    write_shard(path, {uint32_t(vocab - 1)}, vocab);
    EXPECT_EQ(header_int(read_bytes(path), 3), recorded) << vocab;
    Shard s(path, vocab);
    EXPECT_EQ(s.written_vocab(), recorded) << vocab;
    EXPECT_EQ(read_all(s), (std::vector<uint32_t>{uint32_t(vocab - 1)})) << vocab;
  }
}

TEST(Shard, a_vocabulary_below_1_at_open_is_an_error) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_shard(path, {1, 2}, 10);
  for (int64_t vocab : {0, -5}) {
    const std::string msg = error_of([&] { Shard s(path, vocab); });
    EXPECT_NE(msg.find("shard " + path + ": vocab_size must be positive, got " +
                       std::to_string(vocab)),
              std::string::npos)
        << msg;
  }
}

// uint32 ids are checked at open as uint16 ones are (only uint16 ids under a vocabulary of 65536
// or more need no check).
TEST(Shard, a_uint32_id_outside_the_vocabulary_fails_at_open) {
  TempDir dir;
  const std::string path = dir.file("wide.bin");
  write_shard(path, {1, 70000, 99999}, 100000);
  const std::string msg = error_of([&] { Shard s(path, 80000); });
  EXPECT_NE(msg.find("shard " + path + ": token id 99999 at position 2 is not below the vocabulary "
                     "size 80000"),
            std::string::npos)
      << msg;
}

// A shard is made under path.tmp and renamed: where that file cannot be made, or a write to it
// fails, the error names it, the shard already at path is kept and no path.tmp is left behind.
TEST(Shard, a_write_that_fails_keeps_the_old_shard_and_leaves_no_tmp) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_shard(path, {1, 2, 3}, 10);
  const std::vector<char> old = read_bytes(path);

  fs::create_directory(path + ".tmp");
  std::string msg = error_of([&] { write_shard(path, {4, 5}, 10); });
  EXPECT_NE(msg.find("write_shard: cannot create " + path + ".tmp: Is a directory"),
            std::string::npos)
      << msg;
  EXPECT_EQ(read_bytes(path), old);
  fs::remove(path + ".tmp");

  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full to fail a write with";
  fs::create_symlink("/dev/full", path + ".tmp");  // every write: ENOSPC
  const long descriptors = tessera::testing::open_descriptors();
  msg = error_of([&] { write_shard(path, {4, 5}, 10); });
  EXPECT_NE(msg.find("write_shard: writing " + path + ".tmp failed: No space left on device"),
            std::string::npos)
      << msg;
  EXPECT_EQ(read_bytes(path), old);
  EXPECT_FALSE(fs::exists(fs::symlink_status(path + ".tmp")));
  EXPECT_EQ(tessera::testing::open_descriptors(), descriptors);
}

// A corpus is thousands of shards, opened once each, and a tokenizer writes as many: every
// descriptor that writing, opening or a failed open takes is given back.
TEST(Shard, writing_opening_and_failing_to_open_leave_no_file_descriptor_open) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  std::vector<char> bad_magic(1024 + 2, 0);
  write_bytes(dir.file("magic.bin"), bad_magic);
  const long before = tessera::testing::open_descriptors();
  for (int i = 0; i < 3; ++i) {
    write_shard(path, {1, 2, 3}, 10);
    EXPECT_EQ(read_all(Shard(path, 10)), (std::vector<uint32_t>{1, 2, 3}));
    EXPECT_NE(error_of([&] { Shard s(path, 3); }).find("token id 3"), std::string::npos);
    EXPECT_NE(error_of([&] { Shard s(dir.file("magic.bin"), 10); }).find("wrong magic"),
              std::string::npos);
  }
  EXPECT_EQ(tessera::testing::open_descriptors(), before);
}
