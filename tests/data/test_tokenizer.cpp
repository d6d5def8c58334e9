// Tokenizers: byte and GPT-2 BPE round trips, GPT-2's pre-tokenisation, BPE merge order on a tiny
// hand-made vocabulary, GPT-2 ids against known values, and errors that name the broken file.
//
// Known ids and pieces were checked against two independent implementations: OpenAI's encoder.py
// algorithm run with the Python `regex` module, and npm gpt-3-encoder's Encoder.js (JavaScript
// \p{L} regex). The GPT-2 cases need data/tokenizers/gpt2 (scripts/prepare_data.sh fetches it) and
// skip without it; TESSERA_GPT2_DIR points them elsewhere.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::data;
using tessera::testing::error_of;
namespace fs = std::filesystem;
using Ids = std::vector<uint32_t>;

namespace {

using tessera::testing::TempDir;

// Strings every byte-level tokenizer must give back unchanged.
std::vector<std::string> round_trip_cases() {
  return {
      "",
      "Hello world",
      "In the beginning God created the heaven and the earth.",
      "caf\xc3\xa9 na\xc3\xafve cafe\xcc\x81",              // precomposed and combining accents
      "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",               // 日本語
      "\xf0\x9f\x98\x80 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd",  // emoji, one with a skin-tone modifier
      "a  b\n\n\tc   ",
      "   leading and trailing   ",
      "\r\n\r\n \xc2\xa0\xe3\x80\x80",  // CRLF, no-break space, ideographic space
      "12345 678 3.14159 1,000,000",
      "don't I'll we've they're 'S 'sup",
      "<|endoftext|>",
      std::string("nul\0byte", 8),
      // stray bytes, a cut-off sequence, an encoded surrogate, a code point past U+10FFFF
      "\xff\xfe invalid \xc3 utf-8 \xed\xa0\x80 \xf4\x90\x80\x80",
  };
}

std::string random_bytes(std::mt19937& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = char(rng() & 0xFF);
  return s;
}

// ---- byte tokenizer -----------------------------------------------------------------------------

TEST(ByteTokenizer, ids_are_the_bytes_and_end_of_text_is_256) {
  auto tok = make_tokenizer("byte");
  EXPECT_EQ(tok->vocab_size(), 257);
  EXPECT_EQ(tok->eot_id(), 256u);
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_EQ(tok->encode("Ab \xc3\xa9\xff"), (Ids{65, 98, 32, 0xC3, 0xA9, 0xFF}));
  EXPECT_TRUE(tok->encode("").empty());
}

TEST(ByteTokenizer, decode_inverts_encode_for_any_bytes) {
  auto tok = make_tokenizer("byte");
  for (const auto& s : round_trip_cases()) EXPECT_EQ(tok->decode(tok->encode(s)), s);
  std::mt19937 rng(7);
  const std::string noise = random_bytes(rng, 4096);
  EXPECT_EQ(tok->decode(tok->encode(noise)), noise);
}

TEST(ByteTokenizer, decode_spells_end_of_text_and_rejects_unknown_ids) {
  auto tok = make_tokenizer("byte");
  EXPECT_EQ(tok->decode({104, 256, 105}), "h<|endoftext|>i");
  const std::string msg = error_of([&] { tok->decode({104, 257}); });
  EXPECT_NE(msg.find("id 257"), std::string::npos) << msg;
}

// A generation's prompt: the text's ids as they are; an empty text the end-of-text id alone,
// hidden from the printed text; a beginning-of-text id asked of a tokenizer that has none names
// who asked. The printed text leaves out the hidden id and a final end-of-text.
TEST(Tokenizer, a_prompt_hides_its_marker_id_and_a_generation_its_final_end_of_text) {
  auto tok = make_tokenizer("byte");
  const Prompt plain = encode_prompt(*tok, "ab", false, "unused");
  EXPECT_EQ(plain.ids, (std::vector<uint32_t>{97, 98}));
  EXPECT_EQ(plain.hidden, 0u);
  EXPECT_EQ(decode_generation(*tok, plain, {97, 98, 99, 256}), "abc");
  EXPECT_EQ(decode_generation(*tok, plain, {97, 98, 256, 100}), "ab<|endoftext|>d");  // not last
  const Prompt empty = encode_prompt(*tok, "", false, "unused");
  EXPECT_EQ(empty.ids, (std::vector<uint32_t>{256}));
  EXPECT_EQ(empty.hidden, 1u);
  EXPECT_EQ(decode_generation(*tok, empty, {256, 104, 105}), "hi");
  EXPECT_EQ(decode_generation(*tok, empty, {256}), "");
  const std::string msg = error_of([&] { encode_prompt(*tok, "ab", true, "log.sample_bos"); });
  EXPECT_NE(msg.find("log.sample_bos: the byte tokenizer has no beginning-of-text token"),
            std::string::npos)
      << msg;
}

TEST(Tokenizer, unknown_name_is_an_error_naming_it) {
  const std::string msg = error_of([] { make_tokenizer("sentencepiece"); });
  EXPECT_NE(msg.find("sentencepiece"), std::string::npos) << msg;
}

// ---- GPT-2 pre-tokenisation (needs no files) ----------------------------------------------------

using Pieces = std::vector<std::string>;

Pieces pieces_of(const std::string& text) {
  Pieces out;
  for (auto p : pretokenize(Pretokenizer::Gpt2, text)) out.emplace_back(p);
  return out;
}

TEST(Gpt2Pretokenize, splits_as_the_gpt2_pattern_does) {
  // Whitespace before a word goes with the word, except one space of a longer run ("\s+(?!\S)").
  EXPECT_EQ(pieces_of("a  b\n\n\tc   "), (Pieces{"a", " ", " b", "\n\n", "\t", "c", "   "}));
  EXPECT_EQ(pieces_of(" \t x"), (Pieces{" \t", " x"}));
  EXPECT_EQ(pieces_of("Hi!!! ...  ok?\n"), (Pieces{"Hi", "!!!", " ...", " ", " ok", "?", "\n"}));
  EXPECT_EQ(pieces_of("12345 678"), (Pieces{"12345", " 678"}));
  // Contractions: lower case only, and they win even where no word precedes them.
  EXPECT_EQ(pieces_of("don't I'll"), (Pieces{"don", "'t", " I", "'ll"}));
  EXPECT_EQ(pieces_of("'sup 'S 're've"), (Pieces{"'s", "up", " '", "S", " '", "re", "'ve"}));
  // Only U+0020 joins the next word; a no-break space stands alone.
  EXPECT_EQ(pieces_of("x\xc2\xa0y"), (Pieces{"x", "\xc2\xa0", "y"}));
  // Non-ASCII classes: CJK letters, emoji (not letters), superscript two (a number), a combining
  // accent (a mark: neither letter nor number, so it leaves the word).
  EXPECT_EQ(
      pieces_of("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80\xf0\x9f\x98\x80 \xc2\xb2x"),
      (Pieces{"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", " \xf0\x9f\x98\x80\xf0\x9f\x98\x80",
              " \xc2\xb2", "x"}));
  EXPECT_EQ(pieces_of("caf\xc3\xa9 cafe\xcc\x81"), (Pieces{"caf\xc3\xa9", " cafe", "\xcc\x81"}));
  EXPECT_TRUE(pieces_of("").empty());
}

std::string utf8(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xE0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
  return out;
}

// \s is the White_Space property: its 25 code points below U+3100, as the Python `regex` module
// lists them. A run of two before a word splits into two one-character pieces ("\s+(?!\S)" then
// "\s+"). Neighbouring code points that are not White_Space (controls Python's str.isspace would
// call space, format characters, punctuation) group as one [^\s\p{L}\p{N}] piece instead.
TEST(Gpt2Pretokenize, white_space_is_the_unicode_property) {
  const uint32_t spaces[] = {0x09,   0x0A,   0x0B,   0x0C,   0x0D,   0x85,   0xA0,   0x1680, 0x2000,
                             0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009,
                             0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
  for (uint32_t cp : spaces) {
    const std::string x = utf8(cp);
    EXPECT_EQ(pieces_of("a" + x + x + "b"), (Pieces{"a", x, x, "b"})) << std::hex << cp;
  }
  EXPECT_EQ(pieces_of("a  b"), (Pieces{"a", " ", " b"}));  // U+0020 alone joins the word
  const uint32_t others[] = {0x08,   0x0E,   0x1C,   0x1F,   0x84,   0x86,   0x180E,
                             0x1FFF, 0x200B, 0x2027, 0x202A, 0x205E, 0x2060, 0x3001};
  for (uint32_t cp : others) {
    const std::string x = utf8(cp);
    EXPECT_EQ(pieces_of("a" + x + x + "b"), (Pieces{"a", x + x, "b"})) << std::hex << cp;
  }
}

TEST(Gpt2Pretokenize, contractions_and_character_classes_at_piece_starts) {
  // Every contraction as a piece of its own after a word.
  EXPECT_EQ(pieces_of("we're they've we'll I'd I'm it's don't"),
            (Pieces{"we", "'re", " they", "'ve", " we", "'ll", " I", "'d", " I", "'m", " it", "'s",
                    " don", "'t"}));
  EXPECT_EQ(pieces_of("'ee 'rv"), (Pieces{"'", "ee", " '", "rv"}));  // not contractions
  EXPECT_EQ(pieces_of("+sup"), (Pieces{"+", "sup"}));  // only an apostrophe starts a contraction
  // A three-byte letter continues a word and ends before punctuation.
  EXPECT_EQ(pieces_of("a\xe6\x97\xa5!"), (Pieces{"a\xe6\x97\xa5", "!"}));
  // An overlong two-byte form of 'A' is not a letter: ill-formed bytes are punctuation-like.
  EXPECT_EQ(pieces_of("x\xc1\x81"), (Pieces{"x", "\xc1\x81"}));
}

TEST(Gpt2Pretokenize, pieces_are_nonempty_and_concatenate_to_the_text) {
  std::mt19937 rng(11);
  std::vector<std::string> texts = round_trip_cases();
  for (int i = 0; i < 50; ++i) texts.push_back(random_bytes(rng, 1 + rng() % 300));
  for (const auto& text : texts) {
    std::string joined;
    for (auto p : pretokenize(Pretokenizer::Gpt2, text)) {
      EXPECT_FALSE(p.empty());
      joined += p;
    }
    EXPECT_EQ(joined, text);
  }
}

// ---- BPE on a tiny hand-made vocabulary (needs no files) ----------------------------------------

// GPT-2's bytes_to_unicode, restated from its description (encoder.py in openai/gpt-2) so the
// test does not trust the code under test: printable Latin-1 ranges stand for themselves, the
// other 68 bytes become U+0100 + n.
std::vector<uint32_t> byte_spelling() {
  std::vector<uint32_t> cp(256);
  uint32_t n = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    cp[b] = printable ? b : 0x100 + n++;
  }
  return cp;
}

// The 256 byte tokens (ids 0..255, keys as JSON \u escapes or plain characters), then extra.
std::string tiny_encoder_json(const std::string& extra) {
  const auto cp = byte_spelling();
  std::string json = "{\n";
  for (int b = 0; b < 256; ++b) {
    char key[16];
    if (cp[b] == '"' || cp[b] == '\\')
      std::snprintf(key, sizeof(key), "\\%c", char(cp[b]));
    else if (cp[b] < 0x7F)
      std::snprintf(key, sizeof(key), "%c", char(cp[b]));
    else
      std::snprintf(key, sizeof(key), "\\u%04X", cp[b]);
    json += "  \"" + std::string(key) + "\": " + std::to_string(b) + ",\n";
  }
  return json + extra + "\n}\n";
}

// Merges by rank: "c d", "b c", "a a", "Ġ b" (Ġ = U+0120 spells the space byte).
const char* kTinyMerges = "#version: 0.2\nc d\nb c\na a\n\xc4\xa0 b\n";
const char* kTinyExtra =
    "  \"cd\": 256, \"bc\": 257, \"\\u0061\\u0061\": 258, \"\304\240b\": 259,\n"
    "  \"<|endoftext|>\": 260";

struct TinyVocab {
  TempDir dir;
  std::unique_ptr<Tokenizer> tok;
  TinyVocab() {
    dir.write("encoder.json", tiny_encoder_json(kTinyExtra));
    dir.write("vocab.bpe", kTinyMerges);
    tok = make_tokenizer("gpt2", dir.path.string());
  }
};

TEST(Gpt2Bpe, merges_the_lowest_ranked_pair_first) {
  TinyVocab v;
  EXPECT_EQ(v.tok->vocab_size(), 261);
  EXPECT_EQ(v.tok->eot_id(), 260u);
  EXPECT_EQ(v.tok->encode("bc"), (Ids{257}));
  EXPECT_EQ(v.tok->encode("bcd"), (Ids{'b', 256}));  // "c d" outranks "b c"
  // " bcd" is one piece: "c d" first, then "Ġ b". In " bc", "b c" outranks "Ġ b" and leaves the
  // space as its byte token (id 32).
  EXPECT_EQ(v.tok->encode(" bcd"), (Ids{259, 256}));
  EXPECT_EQ(v.tok->encode("x bc"), (Ids{'x', ' ', 257}));
}

TEST(Gpt2Bpe, overlapping_pairs_merge_left_to_right) {
  TinyVocab v;
  EXPECT_EQ(v.tok->encode("aaa"), (Ids{258, 'a'}));
  EXPECT_EQ(v.tok->encode("aaaa"), (Ids{258, 258}));
  EXPECT_EQ(v.tok->encode("aaaaa"), (Ids{258, 258, 'a'}));
  // A piece longer than the cache takes (256 bytes) is merged all the same.
  Ids long_run(150, 258);
  long_run.push_back('a');
  EXPECT_EQ(v.tok->encode(std::string(301, 'a')), long_run);
}

TEST(Gpt2Bpe, every_byte_string_round_trips) {
  TinyVocab v;
  for (const auto& s : round_trip_cases()) EXPECT_EQ(v.tok->decode(v.tok->encode(s)), s);
  std::mt19937 rng(3);
  for (int i = 0; i < 20; ++i) {
    const std::string s = random_bytes(rng, 1 + rng() % 500);
    EXPECT_EQ(v.tok->decode(v.tok->encode(s)), s);
  }
}

// ---- errors that name the file ------------------------------------------------------------------

std::string gpt2_error(const TempDir& dir) {
  return error_of([&] { make_tokenizer("gpt2", dir.path.string()); });
}

TEST(Gpt2Files, a_missing_file_is_named) {
  TempDir dir;
  std::string msg = gpt2_error(dir);
  EXPECT_NE(msg.find((dir.path / "encoder.json").string()), std::string::npos) << msg;
  dir.write("encoder.json", tiny_encoder_json(kTinyExtra));
  msg = gpt2_error(dir);
  EXPECT_NE(msg.find((dir.path / "vocab.bpe").string()), std::string::npos) << msg;
}

TEST(Gpt2Files, malformed_encoder_json_names_the_file_and_line) {
  TempDir dir;
  dir.write("vocab.bpe", kTinyMerges);
  const std::string path = (dir.path / "encoder.json").string();
  struct Case {
    std::string extra, expect;
  };
  // The 256 byte tokens take lines 2..257, so the extra entries start on line 258.
  const std::vector<Case> cases = {
      {"  \"cd\" 256", path + ":258: expected ':'"},
      {"  \"cd\": 256,\n  \"bc\": x", path + ":259: expected a token id"},
      {"  \"cd\": 256,\n  \"bc\": 256", path + ":259: id 256 is used twice"},
      {"  \"cd\": 999", path + ":258: id 999 is out of range: 257 tokens need ids 0..256"},
      {"  \"c\\qd\": 256", path + ":258: unknown escape"},
      {"  \"c d\": 256", path + ":258: token \"c d\" has a character outside"},
      // Escapes decode to UTF-8 of the right length at each boundary (U+0800: three bytes,
      // U+10000 from a surrogate pair: four), and neither spells a byte.
      {"  \"\\u0800\": 256", path + ":258: token \"\xe0\xa0\x80\" has a character outside"},
      {"  \"\\ud800\\udc00\": 256",
       path + ":258: token \"\xf0\x90\x80\x80\" has a character outside"},
      {"  \"\\udbff\\udfff\": 256",
       path + ":258: token \"\xf4\x8f\xbf\xbf\" has a character outside"},  // U+10FFFF
      // Surrogates that do not pair up.
      {"  \"\\ud800\": 256", path + ":258: lone high surrogate"},
      {"  \"\\ud800\\n\": 256", path + ":258: lone high surrogate"},
      {"  \"\\ud800\\udbff\": 256", path + ":258: high surrogate not followed by a low one"},
      {"  \"\\ud800\\ue000\": 256", path + ":258: high surrogate not followed by a low one"},
      {"  \"\\udfff\": 256", path + ":258: lone low surrogate"},
      {"  \"\\udc00\": 256", path + ":258: lone low surrogate"},
      {"  \"cd\": 256, \"<|endoftext|>\": 257, \"cd\": 258", "appears twice"},
  };
  for (const auto& c : cases) {
    dir.write("encoder.json", tiny_encoder_json(c.extra));
    const std::string msg = gpt2_error(dir);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: " << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
  dir.write("encoder.json", tiny_encoder_json("  \"cd\": 256"));
  const std::string msg = gpt2_error(dir);
  EXPECT_NE(msg.find(path + ": no <|endoftext|> token"), std::string::npos) << msg;
}

// JSON allows space, tab, CR and LF between tokens; a file cut off anywhere is refused saying so.
TEST(Gpt2Files, encoder_json_takes_any_json_white_space_and_is_refused_where_it_ends_early) {
  TempDir dir;
  dir.write("vocab.bpe", kTinyMerges);
  std::string spaced;  // CRLF line ends and tab indents (no key holds a literal space)
  for (char c : tiny_encoder_json(kTinyExtra))
    spaced += c == '\n' ? "\r\n" : c == ' ' ? "\t" : std::string(1, c);
  dir.write("encoder.json", spaced);
  EXPECT_EQ(make_tokenizer("gpt2", dir.path.string())->encode(" bcd"), (Ids{259, 256}));

  const std::string path = (dir.path / "encoder.json").string();
  const std::vector<std::pair<std::string, std::string>> cut = {
      {"{\"a\": 97", ":1: expected '}' but the file ends"},
      {"{\"\\u0061", ":1: unterminated string"},
      {"{\"\\u006", ":1: \\u escape cut off by the end of the file"},
      {"{\"a\":", ":1: expected a token id"},
  };
  for (const auto& [text, expect] : cut) {
    dir.write("encoder.json", text);
    const std::string msg = gpt2_error(dir);
    EXPECT_NE(msg.find(path + expect), std::string::npos) << text << " -> " << msg;
  }
}

TEST(Gpt2Files, malformed_merge_line_names_the_file_and_line) {
  TempDir dir;
  dir.write("encoder.json", tiny_encoder_json(kTinyExtra));
  const std::string path = (dir.path / "vocab.bpe").string();
  struct Case {
    std::string merges, expect;
  };
  const std::vector<Case> cases = {
      {"#version: 0.2\nc d\nb c d\n", path + ":3: expected two tokens separated by one space"},
      {"#version: 0.2\nc d\nbc\n", path + ":3: expected two tokens"},
      {"#version: 0.2\nc d\nx y\n", path + ":3: token \"xy\" is not in encoder.json"},
      {"#version: 0.2\nc d\nzz y\n", path + ":3: token \"zz\" is not in encoder.json"},
      {"#version: 0.2\nc d\nc zz\n", path + ":3: token \"zz\" is not in encoder.json"},
      {"#version: 0.2\nc d\nc \n", path + ":3: expected two tokens separated by one space"},
      {"#version: 0.2\nc d\n c\n", path + ":3: expected two tokens separated by one space"},
      {"#version: 0.2\nc d\nb cd\n", path + ":3: token \"bcd\" is not in encoder.json"},
      {"#version: 0.2\nc d\nb c\nc d\n", path + ":4: the merge \"c d\" appears twice"},
      {"#version: 0.2\n", path + ": no merges"},
      // Control characters of a garbage line are escaped in the message.
      {"#version: 0.2\nc d\n\x1b[2J\x07\n", path + ":3: expected two tokens separated by one "
                                             "space, got \"\\x1b[2J\\x07\""},
      // A quoted line is cut to 40 bytes, and only a longer one is marked as cut.
      {"#version: 0.2\nc d\n" + std::string(40, 'x') + "\n",
       path + ":3: expected two tokens separated by one space, got \"" + std::string(40, 'x') +
           "\""},
      {"#version: 0.2\nc d\n" + std::string(41, 'x') + "\n",
       path + ":3: expected two tokens separated by one space, got \"" + std::string(40, 'x') +
           "...\""},
  };
  for (const auto& c : cases) {
    dir.write("vocab.bpe", c.merges);
    const std::string msg = gpt2_error(dir);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: " << msg;
  }
}

// A vocab.bpe cut off at a line boundary parses line by line; only the count gives it away.
TEST(Gpt2Files, a_vocab_bpe_missing_merges_names_both_files_and_the_counts) {
  TempDir dir;
  const std::string encoder = dir.write("encoder.json", tiny_encoder_json(kTinyExtra));
  const std::string path = dir.write("vocab.bpe", "#version: 0.2\nc d\nb c\na a\n");  // no "Ġ b"
  std::string msg = gpt2_error(dir);
  EXPECT_NE(msg.find(path + " has 3 merges, but the 261 tokens of " + encoder +
                     " need 4 (261 - 256 byte tokens - 1 special token)"),
            std::string::npos)
      << msg;
  const std::string space_b = std::string("\xc4\xa0") + "b";  // " b" as the files spell it
  EXPECT_NE(msg.find("no merge makes 1 of them, the first \"" + space_b + "\" (id 259)"),
            std::string::npos)
      << msg;
  dir.write("vocab.bpe", "#version: 0.2\nc d\na a\n\xc4\xa0 b\n");  // one from the middle
  msg = gpt2_error(dir);
  EXPECT_NE(msg.find("\"bc\" (id 257)"), std::string::npos) << msg;
}

TEST(Gpt2Files, special_tokens_in_angle_brackets_need_no_merge) {
  TempDir dir;
  dir.write("encoder.json",
            tiny_encoder_json(std::string(kTinyExtra) + ", \"<|pad|>\": 261, \"</s>\": 262"));
  dir.write("vocab.bpe", kTinyMerges);
  const auto tok = make_tokenizer("gpt2", dir.path.string());
  EXPECT_EQ(tok->vocab_size(), 263);
  EXPECT_EQ(tok->encode("</s>"), (Ids{'<', '/', 's', '>'}));  // BPE never produces them
  EXPECT_EQ(tok->decode({262}), "</s>");
}

// ---- the real GPT-2 vocabulary ------------------------------------------------------------------

std::string gpt2_dir() {
  if (const char* env = std::getenv("TESSERA_GPT2_DIR")) return env;
  // tests/data/test_tokenizer.cpp -> the repository root, wherever ctest runs from.
  return (fs::path(__FILE__).parent_path().parent_path().parent_path() / "data/tokenizers/gpt2")
      .string();
}

// Loaded once per test binary: the 1 MB encoder.json takes a noticeable fraction of a second.
const Tokenizer* gpt2() {
  static const std::unique_ptr<Tokenizer> tok = []() -> std::unique_ptr<Tokenizer> {
    if (!fs::exists(fs::path(gpt2_dir()) / "encoder.json")) return nullptr;
    return make_tokenizer("gpt2", gpt2_dir());
  }();
  return tok.get();
}

#define REQUIRE_GPT2()                                                         \
  const Tokenizer* tok = gpt2();                                               \
  if (!tok) {                                                                  \
    GTEST_SKIP() << "GPT-2 tokenizer files not found in " << gpt2_dir()        \
                 << " (run scripts/prepare_data.sh, or set TESSERA_GPT2_DIR)"; \
  }

TEST(Gpt2Tokenizer, encodes_known_ids) {
  REQUIRE_GPT2();
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eot_id(), 50256u);
  EXPECT_EQ(tok->encode("Hello world"), (Ids{15496, 995}));
  EXPECT_EQ(tok->encode(" the"), (Ids{262}));
  EXPECT_EQ(tok->encode("In the beginning God created the heaven and the earth."),
            (Ids{818, 262, 3726, 1793, 2727, 262, 9538, 290, 262, 4534, 13}));
  EXPECT_EQ(tok->encode("don't I'll"), (Ids{9099, 470, 314, 1183}));
  EXPECT_EQ(tok->encode("I'm here. They're done; we've won't"),
            (Ids{40, 1101, 994, 13, 1119, 821, 1760, 26, 356, 1053, 1839, 470}));
  EXPECT_EQ(tok->encode("12345 678"), (Ids{10163, 2231, 718, 3695}));
  EXPECT_EQ(tok->encode("a  b\n\n\tc   "), (Ids{64, 220, 275, 628, 197, 66, 220, 220, 220}));
  EXPECT_EQ(tok->encode("na\xc3\xafve caf\xc3\xa9"), (Ids{2616, 38776, 40304}));
  // Characters the vocabulary lacks as a whole fall back to tokens for their UTF-8 bytes.
  EXPECT_EQ(tok->encode("h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80"),
            (Ids{71, 2634, 18798, 10545, 245, 98, 17312, 105, 45739, 252, 30325, 222}));
  EXPECT_TRUE(tok->encode("").empty());
}

TEST(Gpt2Tokenizer, end_of_text_is_not_parsed_from_text) {
  REQUIRE_GPT2();
  EXPECT_EQ(tok->encode("<|endoftext|>"), (Ids{27, 91, 437, 1659, 5239, 91, 29}));
  EXPECT_EQ(tok->decode({15496, 50256, 995}), "Hello<|endoftext|> world");
}

TEST(Gpt2Tokenizer, decode_inverts_encode) {
  REQUIRE_GPT2();
  for (const auto& s : round_trip_cases()) EXPECT_EQ(tok->decode(tok->encode(s)), s);
  std::mt19937 rng(5);
  for (int i = 0; i < 20; ++i) {
    const std::string s = random_bytes(rng, 1 + rng() % 1000);
    EXPECT_EQ(tok->decode(tok->encode(s)), s);
  }
}

TEST(Gpt2Tokenizer, the_real_vocab_bpe_cut_to_its_first_1000_merges_is_refused) {
  REQUIRE_GPT2();
  TempDir dir;
  fs::copy_file(fs::path(gpt2_dir()) / "encoder.json", dir.path / "encoder.json");
  std::ifstream in(fs::path(gpt2_dir()) / "vocab.bpe");
  std::ofstream out(dir.path / "vocab.bpe");
  std::string line;
  for (int i = 0; i < 1001 && std::getline(in, line); ++i) out << line << "\n";  // "#version" too
  out.close();
  const std::string msg = gpt2_error(dir);
  EXPECT_NE(msg.find("has 1000 merges, but the 50257 tokens of"), std::string::npos) << msg;
  EXPECT_NE(msg.find("need 50000 (50257 - 256 byte tokens - 1 special token)"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("no merge makes 49000 of them"), std::string::npos) << msg;
}

TEST(Gpt2Tokenizer, decode_rejects_ids_past_the_vocabulary) {
  REQUIRE_GPT2();
  const std::string msg = error_of([&] { tok->decode({15496, 50257}); });
  EXPECT_NE(msg.find("id 50257"), std::string::npos) << msg;
}

}  // namespace
