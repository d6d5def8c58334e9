// Hugging Face tokenizer.json (data/hf_tokenizer.cpp) and Llama 3's and Qwen2's pre-tokenisation:
// pieces as the Python `regex` module splits them under Llama 3's pattern, Qwen2's digits one by
// one, a hand-made tokenizer.json's merges and options (the NFC normalizer among them), GPT-2's
// tokenizer.json (written here from encoder.json and vocab.bpe, in the layout the tokenizers
// library writes) against the gpt2 tokenizer, Llama 3's and Qwen3's known ids, and errors that
// name the file and the key. tests/scripts/hf_tokenizer_reference.sh compares whole texts with
// the JavaScript port of the tokenizers library.
//
// The Llama 3 cases need data/tokenizers/llama3 (scripts/prepare_data.sh llama3; TESSERA_LLAMA3_DIR
// points elsewhere), the Qwen3 ones data/tokenizers/qwen3 (prepare_data.sh qwen3;
// TESSERA_QWEN3_DIR), the GPT-2 ones data/tokenizers/gpt2; each skips without its files.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/json.h"
#include "data/pretokenize.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "test_util.h"
#include "tiny_hf_tokenizer.h"

using namespace tessera;
using namespace tessera::data;
using tessera::testing::dense;
using tessera::testing::error_of;
using tessera::testing::spelled;
using tessera::testing::split_then_byte_level;
using tessera::testing::TempDir;
using tessera::testing::TinyHf;
using tessera::testing::TinyJson;
namespace fs = std::filesystem;
using Ids = std::vector<uint32_t>;
using Pieces = std::vector<std::string>;

namespace {

Pieces pieces_of(Pretokenizer kind, const std::string& text) {
  Pieces out;
  for (auto p : pretokenize(kind, text)) out.emplace_back(p);
  return out;
}
Pieces llama3_pieces(const std::string& text) { return pieces_of(Pretokenizer::Llama3, text); }
Pieces qwen2_pieces(const std::string& text) { return pieces_of(Pretokenizer::Qwen2, text); }

// Expected pieces: Python's `regex` module (2022.10.31) findall with Llama 3's pattern.
TEST(Llama3Pretokenize, splits_as_the_llama3_pattern_does) {
  EXPECT_EQ(llama3_pieces("Hello world! In"), (Pieces{"Hello", " world", "!", " In"}));
  // Numbers in runs of at most three; punctuation joins the word after it.
  EXPECT_EQ(llama3_pieces("(12345 ok"), (Pieces{"(", "123", "45", " ok"}));
  EXPECT_EQ(llama3_pieces("(hello)"), (Pieces{"(hello", ")"}));
  EXPECT_EQ(llama3_pieces("1 2"), (Pieces{"1", " ", "2"}));
  EXPECT_EQ(llama3_pieces(" 1"), (Pieces{" ", "1"}));
  // Contractions in any case; an apostrophe before other letters joins them.
  EXPECT_EQ(llama3_pieces("don't I'LL we'Re"), (Pieces{"don", "'t", " I", "'LL", " we", "'Re"}));
  EXPECT_EQ(llama3_pieces("'Sup 'xyz"), (Pieces{"'S", "up", " '", "xyz"}));
  EXPECT_EQ(llama3_pieces("'\xc5\xbf"), (Pieces{"'\xc5\xbf"}));  // U+017F long s: not 's
  // Whitespace: a run ends at its last line break; otherwise its last character joins the word.
  EXPECT_EQ(llama3_pieces("a  b"), (Pieces{"a", " ", " b"}));
  EXPECT_EQ(llama3_pieces("x\n\ny"), (Pieces{"x", "\n\n", "y"}));
  EXPECT_EQ(llama3_pieces("x  \n  y"), (Pieces{"x", "  \n", " ", " y"}));
  EXPECT_EQ(llama3_pieces("a \n"), (Pieces{"a", " \n"}));
  EXPECT_EQ(llama3_pieces("a\r\r\nb"), (Pieces{"a", "\r\r\n", "b"}));
  EXPECT_EQ(llama3_pieces("   "), (Pieces{"   "}));
  EXPECT_EQ(llama3_pieces("\tword\t\tx"), (Pieces{"\tword", "\t", "\tx"}));
  EXPECT_EQ(llama3_pieces("x \xc2\xa0y"), (Pieces{"x", " ", "\xc2\xa0y"}));  // a no-break space
  // Punctuation keeps the line breaks after it.
  EXPECT_EQ(llama3_pieces("!!!\n\nx"), (Pieces{"!!!\n\n", "x"}));
  EXPECT_EQ(llama3_pieces(" ...\n"), (Pieces{" ...\n"}));
  // Non-ASCII: letters, a superscript (a number), Arabic-Indic digits.
  EXPECT_EQ(llama3_pieces("na\xc3\xafve caf\xc3\xa9"), (Pieces{"na\xc3\xafve", " caf\xc3\xa9"}));
  EXPECT_EQ(llama3_pieces("\xc2\xb2x \xd9\xa1\xd9\xa2\xd9\xa3\xd9\xa4"),
            (Pieces{"\xc2\xb2", "x", " ", "\xd9\xa1\xd9\xa2\xd9\xa3", "\xd9\xa4"}));
  EXPECT_TRUE(llama3_pieces("").empty());
}

TEST(Llama3Pretokenize, pieces_are_nonempty_and_concatenate_to_any_bytes) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  for (Pretokenizer kind : {Pretokenizer::Llama3, Pretokenizer::Qwen2}) {
    for (const std::string& text :
         {all, all + all, std::string("\xff\xfe x\r\n\xc3"), std::string("''")}) {
      std::string joined;
      for (auto p : pretokenize(kind, text)) {
        EXPECT_FALSE(p.empty());
        joined += p;
      }
      EXPECT_EQ(joined, text);
    }
  }
}

// Qwen2's pattern is Llama 3's with \p{N} for \p{N}{1,3}: each number character is a piece.
TEST(Qwen2Pretokenize, splits_numbers_one_digit_a_piece_where_llama3_takes_three) {
  EXPECT_EQ(qwen2_pieces("(12345 ok"), (Pieces{"(", "1", "2", "3", "4", "5", " ok"}));
  EXPECT_EQ(llama3_pieces("(12345 ok"), (Pieces{"(", "123", "45", " ok"}));
  EXPECT_EQ(qwen2_pieces("x1y 2"), (Pieces{"x", "1", "y", " ", "2"}));
  EXPECT_EQ(qwen2_pieces("\xc2\xb2x \xd9\xa1\xd9\xa2"),  // a superscript, Arabic-Indic digits
            (Pieces{"\xc2\xb2", "x", " ", "\xd9\xa1", "\xd9\xa2"}));
  // Without numbers the two patterns agree.
  for (const std::string text : {"Hello world! In", "don't I'LL we'Re", "x  \n  y", "(hello)",
                                 "!!!\n\nx", "a\r\r\nb", "\tword\t\tx", "na\xc3\xafve"})
    EXPECT_EQ(qwen2_pieces(text), llama3_pieces(text)) << text;
}

// ---- a hand-made tokenizer.json ----------------------------------------------------------------

TEST(HfTokenizerJson, merges_by_rank_and_the_options_it_reads) {
  TinyHf h{dense()};
  EXPECT_EQ(h.tok->name(), "hf");
  EXPECT_EQ(h.tok->vocab_size(), 262);  // the added token's id 261 is the largest
  // "b c" outranks "a b": a, bc, and no merge "a bc".
  EXPECT_EQ(h.tok->encode("abc"), (Ids{'a', 256}));
  EXPECT_EQ(h.tok->encode("ab"), (Ids{257}));
  // The GPT-2 pattern keeps " 1" one piece, so "Ġ 1" merges.
  EXPECT_EQ(h.tok->encode("x 1"), (Ids{'x', 259}));
  EXPECT_EQ(h.tok->eot_id(), 261u);
  EXPECT_EQ(h.tok->decode({'a', 256, 261, 259}), "abc<|end_of_text|> 1");
  // Added tokens are not parsed out of the text.
  EXPECT_EQ(h.tok->decode(h.tok->encode("<|end_of_text|>")), "<|end_of_text|>");
  EXPECT_EQ(h.tok->encode("<|end_of_text|>").size(), 15u);
}

// Ids must be dense. TinyJson gives 261 tokens (ids 0..259 and 261): id 261 is past them. With
// an added token that repeats a vocab one (as GPT-2's <|endoftext|> does) the count allows 261,
// and 260 is the gap.
TEST(HfTokenizerJson, a_gap_in_the_ids_is_named) {
  auto error = [](const TinyJson& j) {
    TempDir dir;
    dir.write("tokenizer.json", j.text());
    const std::string e = error_of([&] { make_tokenizer("hf", dir.path.string()); });
    EXPECT_NE(e.find((dir.path / "tokenizer.json").string()), std::string::npos) << e;
    return e;
  };
  const std::string past = error(TinyJson{});
  EXPECT_NE(past.find("added_tokens[0].id is 261: the file gives 261 tokens, so ids 0..260"),
            std::string::npos)
      << past;
  TinyJson repeated;
  repeated.added = R"([{"id": 97, "content": "a"}, {"id": 261, "content": "<|end_of_text|>"}])";
  const std::string gap = error(repeated);
  EXPECT_NE(gap.find("id 260 is neither in model.vocab nor an added token"), std::string::npos)
      << gap;
  TinyJson huge = dense();  // refused before it sizes a table of 2^31 tokens
  huge.added = R"([{"id": 2147483000, "content": "<|end_of_text|>", "special": true}])";
  const std::string past_all = error(huge);
  EXPECT_NE(past_all.find("added_tokens[0].id is 2147483000: the file gives 262 tokens"),
            std::string::npos)
      << past_all;
}

TEST(HfTokenizerJson, ignore_merges_takes_a_piece_that_is_a_token_whole) {
  TinyJson j = dense();
  j.ignore_merges = true;
  TinyHf h{j};
  EXPECT_EQ(h.tok->encode("abc"), (Ids{258}));              // whole, where merges give a, bc
  EXPECT_EQ(h.tok->encode("abcab"), (Ids{'a', 256, 257}));  // one piece, not a token: merges
}

TEST(HfTokenizerJson, merges_as_pairs_and_the_llama3_split) {
  TinyJson j = dense();
  j.merges = R"(["b", "c"], ["a", "b"], ["ab", "c"], ["Ġ", "1"], ["z", "z"])";
  j.pre = R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": )" +
          std::string("\"") + json_escape(std::string(pretokenizer_pattern(Pretokenizer::Llama3))) +
          R"("}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel",)"
          R"( "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})";
  TinyHf h{j};
  EXPECT_EQ(h.tok->encode("abc"), (Ids{'a', 256}));
  EXPECT_EQ(h.tok->encode("x 1"), (Ids{'x', ' ', '1'}));  // " ", "1": two pieces under Llama 3
}

// A Split on pretokenize.h's pattern `kind`, then a ByteLevel without its regex (Llama 3's and
// Qwen's layout).
TEST(HfTokenizerJson, the_qwen2_split_keeps_digits_apart) {
  TinyJson j = dense();
  j.extra_vocab += R"(, "12": 262)";
  j.merges += R"(, "1 2")";
  j.pre = split_then_byte_level(Pretokenizer::Qwen2);
  EXPECT_EQ(TinyHf(j).tok->encode("x 12"), (Ids{'x', ' ', '1', '2'}));
  j.pre = split_then_byte_level(Pretokenizer::Llama3);
  EXPECT_EQ(TinyHf(j).tok->encode("x 12"), (Ids{'x', ' ', 262}));
}

// The NFC normalizer (Qwen's) runs before pre-tokenisation, and only where the file names it:
// e + COMBINING ACUTE ACCENT encodes as the bytes of U+00E9.
TEST(HfTokenizerJson, the_nfc_normalizer_applies_only_where_the_file_has_it) {
  const std::string decomposed = "e\xcc\x81", invalid = "e\xff\xcc\x81";
  TinyJson j = dense();
  TinyHf plain(j);
  EXPECT_EQ(plain.tok->encode(decomposed), (Ids{'e', 0xCC, 0x81}));
  j.normalizer = R"({"type": "NFC"})";
  TinyHf h(j);
  EXPECT_EQ(h.tok->encode(decomposed), (Ids{0xC3, 0xA9}));
  EXPECT_EQ(h.tok->decode(h.tok->encode(decomposed)), "\xc3\xa9");
  EXPECT_EQ(h.tok->encode(invalid), plain.tok->encode(invalid));  // an invalid byte blocks it
  EXPECT_EQ(h.tok->encode("abc x 1"), plain.tok->encode("abc x 1"));
  EXPECT_EQ(h.tok->vocab_size(), plain.tok->vocab_size());
  EXPECT_EQ(h.tok->eot_id(), plain.tok->eot_id());
  EXPECT_EQ(h.tok->name(), "hf");
}

TEST(HfTokenizerJson, end_of_text_from_tokenizer_config_or_the_known_names) {
  TinyJson j = dense();
  j.added = R"([{"id": 261, "content": "<|begin_of_text|>", "special": true},)"
            R"( {"id": 262, "content": "<|eot_id|>", "special": true}])";
  EXPECT_EQ(TinyHf(j, R"({"eos_token": "<|eot_id|>"})").tok->eot_id(), 262u);
  EXPECT_EQ(TinyHf(j, R"({"eos_token": {"content": "<|begin_of_text|>"}})").tok->eot_id(), 261u);
  const std::string e = error_of([&] { TinyHf h(j); });
  EXPECT_NE(e.find("no end-of-text token"), std::string::npos) << e;
  const std::string bad = error_of([&] { TinyHf h(j, R"({"eos_token": "</s>"})"); });
  EXPECT_NE(bad.find("tokenizer_config.json: eos_token \"</s>\" is not a token"), std::string::npos)
      << bad;
}

// Beginning of text: tokenizer_config.json's bos_token, else <|begin_of_text|> or <s> among the
// added tokens, else none (GPT-2's own files name none).
TEST(HfTokenizerJson, beginning_of_text_from_tokenizer_config_or_the_known_names) {
  TinyJson j = dense();
  j.added = R"([{"id": 261, "content": "<|begin_of_text|>", "special": true},)"
            R"( {"id": 262, "content": "<|eot_id|>", "special": true}])";
  const std::string eos = R"("eos_token": "<|eot_id|>")";
  EXPECT_EQ(TinyHf(j, "{" + eos + "}").tok->bos_id(), std::optional<uint32_t>(261));
  EXPECT_EQ(TinyHf(j, "{" + eos + R"(, "bos_token": {"content": "<|eot_id|>"}})").tok->bos_id(),
            std::optional<uint32_t>(262));
  EXPECT_EQ(TinyHf(j, "{" + eos + R"(, "bos_token": "ab"})").tok->bos_id(),
            std::optional<uint32_t>(257));  // a vocabulary token may be named too
  const std::string bad = error_of([&] { TinyHf h(j, "{" + eos + R"(, "bos_token": "<s>"})"); });
  EXPECT_NE(bad.find("tokenizer_config.json: bos_token \"<s>\" is not a token"), std::string::npos)
      << bad;
  EXPECT_EQ(TinyHf(dense()).tok->bos_id(), std::nullopt);  // <|end_of_text|> alone
  EXPECT_EQ(make_tokenizer("byte")->bos_id(), std::nullopt);
}

// tokenize --bos starts every document, and every example (unscored, the example's start), with
// it; a tokenizer without one is refused before anything is written.
TEST(HfTokenizerJson, tokenize_bos_starts_every_document_and_example) {
  TinyJson j = dense();
  j.added = R"([{"id": 261, "content": "<|begin_of_text|>", "special": true},)"
            R"( {"id": 262, "content": "<|end_of_text|>", "special": true}])";
  TinyHf h(j, R"({"eos_token": "<|end_of_text|>"})");
  const std::string tokenize = tessera::testing::bin_dir() +
                               "/tokenize --tokenizer hf --tokenizer-dir " + h.dir.path.string() +
                               " --bos --val-fraction 0 --output ";
  const std::string a = h.dir.write("a.txt", "xy"), b = h.dir.write("b.txt", "abc");
  std::string log;
  ASSERT_EQ(tessera::testing::run_command(
                tokenize + h.dir.file("text") + " --input " + a + " --input " + b, &log),
            0)
      << log;
  EXPECT_EQ(Shard(h.dir.file("text/train_000.bin"), 263).read(0, 7),
            (Ids{261, 'x', 'y', 262, 261, 'a', 256}));  // "abc" is a + bc

  const std::string ex = h.dir.write("ex.jsonl", "{\"prompt\": \"x\", \"response\": \"y\"}\n");
  ASSERT_EQ(tessera::testing::run_command(
                tokenize + h.dir.file("sft") + " --format sft --input " + ex, &log),
            0)
      << log;
  const Shard s(h.dir.file("sft/train_000.bin"), 263);
  EXPECT_EQ(s.read(0, 4), (Ids{261, 'x', 'y', 262}));
  std::vector<uint8_t> mask(4);
  s.read_mask(0, 4, mask.data());
  EXPECT_EQ(mask, (std::vector<uint8_t>{0, 0, 1, 1}));
  EXPECT_EQ(s.example_starts(), std::vector<int64_t>{0});

  const std::string byte = tessera::testing::bin_dir() +
                           "/tokenize --tokenizer byte --bos --output " + h.dir.file("none") +
                           " --input " + a;
  EXPECT_EQ(tessera::testing::run_command(byte, &log), 1);
  EXPECT_NE(log.find("--bos: the byte tokenizer has no beginning-of-text token"), std::string::npos)
      << log;
  EXPECT_FALSE(std::filesystem::exists(h.dir.file("none")));
}

TEST(HfTokenizerJson, what_it_does_not_implement_is_refused_by_name) {
  auto error = [](const TinyJson& j) {
    TempDir dir;
    dir.write("tokenizer.json", j.text());
    return error_of([&] { make_tokenizer("hf", dir.path.string()); });
  };
  TinyJson nfkc = dense();
  nfkc.normalizer = R"({"type": "NFKC"})";
  EXPECT_NE(error(nfkc).find("normalizer NFKC is not supported (none or NFC)"), std::string::npos)
      << error(nfkc);
  TinyJson sequence = dense();  // NFC inside a Sequence is still a Sequence
  sequence.normalizer = R"({"type": "Sequence", "normalizers": [{"type": "NFC"}]})";
  EXPECT_NE(error(sequence).find("normalizer Sequence is not supported"), std::string::npos)
      << error(sequence);
  TinyJson split = dense();
  split.pre = R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": )"
              R"("\\p{N}"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel",)"
              R"( "use_regex": false}]})";
  EXPECT_NE(error(split).find(R"(the Split pattern "\p{N}" is not one tessera implements)"),
            std::string::npos)
      << error(split);
  TinyJson prefix = dense();
  prefix.pre = R"({"type": "ByteLevel", "add_prefix_space": true})";
  EXPECT_NE(error(prefix).find("pre_tokenizer.add_prefix_space is not supported"),
            std::string::npos);
  TinyJson cut = dense();
  cut.merges = R"("b c", "a b", "Ġ 1", "z z")";  // nothing makes "abc"
  EXPECT_NE(error(cut).find("no merge makes 1 of them, the first \"abc\" (id 258); is "
                            "model.merges cut off?"),
            std::string::npos)
      << error(cut);
  TinyJson unknown = dense();
  unknown.merges += R"(, "q r")";
  EXPECT_NE(error(unknown).find("model.merges[5]: token \"qr\" is not in model.vocab"),
            std::string::npos)
      << error(unknown);
  const std::string missing = error_of([] { make_tokenizer("hf", "/nonexistent/dir"); });
  EXPECT_NE(missing.find("cannot read /nonexistent/dir/tokenizer.json"), std::string::npos);
  EXPECT_NE(error_of([] { make_tokenizer("hf", ""); }).find("no directory given"),
            std::string::npos);
}

// ---- GPT-2's own tokenizer.json, and Llama 3's ----------------------------------------------

std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

// $env, else data/tokenizers/<name> of the repository (wherever ctest runs from).
std::string files_dir(const char* env, const char* name) {
  if (const char* d = std::getenv(env)) return d;
  return (fs::path(__FILE__).parent_path().parent_path().parent_path() / "data/tokenizers" / name)
      .string();
}

// A sample of text with every piece kind: words, contractions, numbers, whitespace runs, line
// breaks, punctuation, accents, CJK, emoji.
const std::string kSample =
    "In the beginning God created the heaven and the earth.\n\nAnd the earth was without form, "
    "and void; and darkness was upon the face of the deep. don't I'll we'RE 12345 6,789.0  \t\n"
    "  indented(x) + y; // na\xc3\xafve caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac "
    "\xf0\x9f\x98\x80!!\r\n";

TEST(HfTokenizerJson, gpt2s_tokenizer_json_encodes_as_its_encoder_json_and_vocab_bpe) {
  const fs::path gpt2 = files_dir("TESSERA_GPT2_DIR", "gpt2");
  if (!fs::exists(gpt2 / "encoder.json") || !fs::exists(gpt2 / "vocab.bpe"))
    GTEST_SKIP() << "GPT-2 tokenizer files not found in " << gpt2 << " (scripts/prepare_data.sh)";
  // The tokenizers library's layout for GPT-2 (its model repository's tokenizer.json).
  std::string merges;
  std::istringstream lines(read(gpt2 / "vocab.bpe"));
  for (std::string line; std::getline(lines, line);)  // after the "#version: 0.2" line
    if (!line.empty() && !line.starts_with("#version"))
      merges += (merges.empty() ? "\"" : ", \"") + json_escape(line) + "\"";
  TempDir dir;
  dir.write(
      "tokenizer.json",
      R"({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [{"id": 50256,)"
      R"( "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false,)"
      R"( "normalized": true, "special": true}], "normalizer": null, "pre_tokenizer":)"
      R"( {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,)"
      R"( "use_regex": true}, "post_processor": {"type": "ByteLevel", "add_prefix_space":)"
      R"( true, "trim_offsets": false, "use_regex": true}, "decoder": {"type": "ByteLevel",)"
      R"( "add_prefix_space": true, "trim_offsets": true, "use_regex": true}, "model":)"
      R"( {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix":)"
      R"( "", "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,)"
      R"( "vocab": )" +
          read(gpt2 / "encoder.json") + R"(, "merges": [)" + merges + "]}}");
  auto hf = make_tokenizer("hf", dir.path.string());
  auto files = make_tokenizer("gpt2", gpt2.string());
  EXPECT_EQ(hf->vocab_size(), 50257);
  EXPECT_EQ(hf->eot_id(), 50256u);
  EXPECT_EQ(hf->encode(kSample), files->encode(kSample));
  EXPECT_EQ(hf->encode("Hello world"), (Ids{15496, 995}));
  const Ids ids = hf->encode(kSample);
  EXPECT_EQ(hf->decode(ids), kSample);
}

TEST(HfTokenizerJson, llama3_known_ids) {
  const fs::path dir = files_dir("TESSERA_LLAMA3_DIR", "llama3");
  if (!fs::exists(dir / "tokenizer.json"))
    GTEST_SKIP() << "Llama 3's tokenizer.json not found in " << dir
                 << " (scripts/prepare_data.sh llama3, or set TESSERA_LLAMA3_DIR)";
  auto tok = make_tokenizer("hf", dir.string());
  EXPECT_EQ(tok->vocab_size(), 128256);
  EXPECT_EQ(tok->eot_id(), 128001u);  // <|end_of_text|>, tokenizer_config.json's eos_token
  // Ids from the JavaScript tokenizers port (tests/scripts/hf_tokenizer_reference.sh).
  EXPECT_EQ(tok->encode("Hello world! In the beginning God created 12345 the heaven.  \n\n x"),
            (Ids{9906, 1917, 0, 763, 279, 7314, 4359, 3549, 220, 4513, 1774, 279, 23070, 13, 19124,
                 865}));
  EXPECT_EQ(tok->decode({128000, 9906}), "<|begin_of_text|>Hello");
  EXPECT_EQ(tok->decode(tok->encode(kSample)), kSample);
}

// Qwen3's tokenizer.json (Qwen2's and Qwen2.5's are the same): NFC, the Qwen2 Split, 151,643
// tokens and 26 added ones; tokenizer_config.json names <|im_end|> (151645) the end of text, as
// Qwen3's instruct models do, and no bos_token.
TEST(HfTokenizerJson, qwen3_known_ids) {
  const fs::path dir = files_dir("TESSERA_QWEN3_DIR", "qwen3");
  if (!fs::exists(dir / "tokenizer.json"))
    GTEST_SKIP() << "Qwen3's tokenizer.json not found in " << dir
                 << " (scripts/prepare_data.sh qwen3, or set TESSERA_QWEN3_DIR)";
  auto tok = make_tokenizer("hf", dir.string());
  EXPECT_EQ(tok->vocab_size(), 151669);
  EXPECT_EQ(tok->eot_id(), 151645u);
  EXPECT_EQ(tok->bos_id(), std::nullopt);
  // Ids from the JavaScript tokenizers port (tests/scripts/hf_tokenizer_reference.sh): the digits
  // one by one, then text that NFC changes: e + acute (U+00E9, as the precomposed one after it),
  // ANGSTROM SIGN (U+00C5), Hangul jamo L V T (the syllable U+AC01 that follows), and a + dot
  // above + dot below (reordered: a + dot below composes to U+1EA1, the dot above stays).
  EXPECT_EQ(tok->encode("Hello world! In the beginning God created 12345 the heaven.  \n\n x"),
            (Ids{9707, 1879, 0, 758, 279, 7167, 4264, 3465, 220, 16, 17, 18, 19, 20, 279, 22274, 13,
                 18611, 856}));
  EXPECT_EQ(tok->encode("cafe\xcc\x81 caf\xc3\xa9"), (Ids{924, 58858, 51950}));
  EXPECT_EQ(tok->encode("\xe2\x84\xab \xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8 \xea\xb0\x81"),
            (Ids{144044, 126804, 126804}));
  EXPECT_EQ(tok->encode("a\xcc\x87\xcc\xa3"), (Ids{20229, 136, 229}));
  EXPECT_EQ(tok->decode({151644, 151667, 151668, 151643}),
            "<|im_start|><think></think><|endoftext|>");
  EXPECT_EQ(tok->decode(tok->encode(kSample)), kSample);  // kSample is in NFC already

  // A base model's tokenizer_config.json: <|endoftext|> ends the text.
  TempDir base;
  fs::create_symlink(fs::absolute(dir / "tokenizer.json"), base.path / "tokenizer.json");
  base.write("tokenizer_config.json", R"({"eos_token": "<|endoftext|>", "bos_token": null})");
  auto base_tok = make_tokenizer("hf", base.path.string());
  EXPECT_EQ(base_tok->eot_id(), 151643u);
  EXPECT_EQ(base_tok->bos_id(), std::nullopt);
}

}  // namespace
