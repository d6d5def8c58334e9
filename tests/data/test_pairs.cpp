// Preference pairs for DPO (data/preference.h): both input forms and their errors, the shards and
// version 3 masks `tokenize --format pairs` writes (a pair is its chosen example then its rejected
// one, the pair bit on the chosen one's first token, shards and splits cut only before a pair),
// and the loader's pair windows (loader.h, data.windows: pairs): rows [0, B) chosen, [B, 2B)
// rejected, a pair never split by the order or the ranks, and every refusal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "checkpoint/json.h"
#include "config/expect_contains.h"
#include "data/loader.h"
#include "data/preference.h"
#include "data/sft.h"
#include "data/shard.h"
#include "test_util.h"
#include "tiny_hf_tokenizer.h"

using namespace tessera;
using namespace tessera::data;
using tessera::testing::error_of;
using tessera::testing::read_bytes;
using tessera::testing::run_command;
using tessera::testing::TempDir;
using tessera::testing::write_bytes;
namespace fs = std::filesystem;

namespace {

constexpr int32_t kEot = 256, kNo = kIgnoreTarget;
const std::string kTokenize = tessera::testing::bin_dir() + "/tokenize --tokenizer byte";

// The pairs as tokenize --format pairs writes them (byte tokenizer): chosen example, the pair bit
// on its first token, then the rejected one; into one shard and its mask at dir/name.
std::string pair_shard(const TempDir& dir, const std::string& name,
                       const std::vector<PreferenceExample>& pairs) {
  const auto tok = make_tokenizer("byte");
  std::vector<uint32_t> tokens;
  std::vector<uint8_t> mask;
  for (const PreferenceExample& p : pairs) {
    const size_t first = mask.size();
    append_sft_example(*tok, p.chosen, tokens, mask);
    mask[first] |= kMaskPairStart;
    append_sft_example(*tok, p.rejected, tokens, mask);
  }
  const std::string path = dir.file(name);
  write_shard(path, tokens, 257);
  write_loss_mask(loss_mask_path(path), mask);
  return path;
}

// A shard of mask.size() tokens 'x' with the mask given byte for byte.
std::string shard_with_mask(const TempDir& dir, const std::string& name,
                            const std::vector<uint8_t>& mask) {
  const std::string path = dir.file(name);
  write_shard(path, std::vector<uint32_t>(mask.size(), 'x'), 257);
  write_loss_mask(loss_mask_path(path), mask);
  return path;
}

LoaderOptions pair_options(std::vector<std::string> files, int64_t B, int64_t T, bool shuffle,
                           uint64_t seed = 11) {
  LoaderOptions o;
  o.files = std::move(files);
  o.batch_size = B, o.seq_len = T, o.vocab_size = 257, o.seed = seed, o.shuffle = shuffle;
  o.windows = WindowMode::Pairs;
  return o;
}

// Rows [from, to) of a (R, T) batch tensor.
std::vector<int32_t> rows(const Tensor& t, int64_t from, int64_t to) {
  const std::vector<int32_t> all = t.to_vector<int32_t>();
  const int64_t T = t.shape()[1];
  return {all.begin() + from * T, all.begin() + to * T};
}

std::vector<uint8_t> mask_bytes(const std::string& mask_path, int32_t* version) {
  const std::vector<char> bytes = read_bytes(mask_path);
  EXPECT_GE(bytes.size(), 1024u);
  int32_t header[3];
  std::memcpy(header, bytes.data(), sizeof header);
  EXPECT_EQ(header[0], kMaskMagic);
  EXPECT_EQ(size_t(header[2]) + 1024, bytes.size());
  *version = header[1];
  return {bytes.begin() + 1024, bytes.end()};
}

}  // namespace

TEST(Pairs, both_forms_parse_from_json_lines_or_an_array) {
  const std::vector<PreferenceExample> want = {
      {{"2+2=", "4"}, {"2+2=", "5"}},
      {{"", "the whole text a"}, {"", "the whole text b"}},  // no prompt: TRL's implicit one
  };
  const std::string lines =
      "{\"prompt\": \"2+2=\", \"chosen\": \"4\", \"rejected\": \"5\"}\n"
      "\n"
      "{\"chosen\": \"the whole text a\", \"rejected\": \"the whole text b\"}";
  EXPECT_EQ(parse_preference_examples(lines, "p.jsonl"), want);
  const std::string array =
      " [{\"rejected\": \"5\", \"chosen\": \"4\", \"prompt\": \"2+2=\"},\n"
      "  {\"chosen\": \"the whole text a\", \"rejected\": \"the whole text b\"}]";
  EXPECT_EQ(parse_preference_examples(array, "p.json"), want);

  // Conversational: each example is the prompt's messages, then its response's.
  const std::vector<PreferenceExample> chat = parse_preference_examples(
      R"({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],)"
      R"( "chosen": [{"role": "assistant", "content": "Hello."}],)"
      R"( "rejected": [{"role": "assistant", "content": "Go away."}]})",
      "c.jsonl");
  ASSERT_EQ(chat.size(), 1u);
  const std::vector<ChatMessage> chosen = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}};
  const std::vector<ChatMessage> rejected = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Go away."}};
  EXPECT_EQ(chat[0].chosen, (SftExample{"", "", chosen}));
  EXPECT_EQ(chat[0].rejected, (SftExample{"", "", rejected}));
  EXPECT_TRUE(chat[0].chosen.needs_chat_template());
}

TEST(Pairs, a_bad_pair_names_the_file_the_line_or_element_and_the_key) {
  const auto msg = [](const std::string& text) {
    return error_of([&] { parse_preference_examples(text, "p.jsonl"); });
  };
  const std::string ok = "{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\"}";
  const std::string assistant = R"([{"role": "assistant", "content": "a"}])";
  EXPECT_CONTAINS(
      msg(ok + "\n{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\", \"score\": \"1\"}"),
      "p.jsonl line 2: unknown key \"score\" (a preference pair holds prompt, chosen and "
      "rejected)");
  EXPECT_CONTAINS(msg("{\"prompt\": \"q\", \"rejected\": \"b\"}"), "p.jsonl line 1: no \"chosen\"");
  EXPECT_CONTAINS(msg("{\"prompt\": \"q\", \"chosen\": \"b\"}"), "p.jsonl line 1: no \"rejected\"");
  EXPECT_CONTAINS(msg("\n{\"prompt\": \"q\", \"chosen\": 1, \"rejected\": \"b\"}"),
                  "p.jsonl line 2: \"chosen\" is a number, not a string or an array");
  EXPECT_CONTAINS(msg("{\"prompt\": {}, \"chosen\": \"a\", \"rejected\": \"b\"}"),
                  "p.jsonl line 1: \"prompt\" is an object, not a string or an array");
  EXPECT_CONTAINS(msg("{\"prompt\": \"q\", \"chosen\": " + assistant + ", \"rejected\": \"b\"}"),
                  "p.jsonl line 1: \"chosen\" is an array but \"prompt\" is a string: give "
                  "prompt, chosen and rejected all as strings or all as messages");
  EXPECT_CONTAINS(msg(ok + "\n{\"prompt\": \"q\", \"chosen\": \"same\", \"rejected\": \"same\"}"),
                  "p.jsonl line 2: \"chosen\" and \"rejected\" are the same response");
  EXPECT_CONTAINS(msg("{\"chosen\": " + assistant + ", \"rejected\": " + assistant + "}"),
                  "p.jsonl line 1: \"chosen\" and \"rejected\" are the same response");
  EXPECT_CONTAINS(
      msg(R"({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", )"
          R"("content": "a"}, {"role": "user", "content": "thanks"}], "rejected": )" +
          assistant + "}"),
      "p.jsonl line 1: \"chosen\" ends with a user's message, not the assistant's response");
  EXPECT_CONTAINS(msg("{\"chosen\": " + assistant + ", \"rejected\": []}"),
                  "p.jsonl line 1: \"rejected\" is empty");
  EXPECT_CONTAINS(
      msg(R"({"chosen": [{"role": "assistant", "text": "a"}], "rejected": )" + assistant + "}"),
      "p.jsonl line 1: chosen[0]: unknown key \"text\"");
  EXPECT_CONTAINS(msg(R"({"prompt": [{"role": "bot", "content": "q"}], "chosen": )" + assistant +
                      R"(, "rejected": [{"role": "assistant", "content": "b"}]})"),
                  "p.jsonl line 1: prompt[0]: role \"bot\" is not system, user or assistant");
  EXPECT_CONTAINS(msg("{\"chosen\": \"\", \"rejected\": \"b\"}"),
                  "p.jsonl line 1: \"chosen\" is empty and so is the prompt");
  EXPECT_CONTAINS(msg("[" + ok + ", \"text\"]"),
                  "p.jsonl element 1: a preference pair is a JSON object, not a string");
  EXPECT_CONTAINS(msg("[" + ok + ", {\"prompt\": \"q\", \"response\": \"a\"}]"),
                  "p.jsonl element 1: unknown key \"response\"");
  EXPECT_CONTAINS(msg(" \n\n"), "p.jsonl: no preference pairs");
  EXPECT_CONTAINS(msg("[]"), "p.jsonl: no preference pairs");
}

// Two pairs, "ab" -> "c" over "de" and "f" -> "g" over "h": each example as --format sft writes
// it (prompt unscored, response and end of text scored, 2 on its first token), and 4 more on each
// pair's first token: 6 (2 | 4) there, as prompt tokens are unscored. Version 3; SFT stays 2.
TEST(Pairs, tokenize_writes_each_pair_as_its_chosen_then_its_rejected_example) {
  TempDir tmp;
  const std::string in = tmp.write("p.jsonl",
                                   "{\"prompt\": \"ab\", \"chosen\": \"c\", \"rejected\": \"de\"}\n"
                                   "{\"chosen\": \"g\", \"rejected\": \"h\", \"prompt\": \"f\"}\n");
  const std::string out = tmp.file("out");
  std::string log;
  ASSERT_EQ(
      run_command(kTokenize + " --format pairs --val-fraction 0 --input " + in + " --output " + out,
                  &log),
      0)
      << log;
  EXPECT_CONTAINS(log, "2 pairs,");
  EXPECT_CONTAINS(log, "9 of the 15 train tokens and 0 of the 0 val tokens are scored");
  EXPECT_CONTAINS(log, "pairs 1-2 in train");
  const Shard s(out + "/train_000.bin", 257);
  EXPECT_EQ(s.read(0, s.size()), (std::vector<uint32_t>{'a', 'b', 'c', 256, 'a', 'b', 'd', 'e', 256,
                                                        'f', 'g', 256, 'f', 'h', 256}));
  int32_t version = 0;
  EXPECT_EQ(mask_bytes(out + "/train_000.mask", &version),
            (std::vector<uint8_t>{6, 0, 1, 1, 2, 0, 1, 1, 1, 6, 1, 1, 2, 1, 1}));
  EXPECT_EQ(version, 3);
  EXPECT_EQ(s.example_starts(), (std::vector<int64_t>{0, 4, 9, 12}));
  EXPECT_EQ(s.pair_starts(), (std::vector<int64_t>{0, 9}));
  EXPECT_EQ(s.mask_scored(), 9);

  // The chosen examples alone as --format sft: the same bytes less the pair bit, version 2.
  const std::string sft = tmp.write("s.jsonl",
                                    "{\"prompt\": \"ab\", \"response\": \"c\"}\n"
                                    "{\"prompt\": \"f\", \"response\": \"g\"}\n");
  ASSERT_EQ(run_command(kTokenize + " --format sft --val-fraction 0 --input " + sft + " --output " +
                            tmp.file("sft"),
                        &log),
            0)
      << log;
  EXPECT_EQ(mask_bytes(tmp.file("sft/train_000.mask"), &version),
            (std::vector<uint8_t>{2, 0, 1, 1, 2, 1, 1}));
  EXPECT_EQ(version, 2);

  // A conversation needs a chat template; an identical pair is refused naming its line.
  const std::string chat =
      tmp.write("c.jsonl", R"({"chosen": [{"role": "assistant", "content": "a"}], "rejected": )"
                           R"([{"role": "assistant", "content": "b"}]})"
                           "\n");
  EXPECT_EQ(
      run_command(kTokenize + " --format pairs --input " + chat + " --output " + tmp.file("o2"),
                  &log),
      1);
  EXPECT_CONTAINS(log, chat +
                           ": pair 1 is a conversation (lists of messages): give "
                           "--chat-template");
  const std::string same =
      tmp.write("same.jsonl",
                "{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n"
                "{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"a\"}\n");
  EXPECT_EQ(
      run_command(kTokenize + " --format pairs --input " + same + " --output " + tmp.file("o3"),
                  &log),
      1);
  EXPECT_CONTAINS(log, same + " line 2: \"chosen\" and \"rejected\" are the same response");
  EXPECT_FALSE(fs::exists(tmp.file("o2")) || fs::exists(tmp.file("o3")));
  EXPECT_EQ(
      run_command(kTokenize + " --format dpo --input " + in + " --output " + tmp.file("o4"), &log),
      1);
  EXPECT_CONTAINS(log, "--format must be text, sft or pairs, got 'dpo'");
}

// Six pairs of 13 tokens ("pN:" 3, "yes" 3 + <eot> = 7 chosen; "pN:" 3, "no" 2 + <eot> = 6
// rejected). --shard-tokens 22: a shard ends at the last pair start within 22 tokens, 13 (the
// rejected example's start, 7 and 20, is no place to cut). --val-fraction 0.42: the split
// nearest to 78 * 0.58 = 45.24 among pair starts 13, 26, 39, 52, 65 is 39 (an example start, 46,
// would be nearer): 3 pairs each.
TEST(Pairs, tokenize_cuts_shards_and_the_validation_split_only_before_a_pair) {
  TempDir tmp;
  std::string lines;
  for (int i = 0; i < 6; ++i)
    lines += "{\"prompt\": \"p" + std::to_string(i) +
             ":\", \"chosen\": \"yes\", \"rejected\": \"no\"}\n";
  const std::string in = tmp.write("p.jsonl", lines);
  const std::string out = tmp.file("out");
  std::string log;
  ASSERT_EQ(run_command(kTokenize +
                            " --format pairs --val-fraction 0.42 --shard-tokens 22 "
                            "--input " +
                            in + " --output " + out,
                        &log),
            0)
      << log;
  EXPECT_CONTAINS(log, "pairs 1-3 in train, 4-6 in val");
  for (const std::string split : {"train", "val"})
    for (int i = 0; i < 3; ++i) {
      const std::string path = out + "/" + split + "_00" + std::to_string(i) + ".bin";
      const Shard s(path, 257);
      EXPECT_EQ(s.size(), 13) << path;
      EXPECT_EQ(s.example_starts(), (std::vector<int64_t>{0, 7})) << path;
      EXPECT_EQ(s.pair_starts(), std::vector<int64_t>{0}) << path;
      const int pair = (split == "val" ? 3 : 0) + i;
      EXPECT_EQ(s.read(1, 1), std::vector<uint32_t>{uint32_t('0' + pair)}) << path;
    }
  EXPECT_FALSE(fs::exists(out + "/train_003.bin") || fs::exists(out + "/val_003.bin"));
}

// Under a chat template each example is append_chat_example's, the pair bit on the chosen one's
// first id.
TEST(Pairs, tokenize_writes_conversations_in_the_chat_template) {
  const tessera::testing::TinyHf h{tessera::testing::chat_tokenizer()};
  const std::string in = h.dir.write(
      "p.jsonl",
      R"({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", )"
      R"("content": "yes"}], "rejected": [{"role": "assistant", "content": "no"}]})"
      "\n"
      R"({"prompt": "r", "chosen": "a", "rejected": "b"})"
      "\n");
  const std::string out = h.dir.file("out");
  std::string log;
  ASSERT_EQ(run_command(tessera::testing::bin_dir() +
                            "/tokenize --format pairs --tokenizer hf --tokenizer-dir " +
                            h.dir.path.string() + " --chat-template llama3 --val-fraction 0 " +
                            "--input " + in + " --output " + out,
                        &log),
            0)
      << log;
  std::vector<uint32_t> want;
  std::vector<uint8_t> want_mask;
  for (const PreferenceExample& p : parse_preference_examples(read_json_file(in), in)) {
    const size_t first = want.size();
    append_chat_example(*h.tok, ChatTemplate::Llama3, p.chosen, want, want_mask);
    want_mask[first] |= kMaskPairStart;
    append_chat_example(*h.tok, ChatTemplate::Llama3, p.rejected, want, want_mask);
  }
  const Shard s(out + "/train_000.bin", 271);
  EXPECT_EQ(s.read(0, s.size()), want);
  int32_t version = 0;
  EXPECT_EQ(mask_bytes(out + "/train_000.mask", &version), want_mask);
  EXPECT_EQ(version, 3);
  EXPECT_EQ(s.pair_starts().size(), 2u);
  EXPECT_EQ(s.example_starts().size(), 4u);
}

// T = 6. Pair 0: "ab" -> "c" (4 tokens) over "de" (5); pair 1: "f" -> "0123456789" (12 tokens:
// its last 7 kept, "456789<eot>") over "g" (3). Rows: both chosen examples, then both rejected.
TEST(PairWindows, rows_hold_the_chosen_examples_then_the_rejected_ones_of_the_same_pairs) {
  TempDir dir;
  const std::string path = pair_shard(
      dir, "train_000.bin", {{{"ab", "c"}, {"ab", "de"}}, {{"f", "0123456789"}, {"f", "g"}}});
  DataLoader loader(pair_options({path}, 2, 6, false));
  EXPECT_EQ(loader.windows_per_epoch(), 2);
  EXPECT_EQ(loader.used_windows(), 2);
  EXPECT_EQ(loader.examples_cut(), 1);
  EXPECT_DOUBLE_EQ(loader.window_fill(), (3.0 + 6.0 + 4.0 + 2.0) / 24.0);
  const std::vector<int32_t> in = {
      'a', 'b', 'c', 0,   0,   0,    // pair 0, chosen
      '4', '5', '6', '7', '8', '9',  // pair 1, chosen: its first 5 tokens cut
      'a', 'b', 'd', 'e', 0,   0,    // pair 0, rejected
      'f', 'g', 0,   0,   0,   0};   // pair 1, rejected
  const std::vector<int32_t> tg = {kNo, 'c',  kEot, kNo,  kNo, kNo,   //
                                   '5', '6',  '7',  '8',  '9', kEot,  //
                                   kNo, 'd',  'e',  kEot, kNo, kNo,   //
                                   'g', kEot, kNo,  kNo,  kNo, kNo};
  for (int epoch = 0; epoch < 2; ++epoch) {
    const Batch b = loader.next();
    EXPECT_EQ(b.inputs.shape(), (std::vector<int64_t>{4, 6}));
    EXPECT_EQ(b.targets.shape(), (std::vector<int64_t>{4, 6}));
    EXPECT_EQ(b.inputs.to_vector<int32_t>(), in);
    EXPECT_EQ(b.targets.to_vector<int32_t>(), tg);
    EXPECT_EQ(loader.state().epoch, epoch + 1);
  }
}

namespace {

// Ten pairs: pair i's prompt is letter 'a' + i, (i % 3) + 1 times; chosen "Y", rejected "N".
std::vector<PreferenceExample> ten_pairs() {
  std::vector<PreferenceExample> out;
  for (int i = 0; i < 10; ++i) {
    const std::string prompt(size_t(i % 3 + 1), char('a' + i));
    out.push_back({{prompt, "Y"}, {prompt, "N"}});
  }
  return out;
}

// Pair i's row at T = 4 (every example fits: at most 3 + 2 tokens).
std::vector<int32_t> pair_row(int i, bool chosen) {
  const int n = i % 3 + 1;
  std::vector<int32_t> row(size_t(n), 'a' + i);
  row.push_back(chosen ? 'Y' : 'N');
  row.resize(4, 0);
  return row;
}

}  // namespace

// Under shuffle, several seeds: row b and row B + b are always one pair's chosen and rejected
// examples, whole; an epoch reads every pair once; the seeds give different orders.
TEST(PairWindows, a_pair_stays_together_under_shuffle) {
  TempDir dir;
  const std::string path = pair_shard(dir, "train_000.bin", ten_pairs());
  std::set<std::vector<int>> orders;
  for (const uint64_t seed : {1, 2, 3, 4, 5}) {
    DataLoader loader(pair_options({path}, 2, 4, true, seed));
    ASSERT_EQ(loader.windows_per_epoch(), 10);
    std::vector<int> order;
    for (int call = 0; call < 5; ++call) {
      const Batch b = loader.next();
      for (int64_t r = 0; r < 2; ++r) {
        const int pair = rows(b.inputs, r, r + 1)[0] - 'a';
        ASSERT_GE(pair, 0);
        ASSERT_LT(pair, 10);
        order.push_back(pair);
        EXPECT_EQ(rows(b.inputs, r, r + 1), pair_row(pair, true)) << "seed " << seed;
        EXPECT_EQ(rows(b.inputs, 2 + r, 3 + r), pair_row(pair, false)) << "seed " << seed;
      }
    }
    std::vector<int> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})) << "seed " << seed;
    orders.insert(order);
  }
  EXPECT_EQ(orders.size(), 5u);  // five seeds, five orders (none the identity by chance)
  EXPECT_EQ(orders.count({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}), 0u);
}

// World 2 of B = 2 against world 1 of B = 4, the same seed: the ranks' pairs are disjoint and,
// chosen rows and rejected rows each in rank order, make the world-1 batch.
TEST(PairWindows, ranks_take_disjoint_pairs_whose_union_is_the_one_rank_batch) {
  TempDir dir;
  const std::string path = pair_shard(dir, "train_000.bin", ten_pairs());
  DataLoader whole(pair_options({path}, 4, 4, true, 7));
  std::vector<DataLoader> ranks;
  for (int r = 0; r < 2; ++r) {
    LoaderOptions o = pair_options({path}, 2, 4, true, 7);
    o.rank = r, o.world = 2;
    ranks.emplace_back(o);
  }
  EXPECT_EQ(ranks[0].used_windows(), 8);  // two calls of 2 x 2 pairs
  for (int call = 0; call < 2; ++call) {
    const Batch w = whole.next(), r0 = ranks[0].next(), r1 = ranks[1].next();
    for (const auto& [all, part0, part1] : {std::tuple{&w.inputs, &r0.inputs, &r1.inputs},
                                            std::tuple{&w.targets, &r0.targets, &r1.targets}}) {
      std::vector<int32_t> chosen = rows(*part0, 0, 2), rejected = rows(*part0, 2, 4);
      const std::vector<int32_t> c1 = rows(*part1, 0, 2), j1 = rows(*part1, 2, 4);
      chosen.insert(chosen.end(), c1.begin(), c1.end());
      rejected.insert(rejected.end(), j1.begin(), j1.end());
      EXPECT_EQ(rows(*all, 0, 4), chosen) << "call " << call;
      EXPECT_EQ(rows(*all, 4, 8), rejected) << "call " << call;
    }
    const std::set<int32_t> mine = {rows(r0.inputs, 0, 1)[0], rows(r0.inputs, 1, 2)[0]};
    EXPECT_EQ(mine.count(rows(r1.inputs, 0, 1)[0]) + mine.count(rows(r1.inputs, 1, 2)[0]), 0u);
  }
}

// State, seek and step_windows count pairs.
TEST(PairWindows, a_restored_state_or_a_seek_reads_the_same_batches) {
  TempDir dir;
  const std::string path = pair_shard(dir, "train_000.bin", ten_pairs());
  LoaderOptions o = pair_options({path}, 2, 4, true, 3);
  o.step_windows = 4;  // two batches of 2 pairs a step: 8 of the 10 pairs an epoch
  DataLoader a(o);
  EXPECT_EQ(a.used_windows(), 8);
  EXPECT_EQ(a.batches_per_epoch(), 4);
  a.next();
  const LoaderState s = a.state();
  EXPECT_EQ(s.position, 2);
  EXPECT_EQ(a.window_index(), 2);
  std::vector<Batch> want;
  for (int i = 0; i < 4; ++i) want.push_back(a.next());  // into the next epoch
  EXPECT_EQ(a.state().epoch, 1);

  DataLoader b(o), c(o);
  b.set_state(s);
  c.seek(2);
  for (int i = 0; i < 4; ++i) {
    const Batch from_state = b.next(), from_seek = c.next();
    for (const Batch* got : {&from_state, &from_seek}) {
      EXPECT_EQ(got->inputs.to_vector<int32_t>(), want[size_t(i)].inputs.to_vector<int32_t>());
      EXPECT_EQ(got->targets.to_vector<int32_t>(), want[size_t(i)].targets.to_vector<int32_t>());
    }
  }
}

// Pairs mode needs shards of pairs; shards of pairs are refused in every other mode.
TEST(PairWindows, pairs_and_other_window_modes_do_not_mix) {
  TempDir dir;
  const auto tok = make_tokenizer("byte");
  std::vector<uint32_t> tokens;
  std::vector<uint8_t> mask;
  append_sft_example(*tok, {"a", "b"}, tokens, mask);
  append_sft_example(*tok, {"c", "d"}, tokens, mask);
  const std::string sft = dir.file("sft.bin");
  write_shard(sft, tokens, 257);
  write_loss_mask(loss_mask_path(sft), mask);
  std::string msg = error_of([&] { DataLoader l(pair_options({sft}, 1, 4, false)); });
  EXPECT_CONTAINS(
      msg, "shard " + sft + " holds no preference pairs: write it with tokenize --format pairs");
  EXPECT_CONTAINS(msg, "its loss mask marks no pair");
  const std::string plain = dir.file("plain.bin");
  write_shard(plain, {1, 2, 3, 4}, 257);
  msg = error_of([&] { DataLoader l(pair_options({plain}, 1, 4, false)); });
  EXPECT_CONTAINS(
      msg, "shard " + plain + " holds no preference pairs: write it with tokenize --format pairs");
  EXPECT_CONTAINS(msg, "it has no loss mask, " + dir.file("plain.mask"));

  const std::string pairs = pair_shard(dir, "pairs.bin", ten_pairs());
  for (const WindowMode mode : {WindowMode::Example, WindowMode::Packed}) {
    LoaderOptions o = pair_options({pairs}, 1, 4, false);
    o.windows = mode;
    EXPECT_CONTAINS(error_of([&] { DataLoader l(o); }),
                    "shard " + pairs +
                        " holds preference pairs (tokenize --format pairs): train them with "
                        "data.windows: pairs and train.objective: dpo");
  }
  // A set of pair shards and an SFT shard: refused at the SFT one.
  msg = error_of([&] { DataLoader l(pair_options({pairs, sft}, 1, 4, false)); });
  EXPECT_CONTAINS(msg, "shard " + sft + " holds no preference pairs");

  const std::string two =
      pair_shard(dir, "two.bin", {{{"a", "b"}, {"a", "c"}}, {{"d", "e"}, {"d", "f"}}});
  EXPECT_CONTAINS(error_of([&] { DataLoader l(pair_options({two}, 3, 4, false)); }),
                  "hold 2 preference pairs (two windows each), fewer than one global batch");
  EXPECT_EQ(parse_window_mode("pairs", "data.windows"), WindowMode::Pairs);
  EXPECT_CONTAINS(error_of([&] { parse_window_mode("pair", "data.windows"); }),
                  "data.windows: unknown window mode 'pair' (packed | documents | example | "
                  "pairs)");
}

// Pair starts (6 = 2 | 4) and plain example starts (2) must alternate from token 0, the shard
// ending after a rejected example; each break is refused naming the shard and the token.
TEST(PairWindows, pair_marks_that_do_not_alternate_are_refused_naming_the_token) {
  TempDir dir;
  const struct {
    std::vector<uint8_t> mask;
    std::string want;
  } cases[] = {
      {{6, 1, 2, 1, 2, 1, 6, 1, 2, 1},
       ": the example at token 4 starts no preference pair, but the pair before it (at token 0) "
       "holds two examples already"},
      {{6, 1, 6, 1, 2, 1},
       ": the preference pair at token 0 holds one example: the next example, at token 2, starts "
       "a pair too"},
      {{6, 1, 2, 1, 6, 1, 1},
       ": the last preference pair, at token 4, holds one example and no rejected one"},
      {{2, 1, 6, 1, 2, 1}, ": token 0 starts no preference pair (the first starts at token 2)"},
      {{0, 1, 6, 1, 2, 1}, ": token 0 starts no preference pair (the first starts at token 2)"},
  };
  int i = 0;
  for (const auto& c : cases) {
    const std::string path = shard_with_mask(dir, "s" + std::to_string(i++) + ".bin", c.mask);
    const std::string msg = error_of([&] { DataLoader l(pair_options({path}, 1, 4, false)); });
    EXPECT_CONTAINS(msg, "shard " + path + c.want);
    EXPECT_CONTAINS(msg, "holds whole pairs, each a chosen example then a rejected one");
  }
  // The same bytes that alternate are accepted: pairs at 0 and 4.
  const std::string good = shard_with_mask(dir, "good.bin", {6, 1, 2, 1, 6, 1, 2, 1});
  EXPECT_EQ(DataLoader(pair_options({good}, 1, 4, false)).windows_per_epoch(), 2);
}

// The pair bit exists in version 3 masks only, and only on an example's first token.
TEST(PairWindows, a_pair_bit_a_mask_cannot_hold_is_refused_naming_the_position) {
  TempDir dir;
  const std::string path = pair_shard(dir, "p.bin", ten_pairs());  // bytes 6 at pair starts
  const std::string mask = loss_mask_path(path);
  const std::vector<char> good = read_bytes(mask);
  ASSERT_EQ(good[4], 3);  // the version int, little-endian
  for (const char version : {char(2), char(1)}) {
    std::vector<char> bytes = good;
    bytes[4] = version;
    write_bytes(mask, bytes);
    EXPECT_CONTAINS(error_of([&] { Shard s(path, 257); }),
                    "loss mask " + mask + ": value 6 at position 0 is not one a version " +
                        std::string(1, char('0' + version)) + " mask holds");
  }
  std::vector<char> bytes = good;
  bytes[1024 + 1] = char(kMaskPairStart | kMaskScored);  // on a token that starts no example
  write_bytes(mask, bytes);
  EXPECT_CONTAINS(error_of([&] { Shard s(path, 257); }),
                  "loss mask " + mask +
                      ": value 5 at position 1 marks a pair start (4) on a token that starts no "
                      "example (2)");

  const std::string out = dir.file("w.mask");
  EXPECT_CONTAINS(error_of([&] {
                    write_loss_mask(out, {6, 1, 4, 1});
                  }),
                  "write_loss_mask: " + out +
                      ": value 4 at position 2 marks a pair start (4) on a token that starts no "
                      "example (2)");
  EXPECT_FALSE(fs::exists(out));
}
