// build/tokenize end to end: what it refuses before writing anything (an output directory that
// already holds shards, an input that is a directory, unreadable or empty, --tokenizer-dir with
// the byte tokenizer), each named in a one-line error, and what it writes otherwise.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "data/shard.h"
#include "test_util.h"

namespace fs = std::filesystem;
using tessera::testing::read_file;
using tessera::testing::run_command;
using tessera::testing::TempDir;

namespace {

const std::string kTokenize = tessera::testing::bin_dir() + "/tokenize --tokenizer byte";

// "d<i>.txt", built by append: "d" + std::to_string(i) + ".txt" draws a false -Wrestrict
// warning from g++ 12's inlined string code.
std::string doc_name(int i) {
  std::string name = "d";
  return name.append(std::to_string(i)).append(".txt");
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(Tokenize, an_output_that_holds_shards_is_refused_and_left_as_it_was) {
  TempDir tmp;
  const std::string a = tmp.write("a.txt", std::string(100, 'a'));
  const std::string b = tmp.write("b.txt", std::string(100, 'b'));
  const std::string out = tmp.file("out");
  std::string log;
  ASSERT_EQ(run_command(kTokenize + " --input " + a + " --output " + out, &log), 0) << log;
  // A stray higher-numbered val shard, as a larger corpus would have left.
  fs::copy_file(out + "/val_000.bin", out + "/val_005.bin");
  const std::string train = read_file(out + "/train_000.bin"),
                    val = read_file(out + "/val_000.bin");

  EXPECT_EQ(
      run_command(kTokenize + " --input " + b + " --output " + out + " --val-fraction 0", &log), 1);
  EXPECT_TRUE(has(log, "--output " + out +
                           " already holds shards (train_000.bin, val_000.bin, "
                           "val_005.bin)") &&
              has(log, "nothing was written"))
      << log;
  EXPECT_EQ(read_file(out + "/train_000.bin"), train);
  EXPECT_EQ(read_file(out + "/val_000.bin"), val);
  EXPECT_TRUE(fs::exists(out + "/val_005.bin"));

  // A directory holding other files only is written into.
  const std::string other = tmp.file("other");
  fs::create_directories(other);
  tmp.write("other/notes.txt", "mine");
  ASSERT_EQ(run_command(kTokenize + " --input " + a + " --input " + b + " --output " + other, &log),
            0)
      << log;
  EXPECT_TRUE(has(log, "2 documents")) << log;  // --input repeats
  EXPECT_TRUE(fs::exists(other + "/train_000.bin") && fs::exists(other + "/val_000.bin"));
  EXPECT_EQ(read_file(other + "/notes.txt"), "mine");
}

TEST(Tokenize, a_directory_an_unreadable_or_an_empty_input_is_refused_by_name) {
  TempDir tmp;
  const std::string a = tmp.write("a.txt", std::string(100, 'a'));
  const std::string empty = tmp.write("empty.txt", "");
  const std::string dir = tmp.file("somedir");
  fs::create_directories(dir);
  const std::string out = tmp.file("out");
  const struct {
    std::string inputs, message;
  } cases[] = {
      {a + " --input " + dir + " --input " + a,
       "cannot read input file " + dir + ": Is a directory"},
      {dir, "cannot read input file " + dir + ": Is a directory"},
      {"/proc/self/mem", "cannot read input file /proc/self/mem: Input/output error"},
      {a + " --input " + tmp.file("missing.txt"),
       "cannot read input file " + tmp.file("missing.txt") + ": No such file or directory"},
      {empty, "input file " + empty + " is empty"},
      {"/dev/null", "input file /dev/null is empty"},
      {a + " --input " + empty, "input file " + empty + " is empty"},
      {a + " --input " + empty + " --input " + a, "input file " + empty + " is empty"},
  };
  for (const auto& c : cases) {
    std::string log;
    EXPECT_EQ(run_command(kTokenize + " --input " + c.inputs + " --output " + out, &log), 1)
        << c.inputs << "\n"
        << log;
    EXPECT_TRUE(has(log, c.message)) << log;
    EXPECT_FALSE(fs::exists(out)) << c.inputs;
  }
}

// A pipe gives its bytes once: checking it must not consume what the tokenizer then reads (stdio
// buffered a block of it and the reopened pipe gave the rest: 904 of 5000 tokens).
TEST(Tokenize, a_piped_input_is_read_whole_once) {
  TempDir tmp;
  std::string text;
  for (int i = 0; i < 5000; ++i) text += char('a' + i % 26);
  const std::string a = tmp.write("a.txt", text);
  const std::string out = tmp.file("out");
  std::string log;
  ASSERT_EQ(run_command("cat " + a + " | " + kTokenize + " --input /dev/stdin --output " + out +
                            " --val-fraction 0",
                        &log),
            0)
      << log;
  EXPECT_TRUE(has(log, "5000 bytes -> 5000 tokens")) << log;
  EXPECT_TRUE(has(log, "train 5000 tokens")) << log;
  EXPECT_TRUE(has(log, "no validation split (--val-fraction 0)")) << log;
  // The rate is a plausible one (bytes over seconds, in MB/s), and bytes per token is exact.
  const size_t rate = log.find(" MB/s, 1.00 bytes/token)");
  ASSERT_NE(rate, std::string::npos) << log;
  const double mb_per_s = std::stod(log.substr(log.rfind('(', rate) + 1));
  EXPECT_GT(mb_per_s, 0.0) << log;
  EXPECT_LT(mb_per_s, 1e5) << log;
  // Beside a regular file, as the second of two documents.
  const std::string out2 = tmp.file("out2");
  ASSERT_EQ(run_command("printf abc | " + kTokenize + " --input " + a +
                            " --input /dev/stdin --output " + out2 + " --val-fraction 0",
                        &log),
            0)
      << log;
  EXPECT_TRUE(has(log, "2 documents, 5003 bytes -> 5004 tokens")) << log;
  EXPECT_EQ(
      run_command("printf '' | " + kTokenize + " --input /dev/stdin --output " + tmp.file("out3"),
                  &log),
      1);
  EXPECT_TRUE(has(log, "input file /dev/stdin is empty")) << log;
}

// A device that never ends (/dev/zero) would fill memory: refused by name at once; an empty
// --output would write the shards into the current directory.
TEST(Tokenize, a_device_input_and_an_empty_output_are_refused) {
  TempDir tmp;
  const std::string a = tmp.write("a.txt", std::string(100, 'a'));
  std::string log;
  EXPECT_EQ(run_command(kTokenize + " --input /dev/zero --output " + tmp.file("out"), &log), 1);
  EXPECT_TRUE(
      has(log, "cannot read input file /dev/zero: it is a device, not a regular file or pipe"))
      << log;
  EXPECT_FALSE(fs::exists(tmp.file("out")));
  // Run in tmp: without the check, the shards would land in the current directory.
  EXPECT_EQ(
      run_command("cd " + tmp.path.string() + " && " + kTokenize + " --input " + a + " --output ''",
                  &log),
      1);
  EXPECT_TRUE(has(log, "--output is empty")) << log;
  EXPECT_FALSE(fs::exists(tmp.file("train_000.bin")));
}

TEST(Tokenize, tokenizer_dir_with_the_byte_tokenizer_is_refused) {
  TempDir tmp;
  const std::string a = tmp.write("a.txt", std::string(100, 'a'));
  std::string log;
  EXPECT_EQ(run_command(kTokenize + " --tokenizer-dir /nonexistent --input " + a + " --output " +
                            tmp.file("out"),
                        &log),
            1);
  EXPECT_TRUE(
      has(log, "--tokenizer-dir applies to the gpt2 and hf tokenizers only (--tokenizer byte)"))
      << log;
  EXPECT_FALSE(fs::exists(tmp.file("out")));
}

// Documents stay whole in one split: two of 10 and 20 bytes at --val-fraction 0.05 put the second
// (two thirds) in validation. Said, not silent; a split near the target says nothing.
TEST(Tokenize, a_split_far_from_val_fraction_is_warned_about) {
  TempDir tmp;
  const std::string a = tmp.write("a.txt", std::string(10, 'a')),
                    b = tmp.write("b.txt", std::string(20, 'b'));
  std::string log;
  const auto tokenize_two = [&](const std::string& first, const std::string& second,
                                const std::string& out, const std::string& fraction) {
    return run_command(kTokenize + " --input " + first + " --input " + second + " --output " +
                           tmp.file(out) + " --val-fraction " + fraction,
                       &log);
  };
  ASSERT_EQ(tokenize_two(a, b, "far", "0.05"), 0) << log;
  EXPECT_TRUE(has(log, "val   20 tokens (66.7%)")) << log;
  // The end-of-text between the two is in neither split: 30 tokens are written, and said.
  EXPECT_TRUE(has(log, "2 documents, 30 bytes -> 30 tokens")) << log;
  EXPECT_TRUE(has(log, "train 10 tokens")) << log;
  EXPECT_TRUE(has(log, "warning: the validation split holds 66.7% of the tokens, not the 5.0%"))
      << log;
  ASSERT_EQ(tokenize_two(b, a, "near", "0.3"), 0) << log;
  EXPECT_FALSE(has(log, "warning")) << log;
  // Exactly half the fraction away (1 of 8 tokens against 0.25) is not yet far.
  const std::string seven = tmp.write("seven.txt", "abcdefg"), one = tmp.write("one.txt", "h");
  ASSERT_EQ(tokenize_two(seven, one, "edge", "0.25"), 0) << log;
  EXPECT_TRUE(has(log, "val   1 tokens (12.5%)")) << log;
  EXPECT_FALSE(has(log, "warning")) << log;
}

// The tokens of PREFIX/<split>_000.bin, _001.bin, ... in order, and each shard's length.
std::vector<uint32_t> read_split(const std::string& prefix, const std::string& split,
                                 std::vector<int64_t>* sizes) {
  std::vector<uint32_t> all;
  for (int i = 0;; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "/%s_%03d.bin", split.c_str(), i);
    if (!fs::exists(prefix + name)) break;
    tessera::data::Shard shard(prefix + name, 257);
    const std::vector<uint32_t> t = shard.read(0, shard.size());
    all.insert(all.end(), t.begin(), t.end());
    sizes->push_back(shard.size());
  }
  return all;
}

// --shard-tokens splits each split into files of that many tokens (the last one shorter, never
// an empty one), and the files hold the text's tokens in order: the byte tokenizer's ids are the
// bytes.
TEST(Tokenize, splits_continue_in_numbered_shards_of_shard_tokens) {
  TempDir tmp;
  std::string text;
  for (int i = 0; i < 100; ++i) text += char('a' + i % 26);
  const std::string a = tmp.write("a.txt", text);
  const struct {
    int shard_tokens;
    std::vector<int64_t> train, val;
  } cases[] = {{40, {40, 40, 10}, {10}},
               {45, {45, 45}, {10}},
               {5, {5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5}, {5, 5}}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.shard_tokens);
    const std::string out = tmp.file("out" + std::to_string(c.shard_tokens));
    std::string log;
    ASSERT_EQ(run_command(kTokenize + " --input " + a + " --output " + out + " --shard-tokens " +
                              std::to_string(c.shard_tokens),
                          &log),
              0)
        << log;
    std::vector<int64_t> train_sizes, val_sizes;
    const std::vector<uint32_t> train = read_split(out, "train", &train_sizes),
                                val = read_split(out, "val", &val_sizes);
    EXPECT_EQ(train_sizes, c.train);
    EXPECT_EQ(val_sizes, c.val);
    std::vector<uint32_t> want(text.begin(), text.end());
    EXPECT_EQ(train, std::vector<uint32_t>(want.begin(), want.begin() + 90));
    EXPECT_EQ(val, std::vector<uint32_t>(want.begin() + 90, want.end()));
  }
}

// A write that fails half way (val_000.bin.tmp cannot be created) takes back the shards already
// written: no part of the corpus is left to train on, and the directory can be written again.
TEST(Tokenize, a_failed_write_takes_back_the_shards_already_written) {
  TempDir tmp;
  const std::string a = tmp.write("a.txt", std::string(100, 'a'));
  const std::string out = tmp.file("out");
  fs::create_directories(out + "/val_000.bin.tmp");
  std::string log;
  EXPECT_EQ(
      run_command(kTokenize + " --input " + a + " --output " + out + " --shard-tokens 40", &log),
      1);
  EXPECT_TRUE(has(log, out + "/val_000.bin.tmp")) << log;
  for (const char* name : {"train_000.bin", "train_001.bin", "train_002.bin", "val_000.bin"})
    EXPECT_FALSE(fs::exists(out + "/" + name)) << name;
}

// Only train_*.bin and val_*.bin count as shards in --output; when there are many, three are
// named and the count given.
TEST(Tokenize, only_shard_names_make_an_output_taken) {
  TempDir tmp;
  const std::string a = tmp.write("a.txt", std::string(100, 'a'));
  const std::string out = tmp.file("out");
  fs::create_directories(out);
  for (const char* other : {"model.bin", "train_notes.txt", "val.bin.bak"})
    tmp.write(std::string("out/") + other, "x");
  std::string log;
  ASSERT_EQ(run_command(kTokenize + " --input " + a + " --output " + out, &log), 0) << log;
  const std::string many = tmp.file("many");
  ASSERT_EQ(
      run_command(kTokenize + " --input " + a + " --output " + many + " --shard-tokens 20", &log),
      0)
      << log;
  EXPECT_EQ(run_command(kTokenize + " --input " + a + " --output " + many, &log), 1);
  EXPECT_TRUE(has(log,
                  "already holds shards (train_000.bin, train_001.bin, train_002.bin, ... "
                  "(6 in all))"))
      << log;
}

// Validation starts at the document boundary (counting the end-of-text ids between documents)
// nearest to (1 - val_fraction) of the tokens; the first document is always trained on, and of two
// boundaries equally near the earlier one is taken.
TEST(Tokenize, validation_starts_at_the_document_boundary_nearest_the_fraction) {
  TempDir tmp;
  std::vector<std::string> docs;
  for (int i = 0; i < 5; ++i) docs.push_back(tmp.write(doc_name(i), "0123456789"));
  const auto split = [&](int n_docs, const std::string& fraction) {
    std::string cmd = kTokenize;
    for (int i = 0; i < n_docs; ++i) cmd += " --input " + docs[size_t(i)];
    const std::string out = tmp.file("out" + std::to_string(n_docs) + "_" + fraction);
    std::string log;
    EXPECT_EQ(run_command(cmd + " --output " + out + " --val-fraction " + fraction, &log), 0)
        << log;
    std::vector<int64_t> sizes;
    const size_t train = read_split(out, "train", &sizes).size();
    const size_t val = read_split(out, "val", &sizes).size();
    return std::make_pair(train, val);
  };
  using Split = std::pair<size_t, size_t>;
  // 5 documents start at 0, 11, 22, 33, 44 of 54 tokens; 0.5 aims at 27: the third (22).
  EXPECT_EQ(split(5, "0.5"), (Split{21, 32}));
  EXPECT_EQ(split(5, "0.2"), (Split{43, 10}));  // aims at 43.2: the last (44)
  // 3 documents (0, 11, 22 of 32): 0.9 aims at 3.2, nearer the first's start than the second's,
  // which is taken all the same; 31/64 aims at 16.5, halfway between 11 and 22.
  EXPECT_EQ(split(3, "0.9"), (Split{10, 21}));
  EXPECT_EQ(split(3, "0.484375"), (Split{10, 21}));
}

// Each flag's bounds, checked before anything is read or written.
TEST(Tokenize, command_line_values_out_of_bounds_are_refused_by_flag) {
  TempDir tmp;
  const std::string a = tmp.write("a.txt", std::string(100, 'a'));
  const std::string bin = tessera::testing::bin_dir() + "/tokenize";
  const std::string out = tmp.file("out");
  const struct {
    std::string args, message;
  } cases[] = {
      {" --input " + a + " --output " + out, "--tokenizer byte|gpt2|hf is required"},
      {" --tokenizer byte --input " + a, "--output PREFIX is required"},
      {" --tokenizer byte --output " + out, "at least one --input FILE is required"},
      {" --tokenizer byte --input " + a + " --output " + out + " --val-fraction -0.1",
       "--val-fraction must be in [0, 1), got -0.1"},
      {" --tokenizer byte --input " + a + " --output " + out + " --val-fraction 1",
       "--val-fraction must be in [0, 1), got 1"},
      {" --tokenizer byte --input " + a + " --output " + out + " --shard-tokens 0",
       "--shard-tokens must be positive, got 0"},
  };
  for (const auto& c : cases) {
    std::string log;
    EXPECT_EQ(run_command(bin + c.args, &log), 1) << c.args << "\n" << log;
    EXPECT_TRUE(has(log, "command line: " + c.message)) << log;
    EXPECT_FALSE(fs::exists(out)) << c.args;
  }
}

// Each input is closed once read: a corpus of more files than the descriptor limit is tokenized.
// (100 documents of 3 bytes and 99 end-of-text ids, less the one between the splits.)
TEST(Tokenize, more_inputs_than_the_descriptor_limit_are_read) {
  TempDir tmp;
  std::string inputs;
  for (int i = 0; i < 100; ++i) inputs += " --input " + tmp.write(doc_name(i), "abc");
  std::string log;
  ASSERT_EQ(
      run_command("ulimit -n 48 && " + kTokenize + inputs + " --output " + tmp.file("out"), &log),
      0)
      << log;
  EXPECT_TRUE(has(log, "100 documents, 300 bytes -> 398 tokens")) << log;
}

// With standard input closed, the first file opened gets descriptor 0: still a file to read.
TEST(Tokenize, an_input_opened_as_descriptor_zero_is_read) {
  TempDir tmp;
  const std::string a = tmp.write("a.txt", std::string(100, 'a'));
  std::string log;
  ASSERT_EQ(
      run_command(kTokenize + " --input " + a + " --output " + tmp.file("out") + " <&-", &log), 0)
      << log;
  EXPECT_TRUE(has(log, "train 90 tokens")) << log;
}

}  // namespace
