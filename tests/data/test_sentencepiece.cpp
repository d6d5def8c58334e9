// SentencePiece's BPE with byte fallback in a tokenizer.json (data/sentencepiece_bpe.cpp, Meta
// Llama 2's layout): a hand-made file's merges and fallback, decoding (the leading space dropped
// at the text's start, kept by decode_more), the Metaspace layout encoding as the Prepend +
// Replace one, refusals naming the part, and Mistral 7B's ids (the same layout as Llama 2's) where
// its files are here (scripts/prepare_data.sh mistral; tests/scripts/hf_tokenizer_reference.sh
// compares whole texts with the JavaScript port of the tokenizers library).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "config/expect_contains.h"
#include "data/tokenizer.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::data;
using tessera::testing::error_of;
using tessera::testing::TempDir;
using Ids = std::vector<uint32_t>;
namespace fs = std::filesystem;

namespace {

const std::string kSpace = "\xe2\x96\x81";  // U+2581

// <unk> <s> </s>, the byte tokens (3 .. 258), then "▁" 259, "a" 260, "b" 261, "▁a" 262, "ab" 263,
// "▁ab" 264, "é" 265; merges "▁ a", "a b", "▁a b" in that order.
struct SpJson {
  std::string normalizer =
      R"({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})";
  std::string pre = "null";
  std::string decoder =
      R"({"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})";
  int skip_byte = -1;  // a byte token's id given to "q" instead

  std::string text() const {
    std::string vocab = R"({"<unk>": 0, "<s>": 1, "</s>": 2)";
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, b == skip_byte ? "q" : "<0x%02X>", b);
      vocab += std::string(", \"") + name + "\": " + std::to_string(3 + b);
    }
    vocab += R"(, "▁": 259, "a": 260, "b": 261, "▁a": 262, "ab": 263, "▁ab": 264, "é": 265})";
    return R"({"version": "1.0", "added_tokens": [{"id": 0, "content": "<unk>", "special": true},)"
           R"( {"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>",)"
           R"( "special": true}], "normalizer": )" +
           normalizer + R"(, "pre_tokenizer": )" + pre +
           R"(, "post_processor": null, "decoder": )" + decoder +
           R"(, "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",)"
           R"( "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,)"
           R"( "byte_fallback": true, "vocab": )" +
           vocab + R"(, "merges": ["▁ a", "a b", "▁a b"]}})";
  }
};

std::unique_ptr<Tokenizer> load(const SpJson& j, TempDir& dir) {
  dir.write("tokenizer.json", j.text());
  return make_tokenizer("hf", dir.path.string());
}

uint32_t byte(int b) { return uint32_t(3 + b); }

}  // namespace

TEST(SentencePiece, merges_characters_and_falls_back_to_bytes) {
  TempDir dir;
  const auto tok = load(SpJson{}, dir);
  EXPECT_EQ(tok->vocab_size(), 266);
  EXPECT_EQ(tok->eot_id(), 2u);  // </s>
  EXPECT_EQ(tok->bos_id(), 1u);  // <s>
  EXPECT_EQ(tok->encode(""), Ids{});
  // "▁ab": "▁ a" first, then "▁a b" (not "a b", of a lower rank than "▁ a" but no longer adjacent).
  EXPECT_EQ(tok->encode("ab"), Ids{264});
  EXPECT_EQ(tok->encode("ab ab"), (Ids{264, 264}));
  EXPECT_EQ(tok->encode("bab"), (Ids{259, 261, 263}));  // "▁" "b" "ab"
  // A character in the vocabulary is one symbol; one outside it is its bytes.
  EXPECT_EQ(tok->encode("\xc3\xa9"), (Ids{259, 265}));
  EXPECT_EQ(tok->encode("\xc3\xa8"), (Ids{259, byte(0xC3), byte(0xA8)}));
  EXPECT_EQ(tok->encode(" a"), (Ids{259, 262}));  // two spaces' "▁", the second joins "a"
  EXPECT_EQ(tok->encode("x\xff"), (Ids{259, byte('x'), byte(0xFF)}));
}

TEST(SentencePiece, decode_drops_the_leading_space_and_decode_more_keeps_it) {
  TempDir dir;
  const auto tok = load(SpJson{}, dir);
  EXPECT_EQ(tok->decode({264, 264}), "ab ab");
  EXPECT_EQ(tok->decode({264}), "ab");
  EXPECT_EQ(tok->decode_more({264}), " ab");
  EXPECT_EQ(tok->decode({259, byte(0xC3), byte(0xA8)}), "\xc3\xa8");
  EXPECT_EQ(tok->decode({1, 264, 2}), "<s> ab</s>");  // specials as their text
  EXPECT_CONTAINS(error_of([&] { tok->decode({266}); }), "cannot decode id 266");
  // decode(encode(s)) == s for any bytes without "▁" itself (which decodes as a space), and a
  // text decoded as a non-empty start and the rest is the text decoded whole.
  std::mt19937 rng(5);
  const std::string alphabet[] = {"a", "b", " ", "\xc3\xa9", "\xc3\xa8", "\xff", "\n", "x", "  "};
  for (int trial = 0; trial < 300; ++trial) {
    std::string s;
    for (int k = int(rng() % 12); k > 0; --k) s += alphabet[rng() % std::size(alphabet)];
    const Ids ids = tok->encode(s);
    EXPECT_EQ(tok->decode(ids), s) << trial;
    if (ids.size() < 2) continue;
    const size_t cut = 1 + rng() % (ids.size() - 1);  // a non-empty start
    EXPECT_EQ(tok->decode(Ids(ids.begin(), ids.begin() + cut)) +
                  tok->decode_more(Ids(ids.begin() + cut, ids.end())),
              s)
        << trial;
  }
  EXPECT_EQ(tok->decode(tok->encode("a" + kSpace + "b")), "a b");
}

// Newer tokenizer.json files (transformers' legacy: false) put a Metaspace pre_tokenizer where
// the normalizer was, and a Metaspace decoder: the same ids.
TEST(SentencePiece, the_metaspace_layout_encodes_as_prepend_and_replace) {
  TempDir a, b;
  const auto legacy = load(SpJson{}, a);
  SpJson j;
  j.normalizer = "null";
  j.pre = R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false})";
  j.decoder =
      R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false})";
  const auto meta = load(j, b);
  TempDir c;  // files older than prepend_scheme: add_prefix_space
  j.pre = R"({"type": "Metaspace", "replacement": "▁", "add_prefix_space": true})";
  const auto older = load(j, c);
  for (const std::string s : {"ab ab", " a b", "bab\xc3\xa8", ""}) {
    EXPECT_EQ(meta->encode(s), legacy->encode(s)) << s;
    EXPECT_EQ(older->encode(s), legacy->encode(s)) << s;
    EXPECT_EQ(meta->decode(meta->encode(s)), s) << s;
    // A piece after an added token (a chat template's marker): the legacy normaliser and
    // prepend_scheme always give it a "▁" of its own, prepend_scheme first none.
    EXPECT_EQ(legacy->encode_piece(s), legacy->encode(s)) << s;
    EXPECT_EQ(older->encode_piece(s), legacy->encode(s)) << s;
    EXPECT_EQ(meta->encode_piece(s), legacy->encode_more(s)) << s;
  }
  EXPECT_NE(meta->encode_piece("ab"), legacy->encode_piece("ab"));
}

TEST(SentencePiece, what_it_does_not_implement_is_refused_by_name) {
  auto refusal = [](const SpJson& j) {
    TempDir dir;
    return error_of([&] { load(j, dir); });
  };
  SpJson j;
  j.skip_byte = 0x41;
  EXPECT_CONTAINS(refusal(j), "model.byte_fallback is set but the byte token <0x41>");
  j = SpJson{};
  j.normalizer = R"({"type": "NFKC"})";
  EXPECT_CONTAINS(refusal(j), "normalizer NFKC is not SentencePiece's");
  j = SpJson{};
  j.pre = R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false})";
  EXPECT_CONTAINS(refusal(j), "the normalizer and pre_tokenizer are not SentencePiece's");
  j = SpJson{};
  j.normalizer = "null";
  j.pre = R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": false})";
  EXPECT_CONTAINS(refusal(j), "pre_tokenizer Metaspace is not SentencePiece's");
  j.pre = R"({"type": "Metaspace", "replacement": "▁", "add_prefix_space": false})";  // older
  EXPECT_CONTAINS(refusal(j), "pre_tokenizer Metaspace is not SentencePiece's");
  j = SpJson{};
  j.decoder = R"({"type": "ByteLevel"})";
  EXPECT_CONTAINS(refusal(j), "decoder ByteLevel is not SentencePiece's");
}

TEST(SentencePiece, mistral_known_ids) {
  const char* env = std::getenv("TESSERA_MISTRAL_DIR");
  const fs::path dir = env ? fs::path(env)
                           : fs::path(__FILE__).parent_path().parent_path().parent_path() /
                                 "data/tokenizers/mistral";
  if (!fs::exists(dir / "tokenizer.json"))
    GTEST_SKIP() << "no " << dir << " (prepare_data.sh mistral)";
  const auto tok = make_tokenizer("hf", dir.string());
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1u);
  EXPECT_EQ(tok->eot_id(), 2u);
  // As its tokenizer.json writes them (the tokenizers library, add_special_tokens=False): "▁Hello"
  // "▁world"; "▁" alone then "▁Hello"; characters outside the vocabulary as their bytes (<0xE9> is
  // 3 + 0xE9).
  EXPECT_EQ(tok->encode("Hello world"), (Ids{22557, 1526}));
  EXPECT_EQ(tok->encode(" Hello"), (Ids{28705, 22557}));
  EXPECT_EQ(tok->encode("\xe9\xbe\x98"), (Ids{28705, 3 + 0xE9, 3 + 0xBE, 3 + 0x98}));  // U+9F98
  EXPECT_EQ(tok->decode({22557, 1526}), "Hello world");
  EXPECT_EQ(tok->decode_more({1526}), " world");
}

// A continuation encoded apart (an SFT response, a multiple-choice ending) takes no leading "▁":
// encode(a) + encode_more(b) is encode(a + b) where the merges do not cross the seam.
TEST(SentencePiece, encode_more_starts_without_the_space) {
  TempDir dir;
  const auto tok = load(SpJson{}, dir);
  EXPECT_EQ(tok->encode_more("ab"), Ids{263});
  EXPECT_EQ(tok->encode_more(" ab"), Ids{264});
  EXPECT_EQ(tok->encode_more(""), Ids{});
  Ids joined = tok->encode("ab");
  const Ids more = tok->encode_more(" ab");
  joined.insert(joined.end(), more.begin(), more.end());
  EXPECT_EQ(joined, tok->encode("ab ab"));
  EXPECT_EQ(tok->decode(tok->encode("ab")) + tok->decode_more(tok->encode_more(" ab")), "ab ab");
}
